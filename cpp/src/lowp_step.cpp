// Packing for the low-precision step (lowp_step.hpp) and the bf16/int8 Stream's step over it;
// baseline code: the ISA-dependent parts are the kernel table's (kernels/dispatch.hpp).
#include "lowp_step.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#include "cpu/parallel.hpp"
#include "kernels/cells.hpp"
#include "kernels/dispatch.hpp"
#include "kernels/packed_gemm.hpp"

namespace fastlstm::detail {

void lowp_tile_rows(const float* w, int64_t K, int64_t H, int64_t ng,
                    std::vector<const float*>& rows) {
  const int64_t tiles = (H + kLowpUnits - 1) / kLowpUnits, tile_cols = ng * kLowpUnits;
  rows.assign(size_t(tiles * tile_cols), nullptr);
  for (int64_t t = 0; t < tiles; ++t)
    for (int64_t g = 0; g < ng; ++g)
      for (int64_t u = 0; u < std::min(kLowpUnits, H - t * kLowpUnits); ++u)
        rows[t * tile_cols + g * kLowpUnits + u] = w + (g * H + t * kLowpUnits + u) * K;
}

void LowpStepLayer::pack(const QPacked& q_ih, const QPacked& q_hh, int ng, int64_t H,
                         const float* bih, const float* bhh, const float* ci, const float* cf,
                         const float* co) {
  static_assert(kLowpUnits == kNC, "a group of the step is one panel per gate");
  const Precision p = q_ih.precision;
  const int64_t E = lowp_step_elems(p), groups = (H + kLowpUnits - 1) / kLowpUnits;
  const int64_t C = ng * kLowpUnits;  // columns of a group
  const int64_t Kx = lowp_step_pad(p, q_ih.K), Kh = lowp_step_pad(p, q_hh.K);
  LowpStepView& v = view;
  v.precision = p;
  v.ng = ng;
  v.H = H;
  v.I = q_ih.K;
  v.S = q_hh.K;
  v.Kx = Kx;
  v.Kh = Kh;
  v.gstride = (Kx + Kh) / E * C * 4;
  w.assign(size_t(groups * v.gstride), 0);
  // a panel (kNC columns) of a QPacked takes 128 bytes per k step, as a gate of a group here
  auto panel_bytes = [&](const QPacked& q, int64_t pnl) -> const uint8_t* {
    if (p == Precision::BF16)
      return reinterpret_cast<const uint8_t*>(q.bf16.data() + pnl * q.Kp * kNC);
    return reinterpret_cast<const uint8_t*>(q.i8.data() + pnl * q.Kp * kNC);
  };
  for (int64_t gi = 0; gi < groups; ++gi) {
    uint8_t* dst = w.data() + gi * v.gstride;
    for (int part = 0; part < 2; ++part) {
      const QPacked& q = part == 0 ? q_ih : q_hh;
      const int64_t steps = (part == 0 ? Kx : Kh) / E;
      for (int64_t kk = 0; kk < steps; ++kk)
        for (int64_t g = 0; g < ng; ++g, dst += 128)
          std::memcpy(dst, panel_bytes(q, gi * ng + g) + kk * 128, 128);
    }
  }
  b_ih.assign(size_t(groups * C), 0.0f);
  b_hh.assign(size_t(groups * C), 0.0f);
  for (int64_t gi = 0; gi < groups; ++gi)
    for (int64_t g = 0; g < ng; ++g)
      for (int64_t u = 0; u < std::min(kLowpUnits, H - gi * kLowpUnits); ++u) {
        const int64_t r = g * H + gi * kLowpUnits + u, col = gi * C + g * kLowpUnits + u;
        if (bih) b_ih[col] = bih[r];
        if (bhh) b_hh[col] = bhh[r];
      }
  if (p == Precision::Int8) {
    // the QPackeds' per-column scales and weight sums are already in this column order
    sw_x.assign(q_ih.scale.begin(), q_ih.scale.begin() + groups * C);
    sw_h.assign(q_hh.scale.begin(), q_hh.scale.begin() + groups * C);
    ws_x.assign(q_ih.wsum.begin(), q_ih.wsum.begin() + groups * C);
    ws_h.assign(q_hh.wsum.begin(), q_hh.wsum.begin() + groups * C);
  }
  w_ci.clear();
  w_cf.clear();
  w_co.clear();
  if (ci) {
    w_ci.assign(ci, ci + H);
    w_cf.assign(cf, cf + H);
    w_co.assign(co, co + H);
  }
  v.w = w.data();
  v.b_ih = b_ih.data();
  v.b_hh = b_hh.data();
  v.sw_x = sw_x.empty() ? nullptr : sw_x.data();
  v.sw_h = sw_h.empty() ? nullptr : sw_h.data();
  v.ws_x = ws_x.empty() ? nullptr : ws_x.data();
  v.ws_h = ws_h.empty() ? nullptr : ws_h.data();
  v.w_ci = ci ? w_ci.data() : nullptr;
  v.w_cf = ci ? w_cf.data() : nullptr;
  v.w_co = ci ? w_co.data() : nullptr;
}

LowpStreamStep::LowpStreamStep(const RNNConfig& config, int64_t batch)
    : cfg_(config), B_(batch) {
  const int64_t L = cfg_.num_layers, H = cfg_.hidden_size, S = cfg_.state_size();
  layers_.resize(L);
  int64_t kmax = 0;
  for (int64_t l = 0; l < L; ++l) {
    Layer& ly = layers_[l];
    ly.I = cfg_.layer_input_size(l);
    static_cast<LayerOffsets&>(ly) = layer_offsets(cfg_, l);
    kmax = std::max({kmax, lowp_step_pad(cfg_.precision, ly.I),
                     lowp_step_pad(cfg_.precision, S)});
  }
  const int nt = std::max(1, max_threads());
  qx_.resize(nt);
  qh_.resize(nt);
  for (int t = 0; t < nt; ++t) {
    qx_[t].shape(cfg_.precision, kmax);
    qh_[t].shape(cfg_.precision, kmax);
  }
  hnew_.assign(B_ * S, 0.0f);
  hraw_.assign(B_ * H, 0.0f);
  qr_.precision = cfg_.precision;
  if (cfg_.proj_size > 0) qr_.shape(16, lowp_depth_pad(cfg_.precision, H));
}

void LowpStreamStep::pack(const float* params) {
  const int64_t H = cfg_.hidden_size, S = cfg_.state_size(), P = cfg_.proj_size;
  const int ng = int(cfg_.gate_size() / H);
  const Precision p = cfg_.precision;
  for (Layer& ly : layers_) {
    // (every buffer keeps its size from the first packing: a repack allocates nothing)
    lowp_tile_rows(params + ly.o_ih, ly.I, H, ng, rows_);
    quantize_pack(p, ly.I, rows_, ly.q_ih);
    lowp_tile_rows(params + ly.o_hh, S, H, ng, rows_);
    quantize_pack(p, S, rows_, ly.q_hh);
    if (P > 0) {
      rows_.assign(static_cast<size_t>(P), nullptr);
      for (int64_t r = 0; r < P; ++r) rows_[r] = params + ly.o_hr + r * H;
      quantize_pack(p, H, rows_, ly.q_hr);
    }
    auto at = [&](int64_t o) { return o >= 0 ? params + o : nullptr; };
    ly.st.pack(ly.q_ih, ly.q_hh, ng, H, at(ly.o_bih), at(ly.o_bhh), at(ly.o_ci), at(ly.o_cf),
               at(ly.o_co));
  }
}

void LowpStreamStep::step(const float* x, float* y, float* h, float* c) noexcept {
  const int64_t L = cfg_.num_layers, H = cfg_.hidden_size, S = cfg_.state_size();
  const int64_t P = cfg_.proj_size, B = B_, G = cfg_.gate_size();
  const KernelTable& kt = kernels();
  const auto run = kt.lowp_step_layer[cfg_.cell == CellType::LSTM ? LstmKind::kIndex
                                                                   : GruKind::kIndex];
  const int64_t groups = (H + kLowpUnits - 1) / kLowpUnits;
  const int64_t elem = cfg_.precision == Precision::BF16 ? 2 : 1;
  const MinThreadWork mw = min_thread_work();
  const float* in = x;  // [B, I_l]
  int64_t ld_in = cfg_.input_size;
  for (int64_t l = 0; l < L; ++l) {
    const Layer& ly = layers_[l];
    const LowpStepView& v = ly.st.view;
    float* hl = h + l * B * S;
    float* cl = c ? c + l * B * H : nullptr;
    float* out = P > 0 ? hraw_.data() : hnew_.data();
    const int64_t ld_out = P > 0 ? H : S;
    // the engine's rule for a step's threads (engine.cpp, step_threads)
    const int64_t weights = G * (ly.I + S + P);
    int nt = std::max(threads_for(groups, B * weights, mw.step),
                      threads_for(groups, weights * elem, mw.step_bytes));
    nt = std::min<int>(nt, int(qx_.size()));
    auto part = [&](int tid, int n) {
      const int64_t g0 = groups * tid / n, g1 = groups * (tid + 1) / n;
      if (g1 <= g0) return;
      LowpStepRow& qx = qx_[tid];
      LowpStepRow& qh = qh_[tid];
      for (int64_t j = 0; j < B; ++j) {
        kt.lowp_step_quantize(cfg_.precision, in + j * ld_in, ly.I, v.Kx, qx.q.data(), &qx.scale);
        kt.lowp_step_quantize(cfg_.precision, hl + j * S, S, v.Kh, qh.q.data(), &qh.scale);
        run(v, qx.q.data(), qx.scale, qh.q.data(), qh.scale, hl + j * S,
            cl ? cl + j * H : nullptr, out + j * ld_out, g0, g1, reverse_);
      }
    };
    if (nt <= 1) part(0, 1);
    else parallel_region(nt, part);
    for (int64_t j = 0; j < B; ++j) {
      if (P > 0) {
        kt.quantize_rows(hraw_.data() + j * H, 1, H, ly.q_hr, qr_);
        kt.gemm_lowp_q(P, qr_, ly.q_hr, 0, hnew_.data() + j * S, S);
      }
      std::copy_n(hnew_.data() + j * S, S, hl + j * S);
    }
    in = hl;
    ld_in = S;
  }
  std::copy_n(in, B * S, y);
  reverse_ = !reverse_;
}

}  // namespace fastlstm::detail
