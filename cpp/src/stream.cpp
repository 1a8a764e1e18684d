#include "stream.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#include "cpu/parallel.hpp"
#include "engine.hpp"
#include "kernels/dispatch.hpp"
#include "kernels/packed_gemm.hpp"

#if defined(__GNUC__)
#define FASTLSTM_STREAM_NOINLINE __attribute__((noinline))
#elif defined(_MSC_VER)
#define FASTLSTM_STREAM_NOINLINE __declspec(noinline)
#else
#define FASTLSTM_STREAM_NOINLINE
#endif

namespace fastlstm::detail {

namespace {


// From this many multiply-adds per step on, a step splits the groups of units over the thread
// pool (when more than one thread is allowed): about 1.3 MB of float weights (I = 64, H = 256),
// some 10 us on one core, against a wake-up of the pool's spinning workers of about 1 us. Below
// it a step runs on the calling thread alone and touches no lock.
constexpr int64_t kStreamThreadWork = int64_t(1) << 18;

}  // namespace

LayerOffsets layer_offsets(const RNNConfig& config, int64_t layer) {
  const std::vector<ParamInfo> layout = param_layout(config);
  const std::string sfx = "_l" + std::to_string(layer);
  // the offset of the tensor of that PyTorch name, or -1 (absent: no bias, no peepholes)
  auto find = [&](const char* name) -> int64_t {
    for (const ParamInfo& pi : layout)
      if (pi.name == name + sfx) return pi.offset;
    return -1;
  };
  LayerOffsets o;
  o.o_ih = find("weight_ih");
  o.o_hh = find("weight_hh");
  o.o_bih = find("bias_ih");
  o.o_bhh = find("bias_hh");
  o.o_hr = find("weight_hr");
  o.o_ci = find("weight_ci");
  o.o_cf = find("weight_cf");
  o.o_co = find("weight_co");
  return o;
}

template <typename T>
StreamStep<T>::StreamStep(const RNNConfig& config, int64_t batch) : cfg_(config), B_(batch) {
  const int64_t L = cfg_.num_layers, H = cfg_.hidden_size, S = cfg_.state_size();
  const int64_t P = cfg_.proj_size;
  const bool lstm = cfg_.cell == CellType::LSTM;
  const bool narrow = H <= kStreamU<T> / 2;
  const int64_t U = U_ = narrow ? kStreamU<T> / 2 : kStreamU<T>;
  const auto pick =
      typed_kernels<T>().stream_layer[lstm ? LstmKind::kIndex : GruKind::kIndex][narrow ? 1 : 0];
  gemm_ = typed_kernels<T>().gemm_packed;
  hnew_.assign(B_ * S, T(0));
  hraw_.assign(B_ * H, T(0));
  threadable_ = work_per_step() >= kStreamThreadWork;
  lean_ = B_ == 1 && P == 0 && !threadable_;

  const int64_t ng = cfg_.gate_size() / H;
  const int64_t blocks = (H + U - 1) / U;
  layers_.resize(L);
  for (int64_t l = 0; l < L; ++l) {
    Layer& ly = layers_[l];
    const int64_t I = cfg_.layer_input_size(l);
    static_cast<LayerOffsets&>(ly) = layer_offsets(cfg_, l);
    ly.I = I;
    ly.H = H;
    ly.S = S;
    int64_t wo = 0, bo = 0;
    for (int64_t b0 = 0; b0 < blocks;) {
      Group g;
      g.nb = blocks - b0 >= 2 ? 2 : 1;
      g.u0 = b0 * U;
      g.w = wo;
      g.b = bo;
      wo += (I + S) * g.nb * ng * U;
      bo += g.nb * ng * U;
      b0 += g.nb;
      ly.groups.push_back(g);
    }
    ly.w.assign(wo, T(0));
    ly.b_ih.assign(bo, T(0));
    ly.b_hh.assign(bo, T(0));
    if (ly.o_ci >= 0) {
      ly.w_ci.assign(H, T(0));
      ly.w_cf.assign(H, T(0));
      ly.w_co.assign(H, T(0));
    }
    if (P > 0) ly.hr.assign(num_panels(P) * H * kNC, T(0));
    StreamLayerView<T>& v = ly.view;
    v.I = I;
    v.H = H;
    v.S = S;
    v.w = ly.w.data();
    v.b_ih = ly.b_ih.data();
    v.b_hh = ly.b_hh.data();
    if (!ly.w_ci.empty()) {
      v.w_ci = ly.w_ci.data();
      v.w_cf = ly.w_cf.data();
      v.w_co = ly.w_co.data();
    }
    v.groups = ly.groups.data();
    ly.ng = int64_t(ly.groups.size());
    ly.run = pick(H, S, ly.o_ci >= 0);
  }
}

template <typename T>
int64_t StreamStep<T>::work_per_step() const {
  int64_t w = 0;
  for (int64_t l = 0; l < cfg_.num_layers; ++l)
    w += cfg_.gate_size() * (cfg_.layer_input_size(l) + cfg_.state_size()) +
         cfg_.proj_size * cfg_.hidden_size;
  return w * B_;
}

template <typename T>
void StreamStep<T>::pack(const T* params) noexcept {
  const int64_t H = cfg_.hidden_size, S = cfg_.state_size(), P = cfg_.proj_size, U = U_;
  const int64_t ng = cfg_.gate_size() / H;
  for (Layer& ly : layers_) {
    const int64_t I = ly.I;
    const T* w_ih = params + ly.o_ih;
    const T* w_hh = params + ly.o_hh;
    const T* b_ih = ly.o_bih >= 0 ? params + ly.o_bih : nullptr;
    const T* b_hh = ly.o_bhh >= 0 ? params + ly.o_bhh : nullptr;
    for (const Group& g : ly.groups) {
      const int64_t C = g.nb * ng * U;
      T* w = ly.w.data() + g.w;
      for (int64_t b = 0; b < g.nb; ++b)
        for (int64_t q = 0; q < ng; ++q)
          for (int64_t j = 0; j < U; ++j) {
            const int64_t u = g.u0 + b * U + j, col = (b * ng + q) * U + j;
            if (u >= H) continue;  // padding: zeros from construction
            const int64_t r = q * H + u;  // row of the gate weights
            for (int64_t k = 0; k < I; ++k) w[k * C + col] = w_ih[r * I + k];
            for (int64_t k = 0; k < S; ++k) w[(I + k) * C + col] = w_hh[r * S + k];
            if (b_ih) ly.b_ih[g.b + col] = b_ih[r];
            if (b_hh) ly.b_hh[g.b + col] = b_hh[r];
          }
    }
    if (ly.o_ci >= 0) {
      std::copy_n(params + ly.o_ci, H, ly.w_ci.data());
      std::copy_n(params + ly.o_cf, H, ly.w_cf.data());
      std::copy_n(params + ly.o_co, H, ly.w_co.data());
    }
    if (P > 0) pack_panels<T>(P, H, params + ly.o_hr, H, 1, ly.hr.data());
  }
}

template <typename T>
void StreamStep<T>::step(const T* x, T* y, T* h, T* c) noexcept {
  if (lean_) {
    // One row, no projection, this thread: each layer's kernel reads its h and writes the new
    // one in place (one group: it reads all of h_prev before it writes any of h) or through
    // hnew_, and the last layer's kernel writes y itself. Nothing else runs between two steps'
    // dependent chains.
    const int64_t H = cfg_.hidden_size, S = H;
    const Layer* ly = layers_.data();
    const int64_t nl = int64_t(layers_.size());
    const T* in = x;
    for (int64_t l = 0; l < nl; ++l, ++ly) {
      T* hl = h + l * S;
      T* yl = l + 1 == nl ? y : nullptr;
      T* cl = c ? c + l * H : nullptr;
      if (ly->ng == 1) {
        ly->run(ly->view, in, hl, cl, hl, yl, false, 0, 1);
      } else {
        ly->run(ly->view, in, hl, cl, hnew_.data(), yl, reverse_, 0, ly->ng);
        std::copy_n(hnew_.data(), S, hl);
      }
      in = hl;
    }
    reverse_ = !reverse_;
    return;
  }
  step_general(x, y, h, c);
}

// the other cases (several rows, projection, threads); out of line, so that the lean path above
// does not pay for this one's frame
template <typename T>
FASTLSTM_STREAM_NOINLINE void StreamStep<T>::step_general(const T* x, T* y, T* h,
                                                          T* c) noexcept {
  const int64_t L = cfg_.num_layers, H = cfg_.hidden_size, S = cfg_.state_size();
  const int64_t P = cfg_.proj_size, B = B_;
  const int nt = threadable_ ? max_threads() : 1;
  const T* in = x;  // [B, I_l]
  int64_t ld_in = cfg_.input_size;
  for (int64_t l = 0; l < L; ++l) {
    const Layer& ly = layers_[l];
    T* hl = h + l * B * S;                 // [B, S]
    T* cl = c ? c + l * B * H : nullptr;   // [B, H]
    const int64_t ng = int64_t(ly.groups.size());
    // One group (H <= 2 blocks): the step reads all of h_prev before it writes any of h, so
    // it writes the new h in place, with no copy between two steps' dependent chains.
    const bool in_place = P == 0 && ng == 1;
    T* out = P > 0 ? hraw_.data() : in_place ? hl : hnew_.data();
    const int64_t ld_out = P > 0 ? H : S;
    // rows x groups [g0, g1): the gate products and cell pass of those units
    auto part = [&](int64_t g0, int64_t g1) {
      for (int64_t j = 0; j < B; ++j)
        ly.run(ly.view, in + j * ld_in, hl + j * S, cl ? cl + j * H : nullptr, out + j * ld_out,
               nullptr, reverse_, g0, g1);
    };
    if (nt <= 1 || ng < 2) {
      part(0, ng);
    } else {
      // above the threading threshold: each thread owns whole groups (its units' weights stay
      // in its core's cache across steps); the same arithmetic per element, so the same bits
      parallel_region(int(std::min<int64_t>(nt, ng)), [&](int tid, int n) {
        part(ng * tid / n, ng * (tid + 1) / n);
      });
    }
    for (int64_t j = 0; j < B && !in_place; ++j) {
      if (P > 0)
        gemm_(1, P, H, hraw_.data() + j * H, H, ly.hr.data(), hnew_.data() + j * S, S,
                       false);
      std::copy_n(hnew_.data() + j * S, S, hl + j * S);
    }
    in = hl;
    ld_in = S;
  }
  std::copy_n(in, B * S, y);
  reverse_ = !reverse_;
}

template class StreamStep<float>;
template class StreamStep<double>;

}  // namespace fastlstm::detail
