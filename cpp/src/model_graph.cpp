// Functional models, reading side (docs/model-format.md, "Functional models"): the graph
// description of Python's Model.get_config() into a flat Graph of leaf-layer calls for the C++
// runner (model_graph_run.cpp).
//
// Checked before anything is allocated on its strength: known keys, at most kMaxLayers layers,
// calls per layer, inputs and outputs, input sizes in [1, kMaxSize], references to existing
// model inputs and layer calls, no cycle, at most 16 levels of nesting, at most kMaxGraphNodes
// calls once nested models are inlined; each layer's weights with the shapes its config and
// inputs imply. Anything the runner cannot run exactly as Python does is refused here: a mask
// (Embedding mask_zero=true, Masking), a stateful layer, an unknown class or call option.
#include <algorithm>
#include <map>
#include <memory>
#include <set>

#include "model_loader.hpp"

namespace fastlstm {
namespace detail {

namespace {

constexpr int kMaxNesting = 16;

// A model's graph before it is placed in the outer graph: the leaf layers are in the
// ModelSpec already; `nodes` refer to this graph's own inputs (node < 0). A nested Sequential
// is a chain of leaf layers applied to its one input.
struct Template {
  std::vector<GraphIO> inputs;
  std::vector<GraphNode> nodes;
  std::vector<GraphRef> outputs;
  std::vector<std::vector<int64_t>> out_shapes;
  std::vector<std::string> output_names;
  bool chain = false;
  std::vector<size_t> chain_layers;
};

class GraphReader {
 public:
  GraphReader(Loader& ld, ModelSpec& spec) : ld_(ld), spec_(spec) {}

  [[noreturn]] void fail(const std::string& msg) const { ld_.header_fail(msg); }
  [[noreturn]] void shape_fail(const std::string& msg) const {
    throw ShapeError(ld_.where() + ": " + msg);
  }

  // A functional MODEL object (ctx "model" or "model.layers[3]"), its leaf layers' weights
  // prefixed `prefix` (`layers.3.`).
  Template model(const Json& m, const std::string& ctx, const std::string& prefix, int depth) {
    if (depth > kMaxNesting) fail(ctx + " nests models more than 16 deep");
    if (depth == 0)
      ld_.only_keys(m, ctx, {"class", "dtype", "inputs", "layers", "outputs", "output_names"});
    else
      ld_.only_keys(m, ctx, {"class", "dtype", "inputs", "layers", "outputs", "output_names",
                             "name", "calls"});
    nested_dtype(m, ctx);
    Template g;
    const Json& ins = list(m, "inputs", ctx);
    for (size_t i = 0; i < ins.items().size(); ++i) {
      const Json& in = ins.items()[i];
      const std::string ictx = ctx + ".inputs[" + std::to_string(i) + "]";
      if (!in.is_object()) fail(ictx + " must be an object");
      ld_.only_keys(in, ictx, {"shape", "dtype", "name"});
      GraphIO io;
      const Json& sh = ld_.field(in, "shape", ictx);
      if (!sh.is_array() || sh.items().size() > 8)
        fail(ictx + ".shape must be a list of at most 8 sizes");
      for (size_t k = 0; k < sh.items().size(); ++k) {
        const Json& d = sh.items()[k];
        if (d.is_null()) {
          io.shape.push_back(-1);
          continue;
        }
        if (!d.is_integer() || d.as_int() < 1 || d.as_int() > kMaxSize)
          fail(ictx + ".shape[" + std::to_string(k) + "] must be null or a size in [1, " +
               std::to_string(kMaxSize) + "]");
        io.shape.push_back(d.as_int());
      }
      const std::string dt = ld_.get_string(in, "dtype", ictx, "float32");
      if (dt != "float32" && dt != "float64" && dt != "int32" && dt != "int64")
        fail(ictx + ".dtype must be float32, float64, int32 or int64, got \"" + dt + "\"");
      io.tokens = dt == "int32" || dt == "int64";
      const Json* nm = in.find("name");
      if (nm && !nm->is_null() && !nm->is_string()) fail(ictx + ".name must be a string");
      io.name = nm && nm->is_string() ? nm->as_string() : "input_" + std::to_string(i);
      g.inputs.push_back(std::move(io));
    }
    // the layers: leaves into the spec, nested models as templates
    const Json& layers = list(m, "layers", ctx);
    struct Entry {
      std::string name;
      const Json* calls;
      size_t leaf = 0;
      std::shared_ptr<Template> sub;
      std::string ctx;
    };
    std::vector<Entry> entries;
    std::map<std::string, size_t> by_name;
    for (size_t i = 0; i < layers.items().size(); ++i) {
      const Json& lj = layers.items()[i];
      const std::string lctx = ctx + ".layers[" + std::to_string(i) + "]";
      const std::string lprefix = prefix + "layers." + std::to_string(i) + ".";
      if (!lj.is_object()) fail(lctx + " must be an object");
      Entry e;
      e.ctx = lctx;
      e.name = ld_.get_string(lj, "name", lctx);
      if (e.name.empty() || e.name == "__input__")
        fail(lctx + ".name must be a non-empty layer name, got \"" + e.name + "\"");
      if (by_name.count(e.name)) fail(lctx + ".name \"" + e.name + "\" names two layers");
      e.calls = &list(lj, "calls", lctx);
      const std::string cls = ld_.get_string(lj, "class", lctx);
      if (cls == "Model") {
        e.sub = std::make_shared<Template>(model(lj, lctx, lprefix, depth + 1));
      } else if (cls == "Sequential") {
        e.sub = std::make_shared<Template>(sequential(lj, lctx, lprefix));
      } else {
        ld_.only_keys(lj, lctx, {"class", "config", "name", "calls"});
        e.leaf = leaf(cls, lj, lctx, lprefix, e.name);
      }
      by_name[e.name] = entries.size();
      entries.push_back(std::move(e));
    }
    // every call, ordered so that each comes after the calls it reads (Kahn's algorithm)
    struct Call {
      size_t entry, index;
      const Json* json;
      std::vector<std::pair<size_t, int64_t>> srcs;  // (call id or SIZE_MAX: input, out/input)
      std::string ctx;
    };
    std::vector<Call> calls;
    std::vector<size_t> first_call(entries.size());
    for (size_t e = 0; e < entries.size(); ++e) {
      first_call[e] = calls.size();
      for (size_t k = 0; k < entries[e].calls->items().size(); ++k)
        calls.push_back({e, k, &entries[e].calls->items()[k], {},
                         entries[e].ctx + ".calls[" + std::to_string(k) + "]"});
    }
    if (static_cast<int64_t>(calls.size()) > kMaxGraphNodes)
      fail(ctx + " has " + std::to_string(calls.size()) + " layer calls, more than the limit of " +
           std::to_string(kMaxGraphNodes));
    auto resolve = [&](const Json& r, const std::string& rctx) -> std::pair<size_t, int64_t> {
      if (!r.is_array() || r.items().size() != 3 || !r.items()[0].is_string() ||
          !r.items()[1].is_integer() || !r.items()[2].is_integer())
        fail(rctx + " must be [layer name, call index, output index]");
      const std::string& ln = r.items()[0].as_string();
      const int64_t k = r.items()[1].as_int(), j = r.items()[2].as_int();
      if (ln == "__input__") {
        if (k < 0 || k >= static_cast<int64_t>(g.inputs.size()) || j != 0)
          fail(rctx + " refers to model input " + std::to_string(k) + " (output " +
               std::to_string(j) + "); the model has " + std::to_string(g.inputs.size()) +
               " input(s)");
        return {SIZE_MAX, k};
      }
      auto it = by_name.find(ln);
      if (it == by_name.end()) fail(rctx + " refers to layer \"" + ln + "\", which is not in the model");
      const int64_t n = static_cast<int64_t>(entries[it->second].calls->items().size());
      if (k < 0 || k >= n || j < 0 || j >= 64)
        fail(rctx + " refers to call " + std::to_string(k) + " (output " + std::to_string(j) +
             ") of layer \"" + ln + "\", which is called " + std::to_string(n) + " time(s)");
      return {first_call[it->second] + static_cast<size_t>(k), j};
    };
    std::vector<std::vector<size_t>> readers(calls.size());
    std::vector<size_t> pending(calls.size(), 0);
    for (size_t c = 0; c < calls.size(); ++c) {
      const Json& cj = *calls[c].json;
      const std::string& cctx = calls[c].ctx;
      if (!cj.is_object()) fail(cctx + " must be an object");
      ld_.only_keys(cj, cctx, {"inputs", "kwargs"});
      const Json& srcs = list(cj, "inputs", cctx);
      for (size_t n = 0; n < srcs.items().size(); ++n) {
        auto s = resolve(srcs.items()[n], cctx + ".inputs[" + std::to_string(n) + "]");
        calls[c].srcs.push_back(s);
        if (s.first != SIZE_MAX) {
          readers[s.first].push_back(c);
          ++pending[c];
        }
      }
    }
    std::vector<size_t> order, ready;
    for (size_t c = 0; c < calls.size(); ++c)
      if (!pending[c]) ready.push_back(c);
    while (!ready.empty()) {
      const size_t c = ready.back();
      ready.pop_back();
      order.push_back(c);
      for (size_t r : readers[c])
        if (--pending[r] == 0) ready.push_back(r);
    }
    if (order.size() != calls.size()) {
      for (size_t c = 0; c < calls.size(); ++c)
        if (pending[c]) fail(calls[c].ctx + " is part of a cycle of layer calls");
    }
    // place the calls: leaves become nodes, nested models are inlined
    std::vector<std::vector<GraphRef>> outs(calls.size());
    std::vector<std::vector<std::vector<int64_t>>> out_shapes(calls.size());
    auto shape_of = [&](const std::pair<size_t, int64_t>& s,
                        const std::string& rctx) -> std::vector<int64_t> {
      if (s.first == SIZE_MAX) return g.inputs[size_t(s.second)].shape;
      if (s.second >= static_cast<int64_t>(outs[s.first].size()))
        fail(rctx + " refers to output " + std::to_string(s.second) + " of a call that has " +
             std::to_string(outs[s.first].size()));
      return out_shapes[s.first][size_t(s.second)];
    };
    auto ref_of = [&](const std::pair<size_t, int64_t>& s) {
      return s.first == SIZE_MAX ? GraphRef{-1 - s.second, 0} : outs[s.first][size_t(s.second)];
    };
    for (size_t c : order) {
      const Call& call = calls[c];
      const Entry& e = entries[call.entry];
      std::vector<GraphRef> in;
      std::vector<std::vector<int64_t>> in_shapes;
      std::vector<bool> in_tokens;
      for (size_t n = 0; n < call.srcs.size(); ++n) {
        const std::string rctx = call.ctx + ".inputs[" + std::to_string(n) + "]";
        in_shapes.push_back(shape_of(call.srcs[n], rctx));
        in.push_back(ref_of(call.srcs[n]));
        in_tokens.push_back(call.srcs[n].first == SIZE_MAX &&
                            g.inputs[size_t(call.srcs[n].second)].tokens);
      }
      const Json* kw = call.json->find("kwargs");
      if (!e.sub) {
        GraphNode node;
        node.layer = e.leaf;
        node.inputs = in;
        options(node, kw, call.ctx);
        tokens_only_for_embedding(spec_.layers[e.leaf], in_tokens, call.ctx);
        node.out_shapes = infer(node, in_shapes);
        for (size_t j = 0; j < node.out_shapes.size(); ++j)
          outs[c].push_back(GraphRef{static_cast<int64_t>(g.nodes.size()), int64_t(j)});
        out_shapes[c] = node.out_shapes;
        g.nodes.push_back(std::move(node));
      } else {
        if (kw && !(kw->is_object() && kw->members().empty()))
          fail(call.ctx + ".kwargs: a nested model's call takes no options");
        inline_call(g, *e.sub, in, in_shapes, in_tokens, call.ctx, outs[c], out_shapes[c]);
      }
    }
    // outputs
    const Json& ol = list(m, "outputs", ctx);
    for (size_t k = 0; k < ol.items().size(); ++k) {
      auto s = resolve(ol.items()[k], ctx + ".outputs[" + std::to_string(k) + "]");
      g.out_shapes.push_back(shape_of(s, ctx + ".outputs[" + std::to_string(k) + "]"));
      g.outputs.push_back(ref_of(s));
      // Python's output names: the layer's, "<layer>_<output>" when the layer gives several of
      // the outputs, an input's own name, made unique by "_<count>"
      const Json& r = ol.items()[k];
      g.output_names.push_back(r.items()[0].as_string());
    }
    name_outputs(m, ol, g, ctx);
    return g;
  }

  void name_outputs(const Json& m, const Json& ol, Template& g, const std::string& ctx) {
    const size_t n = ol.items().size();
    if (const Json* on = m.find("output_names")) {
      if (!on->is_array() || on->items().size() != n)
        fail(ctx + ".output_names must be a list of " + std::to_string(n) + " names");
      for (size_t k = 0; k < n; ++k) {
        if (!on->items()[k].is_string()) fail(ctx + ".output_names must hold strings");
        g.output_names[k] = on->items()[k].as_string();
      }
      return;
    }
    std::map<std::string, int> seen;
    for (size_t k = 0; k < n; ++k) {
      const auto& r = ol.items()[k].items();
      std::string name;
      if (r[0].as_string() == "__input__") {
        name = g.inputs[size_t(r[1].as_int())].name;
      } else {
        size_t same = 0;
        for (size_t q = 0; q < n; ++q) same += ol.items()[q].items()[0].as_string() == r[0].as_string();
        name = same == 1 ? r[0].as_string() : r[0].as_string() + "_" + std::to_string(r[2].as_int());
      }
      const int count = seen[name]++;
      g.output_names[k] = count ? name + "_" + std::to_string(count) : name;
    }
  }

  // ---- nested models
  void inline_call(Template& g, const Template& sub, const std::vector<GraphRef>& in,
                   const std::vector<std::vector<int64_t>>& in_shapes,
                   const std::vector<bool>& in_tokens, const std::string& ctx,
                   std::vector<GraphRef>& outs, std::vector<std::vector<int64_t>>& shapes) {
    if (sub.chain) {  // a Sequential: its layers one after another
      if (in.size() != 1) fail(ctx + ": a nested Sequential takes one input, got " + std::to_string(in.size()));
      GraphRef cur = in[0];
      std::vector<int64_t> shape = in_shapes[0];
      bool tok = in_tokens[0];
      for (size_t li : sub.chain_layers) {
        GraphNode node;
        node.layer = li;
        node.inputs = {cur};
        tokens_only_for_embedding(spec_.layers[li], {tok}, ctx);
        tok = false;
        node.out_shapes = infer(node, {shape});
        shape = node.out_shapes[0];
        cur = GraphRef{static_cast<int64_t>(g.nodes.size()), 0};
        add_node(g, std::move(node), ctx);
      }
      outs = {cur};
      shapes = {shape};
      return;
    }
    if (in.size() != sub.inputs.size())
      fail(ctx + ": the nested model takes " + std::to_string(sub.inputs.size()) +
           " input(s), got " + std::to_string(in.size()));
    for (size_t k = 0; k < in.size(); ++k) {
      if (!shapes_compatible(in_shapes[k], sub.inputs[k].shape))
        shape_fail(ctx + ": input " + std::to_string(k) + " of the nested model must have shape " +
                   shape_text(sub.inputs[k].shape) + ", got " + shape_text(in_shapes[k]));
      if (in_tokens[k] != sub.inputs[k].tokens)
        fail(ctx + ": input " + std::to_string(k) + " of the nested model takes " +
             (sub.inputs[k].tokens ? "token ids" : "floats") + ", but it is given " +
             (in_tokens[k] ? "token ids" : "floats") + " (not supported by the C++ runner)");
    }
    const int64_t base = static_cast<int64_t>(g.nodes.size());
    auto map_ref = [&](const GraphRef& r) {
      return r.node < 0 ? in[size_t(-1 - r.node)] : GraphRef{base + r.node, r.out};
    };
    for (const GraphNode& n : sub.nodes) {
      GraphNode node = n;
      for (GraphRef& r : node.inputs) r = map_ref(r);
      add_node(g, std::move(node), ctx);
    }
    for (size_t k = 0; k < sub.outputs.size(); ++k) {
      outs.push_back(map_ref(sub.outputs[k]));
      shapes.push_back(sub.out_shapes[k]);
    }
  }

  void add_node(Template& g, GraphNode node, const std::string& ctx) {
    if (static_cast<int64_t>(g.nodes.size()) >= kMaxGraphNodes)
      fail(ctx + ": the graph has more than " + std::to_string(kMaxGraphNodes) +
           " layer calls once nested models are inlined (the C++ runner's limit)");
    g.nodes.push_back(std::move(node));
  }

  Template sequential(const Json& lj, const std::string& ctx, const std::string& prefix) {
    ld_.only_keys(lj, ctx, {"class", "dtype", "layers", "name", "calls"});
    nested_dtype(lj, ctx);
    Template g;
    g.chain = true;
    const Json& layers = list(lj, "layers", ctx);
    for (size_t i = 0; i < layers.items().size(); ++i) {
      const Json& l = layers.items()[i];
      const std::string lctx = ctx + ".layers[" + std::to_string(i) + "]";
      if (!l.is_object()) fail(lctx + " must be an object");
      ld_.only_keys(l, lctx, {"class", "config"});
      const std::string cls = ld_.get_string(l, "class", lctx);
      g.chain_layers.push_back(
          leaf(cls, l, lctx, prefix + "layers." + std::to_string(i) + ".", cls));
    }
    return g;
  }

  // ---- leaf layers
  size_t leaf(const std::string& cls, const Json& lj, const std::string& ctx,
              const std::string& prefix, const std::string& name) {
    static const Json empty_object = Json::parse("{}");
    const Json* cp = lj.find("config");
    if (cp && !cp->is_object()) fail(ctx + ".config must be an object");
    const Json& cfg = cp ? *cp : empty_object;
    const std::string cctx = ctx + ".config";
    Layer L;
    L.label = "layer \"" + name + "\" (" + cls + ")";
    if (cls == "Embedding") {
      ld_.embedding_layer(cfg, cctx, prefix, L);
      if (L.mask_zero) unsupported(L, "mask_zero=true (a mask) is");
    } else if (cls == "LSTM" || cls == "GRU" || cls == "Bidirectional") {
      L.kind = LayerKind::Recurrent;
      if (cls == "Bidirectional") {
        const std::string inner = ld_.bidirectional_layer(cfg, cctx, L, true);
        L.label = "layer \"" + name + "\" (Bidirectional " + inner + ")";
      } else {
        ld_.recurrent_layer(cls, cfg, cctx, L, true);
      }
      if (L.stateful) unsupported(L, "stateful=true is");
      L.rnn.precision = spec_.precision;
      ld_.rnn_weights(L.rnn, prefix, L.label, L.params);
      L.in_dim = L.rnn.input_size;
      L.out_dim = L.rnn.hidden_size * (L.merge == Merge::Concat && L.rnn.bidirectional ? 2 : 1);
    } else if (cls == "Dense" || cls == "TimeDistributed") {
      const Json* inner = &cfg;
      std::string ictx = cctx;
      if (cls == "TimeDistributed") {
        // over [B, T, ...] rows a Dense (last axis), Dropout and Activation compute what they
        // compute on any rank
        ld_.only_keys(cfg, cctx, {"layer"});
        const Json& lay = ld_.get_object(cfg, "layer", cctx);
        ld_.only_keys(lay, cctx + ".layer", {"class", "config"});
        const std::string in_cls = ld_.get_string(lay, "class", cctx + ".layer");
        if (in_cls != "Dense" && in_cls != "Dropout" && in_cls != "SpatialDropout1D" &&
            in_cls != "Activation")
          unsupported(L, "TimeDistributed(" + in_cls + ") is");
        if (in_cls != "Dense") {
          const size_t k = leaf(in_cls, lay, cctx + ".layer", prefix, name);
          spec_.layers[k].label = L.label;
          return k;
        }
        inner = &ld_.get_object(lay, "config", cctx + ".layer");
        ictx = cctx + ".layer.config";
      }
      ld_.dense_weights(prefix, ld_.dense_config(*inner, ictx, L), L);
    } else if (cls == "Dropout" || cls == "SpatialDropout1D") {
      L.kind = LayerKind::Dropout;
      ld_.only_keys(cfg, cctx, {"rate"});
      L.rate = ld_.get_rate(cfg, "rate", cctx);
    } else if (cls == "Activation") {
      L.kind = LayerKind::Activation;
      ld_.only_keys(cfg, cctx, {"activation"});
      L.act = ld_.activation(cfg, cctx);
    } else if (cls == "RepeatVector") {
      L.kind = LayerKind::RepeatVector;
      ld_.only_keys(cfg, cctx, {"n"});
      L.repeat = ld_.get_int(cfg, "n", cctx, 1);
    } else if (cls == "Concatenate" || cls == "Add" || cls == "Multiply" || cls == "Average") {
      L.kind = LayerKind::Merge;
      if (cls == "Concatenate") {
        ld_.only_keys(cfg, cctx, {"axis"});
        const int64_t dflt = -1;
        L.axis = ld_.get_int(cfg, "axis", cctx, -9, &dflt, 9);
        L.merge = Merge::Concat;
      } else {
        ld_.only_keys(cfg, cctx, {});
        L.merge = cls == "Add" ? Merge::Sum : cls == "Multiply" ? Merge::Mul : Merge::Ave;
      }
    } else if (cls == "Flatten") {
      L.kind = LayerKind::Flatten;
      ld_.only_keys(cfg, cctx, {});
    } else if (cls == "Reshape") {
      L.kind = LayerKind::Reshape;
      ld_.only_keys(cfg, cctx, {"target_shape"});
      const Json& ts = ld_.field(cfg, "target_shape", cctx);
      if (!ts.is_array() || ts.items().empty() || ts.items().size() > 8)
        fail(cctx + ".target_shape must be a list of 1 to 8 sizes");
      int minus = 0;
      for (const Json& d : ts.items()) {
        if (!d.is_integer() || d.as_int() == 0 || d.as_int() < -1 || d.as_int() > kMaxSize)
          fail(cctx + ".target_shape must hold sizes in [1, " + std::to_string(kMaxSize) +
               "] and at most one -1");
        minus += d.as_int() == -1;
        L.target_shape.push_back(d.as_int());
      }
      if (minus > 1) fail(cctx + ".target_shape must hold at most one -1");
    } else if (cls == "Attention" || cls == "AdditiveAttention") {
      L.kind = LayerKind::Attention;
      L.additive = cls == "AdditiveAttention";
      ld_.only_keys(cfg, cctx, {"use_scale"});
      L.use_scale = ld_.get_bool(cfg, "use_scale", cctx, L.additive);
      if (L.use_scale) {
        // Attention: a scalar; AdditiveAttention: one factor per feature (the query's size,
        // checked against the inputs when the layer is called)
        const TensorEntry& t = ld_.tensor(prefix + "scale", cls + " scale");
        if (!L.additive && !t.shape.empty())
          shape_fail("tensor \"" + t.name + "\" has shape " + shape_str(t.shape) +
                     ", expected [] (" + L.label + " scale)");
        if (L.additive && (t.shape.size() != 1 || t.shape[0] < 1 || t.shape[0] > kMaxSize))
          shape_fail("tensor \"" + t.name + "\" has shape " + shape_str(t.shape) +
                     ", expected [dim] (" + L.label + " scale)");
        L.scale = ld_.weight(t.name, t.shape, L.label + " scale");
        L.in_dim = L.additive ? t.shape[0] : -1;
      }
    } else if (cls == "Masking") {
      unsupported(L, "Masking (a mask) is");
    } else {
      unsupported(L, "the layer class is");
    }
    spec_.layers.push_back(std::move(L));
    return spec_.layers.size() - 1;
  }

  [[noreturn]] void unsupported(const Layer& L, const std::string& what) const {
    fail(L.label + ": " + what + " not supported by the C++ runner (it runs Embedding without "
         "mask_zero, LSTM, GRU, Bidirectional, Dense, TimeDistributed(Dense), Dropout, "
         "SpatialDropout1D, Activation, RepeatVector, Concatenate, Add, Multiply, Average, "
         "Flatten, Reshape, Attention, AdditiveAttention and nested models; Python's "
         "fastlstm.load_model reads this file)");
  }

  void options(GraphNode& node, const Json* kw, const std::string& ctx) const {
    if (!kw) return;
    if (!kw->is_object()) fail(ctx + ".kwargs must be an object");
    const Layer& L = spec_.layers[node.layer];
    if (L.kind != LayerKind::Attention) {
      if (!kw->members().empty())
        fail(ctx + ".kwargs: " + L.label + " takes no call options, got \"" +
             kw->members()[0].first + "\"");
      return;
    }
    ld_.only_keys(*kw, ctx + ".kwargs", {"return_attention_scores", "use_causal_mask"});
    node.scores = ld_.get_bool(*kw, "return_attention_scores", ctx + ".kwargs", false);
    node.causal = ld_.get_bool(*kw, "use_causal_mask", ctx + ".kwargs", false);
  }

  // Token ids flow from a model input into an Embedding only (Python would cast them to
  // floats elsewhere, and an Embedding would truncate floats).
  void tokens_only_for_embedding(const Layer& L, const std::vector<bool>& tok,
                                 const std::string& ctx) const {
    for (size_t k = 0; k < tok.size(); ++k) {
      const bool emb = L.kind == LayerKind::Embedding && k == 0;
      if (tok[k] != emb)
        fail(ctx + ": " + L.label + " input " + std::to_string(k) + " is " +
             (tok[k] ? "a token (int) model input: only an Embedding reads token ids in the "
                       "C++ runner"
                     : "not a token (int) model input: an Embedding reads int token ids") +
             " (not supported by the C++ runner)");
    }
  }

  std::vector<std::vector<int64_t>> infer(const GraphNode& node,
                                          const std::vector<std::vector<int64_t>>& in) const {
    try {
      auto out = graph_output_shapes(spec_.layers[node.layer], node, in);
      for (const auto& s : out) {
        int64_t n = 1;
        for (int64_t d : s)
          if (d > 0) {
            if (n > kMaxGraphValues / d)
              fail(spec_.layers[node.layer].label + " gives an output of shape " +
                   shape_text(s) + ", more than " + std::to_string(kMaxGraphValues) +
                   " values per sample");
            n *= d;
          }
      }
      return out;
    } catch (const ShapeError& e) {
      shape_fail(e.what());
    }
  }

  const Json& list(const Json& obj, const char* key, const std::string& ctx) const {
    const Json& v = ld_.field(obj, key, ctx);
    if (!v.is_array() || v.items().empty() || static_cast<int64_t>(v.items().size()) > kMaxLayers)
      fail(ctx + "." + key + " must be a list of 1 to " + std::to_string(kMaxLayers) + " entries");
    return v;
  }

  // a nested model's dtype must be the outer model's (one float dtype per file)
  void nested_dtype(const Json& m, const std::string& ctx) const {
    const std::string dt = ld_.get_string(m, "dtype", ctx, "float32");
    if (dt != spec_.dtype)
      fail(ctx + ".dtype must be the model's dtype \"" + spec_.dtype + "\", got \"" + dt + "\"");
  }

 private:
  Loader& ld_;
  ModelSpec& spec_;
};

}  // namespace

void read_graph(Loader& ld, const Json& m, ModelSpec& impl) {
  GraphReader r(ld, impl);
  Template t = r.model(m, "model", "", 0);
  impl.is_graph = true;
  impl.graph.nodes = std::move(t.nodes);
  impl.graph.inputs = std::move(t.inputs);
  impl.graph.output_refs = std::move(t.outputs);
  for (size_t k = 0; k < impl.graph.output_refs.size(); ++k) {
    GraphIO io;
    io.name = t.output_names[k];
    io.shape = t.out_shapes[k];
    const GraphRef& r = impl.graph.output_refs[k];
    io.tokens = r.node < 0 && impl.graph.inputs[size_t(-1 - r.node)].tokens;
    impl.graph.outputs.push_back(std::move(io));
  }
  // predict()'s view: the first input and output
  const GraphIO& in = impl.graph.inputs[0];
  const GraphIO& out = impl.graph.outputs[0];
  impl.tokens = in.tokens;
  impl.input_size = in.shape.empty() ? 0 : std::max<int64_t>(in.shape.back(), 0);
  if (in.tokens) {  // the vocabulary of an Embedding that reads it
    impl.input_size = 0;
    for (const GraphNode& n : impl.graph.nodes)
      if (!n.inputs.empty() && n.inputs[0].node == -1)
        impl.input_size = std::max(impl.input_size, impl.layers[n.layer].vocab);
  }
  impl.output_size = out.shape.empty() ? 0 : std::max<int64_t>(out.shape.back(), 0);
  impl.out_seq = out.shape.size() == 2;
}

}  // namespace detail
}  // namespace fastlstm
