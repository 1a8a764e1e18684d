// C++ engine tests, no Python needed: golden values from PyTorch (tests/data/
// cpp_engine_fixture.txt, made by tests/data/make_cpp_engine_fixture.py), finite differences
// for what PyTorch lacks (peepholes, variable lengths), the stream against the full forward, and
// bad configurations. Usage: test_engine <path to cpp_engine_fixture.txt>
#include <fastlstm/fastlstm.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

int failures = 0;
int checks = 0;

void expect(bool ok, const std::string& what) {
  ++checks;
  if (!ok) {
    ++failures;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

template <typename T>
double max_rel_err(const std::vector<T>& got, const std::vector<double>& want) {
  if (got.size() != want.size()) return INFINITY;
  double scale = 1.0, err = 0.0;
  for (double w : want) scale = std::max(scale, std::abs(w));
  for (size_t i = 0; i < got.size(); ++i) err = std::max(err, std::abs(double(got[i]) - want[i]));
  return err / scale;
}

struct Case {
  std::string name;
  fastlstm::RNNConfig cfg;
  bool batch_first = false;
  int64_t T = 0, B = 0;
  std::map<std::string, std::vector<double>> a;
};

std::vector<Case> read_fixture(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot open fixture " + path);
  std::vector<Case> cases;
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string tag;
    in >> tag;
    if (tag == "case") {
      Case c;
      std::string cell;
      int bid, bf;
      in >> c.name >> cell >> c.cfg.input_size >> c.cfg.hidden_size >> c.cfg.num_layers >> bid >>
          c.cfg.proj_size >> bf >> c.T >> c.B;
      c.cfg.cell = cell == "lstm" ? fastlstm::CellType::LSTM : fastlstm::CellType::GRU;
      c.cfg.bidirectional = bid != 0;
      c.batch_first = bf != 0;
      cases.push_back(c);
    } else if (!tag.empty() && tag != "end") {
      size_t n;
      in >> n;
      std::vector<double> v(n);
      for (auto& x : v) in >> x;
      cases.back().a[tag] = v;
    }
  }
  return cases;
}

template <typename T>
std::vector<T> cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

template <typename T>
void run_golden(const Case& c, double tol) {
  const bool lstm = c.cfg.cell == fastlstm::CellType::LSTM;
  fastlstm::RNN<T> rnn(c.cfg);
  auto params = cast<T>(c.a.at("params"));
  expect(int64_t(params.size()) == fastlstm::num_params(c.cfg), c.name + ": layout size");
  auto x = cast<T>(c.a.at("x")), h0 = cast<T>(c.a.at("h0")), c0 = cast<T>(c.a.at("c0"));
  std::vector<T> out(c.a.at("output").size()), hn(c.a.at("h_n").size()),
      cn(c.a.at("c_n").size());
  fastlstm::ForwardArgs<T> in;
  in.params = params.data();
  in.x = x.data();
  in.h0 = h0.data();
  in.c0 = lstm ? c0.data() : nullptr;
  in.train = true;
  fastlstm::ForwardOutputs<T> o{out.data(), hn.data(), lstm ? cn.data() : nullptr};
  rnn.forward(fastlstm::SeqShape{c.T, c.B, c.batch_first}, in, o);
  const std::string tag = c.name + (sizeof(T) == 8 ? " f64" : " f32");
  expect(max_rel_err(out, c.a.at("output")) < tol, tag + ": output");
  expect(max_rel_err(hn, c.a.at("h_n")) < tol, tag + ": h_n");
  if (lstm) expect(max_rel_err(cn, c.a.at("c_n")) < tol, tag + ": c_n");

  auto d_out = cast<T>(c.a.at("d_output")), d_hn = cast<T>(c.a.at("d_h_n")),
       d_cn = cast<T>(c.a.at("d_c_n"));
  std::vector<T> dx(x.size()), dh0(h0.size()), dc0(c0.size()), dp(params.size());
  fastlstm::BackwardArgs<T> bin{d_out.data(), d_hn.data(), lstm ? d_cn.data() : nullptr};
  fastlstm::BackwardOutputs<T> bo{dx.data(), dh0.data(), lstm ? dc0.data() : nullptr, dp.data()};
  rnn.backward(params.data(), bin, bo);
  expect(max_rel_err(dx, c.a.at("d_x")) < tol, tag + ": d_x");
  expect(max_rel_err(dh0, c.a.at("d_h0")) < tol, tag + ": d_h0");
  if (lstm) expect(max_rel_err(dc0, c.a.at("d_c0")) < tol, tag + ": d_c0");
  expect(max_rel_err(dp, c.a.at("d_params")) < tol, tag + ": d_params");
}

// loss = sum(output * w_out) + sum(h_n * w_h) + sum(c_n * w_c), float64
struct Problem {
  fastlstm::RNNConfig cfg;
  fastlstm::SeqShape shape;
  std::vector<int64_t> lengths;
  std::vector<double> params, x, h0, c0, w_out, w_h, w_c;
  std::vector<double> rmask;  // [L*D, B, ng*S] recurrent dropout masks, or empty

  double loss() {
    fastlstm::RNN<double> rnn(cfg);
    std::vector<double> out(w_out.size()), hn(w_h.size()), cn(w_c.size());
    fastlstm::ForwardArgs<double> in;
    in.params = params.data();
    in.x = x.data();
    in.lengths = lengths.empty() ? nullptr : lengths.data();
    in.h0 = h0.data();
    in.c0 = c0.data();
    in.recurrent_mask = rmask.empty() ? nullptr : rmask.data();
    rnn.forward(shape, in, {out.data(), hn.data(), cn.data()});
    double l = 0;
    for (size_t i = 0; i < out.size(); ++i) l += out[i] * w_out[i];
    for (size_t i = 0; i < hn.size(); ++i) l += hn[i] * w_h[i];
    for (size_t i = 0; i < cn.size(); ++i) l += cn[i] * w_c[i];
    return l;
  }
};

void finite_differences(const std::string& name, fastlstm::RNNConfig cfg, bool batch_first,
                        std::vector<int64_t> lengths, bool recurrent_dropout = false) {
  std::mt19937_64 gen(7);
  std::normal_distribution<double> nd(0.0, 0.5);
  auto randv = [&](size_t n) {
    std::vector<double> v(n);
    for (auto& x : v) x = nd(gen);
    return v;
  };
  const int64_t T = 5, B = int64_t(lengths.empty() ? 2 : lengths.size());
  const int64_t LD = cfg.num_layers * cfg.num_directions(), S = cfg.state_size();
  Problem p;
  p.cfg = cfg;
  p.shape = {T, B, batch_first};
  p.lengths = lengths;
  p.params = randv(fastlstm::num_params(cfg));
  p.x = randv(T * B * cfg.input_size);
  p.h0 = randv(LD * B * S);
  p.c0 = randv(LD * B * cfg.hidden_size);
  p.w_out = randv(T * B * cfg.num_directions() * S);
  if (!lengths.empty())  // the output is zero past each length: its weight there is irrelevant
    for (int64_t t = 0; t < T; ++t)
      for (int64_t b = 0; b < B; ++b)
        if (t >= lengths[b])
          for (int64_t k = 0; k < cfg.num_directions() * S; ++k)
            p.w_out[((batch_first ? b * T + t : t * B + b) * cfg.num_directions() * S) + k] = 0;
  p.w_h = randv(LD * B * S);
  p.w_c = randv(LD * B * cfg.hidden_size);
  if (recurrent_dropout) {  // fixed masks: half the units of each gate's h_{t-1} dropped
    const int64_t ng = cfg.gate_size() / cfg.hidden_size;
    std::bernoulli_distribution keep(0.5);
    p.rmask.resize(LD * B * ng * S);
    for (auto& m : p.rmask) m = keep(gen) ? 2.0 : 0.0;
  }

  fastlstm::RNN<double> rnn(cfg);
  std::vector<double> out(p.w_out.size()), hn(p.w_h.size()), cn(p.w_c.size());
  fastlstm::ForwardArgs<double> in;
  in.params = p.params.data();
  in.x = p.x.data();
  in.lengths = lengths.empty() ? nullptr : lengths.data();
  in.h0 = p.h0.data();
  in.c0 = p.c0.data();
  in.recurrent_mask = p.rmask.empty() ? nullptr : p.rmask.data();
  in.train = true;
  rnn.forward(p.shape, in, {out.data(), hn.data(), cn.data()});
  std::vector<double> dx(p.x.size()), dh0(p.h0.size()), dc0(p.c0.size()), dp(p.params.size());
  rnn.backward(p.params.data(), {p.w_out.data(), p.w_h.data(), p.w_c.data()},
               {dx.data(), dh0.data(), dc0.data(), dp.data()});

  auto check = [&](std::vector<double>& v, const std::vector<double>& grad, const char* what) {
    double worst = 0;
    for (size_t i = 0; i < v.size(); ++i) {
      const double keep = v[i], eps = 1e-6;
      v[i] = keep + eps;
      const double lp = p.loss();
      v[i] = keep - eps;
      const double lm = p.loss();
      v[i] = keep;
      const double fd = (lp - lm) / (2 * eps);
      worst = std::max(worst, std::abs(fd - grad[i]) / (1.0 + std::abs(fd)));
    }
    expect(worst < 1e-6, name + ": finite differences of " + what + " (worst " +
                             std::to_string(worst) + ")");
  };
  if (recurrent_dropout) {  // the masks are applied (else the check would pass vacuously)
    const double masked = p.loss();
    std::vector<double> kept;
    kept.swap(p.rmask);
    const double plain = p.loss();
    kept.swap(p.rmask);
    expect(std::abs(masked - plain) > 1e-3, name + ": the recurrent masks change the loss");
  }
  check(p.params, dp, "params");
  check(p.x, dx, "x");
  check(p.h0, dh0, "h0");
  check(p.c0, dc0, "c0");
}

void stream_matches_forward() {
  fastlstm::RNNConfig cfg;
  cfg.input_size = 3;
  cfg.hidden_size = 9;
  cfg.num_layers = 2;
  cfg.peephole = true;
  cfg.proj_size = 4;
  const int64_t T = 6, B = 2;
  std::mt19937_64 gen(3);
  std::uniform_real_distribution<float> ud(-0.5f, 0.5f);
  std::vector<float> params(fastlstm::num_params(cfg)), x(T * B * 3);
  for (auto& v : params) v = ud(gen);
  for (auto& v : x) v = ud(gen);
  fastlstm::RNN<float> rnn(cfg);
  std::vector<float> out(T * B * 4), hn(2 * B * 4), cn(2 * B * 9);
  fastlstm::ForwardArgs<float> in;
  in.params = params.data();
  in.x = x.data();
  rnn.forward({T, B, false}, in, {out.data(), hn.data(), cn.data()});
  fastlstm::Stream<float> stream(cfg, params.data(), B);
  double err = 0;
  std::vector<float> y(B * 4);
  for (int64_t t = 0; t < T; ++t) {
    stream.step(x.data() + t * B * 3, y.data());
    for (int64_t i = 0; i < B * 4; ++i) err = std::max(err, double(std::abs(y[i] - out[t * B * 4 + i])));
  }
  expect(err == 0, "stream equals forward bit for bit (err " + std::to_string(err) + ")");
}

// NaN in, NaN out; +-Inf saturate (exp_f32 used to convert NaN to an integer: UB)
void non_finite_inputs() {
  fastlstm::RNNConfig c;
  c.input_size = 2;
  c.hidden_size = 3;
  for (int cell = 0; cell < 2; ++cell) {
    c.cell = cell ? fastlstm::CellType::GRU : fastlstm::CellType::LSTM;
    fastlstm::RNN<float> r(c);
    std::vector<float> p(fastlstm::num_params(c), 0.5f);
    const float inf = INFINITY;
    std::vector<float> x = {NAN, 1.0f, inf, -inf, -inf, 0.0f};  // T = 3, B = 1
    std::vector<float> out(3 * 3), hn(3), cn(3);
    fastlstm::ForwardArgs<float> in;
    in.params = p.data();
    in.x = x.data();
    r.forward({3, 1, false}, in, {out.data(), hn.data(), cell ? nullptr : cn.data()});
    expect(std::isnan(out[0]) && std::isnan(out[3]) && std::isnan(out[6]),
           "NaN input gives NaN output (and state) downstream");
    fastlstm::RNN<float> r2(c);
    x = {inf, inf, -inf, -inf, 1e30f, 1e30f};
    in.x = x.data();
    r2.forward({3, 1, false}, in, {out.data(), hn.data(), cell ? nullptr : cn.data()});
    bool finite = true;
    for (float v : out) finite = finite && std::isfinite(v) && std::abs(v) <= 1.0f;
    expect(finite, "+-Inf inputs saturate the gates: finite outputs in [-1, 1]");
  }
}

void bad_configs() {
  auto throws = [](std::function<void()> f, const std::string& needle) {
    try {
      f();
    } catch (const fastlstm::Error& e) {
      return std::string(e.what()).find(needle) != std::string::npos;
    }
    return false;
  };
  fastlstm::RNNConfig c;
  c.input_size = 3;
  c.hidden_size = 4;
  c.proj_size = 4;
  expect(throws([&] { fastlstm::RNN<float> r(c); }, "proj_size"), "proj_size >= hidden rejected");
  c.proj_size = 0;
  c.cell = fastlstm::CellType::GRU;
  c.peephole = true;
  expect(throws([&] { fastlstm::RNN<float> r(c); }, "peephole"), "GRU peephole rejected");
  c.peephole = false;
  c.hidden_size = 0;
  expect(throws([&] { fastlstm::RNN<float> r(c); }, "hidden_size"), "hidden_size 0 rejected");
  // sizes are bounded so no product overflows int64 (before: 2^62 + 1 gave num_params 28)
  c.cell = fastlstm::CellType::LSTM;
  c.hidden_size = (int64_t(1) << 62) + 1;
  expect(throws([&] { fastlstm::num_params(c); }, "hidden_size must be in [1, 16777216]"),
         "huge hidden_size rejected");
  c.hidden_size = 4;
  c.input_size = fastlstm::kMaxSize + 1;
  expect(throws([&] { fastlstm::RNN<float> r(c); }, "input_size"), "huge input_size rejected");
  c.input_size = 3;
  c.num_layers = 1000000;
  expect(throws([&] { fastlstm::RNN<float> r(c); }, "num_layers must be in [1, 1024]"),
         "num_layers 10^6 rejected");
  c.num_layers = fastlstm::kMaxLayers;
  c.hidden_size = fastlstm::kMaxSize;
  c.input_size = fastlstm::kMaxSize;
  c.bidirectional = true;
  expect(throws([&] { fastlstm::num_params(c); }, "parameters"),
         "largest sizes: the parameter count is refused, not wrapped");
  c = fastlstm::RNNConfig{};
  c.input_size = 3;
  c.hidden_size = 4;
  expect(fastlstm::num_params(c) == 4 * 4 * (3 + 4) + 2 * 16, "num_params of a small LSTM");
  c.hidden_size = 4;
  fastlstm::RNN<float> r(c);
  std::vector<float> p(fastlstm::num_params(c)), x(2 * 1 * 3), out(2 * 4), hn(4);
  std::vector<int64_t> len{3};
  fastlstm::ForwardArgs<float> in;
  in.params = p.data();
  in.x = x.data();
  in.lengths = len.data();
  expect(throws([&] { r.forward({2, 1, false}, in, {out.data(), hn.data(), nullptr}); }, "lengths"),
         "length > T rejected");
  std::vector<float> g(p.size());
  expect(throws([&] { r.backward(p.data(), {}, {x.data(), nullptr, nullptr, g.data()}); },
                "forward"),
         "backward before forward rejected");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::printf("usage: %s cpp_engine_fixture.txt\n", argv[0]);
    return 2;
  }
  auto cases = read_fixture(argv[1]);
  expect(cases.size() == 3, "fixture has 3 cases");
  for (const auto& c : cases) {
    run_golden<double>(c, 1e-10);
    run_golden<float>(c, 1e-5);
  }
  fastlstm::RNNConfig c;
  c.input_size = 3;
  c.hidden_size = 5;
  c.peephole = true;
  finite_differences("peephole lstm", c, false, {});
  c.num_layers = 2;
  c.bidirectional = true;
  c.proj_size = 2;
  finite_differences("peephole+proj stacked bidir, lengths", c, true, {3, 5, 1});
  fastlstm::RNNConfig g;
  g.cell = fastlstm::CellType::GRU;
  g.input_size = 2;
  g.hidden_size = 3;
  g.bidirectional = true;
  finite_differences("gru bidir, lengths", g, false, {2, 5, 4});
  finite_differences("gru bidir, lengths, recurrent dropout", g, false, {2, 5, 4}, true);
  finite_differences("peephole+proj stacked bidir, lengths, recurrent dropout", c, true,
                     {3, 5, 1}, true);
  stream_matches_forward();
  bad_configs();
  non_finite_inputs();
  std::printf("%d passed, %d failed\n", checks - failures, failures);
  return failures == 0 ? 0 : 1;
}
