// Nanoseconds per streaming step, one thread: fastlstm::Stream<float> (the bare engine) and
// fastlstm::Model::Stream (the same weights loaded from a model file in memory), LSTM and GRU,
// for the cases of the README's "Streaming" section, with each case's floor:
//   - latency floor: the recurrent product's dependent chain, S fused multiply-adds in a fixed
//     order per output (what bitwise equality with the sequence engine requires), times the
//     measured latency of one FMA, plus the cell's own chain: two activations one after the
//     other (LSTM: tanh(g), then tanh(c); GRU: sigmoid(r), then tanh(n)) and two FMAs, with
//     the library's sigmoid/tanh (kernels/activations.hpp) timed here the same way: what no
//     step can beat, whatever the width of the machine;
//   - bandwidth floor: the weight bytes of a step over the read bandwidth measured here on a
//     buffer of the same size (L1 or L2, whichever holds it).
// The floor of a case is the larger of the two. Steps are timed in windows of about 20 us,
// bare and Model::Stream alternating; each figure is the median over the windows (robust on a
// shared machine: a window the scheduler cut into is an outlier, not a shift).
// --precision bf16,int8 adds each case in those precisions: the bare stream with the
// configuration's precision, Model::Stream of the model loaded with LoadOptions::precision (the
// weights quantized on load); their floors: the weight bytes at 2 or 1 byte each over the read
// bandwidth, and the latency chain with one dependent dot-product step (vdpbf16ps: a pair of
// k, vpdpbusd: a quad) per 2 or 4 elements of h, each counted at the FMA's latency, plus the
// cell's activations (a lower bound: those instructions are no faster than an FMA).
//
//   stream_bench [--steps N] [--min-windows W] [--quick] [--json] [--case CELL:I:H ...]
//                [--precision float32,bf16,int8]
//
// Also checks that the bare stream and Model::Stream give the same bits (exit code 1 if not).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "fastlstm/build_info.hpp"
#include "fastlstm/model.hpp"
#include "fastlstm/rnn.hpp"
#include "fastlstm/threads.hpp"
// The floors are measured with the instructions the library's kernels use on this CPU, while
// this program itself is built for the x86-64 baseline (it ships in the wheel): the FMA and
// activation chains are compiled for AVX2+FMA and run where the CPU has them (else the
// baseline's correctly rounded library fma, as the library's generic level does), and the read
// bandwidth loop is the kernel table's.
#include "kernels/dispatch.hpp"
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__AVX2__)
#define STREAM_BENCH_FMA_TARGET 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
// the cell's sigmoid and tanh, to time their latency: the kernel header, compiled here into a
// namespace of this program's own (the library's copies are per ISA level)
#define FASTLSTM_ISA_NS stream_bench_isa
#include "kernels/activations.hpp"
namespace {
float fma_chain(float a, float m, float c, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    a = __builtin_fmaf(a, m, c);
    __asm__ volatile("" : "+x"(a));  // keeps the chain as written
  }
  return a;
}
float activation_chain(float a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    a = fastlstm::detail::stream_bench_isa::tanh_act(fastlstm::detail::stream_bench_isa::sigmoid(a));
    __asm__ volatile("" : "+x"(a));
  }
  return a;
}
}  // namespace
#ifdef STREAM_BENCH_FMA_TARGET
#pragma GCC pop_options
#endif
namespace {
// the chains above need AVX2 and FMA where this program is built for the baseline
bool have_fma_chains() {
#ifdef STREAM_BENCH_FMA_TARGET
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return true;
#endif
}
float fma_chain_baseline(float a, float m, float c, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    a = std::fma(a, m, c);
    __asm__ volatile("" : "+x"(a));
  }
  return a;
}
}  // namespace

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// ns per fused multiply-add in a dependent chain (scalar float)
double fma_latency_ns() {
  volatile float vm = 0.999f, vc = 1e-3f;
  const float m = vm, c = vc;
  std::vector<double> t;
  for (int r = 0; r < 21; ++r) {
    const int64_t n = 20'000;
    const auto t0 = Clock::now();
    const float a = have_fma_chains() ? fma_chain(1.0f, m, c, n)
                                      : fma_chain_baseline(1.0f, m, c, n);
    t.push_back(seconds_since(t0) * 1e9 / double(n));
    vm = a;
  }
  return median(t);
}

// ns per sigmoid-then-tanh pair in a dependent chain (scalar float): the cell's own latency
double activation_pair_ns() {
  if (!have_fma_chains()) return 0.0;  // not measured on a CPU without AVX2 and FMA
  volatile float v0 = 0.3f;
  std::vector<double> t;
  for (int r = 0; r < 21; ++r) {
    const int64_t n = 5'000;
    const auto t0 = Clock::now();
    const float a = activation_chain(v0, n);
    t.push_back(seconds_since(t0) * 1e9 / double(n));
    v0 = a;
  }
  return median(t);
}

// bytes per ns (GB/s) reading a buffer of `bytes` over and over (it stays in the cache level it
// fits), 64-byte aligned like the stream's packed weights: the kernel table's read loop (eight
// independent vector sums in registers, the whole buffer read many times within one timed call
// of about 1 MB, one reduction at its end), so neither the adds' latency nor a per-call cost is
// timed, and the compiler cannot drop the loads (their sum is returned and kept)
double read_bandwidth(int64_t bytes) {
  // at least 16 KB (in L1 like anything smaller): on a few hundred bytes the loop's own
  // overhead per pass, not the loads, would be timed
  const int64_t n = std::max<int64_t>(std::max<int64_t>(bytes, 16384) / 4 / 128 * 128, 128);
  float* buf = static_cast<float*>(::operator new(n * 4, std::align_val_t(64)));
  std::fill(buf, buf + n, 1.0f);
  const int64_t passes = std::max<int64_t>(1, (int64_t(1) << 20) / (n * 4));
  const auto read_sum = fastlstm::detail::kernels().read_sum;  // the level in use
  float sink = read_sum(buf, n, 1);  // into the cache level it fits
  std::vector<double> t;
  for (int r = 0; r < 21; ++r) {
    const auto t0 = Clock::now();
    sink += read_sum(buf, n, passes);
    t.push_back(double(n) * 4 * double(passes) / (seconds_since(t0) * 1e9));
  }
  ::operator delete(buf, std::align_val_t(64));
  volatile float keep = sink;
  (void)keep;
  return median(t);
}

// ---------------------------------------------------------------- a model file in memory
std::string quote(const std::string& s) { return "\"" + s + "\""; }

std::string model_file(const fastlstm::RNNConfig& cfg, const std::vector<float>& params) {
  std::string header = "{", data;
  for (const fastlstm::ParamInfo& p : fastlstm::param_layout(cfg)) {
    std::string shape = "[";
    for (size_t k = 0; k < p.shape.size(); ++k) shape += (k ? "," : "") + std::to_string(p.shape[k]);
    header += quote(p.name) + ":{\"dtype\":\"F32\",\"shape\":" + shape + "],\"data_offsets\":[" +
              std::to_string(data.size()) + "," + std::to_string(data.size() + p.size * 4) + "]},";
    data.append(reinterpret_cast<const char*>(params.data() + p.offset), p.size * 4);
  }
  const bool lstm = cfg.cell == fastlstm::CellType::LSTM;
  std::string meta = "{\"format_version\":1,\"model\":{\"class\":\"" +
                     std::string(lstm ? "LSTM" : "GRU") + "\",\"config\":{\"input_size\":" +
                     std::to_string(cfg.input_size) + ",\"hidden_size\":" +
                     std::to_string(cfg.hidden_size) + ",\"num_layers\":" +
                     std::to_string(cfg.num_layers) +
                     ",\"bias\":true,\"batch_first\":true,\"bidirectional\":false";
  if (lstm) meta += ",\"proj_size\":0,\"peephole\":false";
  meta += "},\"dtype\":\"float32\"}}";
  std::string esc;
  for (char c : meta) {
    if (c == '"' || c == '\\') esc += '\\';
    esc += c;
  }
  header += "\"__metadata__\":{\"fastlstm\":\"" + esc + "\"}}";
  while (header.size() % 8) header += ' ';
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int k = 0; k < 8; ++k) out[k] = char((n >> (8 * k)) & 0xff);
  return out + header + data;
}

// ---------------------------------------------------------------- cases
struct Case {
  fastlstm::CellType cell;
  int64_t I, H;
  fastlstm::Precision precision = fastlstm::Precision::Float32;
};

// bytes per weight and h elements per dependent step of the products, at a precision
int64_t weight_bytes_per(fastlstm::Precision p) {
  return p == fastlstm::Precision::Float32 ? 4 : p == fastlstm::Precision::BF16 ? 2 : 1;
}
int64_t elems_per_step(fastlstm::Precision p) {
  return p == fastlstm::Precision::Float32 ? 1 : p == fastlstm::Precision::BF16 ? 2 : 4;
}

struct Result {
  Case c;
  double bare_ns = 0, model_ns = 0, latency_floor_ns = 0, bandwidth_floor_ns = 0;
  int64_t weight_bytes = 0, steps = 0;
  bool same_bits = true;
};

Result run_case(const Case& c, int64_t steps, int repeats, double fma_ns, double act_ns) {
  fastlstm::RNNConfig cfg;
  cfg.cell = c.cell;
  cfg.input_size = c.I;
  cfg.hidden_size = c.H;
  cfg.precision = c.precision;
  std::mt19937 gen(7);
  const float k = 1.0f / std::sqrt(float(c.H));  // PyTorch's default initialization range
  std::uniform_real_distribution<float> ud(-k, k);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> params(fastlstm::num_params(cfg));
  for (auto& v : params) v = ud(gen);
  constexpr int64_t kInputs = 1024;  // input vectors, cycled
  std::vector<float> xs(kInputs * c.I);
  for (auto& v : xs) v = nd(gen);
  fastlstm::RNNConfig fcfg = cfg;  // the file holds float32 weights
  fcfg.precision = fastlstm::Precision::Float32;
  const std::string file = model_file(fcfg, params);
  fastlstm::LoadOptions lo;
  lo.precision = c.precision;  // quantized on load (float32: as saved)
  const fastlstm::Model model = fastlstm::Model::load_from_memory(file.data(), file.size(), lo);

  fastlstm::Stream<float> bare(cfg, params.data(), 1);
  fastlstm::Model::Stream ms(model, 1);
  std::vector<float> yb(c.H), ym(c.H);
  Result r;
  r.c = c;
  // the same inputs give the same bits through both
  for (int64_t t = 0; t < 64; ++t) {
    bare.step(xs.data() + t * c.I, yb.data());
    ms.step(xs.data() + t * c.I, ym.data());
    r.same_bits = r.same_bits && std::memcmp(yb.data(), ym.data(), 4 * c.H) == 0;
  }
  // Short windows of steps, bare and Model::Stream alternating, each window's ns/step kept:
  // the median over windows ignores the ones a busy machine's scheduler cut into.
  int64_t t_in = 0;
  auto window = [&](auto& s, float* y, int64_t n) {
    const auto t0 = Clock::now();
    for (int64_t t = 0; t < n; ++t, ++t_in) s.step(xs.data() + (t_in % kInputs) * c.I, y);
    return seconds_since(t0) * 1e9 / double(n);
  };
  double est = 1e30;
  for (int k = 0; k < 5; ++k) est = std::min(est, window(bare, yb.data(), 200));
  const int64_t n = std::max<int64_t>(8, int64_t(20000.0 / est));  // about 20 us a window
  const int64_t windows = std::max<int64_t>(repeats, steps / n);
  std::vector<double> tb, tm;
  for (int64_t w = 0; w < windows; ++w) {
    tb.push_back(window(bare, yb.data(), n));
    tm.push_back(window(ms, ym.data(), n));
  }
  r.bare_ns = median(tb);
  r.model_ns = median(tm);
  r.steps = windows * n;
  const int64_t G = cfg.gate_size();
  r.weight_bytes = weight_bytes_per(c.precision) * G * (c.I + c.H);
  const int64_t e = elems_per_step(c.precision);
  r.latency_floor_ns = double((c.H + e - 1) / e + 2) * fma_ns + act_ns;
  r.bandwidth_floor_ns = double(r.weight_bytes) / read_bandwidth(r.weight_bytes);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t steps = 200000;
  int repeats = 21;  // windows at least
  bool json = false, quick = false;
  std::vector<Case> cases;
  std::vector<fastlstm::Precision> precisions{fastlstm::Precision::Float32};
  for (int a = 1; a < argc; ++a) {
    const std::string s = argv[a];
    if (s == "--steps" && a + 1 < argc) steps = std::stoll(argv[++a]);
    else if (s == "--min-windows" && a + 1 < argc) repeats = std::stoi(argv[++a]);
    else if (s == "--json") json = true;
    else if (s == "--quick") quick = true;
    else if (s == "--case" && a + 1 < argc) {
      const std::string v = argv[++a];  // CELL:I:H
      const size_t p1 = v.find(':'), p2 = v.find(':', p1 + 1);
      if (p1 == std::string::npos || p2 == std::string::npos) {
        std::fprintf(stderr, "--case wants CELL:I:H (e.g. lstm:1:32), got %s\n", v.c_str());
        return 2;
      }
      const std::string cell = v.substr(0, p1);
      if (cell != "lstm" && cell != "gru") {
        std::fprintf(stderr, "--case: cell must be lstm or gru, got %s\n", cell.c_str());
        return 2;
      }
      cases.push_back({cell == "lstm" ? fastlstm::CellType::LSTM : fastlstm::CellType::GRU,
                       std::stoll(v.substr(p1 + 1, p2 - p1 - 1)), std::stoll(v.substr(p2 + 1))});
    } else if (s == "--precision" && a + 1 < argc) {
      precisions.clear();
      const std::string v = argv[++a];  // comma-separated
      for (size_t b = 0; b <= v.size();) {
        const size_t e = std::min(v.find(',', b), v.size());
        const std::string name = v.substr(b, e - b);
        try {
          precisions.push_back(fastlstm::parse_precision(name));
        } catch (const std::exception&) {
          std::fprintf(stderr, "--precision: each must be float32, bf16 or int8, got '%s'\n",
                       name.c_str());
          return 2;
        }
        b = e + 1;
      }
    } else {
      std::fprintf(stderr,
                   "usage: stream_bench [--steps N] [--min-windows W] [--quick] [--json] "
                   "[--case CELL:I:H ...] [--precision float32,bf16,int8]\n");
      return 2;
    }
  }
  if (quick) {
    steps = std::min<int64_t>(steps, 2000);
    repeats = std::min(repeats, 3);
  }
  if (cases.empty())
    for (auto cell : {fastlstm::CellType::LSTM, fastlstm::CellType::GRU}) {
      cases.push_back({cell, 1, 1});  // the fixed cost of a step
      for (int64_t H : {8, 16, 32, 64, 128}) cases.push_back({cell, 1, H});
      cases.push_back({cell, 64, 256});
    }
  fastlstm::set_num_threads(1);
  const double fma_ns = fma_latency_ns();
  const double act_ns = activation_pair_ns();
  // the read bandwidth of a buffer in L1 (32 KB) and in L2 (256 KB: within every L2, the
  // smallest 512 KB on Zen 3), for the report
  const double l1_gbs = read_bandwidth(int64_t(32) << 10), l2_gbs = read_bandwidth(int64_t(256) << 10);
  std::vector<Result> rs;
  for (fastlstm::Precision p : precisions)
    for (Case c : cases) {
      c.precision = p;
      rs.push_back(run_case(c, steps, repeats, fma_ns, act_ns));
    }
  bool ok = true;
  if (json) {
    std::printf("{\"fma_latency_ns\": %.4f, \"activation_pair_ns\": %.3f, \"l1_read_gbs\": %.1f, "
                "\"l2_read_gbs\": %.1f, \"compiler\": \"%s\", \"flags\": \"%s\", \"cases\": [",
                fma_ns, act_ns, l1_gbs, l2_gbs, fastlstm::build_info().compiler.c_str(),
                fastlstm::build_info().flags.c_str());
    for (size_t k = 0; k < rs.size(); ++k) {
      const Result& r = rs[k];
      std::printf("%s\n {\"cell\": \"%s\", \"I\": %lld, \"H\": %lld, \"precision\": \"%s\", "
                  "\"bare_ns\": %.2f, "
                  "\"model_ns\": %.2f, \"latency_floor_ns\": %.2f, \"bandwidth_floor_ns\": %.2f, "
                  "\"weight_bytes\": %lld, \"same_bits\": %s}",
                  k ? "," : "", r.c.cell == fastlstm::CellType::LSTM ? "lstm" : "gru",
                  (long long)r.c.I, (long long)r.c.H, fastlstm::precision_name(r.c.precision),
                  r.bare_ns, r.model_ns, r.latency_floor_ns, r.bandwidth_floor_ns,
                  (long long)r.weight_bytes, r.same_bits ? "true" : "false");
    }
    std::printf("\n]}\n");
  } else {
    std::printf("one thread; FMA latency %.3f ns, sigmoid+tanh chain %.1f ns; read bandwidth "
                "L1 (32 KB) %.0f GB/s, L2 (256 KB) %.0f GB/s; ns/step = median over alternated "
                "windows of about 20 us (%lld steps per case at most)\n",
                fma_ns, act_ns, l1_gbs, l2_gbs, (long long)steps);
    std::printf("%-5s %4s %4s %-7s | %10s %12s | %9s %9s %6s | %9s\n", "cell", "I", "H",
                "prec", "bare ns", "Model ns", "lat floor", "bw floor", "floor", "bare/floor");
    for (const Result& r : rs) {
      const double floor = std::max(r.latency_floor_ns, r.bandwidth_floor_ns);
      std::printf("%-5s %4lld %4lld %-7s | %10.1f %12.1f | %9.1f %9.1f %6s | %9.2f\n",
                  r.c.cell == fastlstm::CellType::LSTM ? "lstm" : "gru", (long long)r.c.I,
                  (long long)r.c.H, fastlstm::precision_name(r.c.precision), r.bare_ns, r.model_ns, r.latency_floor_ns,
                  r.bandwidth_floor_ns,
                  r.latency_floor_ns >= r.bandwidth_floor_ns ? "lat" : "bw", r.bare_ns / floor);
    }
  }
  for (const Result& r : rs)
    if (!r.same_bits) {
      ok = false;
      std::fprintf(stderr, "%s I=%lld H=%lld %s: Model::Stream and Stream<float> differ\n",
                   r.c.cell == fastlstm::CellType::LSTM ? "lstm" : "gru", (long long)r.c.I,
                   (long long)r.c.H, fastlstm::precision_name(r.c.precision));
    }
  return ok ? 0 : 1;
}
