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
// counts that the compiler vectorizes for the ISA level of the translation unit: compiled once
// per level (kernels/isa_kernels.cpp, namespace fastlstm::detail::<level>) and reached through
// the kernel table (dispatch.hpp: stream_layer), as every other kernel. float32 on the AVX2 and
// AVX-512 levels runs run_layer's arithmetic in vector registers instead (reg::, below).
#pragma once

#include <cmath>
#include <cstdint>

#ifndef FASTLSTM_ISA_NS
#error "kernels/stream_step.hpp is compiled per ISA level (kernels/isa_kernels.cpp) only"
#endif

#include "kernels/cells.hpp"
#include "kernels/simd_act.hpp"
#include "stream.hpp"

namespace fastlstm::detail::FASTLSTM_ISA_NS {

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

// One layer and batch row of a stream step: the gate products of the groups [g0, g1) and the
// sequence engine's own cell pass (kernels/cells.hpp) on each block, so the same bits as
// forward(); c updated in place, the cell's output h (before any projection) into h_out (and y
// unless null). It reads the layer through raw pointers only (StreamLayerView): no standard-library template is
// instantiated in the per-ISA sources, so the linker cannot merge an AVX-512 copy of one into
// baseline code.
template <typename T, typename Cell, int U>
void run_layer(const StreamLayerView<T>& L, const T* x, const T* h_prev, T* c,
               T* h_out, T* y, bool reverse, int64_t g0, int64_t g1) noexcept {
  constexpr int NG = Cell::kGates;
  alignas(64) T xp[2 * NG * U], rec[2 * NG * U], act[NG * U], aux[U];
  const int64_t H = L.H;
  for (int64_t gi = g0; gi < g1; ++gi) {
    const auto& g = L.groups[reverse ? g1 - 1 - (gi - g0) : gi];
    const T* w = L.w + g.w;
    const T* bih = L.b_ih + g.b;
    if (g.nb == 2) stream_gates<T, U, 2, NG>(L.I, L.S, x, h_prev, w, bih, xp, rec);
    else stream_gates<T, U, 1, NG>(L.I, L.S, x, h_prev, w, bih, xp, rec);
    for (int b = 0; b < g.nb; ++b) {
      const int64_t u0 = g.u0 + b * U;
      if (u0 >= H) break;
      // the sequence engine's cell pass, on a block whose gate stride is U: the same bits
      const int64_t n = H - u0 >= U ? U : H - u0;
      stream_cell_block<Cell>(L, u0, n, U, xp + b * NG * U, rec + b * NG * U,
                              L.b_hh + g.b + b * NG * U, c, h_prev, h_out, act, aux);
      if (y)
        for (int64_t j = 0; j < n; ++j) y[u0 + j] = h_out[u0 + j];
    }
  }
}

#if FASTLSTM_HAVE_VOPS
// The float step with the gate products and the cell pass in vector registers: what run_layer
// computes, element for element the same operations in the same order (the products' chains,
// b_ih, then (xp + rec) + b_hh, the cell of kernels/cells.hpp with the activations of
// kernels/simd_act.hpp), so the same bits, without the round trips through memory between the
// products, the cell pass and the activations, and without the loop over a run-time unit count
// that the compiler vectorizes with masks. A step of a small layer is one dependent chain
// (h_prev -> products -> gates -> c -> tanh(c) -> h); this keeps it as short as the arithmetic.
// Bits: one register per gate block (U = 8: 256 bits; U = 16: 512, or two of 256 on AVX2).
namespace reg {

// The gate products of blocks [B0, B0 + NBC) of one group of NB blocks of U units (NG gates):
// xp = x W_ih^T + b_ih into memory, the recurrent part h_prev W_hh^T into ah, one register per
// chain. The group's weights are laid out for all NB blocks (each k row holds NB * NG * U
// floats); a pass over fewer blocks reads its part of every row.
// KS: the state size S when known at compile time (0: L.S at run time); a layer picked with
// KS > 0 has S == H (no projection). The input part does not depend on h_prev: it goes through
// memory, off the chain; the recurrent part is the chain, kept in registers (fully unrolled
// when KS > 0).
template <typename Cell, int U, int Bits, int NB, int KS, int B0, int NBC>
FASTLSTM_ACT_INLINE void products(const StreamLayerView<float>& L, const StreamGroup& g,
                                  const float* x, const float* h_prev, float* xp,
                                  typename simd::VOps<Bits>::V* ah) noexcept {
  using O = simd::VOps<Bits>;
  using VT = typename O::V;
  constexpr int kL = O::kL, NV = U / kL, NG = Cell::kGates, CW = NB * NG * NV,
                C = NBC * NG * NV, J0 = B0 * NG * NV;  // row width, chains, first column
  const int64_t I = L.I, S = KS > 0 ? KS : L.S;
  const float* w = L.w + g.w + J0 * kL;
  const float* bih = L.b_ih + g.b + J0 * kL;
  {
    VT ax[C];
    const VT a = O::set1(x[0]);
    for (int j = 0; j < C; ++j) ax[j] = O::fma(a, O::load(w + j * kL), O::set1(0.0f));
    for (int64_t k = 1; k < I; ++k) {
      const VT a = O::set1(x[k]);
      const float* wk = w + k * (CW * kL);
      for (int j = 0; j < C; ++j) ax[j] = O::fma(a, O::load(wk + j * kL), ax[j]);
    }
    for (int j = 0; j < C; ++j) O::store(xp + j * kL, O::add(ax[j], O::load(bih + j * kL)));
  }
  w += I * (CW * kL);
  {
    const VT a = O::set1(h_prev[0]);
    for (int j = 0; j < C; ++j) ah[j] = O::fma(a, O::load(w + j * kL), O::set1(0.0f));
  }
#pragma GCC unroll 32
  for (int64_t k = 1; k < S; ++k) {
    const VT a = O::set1(h_prev[k]);
    const float* wk = w + k * (CW * kL);
    for (int j = 0; j < C; ++j) ah[j] = O::fma(a, O::load(wk + j * kL), ah[j]);
  }
}

// The cell on each register of the group's NB blocks, from their products (xp in memory, ah):
// c updated in place, h into h_out (and y unless null).
template <typename Cell, int U, int Bits, int NB, bool Peep, int KS>
FASTLSTM_ACT_INLINE void cells(const StreamLayerView<float>& L, const StreamGroup& g,
                               const float* h_prev, float* c, float* h_out, float* y,
                               const float* xp, const typename simd::VOps<Bits>::V* ah) noexcept {
  using O = simd::VOps<Bits>;
  using VT = typename O::V;
  constexpr int kL = O::kL, NV = U / kL, NG = Cell::kGates;
  const int64_t H = KS > 0 ? KS : L.H;
  const float* bhh = L.b_hh + g.b;
  const VT one = O::set1(1.0f);
  for (int b = 0; b < NB; ++b)
    for (int v = 0; v < NV; ++v) {
      const int64_t u = g.u0 + b * U + v * kL;  // first unit of this register
      if (u >= H) return;
      const int n = H - u >= kL ? kL : int(H - u);
      // gate q of this register: (q * NV + v) within block b
      auto pre = [&](int q) {
        const int j = (b * NG + q) * NV + v;
        return O::add(O::add(O::load(xp + j * kL), ah[j]), O::load(bhh + j * kL));
      };
      VT h_new;
      if constexpr (Cell::kHasC) {
        const VT c_prev = O::load_n(c + u, n);
        VT pi = pre(0), pf = pre(1), po = pre(3);
        const VT pg = pre(2);
        if constexpr (Peep) {
          pi = O::add(pi, O::mul(O::load_n(L.w_ci + u, n), c_prev));
          pf = O::add(pf, O::mul(O::load_n(L.w_cf + u, n), c_prev));
        }
        const VT i = simd::sigmoid_v<Bits>(pi), f = simd::sigmoid_v<Bits>(pf);
        const VT gg = simd::tanh_v<Bits>(pg);
        const VT c_new = O::add(O::mul(f, c_prev), O::mul(i, gg));
        if constexpr (Peep) po = O::add(po, O::mul(O::load_n(L.w_co + u, n), c_new));
        const VT o = simd::sigmoid_v<Bits>(po);
        O::store_n(c + u, c_new, n);
        h_new = O::mul(o, simd::tanh_v<Bits>(c_new));
      } else {
        const int jn = (b * NG + 2) * NV + v;
        const VT rg = simd::sigmoid_v<Bits>(pre(0)), z = simd::sigmoid_v<Bits>(pre(1));
        const VT hn = O::add(ah[jn], O::load(bhh + jn * kL));
        const VT xn = O::load(xp + jn * kL);
        const VT nn = simd::tanh_v<Bits>(O::add(xn, O::mul(rg, hn)));
        const VT hp = O::load_n(h_prev + u, n);
        h_new = O::add(O::mul(O::sub(one, z), nn), O::mul(z, hp));
      }
      O::store_n(h_out + u, h_new, n);
      if (y) O::store_n(y + u, h_new, n);
    }
}

// One group of NB blocks: the products, then the cell pass. All blocks' recurrent chains in one
// pass over k, except in a layer of compile-time size (a latency chain, its weights in L1) whose
// chains would not fit the register file next to a broadcast and a loaded row: there the
// blocks' products run one after the other, the first block's finished chains set aside
// (256-bit registers, LSTM with two blocks of 16: 16 chains in 16 registers, and GCC kept two
// of them on the stack, a store and a load per term on the chain: 1 -> 32 measured 318 ns a
// step on Zen 3, 1.26x RTNeural; one block after the other 253-258 ns, 1.00-1.02x). Larger
// layers stream their weights from L2, and one pass over each row measured faster there
// (64 -> 256: 0.81-0.84x RTNeural in one pass, 0.90-0.99x in two). Every chain is the same
// either way; the cells run after every product, so h_out may be h_prev (a one-group layer
// steps in place).
template <typename Cell, int U, int Bits, int NB, bool Peep, int KS>
FASTLSTM_ACT_INLINE void group(const StreamLayerView<float>& L, const StreamGroup& g,
                               const float* x, const float* h_prev, float* c, float* h_out,
                               float* y) noexcept {
  using VT = typename simd::VOps<Bits>::V;
  constexpr int kL = simd::VOps<Bits>::kL, kRegsV = Bits == 512 ? 32 : 16;
  constexpr int per_block = Cell::kGates * (U / kL), chains = NB * per_block;
  alignas(64) float xp[chains * kL];
  VT ah[chains];
  if constexpr (KS > 0 && NB == 2 && chains + 2 > kRegsV) {
    products<Cell, U, Bits, NB, KS, 0, 1>(L, g, x, h_prev, xp, ah);
    products<Cell, U, Bits, NB, KS, 1, 1>(L, g, x, h_prev, xp + per_block * kL,
                                          ah + per_block);
  } else {
    products<Cell, U, Bits, NB, KS, 0, NB>(L, g, x, h_prev, xp, ah);
  }
  cells<Cell, U, Bits, NB, Peep, KS>(L, g, h_prev, c, h_out, y, xp, ah);
}

template <typename Cell, int U, int Bits, bool Peep, int KS>
void layer(const StreamLayerView<float>& L, const float* x, const float* h_prev, float* c,
           float* h_out, float* y, bool reverse, int64_t g0, int64_t g1) noexcept {
  if constexpr (KS > 0) {
    // S == H <= 2 blocks: one group of NB blocks, at the start of every buffer (stream.cpp
    // lays the groups out so): no loop, no group record read, the step a single straight run
    constexpr int NB = (KS + U - 1) / U;
    static_assert(NB <= 2, "a layer of compile-time size is one group of at most two blocks");
    (void)reverse;
    constexpr StreamGroup g0r{0, 0, 0, NB};
    if (g0 < g1) group<Cell, U, Bits, NB, Peep, KS>(L, g0r, x, h_prev, c, h_out, y);
  } else {
    for (int64_t gi = g0; gi < g1; ++gi) {
      const StreamGroup& g = L.groups[reverse ? g1 - 1 - (gi - g0) : gi];
      if (g.nb == 2) group<Cell, U, Bits, 2, Peep, KS>(L, g, x, h_prev, c, h_out, y);
      else group<Cell, U, Bits, 1, Peep, KS>(L, g, x, h_prev, c, h_out, y);
    }
  }
}

using LayerFnF = void (*)(const StreamLayerView<float>&, const float*, const float*, float*,
                          float*, float*, bool, int64_t, int64_t) noexcept;

// the layer function for hidden size H and state size S: a compile-time size for the layers
// without projection (S == H) where the step is a latency chain (S <= 8 in blocks of 8; 16 and
// 32 in blocks of 16), else the sizes at run time
template <typename Cell, int U, int Bits, bool Peep>
LayerFnF pick(int64_t H, int64_t S) {
  if (S != H) return &layer<Cell, U, Bits, Peep, 0>;
  if constexpr (U == 8) {
    switch (S) {
      case 1: return &layer<Cell, U, Bits, Peep, 1>;
      case 2: return &layer<Cell, U, Bits, Peep, 2>;
      case 3: return &layer<Cell, U, Bits, Peep, 3>;
      case 4: return &layer<Cell, U, Bits, Peep, 4>;
      case 5: return &layer<Cell, U, Bits, Peep, 5>;
      case 6: return &layer<Cell, U, Bits, Peep, 6>;
      case 7: return &layer<Cell, U, Bits, Peep, 7>;
      case 8: return &layer<Cell, U, Bits, Peep, 8>;
      default: break;
    }
  } else {
    if (S == 16) return &layer<Cell, U, Bits, Peep, 16>;
    if (S == 32) return &layer<Cell, U, Bits, Peep, 32>;
  }
  return &layer<Cell, U, Bits, Peep, 0>;
}

}  // namespace reg

// The kernel table's float stream_layer entry for this cell and block width: the version for
// a layer of hidden size H and state size S (StreamStep picks it per layer at construction).
template <typename Cell, int U, int Bits>
reg::LayerFnF pick_layer_reg(int64_t H, int64_t S, bool peephole) {
  if (Cell::kHasC && peephole) return reg::pick<Cell, U, Bits, true>(H, S);
  return reg::pick<Cell, U, Bits, false>(H, S);
}
#endif  // FASTLSTM_HAVE_VOPS

}  // namespace fastlstm::detail::FASTLSTM_ISA_NS
