// The gate math of one batch row at one time step, over a slice of n hidden units: the only code
// that differs between LSTM (with or without peepholes) and GRU. The engine's time loop, layouts
// and threading are shared; each thread calls Cell::forward_units / backward_units on the rows
// of a step for the hidden units it owns.
//
// Pure functions over raw pointers; no allocation, no threads. Every pointer is already offset to
// the first unit of the slice. Gate g of unit u sits at [g * H + u] in b_hh, act, d_rec and
// d_xp, and at [g * rs + u] in xp and rec (the input and recurrent products of a unit tile, see
// engine.cpp).
#pragma once

#include <cstdint>

namespace fastlstm::detail {

// What the engine knows of a cell: its number of gates, whether it has a cell state c, and its
// index in the kernel table (the gate math itself is per ISA level, below).
struct LstmKind {
  static constexpr int kGates = 4;
  static constexpr bool kHasC = true;
  static constexpr int kIndex = 0;
};
struct GruKind {
  static constexpr int kGates = 3;
  static constexpr bool kHasC = false;
  static constexpr int kIndex = 1;
};

template <typename T>
struct CellRow {
  const T* xp = nullptr;      // x W_ih^T + b_ih                       (gate stride rs)
  const T* rec = nullptr;     // h_prev W_hh^T                         (gate stride rs)
  const T* b_hh = nullptr;    // [G] (zeros without bias)              (gate stride H)
  const T* w_ci = nullptr;    // peepholes (LSTM, when enabled)
  const T* w_cf = nullptr;
  const T* w_co = nullptr;
  T* c = nullptr;             // LSTM: c_{t-1} in, c_t out
  const T* h_prev = nullptr;  // GRU: h_{t-1}
  T* h = nullptr;             // the cell's output h_t (LSTMP: before the projection)
  T* act = nullptr;           // post-activation gates, kept for backward (gate stride H;
                              // LSTM: nullptr when nothing is kept)
  T* aux = nullptr;           // GRU: W_hn h_{t-1} + b_hn, kept for backward
};

template <typename T>
struct CellGradRow {
  const T* act = nullptr;     // saved gates (gate stride H)
  const T* c_prev = nullptr;  // LSTM
  const T* c = nullptr;       // LSTM
  const T* h_prev = nullptr;  // GRU
  const T* aux = nullptr;     // GRU: hn
  const T* w_ci = nullptr;
  const T* w_cf = nullptr;
  const T* w_co = nullptr;
  T* dh = nullptr;     // in: dL/dh_t; out: the part of dL/dh_{t-1} that bypasses W_hh
  T* dc = nullptr;     // LSTM in: dL/dc_t from step t+1; out: dL/dc_{t-1}
  T* d_rec = nullptr;  // out: dL/d(h_prev W_hh^T + b_hh)   (gate stride H)
  T* d_xp = nullptr;   // out: dL/d(x W_ih^T + b_ih)        (gate stride H); an LSTM's
                       // equals d_rec: nullptr skips writing it
  T* d_wci = nullptr;  // accumulated peephole gradients (LSTM)
  T* d_wcf = nullptr;
  T* d_wco = nullptr;
  T* d_bx = nullptr;   // accumulated dL/d b_ih (gate stride H), nullptr without bias
  T* d_bh = nullptr;   // accumulated dL/d b_hh
};

}  // namespace fastlstm::detail

#ifdef FASTLSTM_ISA_NS
#include "kernels/activations.hpp"

namespace fastlstm::detail::FASTLSTM_ISA_NS {

// y[u] += v[u]; (and z[u] += v[u]): the bias gradients, summed row by row as the pass goes
template <typename T>
inline void add_to(int64_t n, const T* __restrict v, T* __restrict y) {
  for (int64_t u = 0; u < n; ++u) y[u] += v[u];
}
template <typename T>
inline void add_both(int64_t n, const T* __restrict v, T* __restrict y, T* __restrict z) {
  for (int64_t u = 0; u < n; ++u) {
    y[u] += v[u];
    z[u] += v[u];
  }
}

// LSTM, PyTorch's gate order (i, f, g, o), peepholes as ONNX:
//   i = s(W_ii x + b_ii + W_hi h + b_hi [+ w_ci * c_{t-1}])
//   f = s(W_if x + b_if + W_hf h + b_hf [+ w_cf * c_{t-1}])
//   g = tanh(W_ig x + b_ig + W_hg h + b_hg)
//   c_t = f * c_{t-1} + i * g
//   o = s(W_io x + b_io + W_ho h + b_ho [+ w_co * c_t])
//   h_t = o * tanh(c_t)
struct LstmCell : LstmKind {
  template <typename T>
  static void forward_units(int64_t n, int64_t H, int64_t rs, const CellRow<T>& r) {
    if (r.w_ci) forward_impl<T, true>(n, H, rs, r);
    else forward_impl<T, false>(n, H, rs, r);
  }

  template <typename T>
  static void backward_units(int64_t n, int64_t H, const CellGradRow<T>& r) {
    if (r.w_ci) backward_impl<T, true>(n, H, r);
    else backward_impl<T, false>(n, H, r);
  }

 private:
  // act == nullptr (inference): the gates are not kept; the same arithmetic, no stores
  template <typename T, bool Peep>
  static void forward_impl(int64_t n, int64_t H, int64_t rs, const CellRow<T>& r) {
    T* a = r.act;
    if (!a) {
      forward_loop<T, Peep, false>(n, H, rs, r.xp, r.rec, r.b_hh, r.w_ci, r.w_cf, r.w_co, r.c,
                                   r.h, nullptr, nullptr, nullptr, nullptr);
      return;
    }
    forward_loop<T, Peep, true>(n, H, rs, r.xp, r.rec, r.b_hh, r.w_ci, r.w_cf, r.w_co, r.c, r.h,
                                a, a + H, a + 2 * H, a + 3 * H);
  }

  // restrict parameters (not locals: GCC honours restrict on parameters) let it vectorize
  template <typename T, bool Peep, bool Keep>
  static void forward_loop(int64_t n, int64_t H, int64_t rs, const T* __restrict xp,
                           const T* __restrict rec, const T* __restrict b,
                           const T* __restrict w_ci, const T* __restrict w_cf,
                           const T* __restrict w_co, T* __restrict c, T* __restrict h,
                           T* __restrict ai, T* __restrict af, T* __restrict ag,
                           T* __restrict ao) {
    for (int64_t u = 0; u < n; ++u) {
      const T c_prev = c[u];
      T pi = xp[u] + rec[u] + b[u];
      T pf = xp[rs + u] + rec[rs + u] + b[H + u];
      const T pg = xp[2 * rs + u] + rec[2 * rs + u] + b[2 * H + u];
      T po = xp[3 * rs + u] + rec[3 * rs + u] + b[3 * H + u];
      if (Peep) {
        pi += w_ci[u] * c_prev;
        pf += w_cf[u] * c_prev;
      }
      const T i = sigmoid(pi), f = sigmoid(pf), g = tanh_act(pg);
      const T c_new = f * c_prev + i * g;
      if (Peep) po += w_co[u] * c_new;
      const T o = sigmoid(po);
      c[u] = c_new;
      h[u] = o * tanh_act(c_new);
      if (Keep) {
        ai[u] = i;
        af[u] = f;
        ag[u] = g;
        ao[u] = o;
      }
    }
  }

  template <typename T, bool Peep>
  static void backward_impl(int64_t n, int64_t H, const CellGradRow<T>& r) {
    T *dr = r.d_rec, *dx = r.d_xp;
    // d_xp == nullptr: the caller reads the input part from d_rec (the same values)
    if (dx)
      backward_loop<T, Peep, true>(n, H, r.act, r.c_prev, r.c, r.w_ci, r.w_cf, r.w_co, r.dh,
                                   r.dc, dr, dr + H, dr + 2 * H, dr + 3 * H, dx, dx + H,
                                   dx + 2 * H, dx + 3 * H, r.d_wci, r.d_wcf, r.d_wco);
    else
      backward_loop<T, Peep, false>(n, H, r.act, r.c_prev, r.c, r.w_ci, r.w_cf, r.w_co, r.dh,
                                    r.dc, dr, dr + H, dr + 2 * H, dr + 3 * H, nullptr, nullptr,
                                    nullptr, nullptr, r.d_wci, r.d_wcf, r.d_wco);
    if (r.d_bx)  // both biases enter the same pre-activation: one gradient, added to both
      for (int64_t g = 0; g < 4; ++g)
        add_both(n, dr + g * H, r.d_bx + g * H, r.d_bh + g * H);
  }

  template <typename T, bool Peep, bool WriteX>
  static void backward_loop(int64_t n, int64_t H, const T* __restrict act,
                            const T* __restrict cp, const T* __restrict cc,
                            const T* __restrict w_ci, const T* __restrict w_cf,
                            const T* __restrict w_co, T* __restrict dhp, T* __restrict dcp,
                            // one pointer per gate: through one pointer, stores at u and H + u
                            // may overlap as far as the compiler knows, and it gives up
                            T* __restrict dri, T* __restrict drf, T* __restrict drg,
                            T* __restrict dro, T* __restrict dxi, T* __restrict dxf,
                            T* __restrict dxg, T* __restrict dxo, T* __restrict d_wci,
                            T* __restrict d_wcf, T* __restrict d_wco) {
    for (int64_t u = 0; u < n; ++u) {
      const T i = act[u], f = act[H + u], g = act[2 * H + u], o = act[3 * H + u];
      const T c_prev = cp[u], c = cc[u], tc = tanh_act(c), dh = dhp[u];
      const T d_o = dh * tc * o * (T(1) - o);
      T dc = dcp[u] + dh * o * (T(1) - tc * tc);
      if (Peep) dc += d_o * w_co[u];
      const T d_i = dc * g * i * (T(1) - i);
      const T d_f = dc * c_prev * f * (T(1) - f);
      const T d_g = dc * i * (T(1) - g * g);
      T dc_prev = dc * f;
      if (Peep) {
        dc_prev += d_i * w_ci[u] + d_f * w_cf[u];
        d_wci[u] += d_i * c_prev;
        d_wcf[u] += d_f * c_prev;
        d_wco[u] += d_o * c;
      }
      dcp[u] = dc_prev;
      dhp[u] = T(0);  // h_{t-1} reaches h_t only through W_hh
      dri[u] = d_i;
      drf[u] = d_f;
      drg[u] = d_g;
      dro[u] = d_o;
      if (WriteX) {
        dxi[u] = d_i;
        dxf[u] = d_f;
        dxg[u] = d_g;
        dxo[u] = d_o;
      }
    }
  }
};

// GRU, PyTorch's gate order (r, z, n):
//   r = s(W_ir x + b_ir + W_hr h + b_hr)
//   z = s(W_iz x + b_iz + W_hz h + b_hz)
//   n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
//   h_t = (1 - z) * n + z * h_{t-1}
struct GruCell : GruKind {
  template <typename T>
  static void forward_units(int64_t n, int64_t H, int64_t rs, const CellRow<T>& r) {
    forward_loop<T>(n, H, rs, r.xp, r.rec, r.b_hh, r.h_prev, r.h, r.act, r.act + H,
                    r.act + 2 * H, r.aux);
  }

  template <typename T>
  static void forward_loop(int64_t n, int64_t H, int64_t rs, const T* __restrict xp,
                           const T* __restrict rec, const T* __restrict b,
                           const T* __restrict h_prev, T* __restrict h, T* __restrict ar,
                           T* __restrict az, T* __restrict an, T* __restrict aux) {
    for (int64_t u = 0; u < n; ++u) {
      const T rg = sigmoid(xp[u] + rec[u] + b[u]);
      const T z = sigmoid(xp[rs + u] + rec[rs + u] + b[H + u]);
      const T hn = rec[2 * rs + u] + b[2 * H + u];
      const T nn = tanh_act(xp[2 * rs + u] + rg * hn);
      h[u] = (T(1) - z) * nn + z * h_prev[u];
      ar[u] = rg;
      az[u] = z;
      an[u] = nn;
      aux[u] = hn;
    }
  }

  template <typename T>
  static void backward_units(int64_t n, int64_t H, const CellGradRow<T>& r) {
    T *dr = r.d_rec, *dx = r.d_xp;
    backward_loop<T>(n, H, r.act, r.aux, r.h_prev, r.dh, dr, dr + H, dr + 2 * H, dx, dx + H,
                     dx + 2 * H);
    if (r.d_bx)
      for (int64_t g = 0; g < 3; ++g) {
        add_to(n, dx + g * H, r.d_bx + g * H);
        add_to(n, dr + g * H, r.d_bh + g * H);
      }
  }

  template <typename T>
  static void backward_loop(int64_t n, int64_t H, const T* __restrict act,
                            const T* __restrict aux, const T* __restrict h_prev,
                            T* __restrict dhp, T* __restrict drr, T* __restrict drz,
                            T* __restrict drn, T* __restrict dxr, T* __restrict dxz,
                            T* __restrict dxn) {
    for (int64_t u = 0; u < n; ++u) {
      const T rg = act[u], z = act[H + u], nn = act[2 * H + u];
      const T hn = aux[u], dh = dhp[u];
      const T d_n = dh * (T(1) - z) * (T(1) - nn * nn);
      const T d_z = dh * (h_prev[u] - nn) * z * (T(1) - z);
      const T d_r = d_n * hn * rg * (T(1) - rg);
      dxr[u] = drr[u] = d_r;
      dxz[u] = drz[u] = d_z;
      dxn[u] = d_n;
      drn[u] = d_n * rg;
      dhp[u] = dh * z;
    }
  }
};

// The cell pass of one block of n units of a batch-1 stream step (kernels/stream_step.hpp,
// stream_step_lowp.hpp): the block's gates at stride U (b_hh and act too), units from u0 on; L
// is the layer's view, read for its peepholes only.
template <typename Cell, typename T, typename Layer>
FASTLSTM_ACT_INLINE void stream_cell_block(const Layer& L, int64_t u0, int64_t n, int64_t U,
                                           const T* xp, const T* rec, const T* b_hh, T* c,
                                           const T* h_prev, T* h_out, T* act, T* aux) {
  CellRow<T> r;
  r.xp = xp;
  r.rec = rec;
  r.b_hh = b_hh;
  if (L.w_ci) {
    r.w_ci = L.w_ci + u0;
    r.w_cf = L.w_cf + u0;
    r.w_co = L.w_co + u0;
  }
  r.c = c ? c + u0 : nullptr;
  r.h_prev = h_prev + u0;
  r.h = h_out + u0;
  r.act = act;
  r.aux = aux;
  Cell::template forward_units<T>(n, U, U, r);
}

}  // namespace fastlstm::detail::FASTLSTM_ISA_NS
#endif  // FASTLSTM_ISA_NS
