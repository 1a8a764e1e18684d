// The dedicated streaming step (Stream<T>, and through it Model::Stream): one time step of a
// unidirectional stack for a few batch rows over weights packed for the step at construction
// (kernels/stream_step.hpp). No scheduling, no allocation and no parameter check per step; below
// a size where threads pay (stream.cpp) it runs on the calling thread alone, with no lock.
//
// A StreamStep is bound to the parameter buffer it was made from: pack() copies what the step
// reads (weights, biases, peepholes) into its own layout, so later changes to that buffer are
// not seen until pack() runs again (Stream::reload_params()).
#pragma once

#include <cstdint>
#include <vector>

#include "aligned.hpp"
#include "fastlstm/config.hpp"

namespace fastlstm::detail {

// Units per block of a stream step: one 512-bit register of a gate's pre-activations (16 floats,
// 8 doubles), or half of one when the whole layer fits in it (H <= 8 floats): a step of a tiny
// layer is a latency chain, and half-width blocks halve the weights it reads.
template <typename T>
constexpr int kStreamU = int(64 / sizeof(T));

struct StreamGroup {         // NB unit blocks whose gate columns are computed together
  int64_t w = 0;             // offset of its weights [I + S][nb][ng][U] in the layer's w
  int64_t b = 0;             // offset of its biases [nb][ng][U] in b_ih, b_hh
  int64_t u0 = 0;            // first hidden unit
  int nb = 0;                // blocks (1 or 2)
};

// What the per-ISA step kernel (kernels/stream_step.hpp) reads of a layer: raw pointers into
// the StreamStep's buffers, set once they are allocated (they never move afterwards).
template <typename T>
struct StreamLayerView {
  int64_t I = 0, H = 0, S = 0;
  const T* w = nullptr;
  const T* b_ih = nullptr;
  const T* b_hh = nullptr;
  const T* w_ci = nullptr;  // null without peepholes
  const T* w_cf = nullptr;
  const T* w_co = nullptr;
  const StreamGroup* groups = nullptr;
};

// Where one layer's tensors sit in the flat parameters of param_layout (-1: absent, e.g. no
// bias or no peepholes); what a step packs from (StreamStep, LowpStreamStep).
struct LayerOffsets {
  int64_t o_ih = -1, o_hh = -1, o_bih = -1, o_bhh = -1, o_hr = -1, o_ci = -1, o_cf = -1,
          o_co = -1;
};
LayerOffsets layer_offsets(const RNNConfig& config, int64_t layer);

template <typename T>
class StreamStep {
 public:
  // Sizes every buffer (the step's layout depends only on the configuration).
  StreamStep(const RNNConfig& config, int64_t batch);
  // Packs (or repacks) the weights of params [num_params(config)]; allocates nothing.
  void pack(const T* params) noexcept;
  // x: [B, I]; y: [B, S]; h: [L, B, S] and c: [L, B, H] (LSTM; nullptr for GRU), updated.
  void step(const T* x, T* y, T* h, T* c) noexcept;
  // Multiply-adds of one step (all layers, all rows): where threads could pay.
  int64_t work_per_step() const;

  using Group = StreamGroup;
  // runs the gate products and the cell pass of one layer and row: c updated in place, the
  // cell's output h (before any projection) into h_out and, unless y is null, into y too (the
  // step's output, written by the last layer's kernel itself: no copy after the step) (groups
  // [g0, g1) of the layer)
  using LayerFn = void (*)(const StreamLayerView<T>& L, const T* x, const T* h_prev, T* c, T* h_out,
                           T* y, bool reverse, int64_t g0, int64_t g1) noexcept;
  struct Layer : LayerOffsets {
    int64_t I = 0, H = 0, S = 0;      // input, hidden and state size of the layer
    AlignedVector<T> w;               // the groups' weights
    AlignedVector<T> b_ih, b_hh;      // per group [nb][ng][U] (zeros without bias)
    std::vector<T> w_ci, w_cf, w_co;  // [H] peepholes (empty without)
    AlignedVector<T> hr;              // [P, H] W_hr as panels (kernels/packed_gemm.hpp)
    std::vector<Group> groups;
    int64_t ng = 0;                   // groups.size()
    StreamLayerView<T> view;          // the above as raw pointers, for the step kernel
    LayerFn run = nullptr;            // the step kernel for this layer's cell and sizes
  };

 private:
  RNNConfig cfg_;
  int64_t B_ = 1;
  int U_ = 0;  // units per block
  std::vector<Layer> layers_;
  void (*gemm_)(int64_t, int64_t, int64_t, const T*, int64_t, const T*, T*, int64_t,
                bool) = nullptr;  // the table's gemm_packed (LSTMP's projection)
  std::vector<T> hnew_;  // [B, S] a layer's new h while its old one is still read
  std::vector<T> hraw_;  // [B, H] LSTMP: the cell output before the projection
  bool threadable_ = false;  // large enough for the thread pool to pay
  // one row, no projection, below the threading threshold: the common real-time case, run by
  // a short loop that calls each layer's kernel on the state itself (step())
  bool lean_ = false;
  void step_general(const T* x, T* y, T* h, T* c) noexcept;
  // Steps alternate the order in which they visit a layer's groups (first to last, then last
  // to first), so a step starts on the weights the previous one read last, still in L1: a layer
  // a bit larger than L1 (H = 64: 66 KB) then streams part of its weights from L1, not L2
  // (measured 0.98x vs 1.15x RTNeural's time at H = 64). The order of the terms inside each
  // output's sum does not change.
  bool reverse_ = false;
};

extern template class StreamStep<float>;
extern template class StreamStep<double>;

}  // namespace fastlstm::detail
