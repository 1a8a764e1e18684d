// Internal: what a model file defines (ModelSpec, its layers) and Model::Impl, shared by the
// file reader (model_reader.cpp: parse and validate, see docs/model-format.md) and the runner
// (model.cpp: predict and streams).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "fastlstm/model.hpp"
#include "fastlstm/rnn.hpp"

namespace fastlstm {
namespace detail {

// The newest format version this library reads and writes; it reads every version from
// kOldestFormatVersion on. Version 2 added quantized files (model.precision, BF16 / I8 weights),
// functional models and the compile state; a file that needs none of them is still written as
// version 1.
inline constexpr int64_t kFormatVersion = 2;
inline constexpr int64_t kOldestFormatVersion = 1;
// Documented limits of the model format (README, "Model files"), far above any real model and
// checked before anything is allocated or looped over on the strength of a claimed size: every
// feature size (input_size, hidden_size, proj_size, units, input_dim of Dense, output_dim) at
// most kMaxSize (2^24), num_layers and the number of Sequential layers at most kMaxLayers
// (1024), an Embedding's vocabulary at most kMaxVocab (2^31); no product of two of them
// overflows int64. Tensor bytes are bounded by the file itself (each tensor must match its
// shape and lie in the file; the header is at most 100 MB).
inline constexpr int64_t kMaxDim = kMaxSize;
inline constexpr int64_t kMaxVocab = int64_t(1) << 31;

// Dropout: the identity at inference (Dropout, SpatialDropout1D). The kinds after Dropout occur
// in functional models only (model_graph.cpp).
enum class LayerKind {
  Embedding, Recurrent, Dense, Dropout,
  Activation, RepeatVector, Merge, Flatten, Reshape, Attention
};
enum class Merge { Concat, Sum, Mul, Ave };
enum class Act { Linear, Relu, Tanh, Sigmoid, Softmax };

inline std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t k = 0; k < s.size(); ++k) out += (k ? ", " : "") + std::to_string(s[k]);
  return out + "]";
}

// "(None, 7, None)": a per-sample shape (-1: any size) as Python prints it with its batch axis
inline std::string shape_text(const std::vector<int64_t>& s) {
  std::string out = "(None";
  for (int64_t d : s) out += ", " + (d < 0 ? std::string("None") : std::to_string(d));
  return out + ")";
}

// a and b can be the same per-sample shape: same rank, the sizes known in both equal
inline bool shapes_compatible(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  if (a.size() != b.size()) return false;
  for (size_t k = 0; k < a.size(); ++k)
    if (a[k] >= 0 && b[k] >= 0 && a[k] != b[k]) return false;
  return true;
}

// ": input_size=8, hidden_size=16, ...": how messages and summaries describe a recurrent config
inline std::string describe_config(const RNNConfig& c) {
  std::string s = ": input_size=" + std::to_string(c.input_size) +
                  ", hidden_size=" + std::to_string(c.hidden_size);
  if (c.num_layers > 1) s += ", num_layers=" + std::to_string(c.num_layers);
  if (c.bidirectional) s += ", bidirectional";
  if (c.proj_size) s += ", proj_size=" + std::to_string(c.proj_size);
  if (c.peephole) s += ", peephole";
  if (!c.bias) s += ", bias=false";
  return s;
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
  bool stateful = false;        // kept for the Python loader; predict ignores it
  double rate = 0.0;            // Dropout's rate, a recurrent layer's dropout (inference: unused)
  double recurrent_rate = 0.0;  // a recurrent layer's recurrent_dropout (inference: unused)
  Merge merge = Merge::Concat;
  std::vector<float> params;  // [num_params(rnn)], laid out by param_layout
  // Dense
  Act act = Act::Linear;
  std::vector<float> kernel;  // [in_dim, out_dim]
  std::vector<float> bias;    // [out_dim] or empty
  // functional models only
  bool return_state = false;          // Recurrent: outputs [y, h, c] (LSTM) / [y, h] (GRU)
  int64_t repeat = 0;                 // RepeatVector's n
  int64_t axis = -1;                  // Concatenate's axis (batch axis 0)
  std::vector<int64_t> target_shape;  // Reshape's, one entry may be -1
  bool additive = false;              // Attention: AdditiveAttention (else dot-product)
  bool use_scale = false;             // Attention: scale holds [] (dot) or [dim] (additive)
  std::vector<float> scale;
};

// ---- functional models (docs/model-format.md, "Functional models"), read by model_graph.cpp
// and run by model_graph_run.cpp. Nested models are inlined at load, so the runner sees one
// flat graph of leaf-layer calls in an order where each call comes after what it reads.
// A tensor: output `out` of node `node`, or (node < 0) model input -1 - node.
struct GraphRef {
  int64_t node = -1, out = 0;
};
// One call of a leaf layer (an index into ModelSpec::layers: shared layers are called by
// several nodes).
struct GraphNode {
  size_t layer = 0;
  std::vector<GraphRef> inputs;
  bool scores = false;  // Attention: return_attention_scores
  bool causal = false;  // Attention: use_causal_mask
  std::vector<std::vector<int64_t>> out_shapes;  // per sample (no batch axis), -1 unknown
};
struct GraphIO {
  std::string name;
  std::vector<int64_t> shape;  // per sample (no batch axis), -1: any size
  bool tokens = false;         // int32/int64 token ids (inputs only)
};
struct Graph {
  std::vector<GraphIO> inputs, outputs;
  std::vector<GraphNode> nodes;
  std::vector<GraphRef> output_refs;
};

// Load-time limits of a graph besides the format's (kMaxLayers layers, calls per layer, inputs
// and outputs; 16 nesting levels): the calls after nested models are inlined, and the values per
// sample of a tensor whose shape is known.
inline constexpr int64_t kMaxGraphNodes = int64_t(1) << 16;
inline constexpr int64_t kMaxGraphValues = int64_t(1) << 31;

// A layer call's output shapes (per sample, -1 unknown) from its input shapes; throws
// ShapeError naming the layer. Used at load (unknown sizes allowed) and by the runner.
std::vector<std::vector<int64_t>> graph_output_shapes(
    const Layer& L, const GraphNode& node, const std::vector<std::vector<int64_t>>& in);

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
  std::string dtype = "float32";  // of the weights and self-check floats ("float32"/"float64")
  int64_t format_version = 1;  // the file's
  // of the recurrent layers' matrices as stored (bf16 / int8: a quantized file; the layers'
  // rnn.precision says the same, and their params hold the weights' values as float32)
  Precision precision = Precision::Float32;
  bool batch_first = false;       // a bare module's flag (predict is batch-first always)
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
  std::string check_x_name, check_len_name;  // tensor names ("" when absent)
  // Python only (the C++ runner refuses a functional model and ignores the compile state):
  std::string graph_json;    // class "Model": the __metadata__["fastlstm"] text, its graph
  std::string compile_json;  // __metadata__["fastlstm_compile"] text, "" when absent
  bool is_graph = false;     // a functional model run by C++ (graph below; layers its leaves)
  Graph graph;
};

// The runner's pieces shared by Sequential (model.cpp) and graphs (model_graph_run.cpp).
// v [rows, U] = act(v) in place (softmax over U)
void activate(Act act, int64_t rows, int64_t U, float* v);
// y [rows, U] = act(x [rows, K] kernel [K, U] + bias)
void dense_forward(const Layer& L, int64_t rows, const float* x, float* y);
// tok: [B, T] (T = 1 for a stream step); y: [B, T, E]
void embed(const Layer& L, int64_t B, int64_t T, const int64_t* tok, float* y, bool stream);

// One recurrent layer (L.rnn) over x [B, T, I], batch-first: lens [B] in [0, T] or nullptr (all
// T; an empty sequence gives zero outputs and its initial state), h0 [L*D, B, S] / c0
// [L*D, B, H] or nullptr (zeros). y is resized and filled with the layer's output ([B, T, U] or
// [B, U], Bidirectional halves merged); the final states are left in ws.hn [L*D, B, S] and,
// when c_n is given, in c_n [L*D, B, H] (LSTM).
void recurrent_forward(const Layer& L, RNN<float>& rnn, Workspace& ws, int64_t B, int64_t T,
                       const float* x, const int64_t* lens, const float* h0, const float* c0,
                       std::vector<float>& y, float* c_n);

// Reads and validates a model file's bytes; throws the fastlstm::Error subclasses of model.hpp.
// A functional model (class "Model") is refused unless `graph_for_python`: then the container,
// version, dtype and weights' dtypes are checked and the graph is handed over in graph_json
// (Python checks and builds it; the C++ runner cannot run it yet).
ModelSpec load_spec(std::vector<char> bytes, const std::string& path,
                    bool graph_for_python = false);
// The whole file at `path`, or FileOpenError.
std::vector<char> read_file(const std::string& path);

}  // namespace detail

struct Model::Impl : detail::ModelSpec {
  explicit Impl(detail::ModelSpec spec) : detail::ModelSpec(std::move(spec)) {}

  mutable std::mutex pool_mutex;
  mutable std::vector<std::unique_ptr<detail::Workspace>> pool;  // idle workspaces

  // A pooled workspace for the length of one call, returned however the call ends.
  struct Lease {
    explicit Lease(const Impl& m) : model(m), ws(m.acquire()) {}
    ~Lease() { model.release(std::move(ws)); }
    const Impl& model;
    std::unique_ptr<detail::Workspace> ws;
  };

  std::vector<int64_t> run(detail::Workspace& ws, const float* x, const int64_t* tok, int64_t B,
                           int64_t T, const int64_t* lengths, std::vector<float>& out) const;
  std::vector<Tensor> run_graph(detail::Workspace& ws, const std::vector<Tensor>& inputs) const;
  std::unique_ptr<detail::Workspace> acquire() const;
  void release(std::unique_ptr<detail::Workspace> ws) const;
  void self_check() const;
};

}  // namespace fastlstm
