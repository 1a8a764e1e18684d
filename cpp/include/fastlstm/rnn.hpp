// fastlstm: the recurrent engine (LSTM, LSTMP, peephole LSTM, GRU; stacked, bidirectional,
// variable-length), forward and backward over a batch.
#pragma once

#include <cstdint>
#include <memory>

#include "fastlstm/config.hpp"

namespace fastlstm {

// Shapes of one call. N = T * B rows; a row of a [T, B, .] or [B, T, .] tensor is (t, b).
struct SeqShape {
  int64_t T = 0;             // time steps (padded length)
  int64_t B = 0;             // batch
  bool batch_first = false;  // false: [T, B, .]; true: [B, T, .]
};

// Inputs of a forward call. Parameters are a flat buffer laid out by param_layout(config).
template <typename Scalar>
struct ForwardArgs {
  const Scalar* params = nullptr;   // [num_params(config)]
  const Scalar* x = nullptr;        // [T, B, I] or [B, T, I]
  const int64_t* lengths = nullptr; // [B], each in [1, T]; nullptr = all T
  const Scalar* h0 = nullptr;       // [L*D, B, S] or nullptr (zeros)
  const Scalar* c0 = nullptr;       // [L*D, B, H] or nullptr (zeros); LSTM only
  bool train = false;               // keep what backward needs, apply dropout
  uint64_t dropout_seed = 0;        // seeds the dropout masks of this call
  // Recurrent dropout (Keras's recurrent_dropout): per layer and direction, sequence and gate,
  // a factor on each unit of h_{t-1} in that gate's recurrent product only (h_{t-1} W_hh_g^T
  // becomes (h_{t-1} * mask_g) W_hh_g^T; the GRU's z * h_{t-1} and the cell state are not
  // masked), the same at every step: entries 0 or 1/(1-rate). Applied whenever given (pass it
  // for training only); a training forward keeps a copy, so backward uses the same masks.
  // Float weights only (not bf16/int8). Gates in PyTorch's order (LSTM i,f,g,o; GRU r,z,n).
  const Scalar* recurrent_mask = nullptr;  // [L*D, B, ng*S], ng = 4 (LSTM) or 3 (GRU); or nullptr
};

template <typename Scalar>
struct ForwardOutputs {
  Scalar* output = nullptr;  // [T, B, D*S] or [B, T, D*S]; zero past each length
  Scalar* h_n = nullptr;     // [L*D, B, S]
  Scalar* c_n = nullptr;     // [L*D, B, H]; LSTM only (may be nullptr)
};

template <typename Scalar>
struct BackwardArgs {
  const Scalar* d_output = nullptr;  // like output, or nullptr (zeros)
  const Scalar* d_h_n = nullptr;     // [L*D, B, S] or nullptr
  const Scalar* d_c_n = nullptr;     // [L*D, B, H] or nullptr; LSTM only
};

template <typename Scalar>
struct BackwardOutputs {
  Scalar* d_x = nullptr;       // like x
  Scalar* d_h0 = nullptr;      // [L*D, B, S]
  Scalar* d_c0 = nullptr;      // [L*D, B, H]; LSTM only (may be nullptr)
  Scalar* d_params = nullptr;  // [num_params(config)], overwritten (not accumulated)
};

// One network's engine: owns the workspaces (reused across calls of the same shapes) and what a
// training forward keeps for backward. Parameters are passed by the caller on every call, so an
// optimizer can update them in place between calls. Not safe to call from two threads at once.
template <typename Scalar>
class RNN {
 public:
  explicit RNN(const RNNConfig& config);
  ~RNN();
  RNN(RNN&&) noexcept;
  RNN& operator=(RNN&&) noexcept;

  const RNNConfig& config() const;

  void forward(const SeqShape& shape, const ForwardArgs<Scalar>& in,
               const ForwardOutputs<Scalar>& out);
  // Full BPTT through the last training forward; params must be the ones it used.
  void backward(const Scalar* params, const BackwardArgs<Scalar>& in,
                const BackwardOutputs<Scalar>& out);
  // True after a training forward, until the next forward.
  bool has_activations() const;
  // The most threads any part of the last forward() or backward() was split over: 1 when the
  // call's steps and products were too small for a thread to pay (it then ran on the calling
  // thread alone), at most get_num_threads(). Results never depend on it.
  int last_threads() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Step-by-step inference of a unidirectional network with the state carried inside. step() is
// real-time safe: it allocates nothing, takes no lock, makes no system call and checks nothing
// (below the threading threshold it runs on the calling thread only; every buffer is sized and
// the weights packed at construction, so the first step costs what any later step costs).
template <typename Scalar>
class Stream {
 public:
  // The stream is bound to params: the weights are packed once, here, into the step's layout,
  // and later changes to params are not seen until reload_params() repacks them from the same
  // buffer. params must outlive the stream.
  Stream(const RNNConfig& config, const Scalar* params, int64_t batch);
  ~Stream();
  Stream(Stream&&) noexcept;
  Stream& operator=(Stream&&) noexcept;

  // x_t: [B, I]; y_t: [B, S] (the top layer's new h). Bitwise what forward() gives at that step.
  void step(const Scalar* x_t, Scalar* y_t) noexcept;
  void reset();                   // state to zeros
  void reload_params();           // repacks params (after an in-place update); no allocation
  int64_t batch() const;
  const Scalar* h() const;        // [L, B, S]
  const Scalar* c() const;        // [L, B, H] (LSTM; nullptr for GRU)
  void set_state(const Scalar* h, const Scalar* c);  // shapes as h(), c(); c ignored for GRU

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

extern template class RNN<float>;
extern template class RNN<double>;
extern template class Stream<float>;
extern template class Stream<double>;

}  // namespace fastlstm
