// fastlstm: the CPU this process runs on and the kernel level chosen for it.
#pragma once

#include <string>
#include <vector>

namespace fastlstm {

// The kernels are compiled once per instruction-set level and chosen at run time:
//   generic      x86-64 baseline (SSE2)
//   avx2         AVX2 + FMA
//   avx512       AVX-512 F/BW/DQ/VL
//   avx512_bf16  + AVX512_BF16 and AVX512_VNNI (bf16 and int8 dot products)
//   amx          + AMX-TILE/BF16/INT8 tiles for the batched low-precision products
// The environment variable FASTLSTM_CPU=<level> caps the level (read once, at the first use of
// the engine); naming an unknown level or one this CPU lacks throws fastlstm::Error.
struct CpuInfo {
  std::string vendor;                 // e.g. "GenuineIntel"
  std::string model;                  // the processor's brand string
  std::vector<std::string> features;  // the relevant features this CPU and OS support
  std::vector<std::string> levels;    // levels compiled in that this CPU runs, lowest first
  std::string level;                  // the level in use
};

CpuInfo cpu_info();

}  // namespace fastlstm
