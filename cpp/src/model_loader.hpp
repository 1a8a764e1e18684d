// Internal: the model-file reader's checking helpers (class Loader): typed access to the
// architecture JSON with messages that name the field, tensor lookup with shape and dtype
// checks, the recurrent weights (float or quantized). Used by model_reader.cpp (bare modules,
// Sequential) and model_graph.cpp (functional models).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "json.hpp"
#include "model_spec.hpp"
#include "safetensors.hpp"

namespace fastlstm {
namespace detail {

inline constexpr const char* kSlotPrefix = "optimizer.";

class Loader {
 public:
  Loader(const detail::SafeTensors& st, std::string where) : st_(st), where_(std::move(where)) {}

  [[noreturn]] void header_fail(const std::string& msg) const {
    throw HeaderError(where_ + ": " + msg);
  }

  // ---- architecture fields
  const detail::Json& field(const detail::Json& obj, const std::string& key,
                            const std::string& ctx) const {
    const detail::Json* v = obj.find(key);
    if (!v) header_fail(ctx + " has no \"" + key + "\"");
    return *v;
  }
  int64_t get_int(const detail::Json& obj, const std::string& key, const std::string& ctx,
                  int64_t lo, const int64_t* dflt = nullptr, int64_t hi = kMaxDim) const {
    const detail::Json* v = obj.find(key);
    if (!v) {
      if (dflt) return *dflt;
      header_fail(ctx + " has no \"" + key + "\"");
    }
    if (!v->is_integer()) {
      std::string got = detail::Json::kind_name(v->kind());
      if (v->is_number()) {  // a fraction, an exponent, or beyond int64
        char buf[40];
        std::snprintf(buf, sizeof buf, " (%.6g)", v->as_double());
        got += buf;
      }
      header_fail(ctx + "." + key + " must be an integer in [" + std::to_string(lo) + ", " +
                  std::to_string(hi) + "], got " + got);
    }
    if (v->as_int() < lo || v->as_int() > hi)
      header_fail(ctx + "." + key + " must be in [" + std::to_string(lo) + ", " +
                  std::to_string(hi) + "], got " + std::to_string(v->as_int()));
    return v->as_int();
  }
  bool get_bool(const detail::Json& obj, const std::string& key, const std::string& ctx,
                bool dflt) const {
    const detail::Json* v = obj.find(key);
    if (!v) return dflt;
    if (!v->is_bool())
      header_fail(ctx + "." + key + " must be true or false, got " +
                  detail::Json::kind_name(v->kind()));
    return v->as_bool();
  }
  std::string get_string(const detail::Json& obj, const std::string& key,
                         const std::string& ctx, const char* dflt = nullptr) const {
    const detail::Json* v = obj.find(key);
    if (!v) {
      if (dflt) return dflt;
      header_fail(ctx + " has no \"" + key + "\"");
    }
    if (!v->is_string())
      header_fail(ctx + "." + key + " must be a string, got " +
                  detail::Json::kind_name(v->kind()));
    return v->as_string();
  }
  // A number in [0, 1) (a rate), or the default when absent.
  double get_rate(const detail::Json& obj, const std::string& key, const std::string& ctx) const {
    const detail::Json* v = obj.find(key);
    if (!v) return 0.0;
    if (!v->is_number() || !(v->as_double() >= 0.0 && v->as_double() < 1.0))
      header_fail(ctx + "." + key + " must be a number in [0, 1), got " +
                  (v->is_number() ? std::to_string(v->as_double())
                                  : std::string(detail::Json::kind_name(v->kind()))));
    return v->as_double();
  }
  // Refuses any key of obj not in `known` (a misspelled key must not fall back to a default).
  void only_keys(const detail::Json& obj, const std::string& ctx,
                 std::initializer_list<const char*> known) const {
    for (const auto& m : obj.members()) {
      bool ok = false;
      for (const char* k : known) ok = ok || m.first == k;
      if (ok) continue;
      std::string list;
      for (const char* k : known) list += (list.empty() ? "" : ", ") + std::string(k);
      header_fail(ctx + " has an unknown key \"" + m.first + "\" (expected only " + list + ")");
    }
  }
  const detail::Json& get_object(const detail::Json& obj, const std::string& key,
                                 const std::string& ctx) const {
    const detail::Json& v = field(obj, key, ctx);
    if (!v.is_object())
      header_fail(ctx + "." + key + " must be an object, got " +
                  detail::Json::kind_name(v.kind()));
    return v;
  }

  // ---- tensors
  const detail::TensorEntry& tensor(const std::string& name, const std::string& what) {
    const detail::TensorEntry* t = st_.find(name);
    if (!t) header_fail("tensor \"" + name + "\" (" + what + ") is missing");
    used_.insert(name);
    return *t;
  }
  // A float weight of the expected shape.
  std::vector<float> weight(const std::string& name, const std::vector<int64_t>& shape,
                            const std::string& what) {
    const detail::TensorEntry& t = tensor(name, what);
    check_float_dtype(t, what);
    if (t.shape != shape)
      throw ShapeError(where_ + ": tensor \"" + name + "\" has shape " + shape_str(t.shape) +
                       ", expected " + shape_str(shape) + " (" + what + ")");
    return st_.read_float(t);
  }
  // Float tensors must have the model's dtype (F32 for "float32", F64 for "float64").
  void check_float_dtype(const detail::TensorEntry& t, const std::string& what) const {
    if (t.dtype != st_dtype_)
      header_fail("tensor \"" + t.name + "\" (" + what + ") has dtype " + t.dtype +
                  ", expected " + st_dtype_ + " (the model's dtype is " + dtype_ + ")");
  }
  // Copies a recurrent network's weights (names from param_layout, with a prefix) into params.
  // In a quantized file (precision_ bf16 / int8) the matrices are stored quantized (BF16, or I8
  // with an F32 "<name>.scale" per row) and everything else of the network is F32: params get
  // the weights' values as float32 (bf16 widened; int8 code * its row's scale), the values the
  // quantized module computes with, so that packing them reproduces the stored quantization.
  void rnn_weights(const RNNConfig& c, const std::string& prefix, const std::string& what,
                   std::vector<float>& params) {
    // a layer count the file cannot back would make param_layout build a huge table
    if (c.num_layers * c.num_directions() * 2 > static_cast<int64_t>(st_.tensors().size()))
      header_fail(what + " has num_layers=" + std::to_string(c.num_layers) + " but the file " +
                  "holds only " + std::to_string(st_.tensors().size()) + " tensors");
    std::vector<ParamInfo> layout;
    try {
      layout = param_layout(c);
    } catch (const Error& e) {
      header_fail(what + ": " + e.what());
    }
    // shapes first, so nothing is allocated on the strength of the header alone
    for (const auto& p : layout) {
      const detail::TensorEntry& t = tensor(prefix + p.name, what);
      if (precision_ == Precision::Float32) {
        check_float_dtype(t, what);
        check_shape(t, p, c, what);
      } else {
        const bool matrix = is_matrix(p.name);
        const char* want = !matrix ? "F32" : precision_ == Precision::BF16 ? "BF16" : "I8";
        if (t.dtype != want)
          header_fail("tensor \"" + t.name + "\" (" + what + ") has dtype " + t.dtype +
                      ", expected " + want + " (the model is quantized to " +
                      precision_name(precision_) + ")");
        check_shape(t, p, c, what);
        if (matrix && precision_ == Precision::Int8) {
          const detail::TensorEntry& s = tensor(prefix + p.name + ".scale", what);
          if (s.dtype != "F32")
            header_fail("tensor \"" + s.name + "\" (" + what + ") has dtype " + s.dtype +
                        ", expected F32 (the int8 row scales)");
          if (s.shape != std::vector<int64_t>{p.shape[0]})
            throw ShapeError(where_ + ": tensor \"" + s.name + "\" has shape " +
                             shape_str(s.shape) + ", expected [" + std::to_string(p.shape[0]) +
                             "] (one int8 scale per row of " + p.name + ")");
        }
      }
    }
    params.assign(static_cast<size_t>(num_params(c)), 0.0f);
    for (const auto& p : layout) {
      const std::string name = prefix + p.name;
      if (precision_ == Precision::Int8 && is_matrix(p.name)) {
        int8_rows(name, p, params.data() + p.offset);
        continue;
      }
      std::vector<float> w = st_.read_float(*st_.find(name));
      if (precision_ == Precision::BF16 && is_matrix(p.name))
        for (size_t k = 0; k < w.size(); ++k)
          if (!std::isfinite(w[k]))
            header_fail("tensor \"" + name + "\" holds a NaN or infinity at element " +
                        std::to_string(k) + " (quantized weights are finite)");
      std::copy(w.begin(), w.end(), params.begin() + p.offset);
    }
  }
  void check_shape(const detail::TensorEntry& t, const ParamInfo& p, const RNNConfig& c,
                   const std::string& what) const {
    if (t.shape != p.shape)
      throw ShapeError(where_ + ": tensor \"" + t.name + "\" has shape " + shape_str(t.shape) +
                       ", expected " + shape_str(p.shape) + " (" + what + describe_config(c) +
                       ")");
  }
  static bool is_matrix(const std::string& name) {
    return name.rfind("weight_ih", 0) == 0 || name.rfind("weight_hh", 0) == 0 ||
           name.rfind("weight_hr", 0) == 0;
  }
  // An int8 matrix (codes [R, K] and "<name>.scale" [R], shapes checked) to its values
  // code * scale in out. The symmetric per-row scheme of the quantizer, checked row by row:
  // codes in [-127, 127]; a scale finite and > 0 with some code +-127 (the row's largest
  // weight), or 0 for a row of zero codes (an all-zero row).
  void int8_rows(const std::string& name, const ParamInfo& p, float* out) {
    const std::vector<int8_t> q = st_.read_int8(*st_.find(name));
    const std::vector<float> scale = st_.read_float(*st_.find(name + ".scale"));
    const int64_t R = p.shape[0], K = p.shape[1];
    for (int64_t r = 0; r < R; ++r) {
      const int8_t* row = q.data() + r * K;
      int mx = 0;
      for (int64_t k = 0; k < K; ++k) {
        if (row[k] == -128)
          header_fail("tensor \"" + name + "\" holds the code -128 in row " +
                      std::to_string(r) + " (int8 weights are symmetric, in [-127, 127])");
        mx = std::max(mx, std::abs(int(row[k])));
      }
      const float s = scale[size_t(r)];
      char buf[40];
      std::snprintf(buf, sizeof buf, "%.9g", double(s));
      if (!std::isfinite(127.0f * s) || s < 0.0f || (s == 0.0f) != (mx == 0))
        header_fail("tensor \"" + name + ".scale\" has " + buf + " in row " +
                    std::to_string(r) + " (a scale must be finite and > 0, with 127 x scale "
                    "finite, or 0 for a row of zero codes)");
      if (mx != 0 && mx != 127)
        header_fail("tensor \"" + name + "\" row " + std::to_string(r) + ": its largest "
                    "code is " + std::to_string(mx) + ", expected 127 (the row's largest weight "
                    "is +-127 x scale)");
      for (int64_t k = 0; k < K; ++k) out[r * K + k] = float(row[k]) * s;
    }
  }

  // ---- architectures
  void bare_module(const detail::Json& m, const std::string& cls, ModelSpec& impl) {
    const std::string ctx = "model";
    only_keys(m, ctx, model_keys(true));
    check_dtype(m, ctx, impl);
    const detail::Json& cfg = get_object(m, "config", ctx);
    const std::string cctx = "model.config";
    only_keys(cfg, cctx, {"input_size", "hidden_size", "num_layers", "bias", "batch_first",
                          "bidirectional", "proj_size", "peephole"});
    Layer L;
    L.kind = LayerKind::Recurrent;
    L.label = cls;
    RNNConfig& c = L.rnn;
    c.cell = cls == "LSTM" ? CellType::LSTM : CellType::GRU;
    const int64_t one = 1, zero = 0;
    c.input_size = get_int(cfg, "input_size", cctx, 1);
    c.hidden_size = get_int(cfg, "hidden_size", cctx, 1);
    c.num_layers = get_int(cfg, "num_layers", cctx, 1, &one, kMaxLayers);
    c.bias = get_bool(cfg, "bias", cctx, true);
    c.bidirectional = get_bool(cfg, "bidirectional", cctx, false);
    c.proj_size = get_int(cfg, "proj_size", cctx, 0, &zero);
    c.peephole = get_bool(cfg, "peephole", cctx, false);
    impl.batch_first = get_bool(cfg, "batch_first", cctx, false);  // predict: batch-first
    if (c.cell == CellType::GRU && (c.proj_size || c.peephole))
      header_fail(cctx + ": a GRU has no proj_size or peephole, got proj_size=" +
                  std::to_string(c.proj_size) + ", peephole=" + (c.peephole ? "true" : "false"));
    rnn_weights(c, "", cls, L.params);
    L.in_dim = c.input_size;
    L.out_dim = c.num_directions() * c.state_size();
    impl.layers.push_back(std::move(L));
  }

  void check_dtype(const detail::Json& m, const std::string& ctx, ModelSpec& impl) {
    const std::string dt = get_string(m, "dtype", ctx, "float32");
    if (dt != "float32" && dt != "float64")
      header_fail(ctx + ".dtype must be \"float32\" or \"float64\", got \"" + dt + "\"");
    dtype_ = impl.dtype = dt;
    st_dtype_ = dt == "float32" ? "F32" : "F64";
    // precision: format_version 2 on (in version 1 it is an unknown key, refused before)
    const std::string p = get_string(m, "precision", ctx, "float32");
    if (p != "float32" && p != "bf16" && p != "int8")
      header_fail(ctx + ".precision must be \"float32\", \"bf16\" or \"int8\", got \"" + p +
                  "\"");
    precision_ = impl.precision = parse_precision(p);
    if (precision_ != Precision::Float32 && impl.class_name != "Sequential" && dt != "float32")
      header_fail(ctx + ".dtype must be \"float32\" for a module quantized to " + p +
                  " (quantized modules compute in float32), got \"" + dt + "\"");
  }
  // the keys a model object may have in this file's format version
  std::initializer_list<const char*> model_keys(bool bare) const {
    static const std::initializer_list<const char*> bare1 = {"class", "config", "dtype"};
    static const std::initializer_list<const char*> bare2 = {"class", "config", "dtype",
                                                             "precision"};
    static const std::initializer_list<const char*> seq1 = {"class", "dtype", "layers"};
    static const std::initializer_list<const char*> seq2 = {"class", "dtype", "layers",
                                                            "precision"};
    return bare ? (version_ >= 2 ? bare2 : bare1) : (version_ >= 2 ? seq2 : seq1);
  }
  void set_version(int64_t v) { version_ = v; }

  // An LSTM or GRU layer config (inside Sequential or Bidirectional) into L.rnn.
  void recurrent_layer(const std::string& cls, const detail::Json& cfg, const std::string& cctx,
                       Layer& L, bool graph = false) {
    RNNConfig& c = L.rnn;
    c.cell = cls == "LSTM" ? CellType::LSTM : CellType::GRU;
    // what the Python writer writes (GRU: no peephole); dropout, recurrent_dropout and
    // stateful only matter to training and Python's stateful layers, but they are type-checked
    // like the rest
    // (return_state: functional models only)
    if (c.cell == CellType::LSTM && graph)
      only_keys(cfg, cctx, {"units", "input_size", "return_sequences", "go_backwards", "bias",
                            "peephole", "dropout", "recurrent_dropout", "stateful",
                            "return_state"});
    else if (c.cell == CellType::LSTM)
      only_keys(cfg, cctx, {"units", "input_size", "return_sequences", "go_backwards", "bias",
                            "peephole", "dropout", "recurrent_dropout", "stateful"});
    else if (graph)
      only_keys(cfg, cctx, {"units", "input_size", "return_sequences", "go_backwards", "bias",
                            "dropout", "recurrent_dropout", "stateful", "return_state"});
    else
      only_keys(cfg, cctx, {"units", "input_size", "return_sequences", "go_backwards", "bias",
                            "dropout", "recurrent_dropout", "stateful"});
    c.hidden_size = get_int(cfg, "units", cctx, 1);
    c.input_size = get_int(cfg, "input_size", cctx, 1);
    c.num_layers = 1;
    c.bias = get_bool(cfg, "bias", cctx, true);
    c.peephole = get_bool(cfg, "peephole", cctx, false);
    if (c.peephole && c.cell == CellType::GRU) header_fail(cctx + ".peephole is LSTM-only");
    L.return_sequences = get_bool(cfg, "return_sequences", cctx, false);
    L.go_backwards = get_bool(cfg, "go_backwards", cctx, false);
    L.stateful = get_bool(cfg, "stateful", cctx, false);
    L.rate = get_rate(cfg, "dropout", cctx);
    L.recurrent_rate = get_rate(cfg, "recurrent_dropout", cctx);
    L.return_state = get_bool(cfg, "return_state", cctx, false);
  }

  // Bidirectional's config (merge_mode, the inner LSTM/GRU) into L; returns the inner class.
  std::string bidirectional_layer(const detail::Json& cfg, const std::string& cctx, Layer& L,
                                  bool graph = false) {
    only_keys(cfg, cctx, {"merge_mode", "layer"});
    const std::string mm = get_string(cfg, "merge_mode", cctx, "concat");
    if (mm == "concat") L.merge = Merge::Concat;
    else if (mm == "sum") L.merge = Merge::Sum;
    else if (mm == "mul") L.merge = Merge::Mul;
    else if (mm == "ave") L.merge = Merge::Ave;
    else
      header_fail(cctx + ".merge_mode must be one of concat, sum, mul, ave; got \"" + mm + "\"");
    const detail::Json& lay = get_object(cfg, "layer", cctx);
    only_keys(lay, cctx + ".layer", {"class", "config"});
    const std::string inner = get_string(lay, "class", cctx + ".layer");
    if (inner != "LSTM" && inner != "GRU")
      header_fail(cctx + ".layer.class must be LSTM or GRU, got \"" + inner + "\"");
    recurrent_layer(inner, get_object(lay, "config", cctx + ".layer"), cctx + ".layer.config", L,
                    graph);
    if (L.go_backwards)
      header_fail(L.label + ": an inner layer with go_backwards=true is not supported");
    L.rnn.bidirectional = true;
    return inner;
  }
  // An activation name (Dense, Activation).
  Act activation(const detail::Json& cfg, const std::string& cctx) const {
    const std::string a = get_string(cfg, "activation", cctx, "linear");
    if (a == "linear") return Act::Linear;
    if (a == "relu") return Act::Relu;
    if (a == "tanh") return Act::Tanh;
    if (a == "sigmoid") return Act::Sigmoid;
    if (a == "softmax") return Act::Softmax;
    header_fail(cctx + ".activation must be one of linear, relu, tanh, sigmoid, softmax; got \"" +
                a + "\"");
  }
  // Embedding's config and table into L.
  void embedding_layer(const detail::Json& cfg, const std::string& cctx,
                       const std::string& prefix, Layer& L) {
    L.kind = LayerKind::Embedding;
    only_keys(cfg, cctx, {"input_dim", "output_dim", "mask_zero"});
    L.vocab = get_int(cfg, "input_dim", cctx, 1, nullptr, kMaxVocab);
    L.out_dim = get_int(cfg, "output_dim", cctx, 1);
    L.mask_zero = get_bool(cfg, "mask_zero", cctx, false);
    L.in_dim = L.vocab;
    L.table = weight(prefix + "embeddings", {L.vocab, L.out_dim},
                     "Embedding input_dim=" + std::to_string(L.vocab) +
                         ", output_dim=" + std::to_string(L.out_dim));
  }
  // Dense's config into L (sizes, activation); returns use_bias. Then dense_weights.
  bool dense_config(const detail::Json& cfg, const std::string& cctx, Layer& L) const {
    L.kind = LayerKind::Dense;
    only_keys(cfg, cctx, {"units", "input_dim", "activation", "use_bias"});
    L.out_dim = get_int(cfg, "units", cctx, 1);
    L.in_dim = get_int(cfg, "input_dim", cctx, 1);
    L.act = activation(cfg, cctx);
    return get_bool(cfg, "use_bias", cctx, true);
  }
  void dense_weights(const std::string& prefix, bool use_bias, Layer& L) {
    const std::string dims = "Dense input_dim=" + std::to_string(L.in_dim) +
                             ", units=" + std::to_string(L.out_dim);
    L.kernel = weight(prefix + "kernel", {L.in_dim, L.out_dim}, dims);
    if (use_bias) L.bias = weight(prefix + "bias", {L.out_dim}, dims);
  }
  const std::string& where() const { return where_; }

  void sequential(const detail::Json& m, ModelSpec& impl) {
    only_keys(m, "model", model_keys(false));
    check_dtype(m, "model", impl);
    const detail::Json& layers = field(m, "layers", "model");
    if (!layers.is_array()) header_fail("model.layers must be an array");
    if (layers.items().empty()) header_fail("model.layers is empty");
    if (static_cast<int64_t>(layers.items().size()) > kMaxLayers)
      header_fail("model.layers has " + std::to_string(layers.items().size()) +
                  " layers, more than the limit of " + std::to_string(kMaxLayers));
    int64_t cur = -1;  // feature size flowing between layers; -1 until a layer fixes it
    bool seq = true;
    std::string prev_label = "the input";
    for (size_t i = 0; i < layers.items().size(); ++i) {
      const detail::Json& lj = layers.items()[i];
      const std::string ctx = "model.layers[" + std::to_string(i) + "]";
      const std::string prefix = "layers." + std::to_string(i) + ".";
      if (!lj.is_object()) header_fail(ctx + " must be an object");
      only_keys(lj, ctx, {"class", "config"});
      const std::string cls = get_string(lj, "class", ctx);
      const detail::Json& cfg = get_object(lj, "config", ctx);
      const std::string cctx = ctx + ".config";
      Layer L;
      L.label = "layers." + std::to_string(i) + " (" + cls + ")";
      L.in_seq = seq;
      auto need_input = [&](int64_t dim, const std::string& key) {
        if (cur >= 0 && dim != cur)
          throw ShapeError(where_ + ": " + L.label + " has " + key + "=" + std::to_string(dim) +
                           " but " + prev_label + " gives " + std::to_string(cur) +
                           " features");
        if (cur < 0) impl.input_size = dim;
      };
      if (cls == "Embedding") {
        if (i != 0) header_fail(L.label + ": Embedding must be the first layer");
        embedding_layer(cfg, cctx, prefix, L);
        impl.tokens = true;
        impl.input_size = L.vocab;
        L.in_dim = L.vocab;
      } else if (cls == "LSTM" || cls == "GRU" || cls == "Bidirectional") {
        L.kind = LayerKind::Recurrent;
        std::string inner = cls;
        if (cls == "Bidirectional") {
          inner = bidirectional_layer(cfg, cctx, L);
          L.label = "layers." + std::to_string(i) + " (Bidirectional " + inner + ")";
        } else {
          recurrent_layer(cls, cfg, cctx, L);
        }
        if (!seq)
          throw ShapeError(where_ + ": " + L.label + " needs a sequence input [B, T, F], but " +
                           prev_label + " returns [B, F] (return_sequences=false)");
        need_input(L.rnn.input_size, "input_size");
        rnn_weights(L.rnn, prefix, L.label, L.params);
        L.in_dim = L.rnn.input_size;
        L.out_dim = L.rnn.hidden_size * (L.merge == Merge::Concat && L.rnn.bidirectional ? 2 : 1);
        seq = L.return_sequences;
      } else if (cls == "Dense") {
        const bool use_bias = dense_config(cfg, cctx, L);
        need_input(L.in_dim, "input_dim");
        dense_weights(prefix, use_bias, L);
      } else if (cls == "Dropout") {
        L.kind = LayerKind::Dropout;
        only_keys(cfg, cctx, {"rate"});
        L.rate = get_rate(cfg, "rate", cctx);
        L.in_dim = L.out_dim = cur;
      } else {
        header_fail(ctx + ".class \"" + cls + "\" is not a layer this library knows "
                    "(Embedding, LSTM, GRU, Bidirectional, Dense, Dropout)");
      }
      L.out_seq = seq;
      if (L.kind != LayerKind::Dropout) cur = L.out_dim;
      prev_label = L.label;
      impl.layers.push_back(std::move(L));
    }
    if (cur < 0) header_fail("model.layers has no layer with a known size");
    // Dropout layers before the first sized layer
    for (auto& L : impl.layers)
      if (L.kind == LayerKind::Dropout && L.in_dim < 0) L.in_dim = L.out_dim = impl.input_size;
  }

  // A functional model for Python (docs/model-format.md, "Functional models"): the model
  // object's keys and dtype; every tensor but the optimizer slots is a weight of the model's
  // float dtype. The graph itself is checked by the Python loader, which builds it.
  void graph_model(const detail::Json& m, ModelSpec& impl) {
    only_keys(m, "model", {"class", "dtype", "inputs", "layers", "outputs", "output_names"});
    check_dtype(m, "model", impl);
    for (const char* key : {"inputs", "layers", "outputs"})
      if (!field(m, key, "model").is_array())
        header_fail(std::string("model.") + key + " must be an array");
    for (const auto& t : st_.tensors()) {
      if (t.name.rfind(kSlotPrefix, 0) == 0) continue;
      check_float_dtype(t, "weight");
      used_.insert(t.name);
    }
  }

  // The compile state (docs/model-format.md, "Compile state"): Python's business, but its
  // tensors are checked here like the rest: "optimizer.{slot}.{weight}" with the weight's
  // shape and dtype, for a weight the model uses.
  void compile_state(const std::string& text, int64_t version) {
    const std::string ctx = "__metadata__[\"fastlstm_compile\"]";
    if (version < 2) header_fail(ctx + " needs format_version 2 or later");
    detail::Json j;
    try {
      j = detail::Json::parse(text);
    } catch (const detail::JsonError& e) {
      header_fail(ctx + " is not valid JSON: " + e.what());
    }
    if (!j.is_object()) header_fail(ctx + " must be a JSON object");
    const std::set<std::string> weights = used_;
    for (const auto& t : st_.tensors()) {
      if (t.name.rfind(kSlotPrefix, 0) != 0) continue;
      const std::string rest = t.name.substr(std::strlen(kSlotPrefix));
      const size_t dot = rest.find('.');
      const std::string weight = dot == std::string::npos ? "" : rest.substr(dot + 1);
      const detail::TensorEntry* w = weight.empty() ? nullptr : st_.find(weight);
      if (dot == 0 || !w || !weights.count(weight))
        header_fail("optimizer slot \"" + t.name + "\" names no weight of the model (expected "
                    "\"optimizer.{slot}.{weight name}\")");
      check_float_dtype(t, "optimizer slot");
      if (t.shape != w->shape)
        throw ShapeError(where_ + ": optimizer slot \"" + t.name + "\" has shape " +
                         shape_str(t.shape) + ", its weight \"" + weight + "\" has " +
                         shape_str(w->shape));
      used_.insert(t.name);
    }
  }

  void self_check_spec(const std::string& text, ModelSpec& impl) {
    detail::Json j;
    try {
      j = detail::Json::parse(text);
    } catch (const detail::JsonError& e) {
      header_fail(std::string("__metadata__[\"fastlstm_selfcheck\"] is not valid JSON: ") +
                  e.what());
    }
    const std::string ctx = "__metadata__[\"fastlstm_selfcheck\"]";
    if (!j.is_object()) header_fail(ctx + " must be a JSON object");
    only_keys(j, ctx, {"input", "output", "lengths"});
    const std::string xin = get_string(j, "input", ctx);
    const std::string yout = get_string(j, "output", ctx);
    const detail::Json* ln = j.find("lengths");
    if (ln && !ln->is_null() && !ln->is_string())
      header_fail(ctx + ".lengths must be a tensor name or null");
    const detail::TensorEntry& tx = tensor(xin, "self-check input");
    const detail::TensorEntry& ty = tensor(yout, "self-check output");
    if (impl.tokens) {
      if (tx.shape.size() != 2)
        throw ShapeError(where_ + ": self-check input \"" + xin + "\" has shape " +
                         shape_str(tx.shape) + ", expected [B, T] tokens");
      impl.check_tok = read_ints(tx, "self-check input");
    } else {
      if (tx.shape.size() != 3 || tx.shape[2] != impl.input_size)
        throw ShapeError(where_ + ": self-check input \"" + xin + "\" has shape " +
                         shape_str(tx.shape) + ", expected [B, T, " +
                         std::to_string(impl.input_size) + "]");
      check_float_dtype(tx, "self-check input");
      impl.check_x = st_.read_float(tx);
    }
    impl.check_shape = tx.shape;
    if (tx.shape[0] < 1 || tx.shape[1] < 1)
      throw ShapeError(where_ + ": self-check input \"" + xin + "\" is empty " +
                       shape_str(tx.shape));
    if (ln && ln->is_string()) {
      const detail::TensorEntry& tl = tensor(ln->as_string(), "self-check lengths");
      if (tl.shape != std::vector<int64_t>{tx.shape[0]})
        throw ShapeError(where_ + ": self-check lengths \"" + ln->as_string() +
                         "\" has shape " + shape_str(tl.shape) + ", expected [" +
                         std::to_string(tx.shape[0]) + "]");
      impl.check_len = read_ints(tl, "self-check lengths");
    }
    std::vector<int64_t> want = {tx.shape[0]};
    if (impl.out_seq) want.push_back(tx.shape[1]);
    want.push_back(impl.output_size);
    if (ty.shape != want)
      throw ShapeError(where_ + ": self-check output \"" + yout + "\" has shape " +
                       shape_str(ty.shape) + ", expected " + shape_str(want));
    check_float_dtype(ty, "self-check output");
    impl.check_y = st_.read_float(ty);
    impl.check_y_shape = ty.shape;
    impl.check_y_name = yout;
    impl.check_x_name = xin;
    if (ln && ln->is_string()) impl.check_len_name = ln->as_string();
    impl.has_check = true;
  }

  std::vector<int64_t> read_ints(const detail::TensorEntry& t, const std::string& what) {
    if (t.dtype != "I64")
      header_fail(what + " \"" + t.name + "\" has dtype " + t.dtype + ", expected I64");
    return st_.read_int64(t);
  }

  void check_all_used() const {
    for (const auto& t : st_.tensors())
      if (!used_.count(t.name))
        header_fail("tensor \"" + t.name + "\" is not used by the model (a wrong or partial "
                    "architecture?)");
  }

 private:
  const detail::SafeTensors& st_;
  std::string where_;
  std::set<std::string> used_;
  std::string dtype_ = "float32", st_dtype_ = "F32";
  Precision precision_ = Precision::Float32;
  int64_t version_ = 1;
};

// A functional model for the C++ runner (model_graph.cpp): the graph, its layers and weights
// into impl (is_graph, graph, layers); everything checked before a weight is read.
void read_graph(Loader& ld, const Json& model, ModelSpec& impl);

}  // namespace detail
}  // namespace fastlstm
