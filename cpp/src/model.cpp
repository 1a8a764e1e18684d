// Model files, running side: inference over a validated ModelSpec (read by model_reader.cpp;
// the format is in docs/model-format.md), in float32 through the public RNN<float>/Stream<float>
// engine, with pooled workspaces and streams.
#include "fastlstm/model.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <sstream>

#include "fastlstm/rnn.hpp"
#include "kernels/gemm.hpp"
#include "model_spec.hpp"

namespace fastlstm {

using detail::Act;
using detail::Layer;
using detail::LayerKind;
using detail::Merge;
using detail::Workspace;
using detail::shape_str;
using detail::dense_forward;
using detail::embed;

// ============================================================================ inference
namespace {

inline float merge2(Merge m, float a, float b) {
  switch (m) {
    case Merge::Sum: return a + b;
    case Merge::Mul: return a * b;
    case Merge::Ave: return 0.5f * (a + b);
    case Merge::Concat: break;
  }
  return a;
}

}  // namespace

void detail::activate(Act act, int64_t rows, int64_t U, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    float* v = y + r * U;
    switch (act) {
      case Act::Linear: break;
      case Act::Relu:
        for (int64_t u = 0; u < U; ++u) v[u] = v[u] > 0.0f ? v[u] : 0.0f;
        break;
      case Act::Tanh:
        for (int64_t u = 0; u < U; ++u) v[u] = std::tanh(v[u]);
        break;
      case Act::Sigmoid:
        for (int64_t u = 0; u < U; ++u) v[u] = 1.0f / (1.0f + std::exp(-v[u]));
        break;
      case Act::Softmax: {
        float mx = v[0];
        for (int64_t u = 1; u < U; ++u) mx = std::max(mx, v[u]);
        float sum = 0.0f;
        for (int64_t u = 0; u < U; ++u) sum += (v[u] = std::exp(v[u] - mx));
        for (int64_t u = 0; u < U; ++u) v[u] /= sum;
        break;
      }
    }
  }
}

void detail::dense_forward(const Layer& L, int64_t rows, const float* x, float* y) {
  const int64_t K = L.in_dim, U = L.out_dim;
  detail::gemm_nn<float>(rows, U, K, x, K, L.kernel.data(), U, y, U, false);
  if (!L.bias.empty())
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t u = 0; u < U; ++u) y[r * U + u] += L.bias[u];
  activate(L.act, rows, U, y);
}

void detail::embed(const Layer& L, int64_t B, int64_t T, const int64_t* tok, float* y,
                   bool stream) {
  const int64_t E = L.out_dim;
  for (int64_t k = 0; k < B * T; ++k) {
    const int64_t t = tok[k];
    if (t < 0 || t >= L.vocab)
      throw Error((stream ? "tokens_t[" + std::to_string(k)
                          : "tokens[" + std::to_string(k / T) + ", " + std::to_string(k % T)) +
                  "] = " + std::to_string(t) + " is out of range: the Embedding's vocabulary " +
                  "is [0, " + std::to_string(L.vocab) + ")");
    std::copy_n(L.table.data() + t * E, E, y + k * E);
  }
}

void detail::recurrent_forward(const Layer& L, RNN<float>& rnn, Workspace& ws, int64_t B,
                               int64_t T, const float* x, const int64_t* lens, const float* h0,
                               const float* c0, std::vector<float>& y, float* c_n) {
  const RNNConfig& c = L.rnn;
  const int64_t I = c.input_size, D = c.num_directions(), S = c.state_size();
  const int64_t DS = D * S, top = (c.num_layers - 1) * D;
  const float* in = x;
  if (L.go_backwards) {
    // each sequence's valid steps in reverse, then zeros
    ws.rev.assign(static_cast<size_t>(B * T * I), 0.0f);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t n = lens ? lens[b] : T;
      for (int64_t s = 0; s < n; ++s)
        std::copy_n(x + (b * T + n - 1 - s) * I, I, ws.rev.data() + (b * T + s) * I);
    }
    in = ws.rev.data();
  }
  // the engine runs every sequence for at least one step: empty ones get one step and their
  // outputs are zeroed and their states reset to the initial ones afterwards
  const int64_t* eng_len = lens;
  bool any_empty = false;
  if (lens) {
    for (int64_t b = 0; b < B; ++b) any_empty |= lens[b] == 0;
    if (any_empty) {
      ws.eng_lengths.resize(B);
      for (int64_t b = 0; b < B; ++b) ws.eng_lengths[b] = std::max<int64_t>(lens[b], 1);
      eng_len = ws.eng_lengths.data();
    }
  }
  ws.seq.resize(static_cast<size_t>(B * T * DS));
  ws.hn.resize(static_cast<size_t>(c.num_layers * D * B * S));
  ForwardArgs<float> fa;
  fa.params = L.params.data();
  fa.x = in;
  fa.lengths = eng_len;
  fa.h0 = h0;
  fa.c0 = c0;
  ForwardOutputs<float> fo;
  fo.output = ws.seq.data();
  fo.h_n = ws.hn.data();
  fo.c_n = c_n;
  rnn.forward(SeqShape{T, B, true}, fa, fo);
  if (any_empty)
    for (int64_t b = 0; b < B; ++b)
      if (lens[b] == 0) {
        std::fill_n(ws.seq.data() + b * T * DS, T * DS, 0.0f);
        for (int64_t k = 0; k < c.num_layers * D; ++k) {
          float* h = ws.hn.data() + (k * B + b) * S;
          if (h0) std::copy_n(h0 + (k * B + b) * S, S, h);
          else std::fill_n(h, S, 0.0f);
          if (c_n) {
            float* cc = c_n + (k * B + b) * c.hidden_size;
            if (c0) std::copy_n(c0 + (k * B + b) * c.hidden_size, c.hidden_size, cc);
            else std::fill_n(cc, c.hidden_size, 0.0f);
          }
        }
      }
  if (L.return_sequences) {
    if (D == 1 || L.merge == Merge::Concat) {
      std::swap(y, ws.seq);  // the output is the engine's, as it is
    } else {
      y.resize(static_cast<size_t>(B * T * S));
      for (int64_t r = 0; r < B * T; ++r)
        for (int64_t u = 0; u < S; ++u)
          y[r * S + u] = merge2(L.merge, ws.seq[r * DS + u], ws.seq[r * DS + S + u]);
    }
  } else {
    y.resize(static_cast<size_t>(B * L.out_dim));
    const float* fwd = ws.hn.data() + top * B * S;
    const float* bwd = D == 2 ? fwd + B * S : nullptr;
    for (int64_t b = 0; b < B; ++b) {
      if (!bwd) {
        std::copy_n(fwd + b * S, S, y.data() + b * S);
      } else if (L.merge == Merge::Concat) {
        std::copy_n(fwd + b * S, S, y.data() + b * DS);
        std::copy_n(bwd + b * S, S, y.data() + b * DS + S);
      } else {
        for (int64_t u = 0; u < S; ++u)
          y[b * S + u] = merge2(L.merge, fwd[b * S + u], bwd[b * S + u]);
      }
    }
  }
}

namespace {

std::string index_str(int64_t flat, const std::vector<int64_t>& shape) {
  std::vector<int64_t> idx(shape.size());
  for (size_t k = shape.size(); k-- > 0;) {
    idx[k] = flat % shape[k];
    flat /= shape[k];
  }
  return shape_str(idx);
}

}  // namespace

std::vector<int64_t> Model::Impl::run(Workspace& ws, const float* x, const int64_t* tok,
                                      int64_t B, int64_t T, const int64_t* lengths,
                                      std::vector<float>& out) const {
  // A Sequential takes empty sequences (length 0: its recurrent layers return their initial
  // state, zeros); a bare module, like the engine, needs at least one step.
  const int64_t min_len = class_name == "Sequential" ? 0 : 1;
  if (lengths)
    for (int64_t b = 0; b < B; ++b)
      if (lengths[b] < min_len || lengths[b] > T)
        throw ShapeError("lengths[" + std::to_string(b) + "] = " + std::to_string(lengths[b]) +
                         " is out of range: every length must be in [" +
                         std::to_string(min_len) + ", T=" + std::to_string(T) + "]");
  if (ws.rnns.size() != layers.size()) ws.rnns.resize(layers.size());
  const int64_t* lens = lengths;
  bool packed_rows = false;  // an Embedding's mask moved real steps to the left
  const float* cur = x;
  bool seq = true;
  int which = -1;  // which ws.buf holds cur (-1: the caller's x)
  auto next_buf = [&](size_t n) {
    which = which == 0 ? 1 : 0;
    ws.buf[which].resize(n);
    return ws.buf[which].data();
  };
  for (size_t i = 0; i < layers.size(); ++i) {
    const Layer& L = layers[i];
    switch (L.kind) {
      case LayerKind::Dropout:
        break;
      case LayerKind::Embedding: {
        float* y = next_buf(static_cast<size_t>(B * T * L.out_dim));
        embed(L, B, T, tok, y, false);
        if (L.mask_zero) {
          // Keras's mask: every token 0 is padding (right, left or a gap); explicit lengths
          // can only shorten a row. Masked steps carry the state, so a row's real steps
          // packed to the left give the same final states: rows that are not right-padded
          // are packed, and a row's length is its count of real steps.
          ws.lengths.resize(B);
          const int64_t E = L.out_dim;
          for (int64_t b = 0; b < B; ++b) {
            const int64_t limit = lens ? lens[b] : T;
            int64_t k = 0;
            for (int64_t t = 0; t < limit; ++t) {
              if (tok[b * T + t] == 0) continue;
              if (k != t) {
                packed_rows = true;
                std::copy_n(y + (b * T + t) * E, E, y + (b * T + k) * E);
              }
              ++k;
            }
            ws.lengths[b] = k;
          }
          lens = ws.lengths.data();
        }
        cur = y;
        break;
      }
      case LayerKind::Recurrent: {
        if (!ws.rnns[i]) ws.rnns[i] = std::make_unique<RNN<float>>(L.rnn);
        next_buf(0);
        detail::recurrent_forward(L, *ws.rnns[i], ws, B, T, cur, lens, nullptr, nullptr,
                                  ws.buf[which], nullptr);
        if (!L.return_sequences) seq = false;
        cur = ws.buf[which].data();
        break;
      }
      case LayerKind::Dense: {
        const int64_t rows = seq ? B * T : B;
        float* y = next_buf(static_cast<size_t>(rows * L.out_dim));
        dense_forward(L, rows, cur, y);
        cur = y;
        break;
      }
    }
  }
  if (packed_rows && seq)
    throw ShapeError(
        "tokens with padding before a real token (left padding or a 0 inside a sequence) "
        "need a model whose output is one vector per sequence: this model's output is per "
        "time step, and its steps would not line up with Keras's (pad on the right)");
  std::vector<int64_t> shape = {B};
  if (seq) shape.push_back(T);
  shape.push_back(output_size);
  const int64_t n = seq ? B * T * output_size : B * output_size;
  out.assign(cur, cur + n);
  return shape;
}

// Why a pool and not a fresh RNN<float> + buffers per call: measured (1 thread, this machine)
// a fresh workspace costs ~1.4 us on a tiny model (B=1, T=5: 5.5 vs 4.1 us per call) and
// ~40 us on stream_b1 (17.0 ms, 0.25%); small, but the pool also keeps concurrent callers off
// the allocator. The mutex is held only to pop/push a pointer.
std::unique_ptr<Workspace> Model::Impl::acquire() const {
  {
    std::lock_guard<std::mutex> lock(pool_mutex);
    if (!pool.empty()) {
      std::unique_ptr<Workspace> ws = std::move(pool.back());
      pool.pop_back();
      return ws;
    }
  }
  return std::make_unique<Workspace>();
}

void Model::Impl::release(std::unique_ptr<Workspace> ws) const {
  std::lock_guard<std::mutex> lock(pool_mutex);
  pool.push_back(std::move(ws));
}


// predict on a functional model of one input [B, T, F] (or tokens [B, T]) and one output
std::vector<int64_t> Model::predict_graph(const float* x, const int64_t* tok, int64_t B,
                                          int64_t T, int64_t F, const int64_t* lengths,
                                          std::vector<float>& out) const {
  const Impl& m = *impl_;
  const auto& g = m.graph;
  if (g.inputs.size() != 1 || g.outputs.size() != 1 || g.inputs[0].shape.size() != (tok ? 1u : 2u))
    throw Error("predict: the functional model in '" + m.path + "' does not have one input [B, "
                "T, F] (or tokens [B, T]) and one output: use Model::run");
  if (lengths)
    throw Error("predict: lengths are not supported for a functional model (the C++ runner "
                "runs whole sequences): pass lengths=nullptr");
  Tensor t;
  t.shape = {B, T};
  if (tok) {
    t.tokens.assign(tok, tok + B * T);
  } else {
    t.shape.push_back(F);
    if (!x) throw Error("predict: x must not be null");
    t.values.assign(x, x + B * T * F);
  }
  std::vector<Tensor> y = run({t});
  out = std::move(y[0].values);
  return y[0].shape;
}

static void check_batch(int64_t B, int64_t T) {
  if (B < 1) throw ShapeError("predict: B must be >= 1, got " + std::to_string(B));
  if (T < 1) throw ShapeError("predict: T must be >= 1, got " + std::to_string(T));
}

std::vector<int64_t> Model::predict(const float* x, int64_t B, int64_t T, int64_t F,
                                    const int64_t* lengths, std::vector<float>& out) const {
  const Impl& m = *impl_;
  if (m.tokens)
    throw Error("predict: the model in '" + m.path + "' starts with an Embedding layer; pass "
                "int64 tokens [B, T], not floats");
  check_batch(B, T);
  if (m.is_graph) return predict_graph(x, nullptr, B, T, F, lengths, out);
  if (F != m.input_size)
    throw ShapeError("predict: x has F=" + std::to_string(F) + " features per step, but the "
                     "model in '" + m.path + "' expects " + std::to_string(m.input_size));
  if (!x) throw Error("predict: x must not be null");
  Impl::Lease pw(m);
  return m.run(*pw.ws, x, nullptr, B, T, lengths, out);
}

std::vector<int64_t> Model::predict(const int64_t* tokens, int64_t B, int64_t T,
                                    const int64_t* lengths, std::vector<float>& out) const {
  const Impl& m = *impl_;
  if (!m.tokens)
    throw Error("predict: the model in '" + m.path + "' takes float features [B, T, " +
                std::to_string(m.input_size) + "], not tokens (its first layer is not "
                "Embedding)");
  check_batch(B, T);
  if (!tokens) throw Error("predict: tokens must not be null");
  if (m.is_graph) return predict_graph(nullptr, tokens, B, T, 0, lengths, out);
  Impl::Lease pw(m);
  return m.run(*pw.ws, nullptr, tokens, B, T, lengths, out);
}

void Model::Impl::self_check() const {
  const std::string where = "model file '" + path + "'";
  if (!has_check)
    throw HeaderError(where + " has no self-check (__metadata__[\"fastlstm_selfcheck\"]) to "
                      "verify");
  std::vector<float> y;
  Lease pw(*this);
  const int64_t B = check_shape[0], T = check_shape[1];
  const int64_t* lens = check_len.empty() ? nullptr : check_len.data();
  try {
    run(*pw.ws, tokens ? nullptr : check_x.data(), tokens ? check_tok.data() : nullptr, B, T,
        lens, y);
  } catch (const Error& e) {
    throw SelfCheckError(where + ": the self-check input cannot be run: " + e.what());
  } catch (const std::bad_alloc&) {
    throw SelfCheckError(where + ": the self-check input is too large to run");
  }
  // max|y - e| <= 1e-4 (1 + max|e|), as fastlstm.io's verify: loose enough for another
  // machine's SIMD path, far below what a wrongly mapped weight produces
  double scale = 0.0, worst_diff = 0.0;
  int64_t worst = -1, bad = 0;
  for (float e : check_y) scale = std::max(scale, std::fabs(double(e)));
  const double tol = 1e-4 * (1.0 + scale);
  for (size_t k = 0; k < y.size(); ++k) {
    const double diff = std::fabs(double(y[k]) - double(check_y[k]));
    if (!(diff <= tol)) {
      ++bad;
      if (worst < 0 || std::isnan(diff) || diff > worst_diff) {
        worst_diff = std::isnan(diff) ? INFINITY : diff;
        worst = static_cast<int64_t>(k);
      }
    }
  }
  if (bad) {
    std::ostringstream os;
    os.precision(9);
    os << where << ": self-check failed: " << bad << " of " << y.size()
       << " outputs differ from \"" << check_y_name << "\" by more than " << tol
       << " (1e-4 x (1 + max|expected|)); worst at " << index_str(worst, check_y_shape)
       << ": computed " << y[worst] << ", stored " << check_y[worst]
       << " (the model does not compute what it computed when saved)";
    throw SelfCheckError(os.str());
  }
}

void Model::verify() const { impl_->self_check(); }
bool Model::has_self_check() const { return impl_->has_check; }
const std::string& Model::path() const { return impl_->path; }
const std::string& Model::class_name() const { return impl_->class_name; }
bool Model::takes_tokens() const { return impl_->tokens; }
int64_t Model::input_size() const { return impl_->input_size; }
int64_t Model::output_size() const { return impl_->output_size; }
bool Model::returns_sequences() const { return impl_->out_seq; }

bool Model::can_stream() const {
  if (impl_->is_graph) return false;
  for (const Layer& L : impl_->layers)
    if (L.kind == LayerKind::Recurrent && (L.rnn.bidirectional || L.go_backwards)) return false;
  return true;
}

Precision Model::precision() const {
  for (const Layer& L : impl_->layers)
    if (L.kind == LayerKind::Recurrent) return L.rnn.precision;
  return Precision::Float32;
}

void Model::release_workspaces() const {
  std::lock_guard<std::mutex> lock(impl_->pool_mutex);
  impl_->pool.clear();
}

std::string Model::summary() const {
  const Impl& m = *impl_;
  std::ostringstream os;
  os << m.class_name << " from '" << m.path << "'\n";
  if (m.is_graph) {  // one line per layer call: what it reads -> its output shapes
    auto ref = [&](const detail::GraphRef& r) {
      return r.node < 0 ? "input " + m.graph.inputs[size_t(-1 - r.node)].name
                        : "#" + std::to_string(r.node) + "." + std::to_string(r.out);
    };
    for (size_t k = 0; k < m.graph.nodes.size(); ++k) {
      const detail::GraphNode& n = m.graph.nodes[k];
      os << "  #" << k << " " << m.layers[n.layer].label << ": ";
      for (size_t j = 0; j < n.inputs.size(); ++j) os << (j ? ", " : "") << ref(n.inputs[j]);
      os << " ->";
      for (const auto& s : n.out_shapes) os << " " << shape_str(s);
      os << "\n";
    }
    for (size_t k = 0; k < m.graph.outputs.size(); ++k)
      os << "  output " << m.graph.outputs[k].name << " = " << ref(m.graph.output_refs[k]) << "\n";
    return os.str();
  }
  for (const Layer& L : m.layers) {
    os << "  " << L.label << ": ";
    const char* in_shape = L.in_seq ? "[B, T, " : "[B, ";
    const char* out_shape = L.out_seq ? "[B, T, " : "[B, ";
    if (L.kind == LayerKind::Embedding) os << "[B, T] tokens < " << L.vocab;
    else os << in_shape << L.in_dim << "]";
    os << " -> " << out_shape << L.out_dim << "]";
    if (L.kind == LayerKind::Recurrent) {
      os << (L.rnn.cell == CellType::LSTM ? " LSTM" : " GRU")
         << detail::describe_config(L.rnn).substr(1);
      if (L.rnn.bidirectional)
        os << ", merge=" << (L.merge == Merge::Concat ? "concat" : L.merge == Merge::Sum ? "sum"
                             : L.merge == Merge::Mul ? "mul" : "ave");
      if (L.go_backwards) os << ", go_backwards";
      if (L.rnn.precision != Precision::Float32) os << ", " << precision_name(L.rnn.precision);
    }
    os << "\n";
  }
  return os.str();
}

// ============================================================================ stream
struct Model::Stream::Impl {
  std::shared_ptr<const Model::Impl> model;
  int64_t B = 1;
  bool tokens = false;  // the model's, read by every step
  std::vector<std::unique_ptr<fastlstm::Stream<float>>> streams;  // [layers]
  std::vector<float> buf[2];                                      // [B, widest layer]
  size_t end = 0;  // past the last layer that computes (not Dropout), which writes y_t itself

  void run(const float* x_t, const int64_t* tok, float* y_t) {
    const Model::Impl& m = *model;
    const float* cur = x_t;
    int which = -1;
    for (size_t i = 0; i < end; ++i) {
      const Layer& L = m.layers[i];
      if (L.kind == LayerKind::Dropout) continue;
      which = which == 0 ? 1 : 0;
      // the last layer straight into y_t (unless it reads y_t: a caller's x_t == y_t)
      float* y = i + 1 == end && cur != y_t ? y_t : buf[which].data();
      if (L.kind == LayerKind::Embedding) embed(L, B, 1, tok, y, true);
      else if (L.kind == LayerKind::Recurrent) streams[i]->step(cur, y);
      else dense_forward(L, B, cur, y);
      cur = y;
    }
    if (cur != y_t) std::copy_n(cur, B * m.output_size, y_t);
  }
};

Model::Stream::Stream(const Model& model, int64_t batch) {
  if (batch < 1) throw Error("Model::Stream: batch must be >= 1, got " + std::to_string(batch));
  if (model.class_name() == "Model")
    throw Error("Model::Stream: the model in '" + model.path() + "' is a functional model: "
                "run it step by step with Model::run, its states as inputs and outputs");
  if (!model.can_stream())
    throw Error("Model::Stream: the model in '" + model.path() + "' has a bidirectional or "
                "go_backwards layer, which needs whole sequences: use predict");
  impl_ = std::make_unique<Impl>();
  impl_->model = model.impl_;
  impl_->B = batch;
  const Model::Impl& m = *model.impl_;
  impl_->tokens = m.tokens;
  for (size_t i = 0; i < m.layers.size(); ++i)
    if (m.layers[i].kind != LayerKind::Dropout) impl_->end = i + 1;
  int64_t widest = m.tokens ? 1 : m.input_size;  // buffers hold layer outputs, not tokens
  impl_->streams.resize(m.layers.size());
  for (size_t i = 0; i < m.layers.size(); ++i) {
    const Layer& L = m.layers[i];
    widest = std::max(widest, L.out_dim);
    if (L.kind == LayerKind::Recurrent)
      impl_->streams[i] = std::make_unique<fastlstm::Stream<float>>(L.rnn, L.params.data(), batch);
  }
  for (auto& b : impl_->buf) b.assign(static_cast<size_t>(batch * widest), 0.0f);
  // one warm-up step sizes every workspace (Eigen's included), so later steps allocate nothing
  std::vector<float> y(static_cast<size_t>(batch * m.output_size));
  if (m.tokens) {
    std::vector<int64_t> tok(static_cast<size_t>(batch), 0);
    impl_->run(nullptr, tok.data(), y.data());
  } else {
    std::vector<float> x(static_cast<size_t>(batch * m.input_size), 0.0f);
    impl_->run(x.data(), nullptr, y.data());
  }
  reset();
}

Model::Stream::~Stream() = default;
Model::Stream::Stream(Stream&&) noexcept = default;
Model::Stream& Model::Stream::operator=(Stream&&) noexcept = default;

void Model::Stream::step(const float* x_t, float* y_t) {
  if (impl_->tokens)
    throw Error("Model::Stream::step: this model starts with an Embedding layer; pass int64 "
                "tokens [B]");
  impl_->run(x_t, nullptr, y_t);
}

void Model::Stream::step(const int64_t* tokens_t, float* y_t) {
  if (!impl_->tokens)
    throw Error("Model::Stream::step: this model takes float features [B, " +
                std::to_string(impl_->model->input_size) + "], not tokens");
  impl_->run(nullptr, tokens_t, y_t);
}

void Model::Stream::reset() {
  for (auto& s : impl_->streams)
    if (s) s->reset();
}

int64_t Model::Stream::batch() const { return impl_->B; }
int64_t Model::Stream::input_size() const { return impl_->model->input_size; }
int64_t Model::Stream::output_size() const { return impl_->model->output_size; }

}  // namespace fastlstm
