// The gate math of one batch row at one time step: the only code that differs between LSTM
// (with or without peepholes) and GRU. The engine's time loop, layouts and threading are shared;
// it calls Cell::forward_row / Cell::backward_row on each active row of a step.
//
// Pure functions over raw pointers (H = hidden units, G = gates * H); no allocation, no threads.
#pragma once

#include <Eigen/Core>
#include <cstdint>

namespace fastlstm::detail {

template <typename T>
using Vec = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <typename T>
using CVec = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

// Everything a cell reads or writes for one row of one step. Unused pointers are nullptr.
template <typename T>
struct CellRow {
  // forward inputs
  const T* xp = nullptr;    // [G] x W_ih^T + b_ih (user layout)
  const T* rec = nullptr;   // [G] h_prev W_hh^T (no bias)
  const T* b_hh = nullptr;  // [G] or nullptr
  const T* w_ci = nullptr;  // [H] peepholes (LSTM) or nullptr
  const T* w_cf = nullptr;
  const T* w_co = nullptr;
  // state: LSTM c [H] is read as c_{t-1} and overwritten with c_t; h [H] is the cell's output
  // (GRU: read as h_{t-1} and overwritten with h_t)
  T* c = nullptr;
  T* h = nullptr;
  // kept for backward
  T* act = nullptr;  // [G] post-activation gates
  T* aux = nullptr;  // [H] GRU: W_hn h_prev + b_hn (LSTM: unused, c is kept by the engine)
};

template <typename T>
struct CellGradRow {
  // saved forward values
  const T* act = nullptr;     // [G]
  const T* c_prev = nullptr;  // [H] LSTM
  const T* c = nullptr;       // [H] LSTM
  const T* h_prev = nullptr;  // [H] GRU
  const T* aux = nullptr;     // [H] GRU: hn
  const T* w_ci = nullptr;
  const T* w_cf = nullptr;
  const T* w_co = nullptr;
  // in: dL/dh_t (cell output); out: the part of dL/dh_{t-1} that bypasses W_hh (GRU: z * dh)
  T* dh = nullptr;
  T* dc = nullptr;       // [H] LSTM in: dL/dc_t from step t+1; out: dL/dc_{t-1}
  T* d_rec = nullptr;    // [G] out: dL/d(h_prev W_hh^T + b_hh)
  T* d_xp = nullptr;     // [G] out: dL/d(x W_ih^T + b_ih)
  T* d_wci = nullptr;    // [H] accumulated peephole gradients (LSTM)
  T* d_wcf = nullptr;
  T* d_wco = nullptr;
  T* tmp = nullptr;      // [H] scratch
};

template <typename T>
inline auto sigmoid(const T& a) {
  return a.logistic();
}

// LSTM, PyTorch's gate order (i, f, g, o):
//   i = s(W_ii x + b_ii + W_hi h + b_hi [+ w_ci * c_{t-1}])
//   f = s(W_if x + b_if + W_hf h + b_hf [+ w_cf * c_{t-1}])
//   g = tanh(W_ig x + b_ig + W_hg h + b_hg)
//   c_t = f * c_{t-1} + i * g
//   o = s(W_io x + b_io + W_ho h + b_ho [+ w_co * c_t])
//   h_t = o * tanh(c_t)
struct LstmCell {
  static constexpr int kGates = 4;
  static constexpr bool kHasC = true;

  template <typename T>
  static void forward_row(int64_t H, const CellRow<T>& r) {
    Vec<T> act(r.act, 4 * H);
    act = CVec<T>(r.xp, 4 * H) + CVec<T>(r.rec, 4 * H);
    if (r.b_hh) act += CVec<T>(r.b_hh, 4 * H);
    Vec<T> c(r.c, H);
    auto pi = act.segment(0, H), pf = act.segment(H, H), pg = act.segment(2 * H, H),
         po = act.segment(3 * H, H);
    if (r.w_ci) {
      pi += CVec<T>(r.w_ci, H) * c;
      pf += CVec<T>(r.w_cf, H) * c;
    }
    // coefficient-wise assignments are alias-safe in Eigen: no temporaries, no allocation
    act.segment(0, 2 * H) = sigmoid(act.segment(0, 2 * H));
    pg = pg.tanh();
    c = pf * c + pi * pg;
    if (r.w_co) po += CVec<T>(r.w_co, H) * c;
    po = sigmoid(po);
    Vec<T>(r.h, H) = po * c.tanh();
  }

  template <typename T>
  static void backward_row(int64_t H, const CellGradRow<T>& r) {
    CVec<T> act(r.act, 4 * H);
    auto i = act.segment(0, H), f = act.segment(H, H), g = act.segment(2 * H, H),
         o = act.segment(3 * H, H);
    CVec<T> c_prev(r.c_prev, H), c(r.c, H);
    Vec<T> dh(r.dh, H), dc(r.dc, H);
    Vec<T> d(r.d_rec, 4 * H);
    Vec<T> tc(r.tmp, H);
    tc = c.tanh();
    auto d_i = d.segment(0, H), d_f = d.segment(H, H), d_g = d.segment(2 * H, H),
         d_o = d.segment(3 * H, H);
    d_o = dh * tc * o * (T(1) - o);
    dc += dh * o * (T(1) - tc * tc);
    if (r.w_co) {
      dc += d_o * CVec<T>(r.w_co, H);
      Vec<T>(r.d_wco, H) += d_o * c;
    }
    d_i = dc * g * i * (T(1) - i);
    d_f = dc * c_prev * f * (T(1) - f);
    d_g = dc * i * (T(1) - g * g);
    dc *= f;  // now dL/dc_{t-1}
    if (r.w_ci) {
      dc += d_i * CVec<T>(r.w_ci, H) + d_f * CVec<T>(r.w_cf, H);
      Vec<T>(r.d_wci, H) += d_i * c_prev;
      Vec<T>(r.d_wcf, H) += d_f * c_prev;
    }
    Vec<T>(r.d_xp, 4 * H) = d;
    dh.setZero();  // h_{t-1} reaches h_t only through W_hh
  }
};

// GRU, PyTorch's gate order (r, z, n):
//   r = s(W_ir x + b_ir + W_hr h + b_hr)
//   z = s(W_iz x + b_iz + W_hz h + b_hz)
//   n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
//   h_t = (1 - z) * n + z * h_{t-1}
struct GruCell {
  static constexpr int kGates = 3;
  static constexpr bool kHasC = false;

  template <typename T>
  static void forward_row(int64_t H, const CellRow<T>& r) {
    Vec<T> act(r.act, 3 * H);
    Vec<T> hn(r.aux, H);
    CVec<T> xp(r.xp, 3 * H), rec(r.rec, 3 * H);
    act.segment(0, 2 * H) = xp.segment(0, 2 * H) + rec.segment(0, 2 * H);
    hn = rec.segment(2 * H, H);
    if (r.b_hh) {
      act.segment(0, 2 * H) += CVec<T>(r.b_hh, 2 * H);
      hn += CVec<T>(r.b_hh + 2 * H, H);
    }
    act.segment(0, 2 * H) = sigmoid(act.segment(0, 2 * H));
    auto rg = act.segment(0, H), z = act.segment(H, H), n = act.segment(2 * H, H);
    n = (xp.segment(2 * H, H) + rg * hn).tanh();
    Vec<T> h(r.h, H);
    h = (T(1) - z) * n + z * h;
  }

  template <typename T>
  static void backward_row(int64_t H, const CellGradRow<T>& r) {
    CVec<T> act(r.act, 3 * H);
    auto rg = act.segment(0, H), z = act.segment(H, H), n = act.segment(2 * H, H);
    CVec<T> hn(r.aux, H), h_prev(r.h_prev, H);
    Vec<T> dh(r.dh, H);
    Vec<T> dx(r.d_xp, 3 * H), drec(r.d_rec, 3 * H);
    auto dxr = dx.segment(0, H), dxz = dx.segment(H, H), dxn = dx.segment(2 * H, H);
    dxn = dh * (T(1) - z) * (T(1) - n * n);
    dxz = dh * (h_prev - n) * z * (T(1) - z);
    dxr = dxn * hn * rg * (T(1) - rg);
    drec.segment(0, 2 * H) = dx.segment(0, 2 * H);
    drec.segment(2 * H, H) = dxn * rg;
    dh *= z;
  }
};

}  // namespace fastlstm::detail
