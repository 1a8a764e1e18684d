// fastlstm: a kernel benchmark that measures this machine's limits (the FMA peak of a
// register-only loop at the vector width of the kernel level in use, L2 and memory read
// bandwidth) and what the engine's float32 kernels of that level reach on the product shapes of
// the benchmark cases, single threaded; for the inference cases also the low-precision (bf16,
// int8) step products against the peak of their instructions. `fastlstm bench --kernels` prints it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fastlstm {

struct KernelRow {
  std::string case_name;  // benchmark case the shape comes from, e.g. "batch_inf"
  std::string kernel;     // "step W_hh", "input proj", "dh", "dW_hh", "dW_ih", "d_x", ...
  std::string bound;      // "compute" (GFLOP/s against the FMA peak) or "memory" (GB/s)
  int64_t M = 0, N = 0, K = 0;
  double seconds = 0;     // best time of one call
  double gflops = 0;      // 2 M N K / seconds
  double gbytes = 0;      // bytes the call must read / seconds (memory-bound rows)
  double fraction = 0;    // of the peak (compute) or of the bandwidth named in `against`
  std::string against;    // "FMA peak", "bf16 peak", "int8 peak", "L2", "memory"
};

struct KernelReport {
  std::string level;            // the kernel level measured (fastlstm::cpu_info().level)
  int vector_floats = 1;        // floats per vector register of that level's float32 products
  double fma_peak_gflops = 0;   // single thread, float32
  // single thread, the low-precision products' instructions in a register-only loop (amx: AMX
  // tiles; avx512_bf16: vdpbf16ps / vpdpbusd); 0 where the level has none
  double bf16_peak_gflops = 0;
  double int8_peak_gops = 0;
  double l2_gbytes = 0;         // read bandwidth of a buffer that fits one core's L2
  double mem_gbytes = 0;        // read bandwidth of a buffer far larger than the caches
  std::vector<KernelRow> rows;
};

// seconds_per_row: how long each measurement repeats (the best call is kept). `cases` picks the
// benchmark cases (empty: all of stream_b1, batch_inf, large_fwd, train_small, train_large).
KernelReport kernel_bench(double seconds_per_row = 0.2,
                          const std::vector<std::string>& cases = {});

}  // namespace fastlstm
