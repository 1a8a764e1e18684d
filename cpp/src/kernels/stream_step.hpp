// The streaming step's gate products: one batch row, [x | h_prev] times the gate weights of a
// group of unit blocks, packed for the step (stream.cpp packs them):
//
//   group (NB blocks of U units, ng gates):  k-major, every column a k feeds side by side
//     k = 0 .. I-1      : W_ih[g*H + u, k]        for b < NB, g < ng, u in block b (U each)
//     k = I .. I+S-1    : W_hh[g*H + u, k - I]    likewise
//   -> [I + S][NB][ng][U], zero for units past H; a gate's U units fill one SIMD register
//
// so one pass reads the group's weights once, in order, and the gate pre-activations of a block
// land gate by gate, ready for the fused cell pass (kernels/cells.hpp) over U units at once.
//
// Each output element is the same fixed-order chain as the sequence engine's packed products
// (kernels/packed_gemm.hpp): the input part sum_k x[k] W_ih[., k] and the recurrent part
// sum_k h[k] W_hh[., k], each from zero over k in order with one fused multiply-add per term,
// then b_ih added to the input part: the stream's results are bitwise those of forward().
// The input and recurrent chains are independent accumulators; with NB blocks of ng gates
// there are 2 * NB * ng chains in flight, enough to cover the FMA latency at small sizes.
//
// Pure function over raw pointers; no allocation, no threads. Plain loops over fixed trip
// counts that the compiler vectorizes for whatever ISA the translation unit targets.
#pragma once

#include <cmath>
#include <cstdint>

namespace fastlstm::detail {

// xp [NB][ng][U] = x W_ih^T + b_ih ; rec [NB][ng][U] = h W_hh^T, for the group at w
template <typename T, int U, int NB, int NG>
inline void stream_gates(int64_t I, int64_t S, const T* __restrict x, const T* __restrict h,
                         const T* __restrict w, const T* __restrict b_ih, T* __restrict xp,
                         T* __restrict rec) {
  constexpr int C = NB * NG * U;  // columns of the group
  // The first term is fma(a, w, 0), as in a chain started from zero (the same bits, -0 * w
  // included), without zeroing the accumulators first: the compiler would zero them in memory
  // (rep stos, tens of cycles on the latency path at small sizes). I, S >= 1.
  T ax[C], ah[C];
  for (int j = 0; j < C; ++j) ax[j] = std::fma(x[0], w[j], T(0));
  for (int64_t k = 1; k < I; ++k) {
    const T a = x[k];
    const T* __restrict wk = w + k * C;
    for (int j = 0; j < C; ++j) ax[j] = std::fma(a, wk[j], ax[j]);
  }
  w += I * C;
  for (int j = 0; j < C; ++j) ah[j] = std::fma(h[0], w[j], T(0));
  for (int64_t k = 1; k < S; ++k) {
    const T a = h[k];
    const T* __restrict wk = w + k * C;
    for (int j = 0; j < C; ++j) ah[j] = std::fma(a, wk[j], ah[j]);
  }
  for (int j = 0; j < C; ++j) xp[j] = ax[j] + b_ih[j];
  for (int j = 0; j < C; ++j) rec[j] = ah[j];
}

}  // namespace fastlstm::detail
