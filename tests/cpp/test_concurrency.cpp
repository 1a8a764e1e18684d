// The concurrency contract of the C++ API, run in CI under ThreadSanitizer as well (.ci/
// sanitizers): concurrent predict on one Model; streams of one Model stepped from different
// threads (one stream per thread) while other threads predict; set_num_threads while calls run
// (it applies to later calls); several RNN objects (one per thread) over shared parameters.
// Every result is compared with the same call made alone, bit for bit.
#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "fastlstm/fastlstm.hpp"
#include "fastlstm/model.hpp"
#include "model_testing.hpp"

using fastlstm::Model;

namespace {

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// predict from 4 threads on one model, while a 5th thread changes the thread count
void test_predict_and_set_num_threads() {
  const Model m = Model::load(mt::data_path("lstm_stacked_bidir_proj"));
  const int64_t B = 3, T = 7, F = m.input_size();
  const std::vector<float> x = random_floats(size_t(B * T * F), 1);
  std::vector<float> want;
  m.predict(x.data(), B, T, F, nullptr, want);
  std::atomic<int> mismatches{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&]() {
      std::vector<float> y;
      for (int r = 0; r < 20; ++r) {
        m.predict(x.data(), B, T, F, nullptr, y);
        if (y != want) ++mismatches;
      }
    });
  std::thread knob([&]() {
    int n = 1;
    while (!stop.load()) {
      fastlstm::set_num_threads(n);
      n = n % 3 + 1;
      std::this_thread::yield();
    }
  });
  for (auto& t : threads) t.join();
  stop = true;
  knob.join();
  fastlstm::set_num_threads(2);
  MT_CHECK(mismatches.load() == 0);
}

// one stream per thread over one model; streams and predict side by side
void test_streams() {
  const Model m = Model::load(mt::data_path("seq_stream"));
  const int64_t B = 2, T = 6, F = m.input_size(), U = m.output_size();
  const std::vector<float> x = random_floats(size_t(B * T * F), 2);
  // what one stream gives alone, step by step
  std::vector<float> want(size_t(T * B * U));
  {
    Model::Stream s(m, B);
    std::vector<float> xt(size_t(B * F));
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t b = 0; b < B; ++b)
        std::copy_n(&x[size_t((b * T + t) * F)], F, &xt[size_t(b * F)]);
      s.step(xt.data(), &want[size_t(t * B * U)]);
    }
  }
  std::vector<float> pwant;
  m.predict(x.data(), B, T, F, nullptr, pwant);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k]() {
      if (k == 3) {  // a predicting neighbour
        std::vector<float> y;
        for (int r = 0; r < 10; ++r) {
          m.predict(x.data(), B, T, F, nullptr, y);
          if (y != pwant) ++mismatches;
        }
        return;
      }
      Model::Stream s(m, B);
      std::vector<float> xt(size_t(B * F)), y(size_t(B * U));
      for (int r = 0; r < 5; ++r) {
        s.reset();
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t b = 0; b < B; ++b)
            std::copy_n(&x[size_t((b * T + t) * F)], F, &xt[size_t(b * F)]);
          s.step(xt.data(), y.data());
          if (!std::equal(y.begin(), y.end(), &want[size_t(t * B * U)])) ++mismatches;
        }
      }
    });
  for (auto& t : threads) t.join();
  MT_CHECK(mismatches.load() == 0);
}

// RNN objects are one caller's each; several of them may share one parameter buffer (read only)
void test_rnn_per_thread() {
  fastlstm::RNNConfig c;
  c.input_size = 5;
  c.hidden_size = 9;
  c.num_layers = 2;
  c.bidirectional = true;
  const std::vector<float> p = random_floats(size_t(fastlstm::num_params(c)), 3);
  const int64_t T = 6, B = 3, DS = 18, LD = 4;
  const std::vector<float> x = random_floats(size_t(T * B * c.input_size), 4);
  auto run = [&](fastlstm::RNN<float>& r, std::vector<float>& dx) {
    std::vector<float> out(size_t(T * B * DS)), hn(size_t(LD * B * 9)), cn(hn.size());
    fastlstm::ForwardArgs<float> in;
    in.params = p.data();
    in.x = x.data();
    in.train = true;
    r.forward({T, B, false}, in, {out.data(), hn.data(), cn.data()});
    const std::vector<float> d_out(out.size(), 1.0f);
    std::vector<float> dh0(hn.size()), dc0(cn.size()), dp(p.size());
    dx.assign(x.size(), 0.0f);
    fastlstm::BackwardArgs<float> bin;
    bin.d_output = d_out.data();
    r.backward(p.data(), bin, {dx.data(), dh0.data(), dc0.data(), dp.data()});
  };
  std::vector<float> want;
  {
    fastlstm::RNN<float> r(c);
    run(r, want);
  }
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int k = 0; k < 3; ++k)
    threads.emplace_back([&]() {
      fastlstm::RNN<float> r(c);
      std::vector<float> dx;
      for (int i = 0; i < 5; ++i) {
        run(r, dx);
        if (dx != want) ++mismatches;
      }
    });
  for (auto& t : threads) t.join();
  MT_CHECK(mismatches.load() == 0);
}

}  // namespace

int main() {
  const mt::TestCase tests[] = {{"predict_and_set_num_threads", test_predict_and_set_num_threads},
               {"streams", test_streams},
               {"rnn_per_thread", test_rnn_per_thread}};
  return mt::run_tests(tests);
}
