// fastlstm::kernel_bench: the machine's limits and the float32 kernels' speed on the benchmark
// cases' product shapes, single threaded (see fastlstm/kernel_bench.hpp). Compiled for the
// baseline like the engine: the products and the FMA peak loop come from the kernel table
// (kernels/dispatch.hpp), so the figures are those of the level in use (FASTLSTM_CPU).
#include "fastlstm/kernel_bench.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>

#include <time.h>

#include "fastlstm/config.hpp"
#include "kernels/cells.hpp"
#include "kernels/dispatch.hpp"
#include "kernels/packed_gemm.hpp"

namespace fastlstm {

namespace {

using detail::kNC;
using detail::num_panels;
using Clock = std::chrono::steady_clock;

// This thread's CPU time in seconds: on a shared machine, time the thread was not running is
// not the kernel's (wall time is the same on an idle machine).
double thread_seconds() {
#if defined(CLOCK_THREAD_CPUTIME_ID)
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
#else
  return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
#endif
}

// The best time of one call of fn: calls are timed in groups of at least a millisecond (the
// clock's resolution stays negligible), repeated for about `seconds` (at least 5 groups).
double best_time(double seconds, const std::function<void()>& fn) {
  fn();  // warm the caches and the pages
  int reps = 1;
  for (;;) {
    const double t0 = thread_seconds();
    for (int i = 0; i < reps; ++i) fn();
    if (thread_seconds() - t0 >= 1e-3 || reps >= (1 << 20)) break;
    reps *= 2;
  }
  double best = 1e30, total = 0;
  for (int i = 0; i < 5 || total < seconds; ++i) {
    const double t0 = thread_seconds();
    for (int j = 0; j < reps; ++j) fn();
    const double dt = thread_seconds() - t0;
    best = std::min(best, dt / reps);
    total += dt;
    if (i > 100000) break;
  }
  return best;
}

std::vector<float> random_vec(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = u(g);
  return v;
}

// The FMA peak of the level in use (its loop: KernelTable::fma_loop).
double fma_peak(double seconds) {
  const int64_t iters = 1 << 20;
  const auto loop = detail::kernels().fma_loop;
  float sink = 0;
  double flops = 0;
  const double t = best_time(seconds, [&]() { sink += loop(iters, &flops); });
  volatile float keep = sink;
  (void)keep;
  return flops / t * 1e-9;
}

// Read bandwidth: a vector sum over a buffer of `bytes`, read over and over within each timed
// call (about 1 MB a call, so the call's own cost is negligible; the level's loop:
// KernelTable::read_sum).
double read_bandwidth(size_t bytes, double seconds) {
  const int64_t n = std::max<int64_t>(int64_t(bytes / sizeof(float)) / 128 * 128, 128);
  const int64_t passes = std::max<int64_t>(1, (int64_t(1) << 20) / (n * int64_t(sizeof(float))));
  std::vector<float> buf(size_t(n), 1.0f);
  const auto sum = detail::kernels().read_sum;
  float sink = 0;
  const double t = best_time(seconds, [&]() { sink += sum(buf.data(), n, passes); });
  volatile float keep = sink;
  (void)keep;
  return double(n) * double(passes) * sizeof(float) / t * 1e-9;
}

// The low-precision peak of the level in use (KernelTable::lowp_peak_loop; 0 without one).
double lowp_peak(Precision p, double seconds) {
  const auto loop = detail::kernels().lowp_peak_loop;
  if (!loop) return 0;
  const int64_t iters = 1 << 14;
  double ops = 0;
  const double t = best_time(seconds, [&]() { ops = loop(p, iters); });
  return ops / t * 1e-9;
}

struct Case {
  const char* name;
  int64_t B, T, I, H;
  bool train;
};

constexpr Case kCases[] = {
    {"stream_b1", 1, 1000, 64, 256, false}, {"batch_inf", 64, 100, 128, 512, false},
    {"large_fwd", 128, 200, 512, 1024, false}, {"train_small", 32, 50, 128, 256, true},
    {"train_large", 64, 100, 256, 512, true},
};

}  // namespace

KernelReport kernel_bench(double seconds_per_row, const std::vector<std::string>& cases) {
  if (!(seconds_per_row > 0) || seconds_per_row > 60)
    throw Error("kernel_bench: seconds_per_row must be in (0, 60], got " +
                std::to_string(seconds_per_row));
  for (const auto& c : cases) {
    bool known = false;
    for (const auto& k : kCases) known = known || c == k.name;
    if (!known)
      throw Error("kernel_bench: unknown case '" + c +
                  "' (expected stream_b1, batch_inf, large_fwd, train_small or train_large)");
  }
  const detail::KernelTable& table = detail::kernels();
  const detail::TypedKernels<float>& kern = table.f32;
  KernelReport rep;
  rep.level = table.level;
  rep.vector_floats = table.vector_floats;
  rep.fma_peak_gflops = fma_peak(seconds_per_row);
  rep.bf16_peak_gflops = lowp_peak(Precision::BF16, seconds_per_row);
  rep.int8_peak_gops = lowp_peak(Precision::Int8, seconds_per_row);
  // 256 KiB: past every L1 (32-48 KB), within every L2 (512 KB on Zen 3, 1 MB on Zen 4, 2 MB on
  // Sapphire Rapids; a 1 MiB buffer filled Zen 4's L2 and measured part of L3)
  rep.l2_gbytes = read_bandwidth(size_t(1) << 18, seconds_per_row);
  rep.mem_gbytes = read_bandwidth(size_t(1) << 30, std::max(seconds_per_row, 0.5));

  auto compute_row = [&](const char* cs, const char* kernel, int64_t M, int64_t N, int64_t K,
                         double seconds) {
    KernelRow r;
    r.case_name = cs;
    r.kernel = kernel;
    r.bound = "compute";
    r.M = M, r.N = N, r.K = K;
    r.seconds = seconds;
    r.gflops = 2.0 * double(M) * double(N) * double(K) / seconds * 1e-9;
    r.fraction = r.gflops / rep.fma_peak_gflops;
    r.against = "FMA peak";
    rep.rows.push_back(r);
  };

  for (const Case& cs : kCases) {
    if (!cases.empty() && std::find(cases.begin(), cases.end(), cs.name) == cases.end()) continue;
    const int64_t B = cs.B, H = cs.H, I = cs.I, G = 4 * H, N = cs.B * cs.T;
    const int64_t tiles = (H + kNC - 1) / kNC, tile_cols = 4 * kNC, Gp = tiles * tile_cols;
    // forward step: the recurrent product of one step, tile by tile as the time loop runs it
    {
      const auto whh = random_vec(size_t(Gp * H), 1), h = random_vec(size_t(B * H), 2);
      std::vector<float> rec(size_t(B * tile_cols));
      const double t = best_time(seconds_per_row, [&]() {
        for (int64_t tl = 0; tl < tiles; ++tl)
          kern.gemm_packed(B, tile_cols, H, h.data(), H,
                                     whh.data() + tl * tile_cols * H, rec.data(), tile_cols,
                                     false);
      });
      if (B <= 2) {  // a matrix-vector product: it streams the weights from L2
        KernelRow r;
        r.case_name = cs.name;
        r.kernel = "step W_hh";
        r.bound = "memory";
        r.M = B, r.N = Gp, r.K = H;
        r.seconds = t;
        r.gflops = 2.0 * double(B * Gp * H) / t * 1e-9;
        r.gbytes = double(Gp * H * sizeof(float)) / t * 1e-9;
        r.fraction = r.gbytes / rep.l2_gbytes;
        r.against = "L2";
        rep.rows.push_back(r);
      } else {
        compute_row(cs.name, "step W_hh", B, Gp, H, t);
      }
    }
    // input projection: per step and tile (large batches, as the engine runs it when the whole
    // projection would not stay in cache) or all rows at once in chunks of 128 rows
    if (B >= 2) {
      const bool per_step = N * Gp * int64_t(sizeof(float)) > (int64_t(1) << 20);
      const auto wih = random_vec(size_t(Gp * I), 3);
      if (per_step) {
        const auto x = random_vec(size_t(B * I), 4);
        std::vector<float> xr(size_t(B * tile_cols));
        const double t = best_time(seconds_per_row, [&]() {
          for (int64_t tl = 0; tl < tiles; ++tl)
            kern.gemm_packed(B, tile_cols, I, x.data(), I,
                                       wih.data() + tl * tile_cols * I, xr.data(), tile_cols,
                                       false);
        });
        compute_row(cs.name, "input proj (per step)", B, Gp, I, t);
      } else {
        const int64_t rows = std::min<int64_t>(N, 16 * detail::kMR);
        const auto x = random_vec(size_t(rows * I), 4);
        std::vector<float> xp(size_t(rows * Gp));
        const double t = best_time(seconds_per_row, [&]() {
          kern.gemm_packed(rows, Gp, I, x.data(), I, wih.data(), xp.data(), Gp, false);
        });
        compute_row(cs.name, "input proj (chunk)", rows, Gp, I, t);
      }
    }
    if (!cs.train) {
      // the low-precision step products as the time loop runs them, tile by tile: batch 1 the
      // recurrent product alone (the input projection is made for all steps first; it streams
      // W_hh from L2), larger batches both products of a step in one pass (gemm_lowp_q2)
      for (Precision p : {Precision::BF16, Precision::Int8}) {
        const bool bf = p == Precision::BF16;
        const auto whh = random_vec(size_t(Gp * H), 13), wih = random_vec(size_t(Gp * I), 14);
        std::vector<const float*> rh(static_cast<size_t>(Gp)), ri(static_cast<size_t>(Gp));
        for (int64_t n = 0; n < Gp; ++n) {
          rh[size_t(n)] = whh.data() + n * H;
          ri[size_t(n)] = wih.data() + n * I;
        }
        detail::QPacked qhh, qih;
        detail::quantize_pack(p, H, rh, qhh);
        detail::quantize_pack(p, I, ri, qih);
        const auto h = random_vec(size_t(B * H), 15), x = random_vec(size_t(B * I), 16);
        detail::QRows qh, qx;
        table.quantize_rows(h.data(), B, H, qhh, qh);
        table.quantize_rows(x.data(), B, I, qih, qx);
        std::vector<float> rec(size_t(B * tile_cols));
        const bool both = B > 2;
        const double t = best_time(seconds_per_row, [&]() {
          table.lowp_begin();
          for (int64_t tl = 0; tl < tiles; ++tl) {
            if (both)
              table.gemm_lowp_q2(tile_cols, qx, qih, qh, qhh, tl * tile_cols, rec.data(),
                                 tile_cols);
            else
              table.gemm_lowp_q(tile_cols, qh, qhh, tl * tile_cols, rec.data(), tile_cols);
          }
        });
        const char* name = both ? (bf ? "step x+h bf16" : "step x+h int8")
                                : (bf ? "step W_hh bf16" : "step W_hh int8");
        if (!both) {
          KernelRow r;
          r.case_name = cs.name;
          r.kernel = name;
          r.bound = "memory";
          r.M = B, r.N = Gp, r.K = H;
          r.seconds = t;
          r.gflops = 2.0 * double(B * Gp * H) / t * 1e-9;
          r.gbytes = double(qhh.bytes()) / t * 1e-9;
          r.fraction = r.gbytes / rep.l2_gbytes;
          r.against = "L2";
          rep.rows.push_back(r);
        } else {
          compute_row(cs.name, name, B, Gp, I + H, t);
          const double peak = bf ? rep.bf16_peak_gflops : rep.int8_peak_gops;
          if (peak > 0) {
            rep.rows.back().fraction = rep.rows.back().gflops / peak;
            rep.rows.back().against = bf ? "bf16 peak" : "int8 peak";
          }
        }
      }
      // the gate pass of one step (memory-light: reported as GB/s of what it reads and writes)
      std::vector<float> xp = random_vec(size_t(B * tile_cols), 5),
                         rec = random_vec(size_t(B * tile_cols), 6), bh(size_t(G), 0.f),
                         c(size_t(B * H), 0.f), h(size_t(B * H)), act(size_t(B * G));
      const double t = best_time(seconds_per_row, [&]() {
        for (int64_t tl = 0; tl < tiles; ++tl)
          for (int64_t j = 0; j < B; ++j) {
            detail::CellRow<float> r;
            r.xp = xp.data() + j * tile_cols;
            r.rec = rec.data() + j * tile_cols;
            r.b_hh = bh.data() + tl * kNC;
            r.c = c.data() + j * H + tl * kNC;
            r.h = h.data() + j * H + tl * kNC;
            r.act = act.data() + j * G + tl * kNC;
            kern.cell_forward[detail::LstmKind::kIndex](std::min(kNC, H - tl * kNC), H, kNC, r);
          }
      });
      KernelRow r;
      r.case_name = cs.name;
      r.kernel = "cell pass (LSTM)";
      r.bound = "memory";
      r.M = B, r.N = H, r.K = 0;
      r.seconds = t;
      // reads xp, rec, b, c; writes c, h, act: 4G + 2H + 2H floats per row
      r.gbytes = double(B * (3 * G + 4 * H) * sizeof(float)) / t * 1e-9;
      r.fraction = r.gbytes / rep.l2_gbytes;
      r.against = "L2";
      rep.rows.push_back(r);
      continue;
    }
    // backward: dh = d_rec W_hh per step; dW = D^T X over all steps; d_x = d_xp W_ih
    {
      const auto whh_t = random_vec(size_t(num_panels(H) * G * kNC), 7),
                 drec = random_vec(size_t(B * G), 8);
      std::vector<float> dh(size_t(B * H));
      const double t = best_time(seconds_per_row, [&]() {
        kern.gemm_packed(B, H, G, drec.data(), G, whh_t.data(), dh.data(), H, false);
      });
      compute_row(cs.name, "dh", B, H, G, t);
    }
    for (int which = 0; which < 2; ++which) {
      const int64_t Ncol = which == 0 ? H : I;
      const auto d = random_vec(size_t(N * G), 9), xs = random_vec(size_t(N * Ncol), 10);
      std::vector<float> pk(size_t(num_panels(Ncol) * N * kNC));
      for (int64_t q = 0; q < num_panels(Ncol); ++q)
        detail::pack_panels<float>(std::min(kNC, Ncol - q * kNC), N, xs.data() + q * kNC, 1, Ncol,
                                   pk.data() + q * N * kNC);
      const int64_t grain = kern.atb_grain;
      std::vector<float> dw(size_t(G * Ncol), 0.f),
          work(size_t(detail::kKC * (grain + detail::kMaxMR)));
      const double t = best_time(seconds_per_row, [&]() {
        for (int64_t m0 = 0; m0 < G; m0 += grain)
          kern.gemm_atb(std::min<int64_t>(grain, G - m0), Ncol, N, d.data() + m0, G,
                                  pk.data(), dw.data() + m0 * Ncol, Ncol, work.data());
      });
      compute_row(cs.name, which == 0 ? "dW_hh" : "dW_ih", G, Ncol, N, t);
    }
    {
      // the engine's LSTM: both from one packing of d_rec (gemm_atb2), as N = H + I columns
      const auto d = random_vec(size_t(N * G), 9), hs = random_vec(size_t(N * H), 10),
                 xs = random_vec(size_t(N * I), 13);
      std::vector<float> pk_h(size_t(num_panels(H) * N * kNC)),
          pk_x(size_t(num_panels(I) * N * kNC));
      for (int64_t q = 0; q < num_panels(H); ++q)
        detail::pack_panels<float>(std::min(kNC, H - q * kNC), N, hs.data() + q * kNC, 1, H,
                                   pk_h.data() + q * N * kNC);
      for (int64_t q = 0; q < num_panels(I); ++q)
        detail::pack_panels<float>(std::min(kNC, I - q * kNC), N, xs.data() + q * kNC, 1, I,
                                   pk_x.data() + q * N * kNC);
      const int64_t grain = kern.atb_grain;
      std::vector<float> dwh(size_t(G * H), 0.f), dwx(size_t(G * I), 0.f),
          work(size_t(detail::kKC * (grain + detail::kMaxMR)));
      const double t = best_time(seconds_per_row, [&]() {
        for (int64_t m0 = 0; m0 < G; m0 += grain)
          kern.gemm_atb2(std::min<int64_t>(grain, G - m0), N, d.data() + m0, G, H, pk_h.data(),
                         dwh.data() + m0 * H, H, I, pk_x.data(), dwx.data() + m0 * I, I,
                         work.data());
      });
      compute_row(cs.name, "dW_hh+dW_ih (shared)", G, H + I, N, t);
    }
    {
      const int64_t rows = std::min<int64_t>(N, 16 * detail::kMR);
      const auto wih_t = random_vec(size_t(num_panels(I) * G * kNC), 11),
                 dxp = random_vec(size_t(rows * G), 12);
      std::vector<float> dx(size_t(rows * I));
      const double t = best_time(seconds_per_row, [&]() {
        kern.gemm_packed(rows, I, G, dxp.data(), G, wih_t.data(), dx.data(), I, false);
      });
      compute_row(cs.name, "d_x (chunk)", rows, I, G, t);
    }
  }
  return rep;
}

}  // namespace fastlstm
