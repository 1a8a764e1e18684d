// The time loop over layers and directions, shared by every cell type (see kernels/cells.hpp).
//
// Two layouts:
//  - user layout: rows (t, b) of x, output, the input projection and d_x, in the caller's order
//    ([T, B] or [B, T]); row index = row(t, b).
//  - step layout: what the recurrence keeps, [T(+1), B, .] indexed by step s and by the batch
//    rows sorted by length (longest first), so the sequences still running at step s are the
//    prefix [0, active[s]) and each step's products run on a contiguous block. Steps past a
//    sequence's length are never computed.
#pragma once

#include <cstdint>
#include <vector>

#include "aligned.hpp"
#include "fastlstm/rnn.hpp"
#include "kernels/lowp.hpp"
#include "lowp_step.hpp"

namespace fastlstm::detail {

template <typename T>
struct DirParams {  // pointers into a flat parameter (or gradient) buffer; nullptr when absent
  T* w_ih = nullptr;  // [G, I_l]
  T* w_hh = nullptr;  // [G, S]
  T* b_ih = nullptr;  // [G]
  T* b_hh = nullptr;  // [G]
  T* w_hr = nullptr;  // [P, H]
  T* w_ci = nullptr;  // [H]
  T* w_cf = nullptr;  // [H]
  T* w_co = nullptr;  // [H]
};

template <typename T>
struct DirStore {       // what a training forward keeps for one layer and direction
  std::vector<T> act;   // [T, B, G]   post-activation gates (step layout)
  std::vector<T> hs;    // [T+1, B, S] h before each step (index 0 = h0) and after the last
  std::vector<T> cs;    // [T+1, B, H] LSTM c, likewise
  std::vector<T> aux;   // [T, B, H]   GRU: W_hn h_prev + b_hn
  std::vector<T> hraw;  // [T, B, H]   LSTMP: h before the projection
  std::vector<T> rmask; // [B, ng*S]   recurrent dropout masks (sorted rows); empty: none
};

template <typename T>
class Engine {
 public:
  explicit Engine(const RNNConfig& config);

  void forward(const SeqShape& shape, const ForwardArgs<T>& in, const ForwardOutputs<T>& out);
  void backward(const T* params, const BackwardArgs<T>& in, const BackwardOutputs<T>& out);
  bool has_activations() const { return has_acts_; }
  const RNNConfig& config() const { return cfg_; }
  // the most threads any parallel part of the last forward() or backward() asked for
  int last_threads() const { return last_threads_; }

 private:
  void pack_weights(const T* params, bool backward);
  template <typename Cell>
  void forward_direction(int64_t l, int64_t d, const DirParams<T>& p, const T* in, int64_t I_l,
                         T* out, const T* h0, const T* c0, T* hn, T* cn, bool train);
  template <typename Cell>
  void backward_direction(int64_t l, int64_t d, const DirParams<T>& p, const DirParams<T>& dp,
                          const T* in, int64_t I_l, const T* d_out, const T* dhn, const T* dcn,
                          T* d_in, T* dh0, T* dc0);
  DirParams<T> dir_params(T* base, int64_t l, int64_t d) const;
  bool lowp() const { return cfg_.precision != Precision::Float32; }
  void schedule(const int64_t* lengths);
  void apply_dropout(int64_t l, T* buf, int64_t n) const;
  int64_t row(int64_t t, int64_t b) const {
    return shape_.batch_first ? b * shape_.T + t : t * shape_.B + b;
  }
  int64_t step_time(int64_t d, int64_t j, int64_t s) const {
    return d == 0 ? s : len_sorted_[j] - 1 - s;
  }

  RNNConfig cfg_;
  std::vector<ParamInfo> layout_;
  SeqShape shape_;
  bool has_acts_ = false;
  bool padded_ = false;  // lengths given: some rows of some steps are never computed
  uint64_t seed_ = 0;
  int last_threads_ = 1;
  void used(int nt) { last_threads_ = std::max(last_threads_, nt); }
  // schedule of the current call
  std::vector<int64_t> perm_;        // [B] sorted position j -> batch index
  std::vector<int64_t> len_sorted_;  // [B] lengths in sorted order (descending)
  std::vector<int64_t> active_;      // [T] number of sequences still running at step s
  // kept for backward
  std::vector<std::vector<T>> layer_in_;  // [L] each [N, I_l]: layer inputs (after dropout)
  std::vector<DirStore<T>> store_;        // [L*D]
  // weights packed into the panels the kernels read (kernels/packed_gemm.hpp)
  // weights packed per (layer, direction), index l * D + d
  std::vector<AlignedVector<T>> pk_ih_;                  // W_ih: per unit tile, gates interleaved (forward)
  std::vector<AlignedVector<T>> pk_hh_;                  // W_hh: per unit tile, gates interleaved (forward)
  std::vector<AlignedVector<T>> pk_hr_;                  // W_hr: panels over P                 (forward)
  std::vector<AlignedVector<T>> pk_ih_t_;                // W_ih^T: panels over I_l             (backward)
  std::vector<AlignedVector<T>> pk_hh_t_;                // W_hh^T: panels over S               (backward)
  std::vector<QPacked> q_ih_, q_hh_, q_hr_;  // low precision: the forward weights quantized
  std::vector<QRows> qrows_;                 // low precision: per thread, a step's h, x, h_raw
  QRows lp_qx_[2], lp_qh_[2];  // low-precision LSTM steps: x (and bf16 h) quantized, shared
  std::vector<LowpStepLayer> lp_step_;       // low precision: the weights of the batch-1 step
  std::vector<LowpStepRow> lp_rows_;         // low precision, batch 1: per thread, x and h
  std::vector<AlignedVector<T>> pk_hr_t_;                // W_hr^T: panels over H               (backward)
  std::vector<T> zeros_;                  // [G] stands in for absent biases
  bool cache_packed_ = false;             // Stream: pack once, reuse on every step
  bool packed_valid_ = false;
  std::vector<T> packed_src_;             // the parameters as the forward packing read them
  int64_t pack_gen_ = 0;                  // forward packings so far
  int64_t packed_bw_gen_ = -1;            // the forward packing whose parameters the backward
                                          // packing read (-1: none)
  // scratch, reused across calls
  std::vector<T> xproj_;                  // forward: [N, Gp] x W_ih^T + b_ih (tile order);
                                          // backward: [N, G] d_x
  std::vector<T> bx_;                     // [Gp] b_ih in tile order
  std::vector<std::vector<T>> xrec_, xin_;  // per thread: [B, tile gates] x W_ih^T + b_ih of a
                                            // step's tile; [B, I_l] its gathered input rows
  std::vector<T> act_, aux_;              // [B, G], [B, H]   (inference)
  std::vector<std::vector<T>> act_tmp_;   // low-precision inference: per thread [3H + kTile]
  std::vector<std::vector<T>> rec_;       // per thread [B, tile gates]
  std::vector<std::vector<T>> hpad_;      // per thread [B, a_row_pad(S)]: h's rows, padded
  std::vector<T> h_[2], c_, hraw_;        // ping-pong [B, S], [B, H], [B, H]
  std::vector<T> mid_[2];                 // inference: [N, D*S] outputs of inner layers
  std::vector<T> d_rec_, d_hout_;         // [T*B, G], [T*B, S]
  std::vector<T> d_mid_[2];               // [N, D*S]
  AlignedVector<T> pk_in_, pk_hs_, pk_hraw_;  // backward: layer input, h_{t-1}, h_raw as panels
  std::vector<T> dh_, dc_, dhraw_;        // [B, S], [B, H], [B, H]
  // recurrent dropout (ForwardArgs::recurrent_mask)
  const T* rmask_in_ = nullptr;           // [L*D, B, ng*S] the caller's masks (this forward)
  std::vector<T> rmask_;                  // [B, ng*S] inference: one direction's, sorted rows
  std::vector<std::vector<T>> hm_;        // per thread [ng, B, S]: h_{t-1} * each gate's mask
  std::vector<T> dtmp_, hsm_;             // backward: [B, S] one gate's d_rec W_hh_g;
                                          // [T*B, S] h_{t-1} * one gate's mask, every step

 public:
  // Streams call forward once per step: pack the weights once (they must not change after).
  void set_cache_packed(bool on) { cache_packed_ = on; invalidate_packed(); }
  void invalidate_packed() {
    packed_valid_ = false;
    packed_src_.clear();
  }
};

}  // namespace fastlstm::detail
