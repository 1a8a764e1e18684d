// The real-time stream (fastlstm::Stream<T>, Model::Stream): bitwise the sequence engine's
// outputs on odd sizes, LSTM and GRU, stacked, peephole, projection, several batch rows; no heap
// allocation, lock, condition variable or yield in step (below the threading threshold), from
// the first step on; step is noexcept; a stream is bound to the parameters it packed.
#include <algorithm>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "fastlstm/model.hpp"
#include "fastlstm/rnn.hpp"
#include "fastlstm/threads.hpp"
#include "model_testing.hpp"
#include "rt_counters.hpp"

using fastlstm::CellType;
using fastlstm::Precision;
using fastlstm::RNNConfig;

static_assert(noexcept(std::declval<fastlstm::Stream<float>&>().step(nullptr, nullptr)),
              "Stream<float>::step is noexcept");
static_assert(noexcept(std::declval<fastlstm::Stream<double>&>().step(nullptr, nullptr)),
              "Stream<double>::step is noexcept");

namespace {

struct Net {
  std::string name;
  RNNConfig cfg;
};

RNNConfig make(CellType cell, int64_t I, int64_t H, int64_t L = 1) {
  RNNConfig c;
  c.cell = cell;
  c.input_size = I;
  c.hidden_size = H;
  c.num_layers = L;
  return c;
}

std::vector<Net> nets() {
  std::vector<Net> v;
  // block boundaries of the step kernel: 8 and 16 units (float), 8 (double), pairs of blocks
  for (int64_t H : {1, 7, 8, 9, 16, 17, 31, 33, 40, 64}) {
    v.push_back({"lstm H=" + std::to_string(H), make(CellType::LSTM, 3, H)});
    v.push_back({"gru H=" + std::to_string(H), make(CellType::GRU, 3, H)});
  }
  v.push_back({"lstm I=1 H=32", make(CellType::LSTM, 1, 32)});
  // larger inputs: groups of two blocks and one (an odd count of groups, in both orders)
  v.push_back({"lstm I=64 H=80", make(CellType::LSTM, 64, 80)});
  v.push_back({"gru I=64 H=80", make(CellType::GRU, 64, 80)});
  v.push_back({"lstm stacked L=3", make(CellType::LSTM, 5, 9, 3)});
  v.push_back({"gru stacked L=2", make(CellType::GRU, 4, 19, 2)});
  // stacks of the compile-time sizes (each layer's h in place, the last one's kernel writing
  // y) and of layers of several groups (the new h through a buffer)
  v.push_back({"lstm stacked L=2 H=16", make(CellType::LSTM, 3, 16, 2)});
  v.push_back({"gru stacked L=3 H=8", make(CellType::GRU, 2, 8, 3)});
  v.push_back({"gru stacked L=2 H=32", make(CellType::GRU, 1, 32, 2)});
  v.push_back({"lstm stacked L=2 H=40", make(CellType::LSTM, 3, 40, 2)});
  RNNConfig p = make(CellType::LSTM, 3, 9, 2);
  p.peephole = true;
  p.proj_size = 4;
  v.push_back({"lstm peephole+projection L=2", p});
  RNNConfig nb = make(CellType::LSTM, 2, 17);
  nb.bias = false;
  v.push_back({"lstm no bias", nb});
  RNNConfig gnb = make(CellType::GRU, 2, 9);
  gnb.bias = false;
  v.push_back({"gru no bias", gnb});
  return v;
}

template <typename T>
std::vector<T> randoms(size_t n, uint64_t seed, double scale) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> ud(-scale, scale);
  std::vector<T> v(n);
  for (auto& x : v) x = T(ud(gen));
  return v;
}

// stepping T times gives forward()'s outputs, h_n and c_n bit for bit
// (x_scale: inputs in [-x_scale, x_scale]; large ones drive the gates' pre-activations past
// the activations' clamp at [-87, 88], where the step kernel's exp takes another path to the same
// values; extremes: some inputs +-Inf as well)
template <typename R>
void stream_is_bitwise_forward(const Net& n, int64_t B, double x_scale = 1.5,
                               bool extremes = false) {
  const RNNConfig& cfg = n.cfg;
  const int64_t Tn = 7, I = cfg.input_size, S = cfg.state_size(), H = cfg.hidden_size;
  const int64_t L = cfg.num_layers;
  const bool lstm = cfg.cell == CellType::LSTM;
  const auto params = randoms<R>(fastlstm::num_params(cfg), 11 + H, 0.6);
  auto x = randoms<R>(Tn * B * I, 5, x_scale);
  if (extremes)
    for (size_t k = 0; k < x.size(); k += 3)
      x[k] = (k / 3) % 2 ? std::numeric_limits<R>::infinity() : -std::numeric_limits<R>::infinity();
  const auto h0 = randoms<R>(L * B * S, 6, 0.5);
  const auto c0 = randoms<R>(L * B * H, 7, 0.5);
  fastlstm::RNN<R> rnn(cfg);
  std::vector<R> out(Tn * B * S), hn(L * B * S), cn(L * B * H);
  fastlstm::ForwardArgs<R> in;
  in.params = params.data();
  in.x = x.data();
  in.h0 = h0.data();
  in.c0 = lstm ? c0.data() : nullptr;
  rnn.forward({Tn, B, false}, in, {out.data(), hn.data(), lstm ? cn.data() : nullptr});

  fastlstm::Stream<R> s(cfg, params.data(), B);
  s.set_state(h0.data(), lstm ? c0.data() : nullptr);
  std::vector<R> y(Tn * B * S);
  for (int64_t t = 0; t < Tn; ++t) s.step(x.data() + t * B * I, y.data() + t * B * S);
  const std::string what = n.name + " B=" + std::to_string(B) + (sizeof(R) == 4 ? " f32" : " f64");
  if (std::memcmp(y.data(), out.data(), y.size() * sizeof(R)) != 0) {
    double err = 0;
    for (size_t k = 0; k < y.size(); ++k) err = std::max(err, double(std::abs(y[k] - out[k])));
    std::fprintf(stderr, "%s: stream outputs differ from forward (max %g)\n", what.c_str(), err);
    ++mt::failures();
  }
  MT_CHECK(std::memcmp(s.h(), hn.data(), hn.size() * sizeof(R)) == 0);
  if (lstm) MT_CHECK(std::memcmp(s.c(), cn.data(), cn.size() * sizeof(R)) == 0);
  else MT_CHECK(s.c() == nullptr);
}

void test_bitwise() {
  for (const Net& n : nets())
    for (int64_t B : {1, 3}) {
      stream_is_bitwise_forward<float>(n, B);
      stream_is_bitwise_forward<double>(n, B);
    }
  // above the threading threshold the groups of units are split over threads: the same bits
  // for 1 and 2 threads
  RNNConfig big_gru = make(CellType::GRU, 64, 272);
  big_gru.num_layers = 2;
  for (const Net& n : {Net{"lstm I=64 H=256", make(CellType::LSTM, 64, 256)},
                       Net{"gru I=64 H=272 L=2", big_gru}})
    for (int threads : {1, 2}) {
      fastlstm::set_num_threads(threads);
      stream_is_bitwise_forward<float>(n, 1);
      stream_is_bitwise_forward<float>(n, 2);
    }
  fastlstm::set_num_threads(1);
}

// bf16/int8 networks at batch 1: the stream and forward() run the one low-precision step
// kernel (per layer, the input and recurrent products and the cell pass), so the same bits, with
// the groups of units split over 2 threads too; every option a stream has
std::vector<Net> lowp_nets() {
  std::vector<Net> v;
  for (int64_t H : {1, 7, 32, 33, 70}) {
    v.push_back({"lstm H=" + std::to_string(H), make(CellType::LSTM, 3, H)});
    v.push_back({"gru H=" + std::to_string(H), make(CellType::GRU, 3, H)});
  }
  v.push_back({"lstm I=1 H=128", make(CellType::LSTM, 1, 128)});
  v.push_back({"lstm stacked L=3", make(CellType::LSTM, 5, 9, 3)});
  v.push_back({"gru stacked L=2", make(CellType::GRU, 67, 19, 2)});
  RNNConfig p = make(CellType::LSTM, 3, 40, 2);
  p.peephole = true;
  p.proj_size = 11;
  v.push_back({"lstm peephole+projection L=2", p});
  RNNConfig nb = make(CellType::LSTM, 2, 17);
  nb.bias = false;
  v.push_back({"lstm no bias", nb});
  RNNConfig gnb = make(CellType::GRU, 2, 9);
  gnb.bias = false;
  v.push_back({"gru no bias", gnb});
  std::vector<Net> out;
  for (Precision prec : {Precision::BF16, Precision::Int8})
    for (Net n : v) {
      n.cfg.precision = prec;
      n.name += std::string(" ") + fastlstm::precision_name(prec);
      out.push_back(n);
    }
  return out;
}

void test_lowp_bitwise() {
  for (const Net& n : lowp_nets()) stream_is_bitwise_forward<float>(n, 1);
  for (Precision prec : {Precision::BF16, Precision::Int8}) {
    RNNConfig big = make(CellType::LSTM, 64, 256);
    big.precision = prec;
    RNNConfig big_gru = make(CellType::GRU, 64, 272, 2);
    big_gru.precision = prec;
    for (const Net& n : {Net{"lstm I=64 H=256", big}, Net{"gru I=64 H=272 L=2", big_gru}})
      for (int threads : {1, 2}) {
        fastlstm::set_num_threads(threads);
        stream_is_bitwise_forward<float>(n, 1);
      }
  }
  fastlstm::set_num_threads(1);
}

// Saturated gates: inputs up to +-400 and +-Inf (one input per unit: no Inf - Inf), the same
// bits as forward() (the step kernel's activations replace out-of-range lanes at the end
// instead of clamping first)
void test_bitwise_saturated() {
  std::vector<Net> v;
  for (int64_t H : {1, 5, 8, 13, 16, 32, 40}) {
    v.push_back({"lstm I=1 H=" + std::to_string(H), make(CellType::LSTM, 1, H)});
    v.push_back({"gru I=1 H=" + std::to_string(H), make(CellType::GRU, 1, H)});
  }
  RNNConfig p = make(CellType::LSTM, 1, 6);
  p.peephole = true;
  v.push_back({"lstm peephole I=1 H=6", p});
  for (const Net& n : v)
    for (bool inf : {false, true}) {
      stream_is_bitwise_forward<float>(n, 1, 400.0, inf);
      stream_is_bitwise_forward<float>(n, 2, 400.0, inf);
    }
}

// In-place changes of the parameter buffer are not seen by step (nothing is checked or repacked
// there) until reload_params(), which repacks from the same buffer.
void test_bound_to_params() {
  for (CellType cell : {CellType::LSTM, CellType::GRU}) {
    const RNNConfig cfg = make(cell, 2, 9);
    auto params = randoms<float>(fastlstm::num_params(cfg), 3, 0.5);
    const auto original = params;
    const auto x = randoms<float>(2, 4, 1.0);
    auto step_once = [&](const std::vector<float>& p) {
      fastlstm::Stream<float> s(cfg, p.data(), 1);
      std::vector<float> y(9);
      s.step(x.data(), y.data());
      return y;
    };
    const auto y_old = step_once(original);
    for (auto& v : params) v *= -0.5f;
    const auto y_new = step_once(params);
    MT_CHECK(y_new != y_old);

    params = original;
    fastlstm::Stream<float> s(cfg, params.data(), 1);
    for (auto& v : params) v *= -0.5f;  // changed after the stream packed them
    std::vector<float> y(9);
    s.step(x.data(), y.data());
    MT_CHECK(y == y_old);
    s.reset();
    s.reload_params();
    s.step(x.data(), y.data());
    MT_CHECK(y == y_new);
  }
}

// No allocation and no blocking call in any step, the first one after construction included
// (everything is sized and packed by the constructor), nor in reset/reload_params.
void test_realtime_calls() {
  if (!kCountsAllocations || !kCountsBlockingCalls) {
    std::printf("  (allocation and lock counting are off in this build)\n");
    return;
  }
  fastlstm::set_num_threads(2);  // the threading threshold, not the thread count, decides
  std::vector<Net> all = nets();
  for (const Net& n : lowp_nets()) all.push_back(n);  // bf16/int8 streams too
  for (const Net& n : all)
    for (int64_t B : {1, 2}) {
      const auto params = randoms<float>(fastlstm::num_params(n.cfg), 1, 0.5);
      const auto x = randoms<float>(B * n.cfg.input_size, 2, 1.0);
      std::vector<float> y(B * n.cfg.state_size());
      fastlstm::Stream<float> s(n.cfg, params.data(), B);
      g_allocs = 0;
      g_blocking = 0;
      g_counting = true;
      for (int k = 0; k < 20; ++k) s.step(x.data(), y.data());
      s.reset();
      s.reload_params();
      s.step(x.data(), y.data());
      g_counting = false;
      if (g_allocs != 0 || g_blocking != 0) {
        std::fprintf(stderr, "%s B=%lld: %ld allocations, %ld blocking calls in 21 steps\n",
                     n.name.c_str(), (long long)B, g_allocs.load(), g_blocking.load());
        ++mt::failures();
      }
    }
  // the counters do count: a stream above the threading threshold, and a sequence forward,
  // wake the thread pool (and the forward allocates its workspaces)
  const RNNConfig big = make(CellType::LSTM, 64, 256);
  {
    const auto p = randoms<float>(fastlstm::num_params(big), 1, 0.1);
    const auto x1 = randoms<float>(64, 2, 1.0);
    std::vector<float> y1(256);
    fastlstm::Stream<float> s(big, p.data(), 1);
    g_allocs = 0;
    g_blocking = 0;
    g_counting = true;
    s.step(x1.data(), y1.data());
    g_counting = false;
    MT_CHECK(g_allocs == 0);
    MT_CHECK(g_blocking > 0);
  }
  const auto params = randoms<float>(fastlstm::num_params(big), 1, 0.1);
  const int64_t T = 4, B = 16;
  const auto x = randoms<float>(T * B * 64, 2, 1.0);
  std::vector<float> out(T * B * 256), hn(B * 256);
  fastlstm::RNN<float> rnn(big);
  fastlstm::ForwardArgs<float> in;
  in.params = params.data();
  in.x = x.data();
  g_allocs = 0;
  g_blocking = 0;
  g_counting = true;
  rnn.forward({T, B, false}, in, {out.data(), hn.data(), nullptr});
  g_counting = false;
  MT_CHECK(g_allocs > 0);
  MT_CHECK(g_blocking > 0);
  fastlstm::set_num_threads(1);
}

// Model::Stream: the same guarantees through Embedding and Dense layers (fixtures of
// tests/data/cpp: LSTM + Dense, Embedding + GRU/LSTM stacks).
void test_model_stream_realtime() {
  if (!kCountsAllocations || !kCountsBlockingCalls) return;
  for (const char* name : {"lstm_stream", "seq_stream", "seq_embedding_stream"}) {
    const fastlstm::Model m = fastlstm::Model::load(mt::data_path(name));
    fastlstm::Model::Stream s(m, 1);
    std::vector<float> x(m.input_size(), 0.25f), y(m.output_size());
    int64_t tok = 3;
    g_allocs = 0;
    g_blocking = 0;
    g_counting = true;
    for (int k = 0; k < 20; ++k) {
      if (m.takes_tokens()) s.step(&tok, y.data());
      else s.step(x.data(), y.data());
    }
    g_counting = false;
    if (g_allocs != 0 || g_blocking != 0) {
      std::fprintf(stderr, "Model::Stream %s: %ld allocations, %ld blocking calls\n", name,
                   g_allocs.load(), g_blocking.load());
      ++mt::failures();
    }
  }
}

}  // namespace

int main() {
  const mt::TestCase tests[] = {{"bitwise", test_bitwise},
               {"bitwise_saturated", test_bitwise_saturated},
               {"lowp_bitwise", test_lowp_bitwise},
               {"bound_to_params", test_bound_to_params},
               {"realtime_calls", test_realtime_calls},
               {"model_stream_realtime", test_model_stream_realtime}};
  return mt::run_tests(tests);
}
