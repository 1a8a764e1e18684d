// Functional models, running side: Model::run over the flat graph that model_graph.cpp built
// (nested models inlined), every layer as Python's layer computes at inference, in float32.
// Also Model::run and the input/output description for bare modules and Sequential models
// (one input, one output: predict without lengths).
#include <algorithm>
#include <cmath>

#include "fastlstm/model.hpp"
#include "fastlstm/rnn.hpp"
#include "model_spec.hpp"

namespace fastlstm {

using detail::Act;
using detail::GraphNode;
using detail::GraphRef;
using detail::Layer;
using detail::LayerKind;
using detail::Merge;
using detail::Workspace;
using detail::shape_text;
using detail::shapes_compatible;

namespace {

int64_t product(const std::vector<int64_t>& s, size_t from = 0, size_t to = SIZE_MAX) {
  to = std::min(to, s.size());
  int64_t n = 1;
  for (auto it = s.begin() + std::ptrdiff_t(std::min(from, to)); it != s.begin() + std::ptrdiff_t(to); ++it)
    n *= *it;
  return n;
}

}  // namespace

// ============================================================================ shapes
std::vector<std::vector<int64_t>> detail::graph_output_shapes(
    const Layer& L, const GraphNode& node, const std::vector<std::vector<int64_t>>& in) {
  auto fail = [&](const std::string& m) -> void { throw ShapeError(L.label + " " + m); };
  auto got = [&]() {
    std::string s;
    for (const auto& x : in) s += (s.empty() ? "" : ", ") + shape_text(x);
    return "got " + s;
  };
  const size_t n = in.size();
  if (n == 0) fail("is called on no input");
  const bool one = n == 1;
  switch (L.kind) {
    case LayerKind::Embedding:
      if (!one || in[0].size() != 1) fail("needs one input [batch, time] of token ids, " + got());
      return {{in[0][0], L.out_dim}};
    case LayerKind::Recurrent: {
      const RNNConfig& c = L.rnn;
      const int64_t D = c.num_directions(), H = c.hidden_size;
      const size_t states = size_t((c.cell == CellType::LSTM ? 2 : 1) * D);
      if (in[0].size() != 2 || in[0][1] != L.in_dim)
        fail("needs input [batch, time, " + std::to_string(L.in_dim) + "], " + got());
      if (n != 1 && n != 1 + states)
        fail("takes its input and " + std::to_string(states) + " initial state(s), " + got());
      for (size_t k = 1; k < n; ++k)
        if (!shapes_compatible(in[k], {H}))
          fail("initial state " + std::to_string(k - 1) + " must have shape (None, " +
               std::to_string(H) + "), " + got());
      std::vector<std::vector<int64_t>> out;
      if (L.return_sequences) out.push_back({in[0][0], L.out_dim});
      else out.push_back({L.out_dim});
      if (L.return_state)
        for (size_t k = 0; k < states; ++k) out.push_back({H});
      return out;
    }
    case LayerKind::Dense: {
      if (!one || in[0].empty() || in[0].back() != L.in_dim)
        fail("needs input [batch, ..., " + std::to_string(L.in_dim) + "], " + got());
      auto s = in[0];
      s.back() = L.out_dim;
      return {s};
    }
    case LayerKind::Dropout:
    case LayerKind::Activation:
      if (!one) fail("takes one input, " + got());
      return {in[0]};
    case LayerKind::RepeatVector:
      if (!one || in[0].size() != 1) fail("needs input [batch, features], " + got());
      return {{L.repeat, in[0][0]}};
    case LayerKind::Merge: {
      if (n < 2) fail("needs a list of at least 2 inputs, " + got());
      std::vector<int64_t> out = in[0];
      if (L.merge != Merge::Concat) {
        for (size_t k = 1; k < n; ++k) {
          if (!shapes_compatible(in[k], out)) fail("needs inputs of one shape, " + got());
          for (size_t d = 0; d < out.size(); ++d) out[d] = std::max(out[d], in[k][d]);
        }
        return {out};
      }
      const int64_t rank = static_cast<int64_t>(in[0].size()) + 1;
      const int64_t ax = L.axis >= 0 ? L.axis : rank + L.axis;
      if (ax < 1 || ax >= rank)
        fail("axis " + std::to_string(L.axis) + " is out of range for inputs of rank " +
             std::to_string(rank) + " (the batch axis cannot be joined)");
      const size_t a = size_t(ax - 1);
      int64_t size = 0;
      for (size_t k = 0; k < n; ++k) {
        if (in[k].size() != in[0].size())
          fail("needs inputs of one shape except on axis " + std::to_string(L.axis) + ", " + got());
        for (size_t d = 0; d < out.size(); ++d) {
          if (d == a) continue;
          if (in[k][d] >= 0 && out[d] >= 0 && in[k][d] != out[d])
            fail("needs inputs of one shape except on axis " + std::to_string(L.axis) + ", " +
                 got());
          out[d] = std::max(out[d], in[k][d]);
        }
        size = size < 0 || in[k][a] < 0 ? -1 : size + in[k][a];
      }
      out[a] = size;
      return {out};
    }
    case LayerKind::Flatten:
    case LayerKind::Reshape: {
      if (!one) fail("takes one input, " + got());
      for (int64_t d : in[0])
        if (d < 0) fail("needs every axis but the batch known, " + got());
      const int64_t total = product(in[0]);
      if (L.kind == LayerKind::Flatten) return {{total}};
      int64_t known = 1;
      for (int64_t d : L.target_shape)
        if (d != -1) known *= d;
      std::vector<int64_t> s = L.target_shape;
      for (int64_t& d : s)
        if (d == -1) {
          if (total % known) fail("cannot reshape " + shape_text(in[0]) + " into its target");
          d = total / known;
        }
      if (product(s) != total)
        fail("cannot reshape " + shape_text(in[0]) + " (" + std::to_string(total) +
             " values) into its target shape");
      return {s};
    }
    case LayerKind::Attention: {
      if (n != 2 && n != 3) fail("is called on [query, value] or [query, value, key], " + got());
      const auto& q = in[0];
      const auto& v = in[1];
      const auto& k = n == 3 ? in[2] : in[1];
      if (q.size() != 2 || v.size() != 2 || k.size() != 2)
        fail("needs query, value and key [batch, time, dim], " + got());
      if (q[1] != k[1] || (k[0] >= 0 && v[0] >= 0 && k[0] != v[0]))
        fail("needs query and key with the same last axis and key and value with the same "
             "time axis, " + got());
      if (L.additive && L.use_scale && q[1] != L.in_dim)
        fail("has a scale of " + std::to_string(L.in_dim) + " features, " + got());
      std::vector<std::vector<int64_t>> out = {{q[0], v[1]}};
      if (node.scores) out.push_back({q[0], v[0]});
      return out;
    }
  }
  fail("has an unknown kind");
  return {};
}

// ============================================================================ running
namespace {

// One recurrent layer call: x [B, T, I] (+ initial states, each [B, S] / [B, H]: [h, c] per
// direction for an LSTM, [h] for a GRU) -> the output and, with return_state, the states.
void recurrent_call(const Layer& L, RNN<float>& rnn, Workspace& ws, int64_t B, int64_t T,
                    const float* x, const std::vector<const Tensor*>& states,
                    std::vector<Tensor>& out) {
  const RNNConfig& c = L.rnn;
  const int64_t D = c.num_directions(), S = c.state_size(), H = c.hidden_size;
  const bool lstm = c.cell == CellType::LSTM;
  const size_t per = lstm ? 2 : 1;
  std::vector<float> h0, c0, cn(lstm ? size_t(D * B * H) : 0);
  if (!states.empty()) {  // -> h0 [D, B, S], c0 [D, B, H]
    h0.resize(size_t(D * B * S));
    if (lstm) c0.resize(size_t(D * B * H));
    for (int64_t d = 0; d < D; ++d) {
      std::copy_n(states[size_t(d) * per]->values.data(), B * S, h0.data() + d * B * S);
      if (lstm)
        std::copy_n(states[size_t(d) * per + 1]->values.data(), B * H, c0.data() + d * B * H);
    }
  }
  detail::recurrent_forward(L, rnn, ws, B, T, x, nullptr, h0.empty() ? nullptr : h0.data(),
                            c0.empty() ? nullptr : c0.data(), out[0].values,
                            lstm ? cn.data() : nullptr);
  if (!L.return_state) return;
  for (int64_t d = 0; d < D; ++d) {
    Tensor& h = out[1 + size_t(d) * per];
    h.values.assign(ws.hn.begin() + d * B * S, ws.hn.begin() + (d + 1) * B * S);
    if (lstm) out[2 + size_t(d) * per].values.assign(cn.begin() + d * B * H, cn.begin() + (d + 1) * B * H);
  }
}

// Keras's Attention / AdditiveAttention: q [B, Tq, Dq], v [B, Tv, Dv], k [B, Tv, Dq]
void attention_call(const Layer& L, const GraphNode& node, const Tensor& q, const Tensor& v,
                    const Tensor& k, std::vector<Tensor>& out) {
  const int64_t B = q.shape[0], Tq = q.shape[1], Dq = q.shape[2], Tv = v.shape[1],
                Dv = v.shape[2];
  Tensor& y = out[0];
  y.shape = {B, Tq, Dv};
  y.values.assign(size_t(B * Tq * Dv), 0.0f);
  std::vector<float> w(static_cast<size_t>(Tv));
  if (node.scores) {
    out[1].shape = {B, Tq, Tv};
    out[1].values.resize(size_t(B * Tq * Tv));
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < Tq; ++i) {
      const float* qi = q.values.data() + (b * Tq + i) * Dq;
      for (int64_t j = 0; j < Tv; ++j) {
        const float* kj = k.values.data() + (b * Tv + j) * Dq;
        float s = 0.0f;
        if (!L.additive) {
          for (int64_t d = 0; d < Dq; ++d) s += qi[d] * kj[d];
          if (L.use_scale) s *= L.scale[0];
        } else {
          for (int64_t d = 0; d < Dq; ++d)
            s += (L.use_scale ? L.scale[size_t(d)] : 1.0f) * std::tanh(qi[d] + kj[d]);
        }
        if (node.causal && j > i) s -= 1.0e9f;  // Keras's rule for a masked step
        w[size_t(j)] = s;
      }
      detail::activate(Act::Softmax, 1, Tv, w.data());
      float* yi = y.values.data() + (b * Tq + i) * Dv;
      for (int64_t j = 0; j < Tv; ++j) {
        const float* vj = v.values.data() + (b * Tv + j) * Dv;
        for (int64_t d = 0; d < Dv; ++d) yi[d] += w[size_t(j)] * vj[d];
      }
      if (node.scores) std::copy(w.begin(), w.end(), out[1].values.begin() + (b * Tq + i) * Tv);
    }
}

}  // namespace

std::vector<Tensor> Model::Impl::run_graph(Workspace& ws, const std::vector<Tensor>& inputs) const {
  const detail::Graph& g = graph;
  if (inputs.size() != g.inputs.size())
    throw ShapeError("run: the model in '" + path + "' takes " + std::to_string(g.inputs.size()) +
                     " input(s), got " + std::to_string(inputs.size()));
  int64_t B = -1;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Tensor& t = inputs[k];
    const detail::GraphIO& io = g.inputs[k];
    const std::string what = "run: input " + std::to_string(k) + " (\"" + io.name + "\")";
    std::vector<int64_t> per(t.shape.begin() + (t.shape.empty() ? 0 : 1), t.shape.end());
    bool ok = !t.shape.empty() && shapes_compatible(per, io.shape);
    int64_t total = 1;  // no overflow: at most 2^62 values claimed
    for (int64_t d : t.shape) {
      ok = ok && d >= 1 && d <= (int64_t(1) << 62) / total;
      if (ok) total *= d;
    }
    if (!ok)
      throw ShapeError(what + " must have shape [B" + shape_text(io.shape).substr(5) +
                       " (B and every size >= 1, None: any), got " + detail::shape_str(t.shape));
    if (B < 0) B = t.shape[0];
    if (t.shape[0] != B)
      throw ShapeError(what + " has batch size " + std::to_string(t.shape[0]) + ", input 0 has " +
                       std::to_string(B) + " (every input needs the same)");
    const int64_t n = product(t.shape);
    const size_t have = io.tokens ? t.tokens.size() : t.values.size();
    if (static_cast<int64_t>(have) != n)
      throw ShapeError(what + " holds " + std::to_string(have) + " " +
                       (io.tokens ? "token ids (tokens)" : "floats (values)") + ", its shape " +
                       detail::shape_str(t.shape) + " needs " + std::to_string(n));
  }
  if (ws.rnns.size() != layers.size()) ws.rnns.resize(layers.size());
  std::vector<std::vector<Tensor>> vals(g.nodes.size());
  auto get = [&](const GraphRef& r) -> const Tensor& {
    return r.node < 0 ? inputs[size_t(-1 - r.node)] : vals[size_t(r.node)][size_t(r.out)];
  };
  for (size_t ni = 0; ni < g.nodes.size(); ++ni) {
    const GraphNode& node = g.nodes[ni];
    const Layer& L = layers[node.layer];
    std::vector<const Tensor*> in;
    std::vector<std::vector<int64_t>> shapes;
    for (const GraphRef& r : node.inputs) {
      in.push_back(&get(r));
      shapes.emplace_back(in.back()->shape.begin() + 1, in.back()->shape.end());
    }
    const auto out_shapes = detail::graph_output_shapes(L, node, shapes);
    std::vector<Tensor>& out = vals[ni];
    out.resize(out_shapes.size());
    for (size_t j = 0; j < out.size(); ++j) {
      out[j].shape = {B};
      out[j].shape.insert(out[j].shape.end(), out_shapes[j].begin(), out_shapes[j].end());
    }
    const Tensor& x = *in[0];
    const std::vector<float>& xv = x.values;
    Tensor& y = out[0];
    switch (L.kind) {
      case LayerKind::Embedding:
        y.values.resize(size_t(product(y.shape)));
        detail::embed(L, B, x.shape[1], x.tokens.data(), y.values.data(), false);
        break;
      case LayerKind::Recurrent: {
        if (!ws.rnns[node.layer]) ws.rnns[node.layer] = std::make_unique<RNN<float>>(L.rnn);
        std::vector<const Tensor*> states(in.begin() + 1, in.end());
        recurrent_call(L, *ws.rnns[node.layer], ws, B, x.shape[1], xv.data(), states, out);
        break;
      }
      case LayerKind::Dense:
        y.values.resize(size_t(product(y.shape)));
        detail::dense_forward(L, product(x.shape) / L.in_dim, xv.data(), y.values.data());
        break;
      case LayerKind::Dropout:
      case LayerKind::Flatten:
      case LayerKind::Reshape:
        y.values = xv;
        break;
      case LayerKind::Activation:
        y.values = xv;
        detail::activate(L.act, product(x.shape) / x.shape.back(), x.shape.back(), y.values.data());
        break;
      case LayerKind::RepeatVector: {
        const int64_t F = x.shape[1];
        y.values.resize(size_t(B * L.repeat * F));
        for (int64_t b = 0; b < B; ++b)
          for (int64_t t = 0; t < L.repeat; ++t)
            std::copy_n(xv.data() + b * F, F, y.values.data() + (b * L.repeat + t) * F);
        break;
      }
      case LayerKind::Merge: {
        if (L.merge != Merge::Concat) {
          y.values = xv;
          for (size_t k = 1; k < in.size(); ++k) {
            const std::vector<float>& o = in[k]->values;
            for (size_t e = 0; e < o.size(); ++e)
              y.values[e] = L.merge == Merge::Mul ? y.values[e] * o[e] : y.values[e] + o[e];
          }
          if (L.merge == Merge::Ave)
            for (float& e : y.values) e /= static_cast<float>(in.size());
          break;
        }
        // [outer, chunk_k] per input -> [outer, sum of chunks]
        const size_t ax = size_t(L.axis >= 0 ? L.axis : int64_t(y.shape.size()) + L.axis);
        const int64_t outer = product(y.shape, 0, ax);
        y.values.resize(size_t(product(y.shape)));
        float* dst = y.values.data();
        for (int64_t o = 0; o < outer; ++o)
          for (const Tensor* t : in) {
            const int64_t chunk = product(t->shape, ax);
            dst = std::copy_n(t->values.data() + o * chunk, chunk, dst);
          }
        break;
      }
      case LayerKind::Attention:
        attention_call(L, node, x, *in[1], in.size() == 3 ? *in[2] : *in[1], out);
        break;
    }
  }
  std::vector<Tensor> result;
  for (const GraphRef& r : g.output_refs) result.push_back(get(r));
  return result;
}

// ============================================================================ Model
namespace {
const std::string kInput = "input", kOutput = "output";
}

std::vector<Tensor> Model::run(const std::vector<Tensor>& inputs) const {
  const Impl& m = *impl_;
  if (m.is_graph) {
    Impl::Lease pw(m);
    return m.run_graph(*pw.ws, inputs);
  }
  if (inputs.size() != 1)
    throw ShapeError("run: the model in '" + m.path + "' takes 1 input, got " +
                     std::to_string(inputs.size()));
  const Tensor& t = inputs[0];
  const size_t rank = m.tokens ? 2 : 3;
  bool ok = t.shape.size() == rank;
  for (int64_t d : t.shape) ok = ok && d >= 1;
  if (!ok || (!m.tokens && t.shape[2] != m.input_size))
    throw ShapeError("run: input 0 (\"input\") must have shape " +
                     std::string(m.tokens ? "[B, T]" : "[B, T, " + std::to_string(m.input_size) + "]") +
                     ", got " + detail::shape_str(t.shape));
  const size_t n = size_t(product(t.shape));
  if ((m.tokens ? t.tokens.size() : t.values.size()) != n)
    throw ShapeError("run: input 0 (\"input\") needs " + std::to_string(n) +
                     (m.tokens ? " token ids (tokens)" : " floats (values)") + " for its shape " +
                     detail::shape_str(t.shape));
  Tensor y;
  y.shape = m.tokens ? predict(t.tokens.data(), t.shape[0], t.shape[1], nullptr, y.values)
                     : predict(t.values.data(), t.shape[0], t.shape[1], t.shape[2], nullptr, y.values);
  return {std::move(y)};
}

std::map<std::string, Tensor> Model::run_by_name(const std::map<std::string, Tensor>& inputs) const {
  std::vector<Tensor> in;
  for (size_t k = 0; k < num_inputs(); ++k) {
    auto it = inputs.find(input_name(k));
    if (it == inputs.end())
      throw ShapeError("run: input \"" + input_name(k) + "\" is missing");
    in.push_back(it->second);
  }
  for (const auto& kv : inputs) {
    bool known = false;
    for (size_t k = 0; k < num_inputs(); ++k) known = known || input_name(k) == kv.first;
    if (!known) throw ShapeError("run: the model has no input named \"" + kv.first + "\"");
  }
  std::vector<Tensor> out = run(in);
  std::map<std::string, Tensor> named;
  for (size_t k = 0; k < out.size(); ++k) named[output_name(k)] = std::move(out[k]);
  return named;
}

size_t Model::num_inputs() const { return impl_->is_graph ? impl_->graph.inputs.size() : 1; }
size_t Model::num_outputs() const { return impl_->is_graph ? impl_->graph.outputs.size() : 1; }

static void check_index(size_t k, size_t n, const char* what) {
  if (k >= n)
    throw Error(std::string(what) + ": index " + std::to_string(k) + " is out of range (the model has " +
                std::to_string(n) + ")");
}

const std::string& Model::input_name(size_t k) const {
  check_index(k, num_inputs(), "input_name");
  return impl_->is_graph ? impl_->graph.inputs[k].name : kInput;
}
const std::string& Model::output_name(size_t k) const {
  check_index(k, num_outputs(), "output_name");
  return impl_->is_graph ? impl_->graph.outputs[k].name : kOutput;
}
std::vector<std::string> Model::input_names() const {
  std::vector<std::string> v;
  for (size_t k = 0; k < num_inputs(); ++k) v.push_back(input_name(k));
  return v;
}
std::vector<std::string> Model::output_names() const {
  std::vector<std::string> v;
  for (size_t k = 0; k < num_outputs(); ++k) v.push_back(output_name(k));
  return v;
}
std::vector<int64_t> Model::input_shape(size_t k) const {
  check_index(k, num_inputs(), "input_shape");
  if (impl_->is_graph) return impl_->graph.inputs[k].shape;
  if (impl_->tokens) return {-1};
  return {-1, impl_->input_size};
}
std::vector<int64_t> Model::output_shape(size_t k) const {
  check_index(k, num_outputs(), "output_shape");
  if (impl_->is_graph) return impl_->graph.outputs[k].shape;
  if (impl_->out_seq) return {-1, impl_->output_size};
  return {impl_->output_size};
}
bool Model::input_takes_tokens(size_t k) const {
  check_index(k, num_inputs(), "input_takes_tokens");
  return impl_->is_graph ? impl_->graph.inputs[k].tokens : impl_->tokens;
}

}  // namespace fastlstm
