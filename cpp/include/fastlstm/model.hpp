// fastlstm: load a model file saved by Python (fastlstm's safetensors format) and run it.
//
//   auto model = fastlstm::Model::load("model.safetensors", /*verify=*/true);
//   std::vector<float> y;
//   auto shape = model.predict(x, B, T, F, /*lengths=*/nullptr, y);  // y: [B, T, U] or [B, U]
//
// A model file holds a bare recurrent module (class LSTM or GRU: stacked, bidirectional,
// projection, peephole), a Sequential stack of Embedding, LSTM, GRU, Bidirectional, Dense and
// Dropout layers, or a functional model (class "Model", Keras's Model(inputs, outputs)): several
// named inputs and outputs, run with Model::run, e.g. an encoder that returns its LSTM states
// and a decoder that takes them and returns the next ones (examples/cpp/fastlstm_seq2seq.cpp):
//
//   auto dec = fastlstm::Model::load("decoder.safetensors");
//   std::vector<fastlstm::Tensor> out = dec.run({token, h, c});  // -> {probabilities, h, c}
//
// The C++ runner runs functional models of these layers, as Python's layers compute at
// inference: Embedding (without mask_zero), LSTM and GRU (return_sequences, return_state,
// initial states as the call's extra inputs, go_backwards), Bidirectional (also with states:
// forward h, c then backward h, c), Dense on any rank, TimeDistributed(Dense, Dropout or
// Activation), Dropout and SpatialDropout1D (the identity), Activation, RepeatVector,
// Concatenate, Add, Multiply, Average, Flatten, Reshape, Attention and AdditiveAttention (with
// return_attention_scores and use_causal_mask), nested functional and Sequential models, and
// layers shared by several calls. Load refuses (ModelFileError naming the layer) any other
// layer, stateful layers, and anything that makes a mask (Embedding mask_zero=true, Masking),
// which the C++ runner does not propagate. Everything runs in float32 (float64 files are converted on load); the
// recurrent layers' products can run in bf16 or int8 (a quantized file, or
// LoadOptions::precision). The file
// format, and what a reader refuses, is specified in docs/model-format.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fastlstm/config.hpp"

namespace fastlstm {

// Any problem with a model file; what() names the file.
class ModelFileError : public Error {
 public:
  using Error::Error;
};
// The file does not exist or cannot be read.
class FileOpenError : public ModelFileError {
 public:
  using ModelFileError::ModelFileError;
};
// The file ends before the data its header describes.
class TruncatedFileError : public ModelFileError {
 public:
  using ModelFileError::ModelFileError;
};
// The header is not valid: JSON syntax (with the byte position), a malformed tensor entry,
// offsets out of bounds or overlapping, a missing or unknown field of the architecture.
class HeaderError : public ModelFileError {
 public:
  using ModelFileError::ModelFileError;
};
// The file was written in a format version this library does not read.
class FormatVersionError : public ModelFileError {
 public:
  using ModelFileError::ModelFileError;
};
// The self-check stored in the file gave different outputs (load(..., verify=true)).
class SelfCheckError : public ModelFileError {
 public:
  using ModelFileError::ModelFileError;
};
// A tensor in a file, or an input given to predict, does not have the shape the model needs.
class ShapeError : public Error {
 public:
  using Error::Error;
};

// A value given to or returned by Model::run: batch axis first, row-major.
struct Tensor {
  std::vector<int64_t> shape;   // [B, ...]
  std::vector<float> values;    // a float tensor: product(shape) values (else empty)
  std::vector<int64_t> tokens;  // a token-id input (input_takes_tokens(k)): product(shape) ids
};

// A loaded model. Copies are cheap and share the (immutable) weights. A const Model is safe to
// use from several threads at once: every predict call takes a workspace from a small pool
// (guarded by a mutex, grown to the number of concurrent callers, reused afterwards), so the
// steady state allocates only the output vector's growth.
// How Model::load reads a file.
struct LoadOptions {
  bool verify = false;  // run the file's self-check (at the precision the file was saved in)
  // Float32: run at the file's precision. BF16 / Int8: quantize every recurrent layer's
  // weights on load (inference at that precision, see fastlstm/config.hpp's Precision). A
  // quantized file (saved quantized from Python, docs/model-format.md) runs at its own
  // precision: Float32 or that precision; another one is a ModelFileError.
  Precision precision = Precision::Float32;
};

class Model {
 public:
  class Stream;

  // Reads and validates the file. verify=true runs the self-check stored in the file (if any)
  // and throws SelfCheckError when the outputs differ (relative tolerance 1e-4).
  static Model load(const std::string& path, bool verify = false);
  // The same from bytes in memory (e.g. a model compiled into the binary); name is used in
  // error messages in place of the path. The bytes are copied.
  static Model load_from_memory(const void* data, size_t size, bool verify = false,
                                const std::string& name = "<memory>");
  // With options, e.g. load-time quantization:
  //   fastlstm::LoadOptions o;  o.precision = fastlstm::Precision::Int8;
  //   auto model = fastlstm::Model::load("model.safetensors", o);
  static Model load(const std::string& path, const LoadOptions& options);
  static Model load_from_memory(const void* data, size_t size, const LoadOptions& options,
                                const std::string& name = "<memory>");

  // predict: for a functional model only with one input [B, T, F] (tokens [B, T]) and one
  // output, without lengths; use run otherwise.
  // Batch-first float input. x: [B, T, F] with F == input_size(); lengths: [B] valid steps of
  // each sequence (nullptr = all T), each in [1, T] for a bare LSTM/GRU and in [0, T] for a
  // Sequential (an empty sequence: its recurrent layers return zeros). out is resized and
  // filled; the returned shape is {B, T, U} (returns_sequences()) or {B, U}, U = output_size().
  // A recurrent layer's outputs past a sequence's length are zero; Dense layers above it are
  // applied there too (as in Keras and fastlstm.models).
  std::vector<int64_t> predict(const float* x, int64_t B, int64_t T, int64_t F,
                               const int64_t* lengths, std::vector<float>& out) const;
  // Token input for models whose first layer is Embedding. tokens: [B, T], each in
  // [0, input_size()); lengths as above. With mask_zero every token 0 is padding, as in Keras
  // (within the first lengths[b] steps if given): masked steps carry the state. Left padding or
  // a 0 inside a row needs a model whose output is one vector per row (ShapeError otherwise).
  std::vector<int64_t> predict(const int64_t* tokens, int64_t B, int64_t T,
                               const int64_t* lengths, std::vector<float>& out) const;

  // Runs the model on its inputs, in input_names() order; returns the outputs in
  // output_names() order. Input k has shape [B, input_shape(k)...] (a -1 there: any size >= 1;
  // every input the same B >= 1) and holds floats in `values`, or token ids in `tokens` when
  // input_takes_tokens(k). Throws ShapeError for a wrong count, shape or size (naming the
  // input), Error for a token out of an Embedding's range. For a bare module or a Sequential:
  // one input "input" [B, T, F] (tokens: [B, T]) and one output "output", as predict without
  // lengths. Thread safety as predict.
  std::vector<Tensor> run(const std::vector<Tensor>& inputs) const;
  // The same by name: every input once; returns every output by name.
  std::map<std::string, Tensor> run_by_name(const std::map<std::string, Tensor>& inputs) const;
  size_t num_inputs() const;
  size_t num_outputs() const;
  const std::string& input_name(size_t k) const;
  const std::string& output_name(size_t k) const;
  std::vector<std::string> input_names() const;
  std::vector<std::string> output_names() const;
  // Without the batch axis; -1 where any size is accepted (a sequence's length).
  std::vector<int64_t> input_shape(size_t k) const;
  std::vector<int64_t> output_shape(size_t k) const;  // -1: depends on the inputs
  bool input_takes_tokens(size_t k) const;

  // Runs the self-check stored in the file; throws SelfCheckError if it fails, HeaderError if
  // the file has none.
  void verify() const;
  bool has_self_check() const;

  const std::string& path() const;        // the path (or name) it was loaded from
  const std::string& class_name() const;  // "LSTM", "GRU", "Sequential" or "Model"
  bool takes_tokens() const;              // the first layer is Embedding: input is int64 [B, T]
  int64_t input_size() const;             // F: features per step (tokens: vocabulary size)
  int64_t output_size() const;            // U: the last axis of the output
  bool returns_sequences() const;         // output [B, T, U] (true) or [B, U] (false)
  bool can_stream() const;  // unidirectional, no go_backwards, not functional: see Stream
  Precision precision() const;            // of the recurrent layers' weights
  std::string summary() const;            // one line per layer with its shapes

  // Frees the pooled predict workspaces (they are re-created on demand).
  void release_workspaces() const;

 private:
  struct Impl;
  explicit Model(std::shared_ptr<const Impl> impl);
  static Model finish_load(std::shared_ptr<Impl> impl, const LoadOptions& options);
  std::vector<int64_t> predict_graph(const float* x, const int64_t* tok, int64_t B, int64_t T,
                                     int64_t F, const int64_t* lengths,
                                     std::vector<float>& out) const;
  std::shared_ptr<const Impl> impl_;
};

// Step-by-step inference with the recurrent state carried inside, for models where
// can_stream() is true (recurrent layers unidirectional and not go_backwards). Each step gives
// what predict would give at that time step for the whole sequence so far (a recurrent layer
// with return_sequences=false yields its current state). After construction, step() allocates
// nothing. A stream is one caller's state: use one stream per thread.
class Model::Stream {
 public:
  // Throws Error if the model cannot stream. Keeps the model's weights alive.
  explicit Stream(const Model& model, int64_t batch = 1);
  ~Stream();
  Stream(Stream&&) noexcept;
  Stream& operator=(Stream&&) noexcept;

  // x_t: [B, F] -> y_t: [B, U] (float-input models).
  void step(const float* x_t, float* y_t);
  // tokens_t: [B], each in [0, input_size()) -> y_t: [B, U] (Embedding models). Every token is
  // fed, 0 included: mask_zero padding is a notion of whole batches (predict).
  void step(const int64_t* tokens_t, float* y_t);
  void reset();  // every recurrent state to zeros
  int64_t batch() const;
  int64_t input_size() const;
  int64_t output_size() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fastlstm
