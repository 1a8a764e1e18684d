// The low-precision (bf16 / int8) step of one batch row: the matrix-vector products of a step
// over weights packed for them, and the cell pass fused behind them
// (kernels/stream_step_lowp.hpp). Used by the engine's forward at B == 1 and by the bf16/int8
// Stream (and so Model::Stream and Python's stream.step): one kernel, so a stream's outputs are
// bitwise those of the sequence call at batch 1.
//
// Layout of a layer, per group of kLowpUnits hidden units (= the engine's unit tile, so the
// engine's split of tiles over threads is a split of groups), the input part then the recurrent
// part, each k-major; every column (gate q, unit u) takes 4 bytes per k step:
//
//   group gi:  [Kx / E][ng][32][E]  W_ih     (E = 2 bf16 of consecutive k, or 4 int8)
//              [Kh / E][ng][32][E]  W_hh
//
// i.e. one k step of a group is ng * 128 bytes = two 64-byte vectors per gate, which is what a
// vdpbf16ps / vpdpbusd reads against one 32-bit broadcast of the row's pair or quad. The
// weights are quantized exactly as the engine's other products quantize them (quantize_pack;
// the bytes are copied out of its panels), columns past H are zero.
//
// Arithmetic of an output (every level the same order, so int8 results are the same bits at
// every level): the input and recurrent products each accumulate from zero over k in order,
// then xp = v_x + b_ih and rec = v_h (int8: v = float(acc - wsum) * (s_row * s_col)), and the
// cell of kernels/cells.hpp adds (xp + rec) + b_hh.
#pragma once

#include <cstdint>
#include <vector>

#include "aligned.hpp"
#include "fastlstm/config.hpp"
#include "kernels/lowp.hpp"
#include "stream.hpp"

namespace fastlstm::detail {

constexpr int64_t kLowpUnits = 32;  // units per group (the engine's kTile)
// Two groups share the products' pass when their weights take at most this many bytes: they
// then stay in a 48 KB L1 from one step to the next (kernels/stream_step_lowp.hpp).
constexpr int64_t kLowpStepPairBytes = 40 * 1024;

// What the per-ISA kernel reads of a layer (raw pointers into a LowpStepLayer).
struct LowpStepView {
  Precision precision = Precision::BF16;
  int ng = 4;             // gates
  int64_t H = 0;          // hidden units
  int64_t I = 0, S = 0;   // input and state sizes
  int64_t Kx = 0, Kh = 0; // I and S padded to whole k steps (E elements)
  int64_t gstride = 0;    // bytes of one group's weights: (Kx + Kh) / E * ng * 128
  const uint8_t* w = nullptr;          // [groups] as above
  const float* b_ih = nullptr;         // [groups][ng][32] (zeros without bias / past H)
  const float* b_hh = nullptr;         // [groups][ng][32]
  const float* sw_x = nullptr;         // int8: [groups][ng][32] per column weight scales
  const float* sw_h = nullptr;
  const int32_t* ws_x = nullptr;       // int8: [groups][ng][32] 128 * sum_k w
  const int32_t* ws_h = nullptr;
  const float* w_ci = nullptr;         // [H] peepholes (null without)
  const float* w_cf = nullptr;
  const float* w_co = nullptr;
};

// Elements per k step: a bf16 pair or an int8 quad.
inline int64_t lowp_step_elems(Precision p) { return p == Precision::Int8 ? 4 : 2; }
inline int64_t lowp_step_pad(Precision p, int64_t K) {
  const int64_t e = lowp_step_elems(p);
  return (K + e - 1) / e * e;
}

// One layer's weights for the step, owned; view() points into them once packed.
struct LowpStepLayer {
  AlignedVector<uint8_t> w;
  AlignedVector<float> b_ih, b_hh, sw_x, sw_h;
  AlignedVector<int32_t> ws_x, ws_h;
  std::vector<float> w_ci, w_cf, w_co;
  LowpStepView view;
  // From the engine's quantized tiles of W_ih and W_hh (kernels/lowp.hpp, columns in unit-tile
  // order: per tile of 32 units, gate by gate) and the float biases and peepholes (nullptr:
  // absent). Allocates (packing time only).
  void pack(const QPacked& q_ih, const QPacked& q_hh, int ng, int64_t H, const float* b_ih,
            const float* b_hh, const float* w_ci, const float* w_cf, const float* w_co);
};

// The rows of a weight [ng * H, K] in the engine's unit-tile column order (tile t of 32 units:
// gate by gate, nullptr past H), what quantize_pack takes, into rows (resized).
void lowp_tile_rows(const float* w, int64_t K, int64_t H, int64_t ng,
                    std::vector<const float*>& rows);

// A row's quantized activations for the step kernel: bf16 pairs or u8 quads (zero point 128),
// Kp elements (zero padded), and the int8 row scale.
struct LowpStepRow {
  AlignedVector<uint8_t> q;
  float scale = 0.0f;
  void shape(Precision p, int64_t Kp) { q.assign(size_t(Kp * (p == Precision::Int8 ? 1 : 2)), 0); }
};

// The bf16/int8 Stream's step (rnn.cpp): every layer of a unidirectional stack through the step
// kernel, row by row, the projection (LSTMP) through the engine's low-precision product. Bound
// to the parameters it was packed from (pack() again to pick up a change).
class LowpStreamStep {
 public:
  LowpStreamStep(const RNNConfig& config, int64_t batch);
  void pack(const float* params);
  // x: [B, I]; y: [B, S]; h: [L, B, S]; c: [L, B, H] (LSTM; nullptr for GRU), updated.
  // (pack: the first call allocates; later ones reuse every buffer)
  void step(const float* x, float* y, float* h, float* c) noexcept;

 private:
  struct Layer : LayerOffsets {
    int64_t I = 0;
    QPacked q_ih, q_hh, q_hr;
    LowpStepLayer st;
  };
  RNNConfig cfg_;
  int64_t B_ = 1;
  int nt_ = 1;  // threads of a step (the engine's rule)
  std::vector<Layer> layers_;
  std::vector<LowpStepRow> qx_, qh_;  // per thread
  std::vector<const float*> rows_;    // pack(): a weight's rows (kept: a repack allocates nothing)
  std::vector<float> hnew_, hraw_;    // [B, S], [B, H]
  QRows qr_;                          // LSTMP: h_raw quantized for W_hr
  // steps alternate the order of each thread's groups (first to last, then last to first): a
  // step begins on the weights the previous one read last, still in L1 (the same bits)
  bool reverse_ = false;
};

}  // namespace fastlstm::detail
