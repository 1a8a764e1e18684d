// Model files: the architecture in __metadata__["fastlstm"] (see docs of the format in
// python/fastlstm/io.py and tests/data/make_cpp_fixtures.py), the weights as safetensors.
//
// Loading checks everything before it allocates by what the header claims: every tensor's
// shape against the architecture, every architecture size against the tensors, no tensor left
// unused. Inference runs in float32 through the public RNN<float>/Stream<float> engine.
#include "fastlstm/model.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <new>
#include <set>
#include <sstream>

#include "fastlstm/rnn.hpp"
#include "json.hpp"
#include "kernels/gemm.hpp"
#include "safetensors.hpp"

namespace fastlstm {

namespace {

constexpr int64_t kFormatVersion = 1;
// Bound on every size in the architecture, so no product of two of them overflows int64. The
// real bound comes from the tensors: each must match the file's data.
constexpr int64_t kMaxDim = int64_t(1) << 30;

enum class LayerKind { Embedding, Recurrent, Dense, Dropout };
enum class Merge { Concat, Sum, Mul, Ave };
enum class Act { Linear, Relu, Tanh, Sigmoid, Softmax };

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t k = 0; k < s.size(); ++k) out += (k ? ", " : "") + std::to_string(s[k]);
  return out + "]";
}

struct Layer {
  LayerKind kind = LayerKind::Dropout;
  std::string label;  // "layers.2 (LSTM)" or "LSTM": how messages name it
  int64_t in_dim = 0, out_dim = 0;
  bool in_seq = true, out_seq = true;  // [B, T, .] in / out (else [B, .])
  // Embedding
  int64_t vocab = 0;
  bool mask_zero = false;
  std::vector<float> table;  // [vocab, out_dim]
  // Recurrent (a bare module or one Sequential layer; Bidirectional = bidirectional config)
  RNNConfig rnn;
  bool return_sequences = true, go_backwards = false;
  Merge merge = Merge::Concat;
  std::vector<float> params;  // [num_params(rnn)], laid out by param_layout
  // Dense
  Act act = Act::Linear;
  std::vector<float> kernel;  // [in_dim, out_dim]
  std::vector<float> bias;    // [out_dim] or empty
};

// What one predict call needs besides the weights; pooled in Model::Impl.
struct Workspace {
  std::vector<std::unique_ptr<RNN<float>>> rnns;  // [layers], null for non-recurrent layers
  std::vector<float> buf[2];                      // layer outputs, alternating
  std::vector<float> rev;                         // [B, T, I] go_backwards: reversed input
  std::vector<float> seq;                         // [B, T, D*S] recurrent output before merge
  std::vector<float> hn;                          // [L*D, B, S]
  std::vector<int64_t> lengths;                   // [B] from mask_zero
  std::vector<int64_t> eng_lengths;               // [B] lengths >= 1 for the engine
};

// Everything a file defines: the layers and the self-check.
struct ModelSpec {
  std::string path;
  std::string class_name;
  std::vector<Layer> layers;
  bool tokens = false;
  int64_t input_size = 0, output_size = 0;
  bool out_seq = true;
  bool has_check = false;
  std::vector<float> check_x;        // [B, T, F]
  std::vector<int64_t> check_tok;    // [B, T]
  std::vector<int64_t> check_len;    // [B] or empty
  std::vector<int64_t> check_shape;  // of the input
  std::vector<float> check_y;
  std::vector<int64_t> check_y_shape;
  std::string check_y_name;
};

}  // namespace

struct Model::Impl : ModelSpec {
  explicit Impl(ModelSpec spec) : ModelSpec(std::move(spec)) {}

  mutable std::mutex pool_mutex;
  mutable std::vector<std::unique_ptr<Workspace>> pool;  // idle workspaces

  // A pooled workspace for the length of one call, returned however the call ends.
  struct Lease {
    explicit Lease(const Impl& m) : model(m), ws(m.acquire()) {}
    ~Lease() { model.release(std::move(ws)); }
    const Impl& model;
    std::unique_ptr<Workspace> ws;
  };

  std::vector<int64_t> run(Workspace& ws, const float* x, const int64_t* tok, int64_t B,
                           int64_t T, const int64_t* lengths, std::vector<float>& out) const;
  std::unique_ptr<Workspace> acquire() const;
  void release(std::unique_ptr<Workspace> ws) const;
  void self_check() const;
};

// ============================================================================ loading
namespace {

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
                  int64_t lo, const int64_t* dflt = nullptr) const {
    const detail::Json* v = obj.find(key);
    if (!v) {
      if (dflt) return *dflt;
      header_fail(ctx + " has no \"" + key + "\"");
    }
    if (!v->is_integer())
      header_fail(ctx + "." + key + " must be an integer, got " +
                  detail::Json::kind_name(v->kind()));
    if (v->as_int() < lo || v->as_int() > kMaxDim)
      header_fail(ctx + "." + key + " must be in [" + std::to_string(lo) + ", " +
                  std::to_string(kMaxDim) + "], got " + std::to_string(v->as_int()));
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
    if (t.dtype != "F32" && t.dtype != "F64")
      header_fail("tensor \"" + name + "\" (" + what + ") has dtype " + t.dtype +
                  ", expected F32 or F64");
    if (t.shape != shape)
      throw ShapeError(where_ + ": tensor \"" + name + "\" has shape " + shape_str(t.shape) +
                       ", expected " + shape_str(shape) + " (" + what + ")");
    return st_.read_float(t);
  }
  // Copies a recurrent network's weights (names from param_layout, with a prefix) into params.
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
      if (t.shape != p.shape)
        throw ShapeError(where_ + ": tensor \"" + prefix + p.name + "\" has shape " +
                         shape_str(t.shape) + ", expected " + shape_str(p.shape) + " (" + what +
                         describe(c) + ")");
    }
    params.assign(static_cast<size_t>(num_params(c)), 0.0f);
    for (const auto& p : layout) {
      std::vector<float> w = weight(prefix + p.name, p.shape, what);
      std::copy(w.begin(), w.end(), params.begin() + p.offset);
    }
  }
  static std::string describe(const RNNConfig& c) {
    std::string s = ": input_size=" + std::to_string(c.input_size) +
                    ", hidden_size=" + std::to_string(c.hidden_size);
    if (c.num_layers > 1) s += ", num_layers=" + std::to_string(c.num_layers);
    if (c.bidirectional) s += ", bidirectional";
    if (c.proj_size) s += ", proj_size=" + std::to_string(c.proj_size);
    if (c.peephole) s += ", peephole";
    if (!c.bias) s += ", bias=false";
    return s;
  }

  // ---- architectures
  void bare_module(const detail::Json& m, const std::string& cls, ModelSpec& impl) {
    const std::string ctx = "model";
    const detail::Json& cfg = get_object(m, "config", ctx);
    const std::string cctx = "model.config";
    Layer L;
    L.kind = LayerKind::Recurrent;
    L.label = cls;
    RNNConfig& c = L.rnn;
    c.cell = cls == "LSTM" ? CellType::LSTM : CellType::GRU;
    const int64_t one = 1, zero = 0;
    c.input_size = get_int(cfg, "input_size", cctx, 1);
    c.hidden_size = get_int(cfg, "hidden_size", cctx, 1);
    c.num_layers = get_int(cfg, "num_layers", cctx, 1, &one);
    c.bias = get_bool(cfg, "bias", cctx, true);
    c.bidirectional = get_bool(cfg, "bidirectional", cctx, false);
    c.proj_size = get_int(cfg, "proj_size", cctx, 0, &zero);
    c.peephole = get_bool(cfg, "peephole", cctx, false);
    get_bool(cfg, "batch_first", cctx, false);  // type-checked; predict is batch-first always
    check_dtype(m, ctx);
    rnn_weights(c, "", cls, L.params);
    L.in_dim = c.input_size;
    L.out_dim = c.num_directions() * c.state_size();
    impl.layers.push_back(std::move(L));
  }

  void check_dtype(const detail::Json& m, const std::string& ctx) const {
    const std::string dt = get_string(m, "dtype", ctx, "float32");
    if (dt != "float32" && dt != "float64")
      header_fail(ctx + ".dtype must be \"float32\" or \"float64\", got \"" + dt + "\"");
  }

  // An LSTM or GRU layer config (inside Sequential or Bidirectional) into L.rnn.
  void recurrent_layer(const std::string& cls, const detail::Json& cfg, const std::string& cctx,
                       Layer& L) {
    RNNConfig& c = L.rnn;
    c.cell = cls == "LSTM" ? CellType::LSTM : CellType::GRU;
    c.hidden_size = get_int(cfg, "units", cctx, 1);
    c.input_size = get_int(cfg, "input_size", cctx, 1);
    c.num_layers = 1;
    c.bias = get_bool(cfg, "bias", cctx, true);
    c.peephole = get_bool(cfg, "peephole", cctx, false);
    if (c.peephole && c.cell == CellType::GRU) header_fail(cctx + ".peephole is LSTM-only");
    L.return_sequences = get_bool(cfg, "return_sequences", cctx, false);
    L.go_backwards = get_bool(cfg, "go_backwards", cctx, false);
  }

  void sequential(const detail::Json& m, ModelSpec& impl) {
    check_dtype(m, "model");
    const detail::Json& layers = field(m, "layers", "model");
    if (!layers.is_array()) header_fail("model.layers must be an array");
    if (layers.items().empty()) header_fail("model.layers is empty");
    int64_t cur = -1;  // feature size flowing between layers; -1 until a layer fixes it
    bool seq = true;
    std::string prev_label = "the input";
    for (size_t i = 0; i < layers.items().size(); ++i) {
      const detail::Json& lj = layers.items()[i];
      const std::string ctx = "model.layers[" + std::to_string(i) + "]";
      const std::string prefix = "layers." + std::to_string(i) + ".";
      if (!lj.is_object()) header_fail(ctx + " must be an object");
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
        L.kind = LayerKind::Embedding;
        L.vocab = get_int(cfg, "input_dim", cctx, 1);
        L.out_dim = get_int(cfg, "output_dim", cctx, 1);
        L.mask_zero = get_bool(cfg, "mask_zero", cctx, false);
        L.table = weight(prefix + "embeddings", {L.vocab, L.out_dim},
                         "Embedding input_dim=" + std::to_string(L.vocab) +
                             ", output_dim=" + std::to_string(L.out_dim));
        impl.tokens = true;
        impl.input_size = L.vocab;
        L.in_dim = L.vocab;
      } else if (cls == "LSTM" || cls == "GRU" || cls == "Bidirectional") {
        L.kind = LayerKind::Recurrent;
        std::string inner = cls;
        if (cls == "Bidirectional") {
          const std::string mm = get_string(cfg, "merge_mode", cctx, "concat");
          if (mm == "concat") L.merge = Merge::Concat;
          else if (mm == "sum") L.merge = Merge::Sum;
          else if (mm == "mul") L.merge = Merge::Mul;
          else if (mm == "ave") L.merge = Merge::Ave;
          else
            header_fail(cctx + ".merge_mode must be one of concat, sum, mul, ave; got \"" + mm +
                        "\"");
          const detail::Json& lay = get_object(cfg, "layer", cctx);
          inner = get_string(lay, "class", cctx + ".layer");
          if (inner != "LSTM" && inner != "GRU")
            header_fail(cctx + ".layer.class must be LSTM or GRU, got \"" + inner + "\"");
          recurrent_layer(inner, get_object(lay, "config", cctx + ".layer"),
                          cctx + ".layer.config", L);
          if (L.go_backwards)
            header_fail(L.label + ": an inner layer with go_backwards=true is not supported");
          L.rnn.bidirectional = true;
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
        L.kind = LayerKind::Dense;
        L.out_dim = get_int(cfg, "units", cctx, 1);
        L.in_dim = get_int(cfg, "input_dim", cctx, 1);
        need_input(L.in_dim, "input_dim");
        const std::string a = get_string(cfg, "activation", cctx, "linear");
        if (a == "linear") L.act = Act::Linear;
        else if (a == "relu") L.act = Act::Relu;
        else if (a == "tanh") L.act = Act::Tanh;
        else if (a == "sigmoid") L.act = Act::Sigmoid;
        else if (a == "softmax") L.act = Act::Softmax;
        else
          header_fail(cctx + ".activation must be one of linear, relu, tanh, sigmoid, softmax; "
                      "got \"" + a + "\"");
        const std::string dims = "Dense input_dim=" + std::to_string(L.in_dim) +
                                 ", units=" + std::to_string(L.out_dim);
        L.kernel = weight(prefix + "kernel", {L.in_dim, L.out_dim}, dims);
        if (get_bool(cfg, "use_bias", cctx, true))
          L.bias = weight(prefix + "bias", {L.out_dim}, dims);
      } else if (cls == "Dropout") {
        L.kind = LayerKind::Dropout;
        const detail::Json* r = cfg.find("rate");
        if (r && (!r->is_number() || !(r->as_double() >= 0.0 && r->as_double() < 1.0)))
          header_fail(cctx + ".rate must be a number in [0, 1)");
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
      if (tx.dtype != "F32" && tx.dtype != "F64")
        header_fail("self-check input \"" + xin + "\" has dtype " + tx.dtype +
                    ", expected F32 or F64");
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
    if (ty.dtype != "F32" && ty.dtype != "F64")
      header_fail("self-check output \"" + yout + "\" has dtype " + ty.dtype +
                  ", expected F32 or F64");
    impl.check_y = st_.read_float(ty);
    impl.check_y_shape = ty.shape;
    impl.check_y_name = yout;
    impl.has_check = true;
  }

  std::vector<int64_t> read_ints(const detail::TensorEntry& t, const std::string& what) {
    if (t.dtype != "I64" && t.dtype != "I32")
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
};

std::vector<char> read_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw FileOpenError("cannot read model file '" + path + "': it is a directory");
  errno = 0;
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    const int err = errno;
    throw FileOpenError("cannot open model file '" + path + "': " +
                        (err ? std::strerror(err) : "unknown error"));
  }
  std::vector<char> bytes;
  char chunk[1 << 16];
  while (f.read(chunk, sizeof chunk) || f.gcount() > 0)
    bytes.insert(bytes.end(), chunk, chunk + f.gcount());
  if (f.bad()) throw FileOpenError("cannot read model file '" + path + "': read error");
  return bytes;
}

}  // namespace


static ModelSpec load_spec(std::vector<char> bytes, const std::string& path) {
  const std::string where = "model file '" + path + "'";
  const detail::SafeTensors st = detail::SafeTensors::parse(std::move(bytes), where);
  ModelSpec spec;
  ModelSpec* impl = &spec;
  impl->path = path;
  Loader ld(st, where);

  const std::string* meta = st.metadata_value("fastlstm");
  if (!meta)
    throw HeaderError(where + " is not a fastlstm model file: its safetensors header has no "
                      "__metadata__[\"fastlstm\"] entry");
  detail::Json j;
  try {
    j = detail::Json::parse(*meta);
  } catch (const detail::JsonError& e) {
    throw HeaderError(where + ": __metadata__[\"fastlstm\"] is not valid JSON: " + e.what());
  }
  if (!j.is_object()) ld.header_fail("__metadata__[\"fastlstm\"] must be a JSON object");
  const detail::Json* fv = j.find("format_version");
  if (!fv) ld.header_fail("__metadata__[\"fastlstm\"] has no \"format_version\"");
  if (!fv->is_integer())
    throw FormatVersionError(where + ": format_version must be an integer, got " +
                             detail::Json::kind_name(fv->kind()));
  if (fv->as_int() != kFormatVersion)
    throw FormatVersionError(
        where + " has format_version " + std::to_string(fv->as_int()) +
        "; this fastlstm reads format_version " + std::to_string(kFormatVersion) +
        (fv->as_int() > kFormatVersion ? " (the file was written by a newer fastlstm)" : ""));
  const detail::Json& m = ld.get_object(j, "model", "__metadata__[\"fastlstm\"]");
  const std::string cls = ld.get_string(m, "class", "model");
  impl->class_name = cls;
  if (cls == "LSTM" || cls == "GRU") {
    ld.bare_module(m, cls, *impl);
    impl->input_size = impl->layers[0].in_dim;
  } else if (cls == "Sequential") {
    ld.sequential(m, *impl);
  } else {
    ld.header_fail("model.class must be \"LSTM\", \"GRU\" or \"Sequential\", got \"" + cls +
                   "\"");
  }
  impl->output_size = impl->layers.back().out_dim;
  impl->out_seq = impl->layers.back().out_seq;

  if (const std::string* sc = st.metadata_value("fastlstm_selfcheck"))
    ld.self_check_spec(*sc, *impl);
  ld.check_all_used();
  return spec;
}

Model::Model(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

Model Model::load(const std::string& path, bool verify) {
  Model m(std::make_shared<const Impl>(load_spec(read_file(path), path)));
  if (verify) m.verify();
  return m;
}

Model Model::load_from_memory(const void* data, size_t size, bool verify,
                              const std::string& name) {
  if (!data && size) throw Error("load_from_memory: data is null");
  const char* p = static_cast<const char*>(data);
  Model m(std::make_shared<const Impl>(load_spec(std::vector<char>(p, p + size), name)));
  if (verify) m.verify();
  return m;
}

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

// y [rows, U] = act(x [rows, K] kernel [K, U] + bias)
void dense_forward(const Layer& L, int64_t rows, const float* x, float* y) {
  const int64_t K = L.in_dim, U = L.out_dim;
  detail::gemm_nn<float>(rows, U, K, x, K, L.kernel.data(), U, y, U, false);
  for (int64_t r = 0; r < rows; ++r) {
    float* v = y + r * U;
    if (!L.bias.empty())
      for (int64_t u = 0; u < U; ++u) v[u] += L.bias[u];
    switch (L.act) {
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

// tok: [B, T] (T = 1 for a stream step); y: [B, T, E]
void embed(const Layer& L, int64_t B, int64_t T, const int64_t* tok, float* y, bool stream) {
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
          // right padding: a row's length is its last nonzero token + 1 (0 if all padding);
          // explicit lengths can only shorten it
          ws.lengths.resize(B);
          for (int64_t b = 0; b < B; ++b) {
            int64_t n = T;
            while (n > 0 && tok[b * T + n - 1] == 0) --n;
            ws.lengths[b] = lens ? std::min(n, lens[b]) : n;
          }
          lens = ws.lengths.data();
        }
        cur = y;
        break;
      }
      case LayerKind::Recurrent: {
        const RNNConfig& c = L.rnn;
        const int64_t I = c.input_size, D = c.num_directions(), S = c.state_size();
        const int64_t DS = D * S, top = (c.num_layers - 1) * D;
        const float* in = cur;
        if (L.go_backwards) {
          // each sequence's valid steps in reverse, then zeros
          ws.rev.assign(static_cast<size_t>(B * T * I), 0.0f);
          for (int64_t b = 0; b < B; ++b) {
            const int64_t n = lens ? lens[b] : T;
            for (int64_t s = 0; s < n; ++s)
              std::copy_n(cur + (b * T + n - 1 - s) * I, I, ws.rev.data() + (b * T + s) * I);
          }
          in = ws.rev.data();
        }
        // the engine runs every sequence for at least one step: empty ones get one step and
        // their outputs and states are zeroed afterwards
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
        if (!ws.rnns[i]) ws.rnns[i] = std::make_unique<RNN<float>>(c);
        ws.seq.resize(static_cast<size_t>(B * T * DS));
        ws.hn.resize(static_cast<size_t>(c.num_layers * D * B * S));
        ForwardArgs<float> fa;
        fa.params = L.params.data();
        fa.x = in;
        fa.lengths = eng_len;
        ForwardOutputs<float> fo;
        fo.output = ws.seq.data();
        fo.h_n = ws.hn.data();
        ws.rnns[i]->forward(SeqShape{T, B, true}, fa, fo);
        if (any_empty)
          for (int64_t b = 0; b < B; ++b)
            if (lens[b] == 0) {
              std::fill_n(ws.seq.data() + b * T * DS, T * DS, 0.0f);
              for (int64_t k = 0; k < c.num_layers * D; ++k)
                std::fill_n(ws.hn.data() + (k * B + b) * S, S, 0.0f);
            }
        if (L.return_sequences) {
          if (D == 1 || L.merge == Merge::Concat) {
            next_buf(0);
            std::swap(ws.buf[which], ws.seq);  // the output is the engine's, as it is
          } else {
            float* y = next_buf(static_cast<size_t>(B * T * S));
            for (int64_t r = 0; r < B * T; ++r)
              for (int64_t u = 0; u < S; ++u)
                y[r * S + u] = merge2(L.merge, ws.seq[r * DS + u], ws.seq[r * DS + S + u]);
          }
        } else {
          float* y = next_buf(static_cast<size_t>(B * L.out_dim));
          const float* fwd = ws.hn.data() + top * B * S;
          const float* bwd = D == 2 ? fwd + B * S : nullptr;
          for (int64_t b = 0; b < B; ++b) {
            if (!bwd) {
              std::copy_n(fwd + b * S, S, y + b * S);
            } else if (L.merge == Merge::Concat) {
              std::copy_n(fwd + b * S, S, y + b * DS);
              std::copy_n(bwd + b * S, S, y + b * DS + S);
            } else {
              for (int64_t u = 0; u < S; ++u)
                y[b * S + u] = merge2(L.merge, fwd[b * S + u], bwd[b * S + u]);
            }
          }
          seq = false;
        }
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
  for (const Layer& L : impl_->layers)
    if (L.kind == LayerKind::Recurrent && (L.rnn.bidirectional || L.go_backwards)) return false;
  return true;
}

void Model::release_workspaces() const {
  std::lock_guard<std::mutex> lock(impl_->pool_mutex);
  impl_->pool.clear();
}

std::string Model::summary() const {
  const Impl& m = *impl_;
  std::ostringstream os;
  os << m.class_name << " from '" << m.path << "'\n";
  for (const Layer& L : m.layers) {
    os << "  " << L.label << ": ";
    const char* in_shape = L.in_seq ? "[B, T, " : "[B, ";
    const char* out_shape = L.out_seq ? "[B, T, " : "[B, ";
    if (L.kind == LayerKind::Embedding) os << "[B, T] tokens < " << L.vocab;
    else os << in_shape << L.in_dim << "]";
    os << " -> " << out_shape << L.out_dim << "]";
    if (L.kind == LayerKind::Recurrent) {
      os << (L.rnn.cell == CellType::LSTM ? " LSTM" : " GRU")
         << Loader::describe(L.rnn).substr(1);
      if (L.rnn.bidirectional)
        os << ", merge=" << (L.merge == Merge::Concat ? "concat" : L.merge == Merge::Sum ? "sum"
                             : L.merge == Merge::Mul ? "mul" : "ave");
      if (L.go_backwards) os << ", go_backwards";
    }
    os << "\n";
  }
  return os.str();
}

// ============================================================================ stream
struct Model::Stream::Impl {
  std::shared_ptr<const Model::Impl> model;
  int64_t B = 1;
  std::vector<std::unique_ptr<fastlstm::Stream<float>>> streams;  // [layers]
  std::vector<float> buf[2];                                      // [B, widest layer]

  void run(const float* x_t, const int64_t* tok, float* y_t) {
    const Model::Impl& m = *model;
    const float* cur = x_t;
    int which = -1;
    for (size_t i = 0; i < m.layers.size(); ++i) {
      const Layer& L = m.layers[i];
      if (L.kind == LayerKind::Dropout) continue;
      which = which == 0 ? 1 : 0;
      float* y = buf[which].data();
      if (L.kind == LayerKind::Embedding) embed(L, B, 1, tok, y, true);
      else if (L.kind == LayerKind::Recurrent) streams[i]->step(cur, y);
      else dense_forward(L, B, cur, y);
      cur = y;
    }
    std::copy_n(cur, B * m.output_size, y_t);
  }
};

Model::Stream::Stream(const Model& model, int64_t batch) {
  if (batch < 1) throw Error("Model::Stream: batch must be >= 1, got " + std::to_string(batch));
  if (!model.can_stream())
    throw Error("Model::Stream: the model in '" + model.path() + "' has a bidirectional or "
                "go_backwards layer, which needs whole sequences: use predict");
  impl_ = std::make_unique<Impl>();
  impl_->model = model.impl_;
  impl_->B = batch;
  const Model::Impl& m = *model.impl_;
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
  if (impl_->model->tokens)
    throw Error("Model::Stream::step: this model starts with an Embedding layer; pass int64 "
                "tokens [B]");
  impl_->run(x_t, nullptr, y_t);
}

void Model::Stream::step(const int64_t* tokens_t, float* y_t) {
  if (!impl_->model->tokens)
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
