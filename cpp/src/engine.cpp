#include "engine.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <string>

#include "kernels/cells.hpp"
#include "kernels/gemm.hpp"

namespace fastlstm::detail {

namespace {

template <typename V>
void fill_zero(V& v, size_t n) {
  v.resize(n);
  std::fill(v.begin(), v.end(), typename V::value_type(0));
}

// splitmix64: a counter-based generator, so a dropout mask depends only on (seed, layer, index)
// and not on thread count or call order. (Steele, Lea & Flood 2014.)
inline uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

template <typename T>
Engine<T>::Engine(const RNNConfig& config) : cfg_(config), layout_(param_layout(config)) {}

template <typename T>
DirParams<T> Engine<T>::dir_params(T* base, int64_t l, int64_t d) const {
  // layout_ holds, per (layer, direction), a fixed number of entries in a fixed order
  const size_t per = 2 + (cfg_.bias ? 2 : 0) + (cfg_.proj_size > 0 ? 1 : 0) +
                     (cfg_.peephole ? 3 : 0);
  size_t k = static_cast<size_t>(l * cfg_.num_directions() + d) * per;
  DirParams<T> p;
  auto next = [&]() { return base + layout_[k++].offset; };
  p.w_ih = next();
  p.w_hh = next();
  if (cfg_.bias) {
    p.b_ih = next();
    p.b_hh = next();
  }
  if (cfg_.proj_size > 0) p.w_hr = next();
  if (cfg_.peephole) {
    p.w_ci = next();
    p.w_cf = next();
    p.w_co = next();
  }
  return p;
}

template <typename T>
void Engine<T>::schedule(const int64_t* lengths) {
  const int64_t B = shape_.B, Tn = shape_.T;
  perm_.resize(B);
  len_sorted_.resize(B);
  active_.resize(Tn);
  std::iota(perm_.begin(), perm_.end(), int64_t(0));
  if (lengths) {
    for (int64_t b = 0; b < B; ++b)
      if (lengths[b] < 1 || lengths[b] > Tn)
        throw Error("lengths[" + std::to_string(b) + "] = " + std::to_string(lengths[b]) +
                    " is out of range: every length must be in [1, T=" + std::to_string(Tn) +
                    "]");
    // stable: equal lengths keep the batch order, so results never depend on sorting ties
    std::stable_sort(perm_.begin(), perm_.end(),
                     [&](int64_t a, int64_t b) { return lengths[a] > lengths[b]; });
  }
  for (int64_t j = 0; j < B; ++j) len_sorted_[j] = lengths ? lengths[perm_[j]] : Tn;
  int64_t nb = B;
  for (int64_t s = 0; s < Tn; ++s) {
    while (nb > 0 && len_sorted_[nb - 1] <= s) --nb;
    active_[s] = nb;
  }
}

template <typename T>
void Engine<T>::apply_dropout(int64_t l, T* buf, int64_t n) const {
  const double p = cfg_.dropout;
  const T scale = T(1.0 / (1.0 - p));
  const uint64_t base = mix(seed_ ^ mix(static_cast<uint64_t>(l)));
  for (int64_t k = 0; k < n; ++k) {
    const double u = double(mix(base + static_cast<uint64_t>(k)) >> 11) * 0x1.0p-53;
    buf[k] = u < p ? T(0) : buf[k] * scale;
  }
}

template <typename T>
template <typename Cell>
void Engine<T>::forward_direction(int64_t l, int64_t d, const DirParams<T>& p, const T* in,
                                  int64_t I_l, T* out, const T* h0, const T* c0, T* hn, T* cn,
                                  bool train) {
  const int64_t B = shape_.B, Tn = shape_.T, N = B * Tn;
  const int64_t H = cfg_.hidden_size, S = cfg_.state_size(), G = cfg_.gate_size();
  const int64_t P = cfg_.proj_size, DS = cfg_.num_directions() * S;

  // the input projection of every step at once: [N, G] = in [N, I_l] W_ih^T + b_ih
  xproj_.resize(N * G);
  gemm_nt<T>(N, G, I_l, in, I_l, p.w_ih, I_l, xproj_.data(), G, false);
  if (p.b_ih)
    for (int64_t r = 0; r < N; ++r) Vec<T>(xproj_.data() + r * G, G) += CVec<T>(p.b_ih, G);

  // the state, in sorted order
  h_.resize(B * S);
  c_.resize(B * H);
  for (int64_t j = 0; j < B; ++j) {
    const int64_t b = perm_[j];
    if (h0) std::copy_n(h0 + b * S, S, h_.data() + j * S);
    else std::fill_n(h_.data() + j * S, S, T(0));
    if (Cell::kHasC) {
      if (c0) std::copy_n(c0 + b * H, H, c_.data() + j * H);
      else std::fill_n(c_.data() + j * H, H, T(0));
    }
  }
  DirStore<T>* st = train ? &store_[l * cfg_.num_directions() + d] : nullptr;
  if (st) {
    fill_zero(st->act, Tn * B * G);
    fill_zero(st->hs, (Tn + 1) * B * S);
    std::copy_n(h_.data(), B * S, st->hs.data());
    if (Cell::kHasC) {
      fill_zero(st->cs, (Tn + 1) * B * H);
      std::copy_n(c_.data(), B * H, st->cs.data());
    } else {
      fill_zero(st->aux, Tn * B * H);
    }
    if (P > 0) fill_zero(st->hraw, Tn * B * H);
  }
  rec_.resize(B * G);
  act_.resize(B * G);
  aux_.resize(B * H);
  hraw_.resize(B * H);

  for (int64_t s = 0; s < Tn; ++s) {
    const int64_t nb = active_[s];
    if (nb == 0) break;
    // the recurrent product of the running sequences: [nb, G] = h [nb, S] W_hh^T
    gemm_nt<T>(nb, G, S, h_.data(), S, p.w_hh, S, rec_.data(), G, false);
    T* act_s = st ? st->act.data() + s * B * G : act_.data();
    T* aux_s = st && !Cell::kHasC ? st->aux.data() + s * B * H : aux_.data();
    T* hraw_s = st && P > 0 ? st->hraw.data() + s * B * H : hraw_.data();
    for (int64_t j = 0; j < nb; ++j) {
      CellRow<T> r;
      r.xp = xproj_.data() + row(step_time(d, j, s), perm_[j]) * G;
      r.rec = rec_.data() + j * G;
      r.b_hh = p.b_hh;
      r.w_ci = p.w_ci;
      r.w_cf = p.w_cf;
      r.w_co = p.w_co;
      r.c = c_.data() + j * H;
      r.h = P > 0 ? hraw_s + j * H : h_.data() + j * S;
      r.act = act_s + j * G;
      r.aux = aux_s + j * H;
      Cell::template forward_row<T>(H, r);
    }
    // LSTMP: h = h_raw W_hr^T
    if (P > 0) gemm_nt<T>(nb, P, H, hraw_s, H, p.w_hr, H, h_.data(), S, false);
    for (int64_t j = 0; j < nb; ++j)
      std::copy_n(h_.data() + j * S, S, out + row(step_time(d, j, s), perm_[j]) * DS + d * S);
    if (st) {
      std::copy_n(h_.data(), nb * S, st->hs.data() + (s + 1) * B * S);
      if (Cell::kHasC) std::copy_n(c_.data(), nb * H, st->cs.data() + (s + 1) * B * H);
    }
  }
  for (int64_t j = 0; j < B; ++j) {
    const int64_t b = perm_[j];
    std::copy_n(h_.data() + j * S, S, hn + b * S);
    if (Cell::kHasC && cn) std::copy_n(c_.data() + j * H, H, cn + b * H);
  }
}

template <typename T>
void Engine<T>::forward(const SeqShape& shape, const ForwardArgs<T>& in,
                        const ForwardOutputs<T>& out) {
  has_acts_ = false;
  shape_ = shape;
  seed_ = in.dropout_seed;
  schedule(in.lengths);
  const int64_t L = cfg_.num_layers, D = cfg_.num_directions();
  const int64_t B = shape.B, N = B * shape.T, S = cfg_.state_size(), H = cfg_.hidden_size;
  const int64_t DS = D * S;
  const bool lstm = cfg_.cell == CellType::LSTM;
  T* params = const_cast<T*>(in.params);  // read only; DirParams is shared with gradients
  if (in.train) {
    layer_in_.resize(L);
    store_.resize(L * D);
    layer_in_[0].assign(in.x, in.x + N * cfg_.input_size);  // backward needs x as it was
  }
  const T* layer_input = in.train ? layer_in_[0].data() : in.x;
  for (int64_t l = 0; l < L; ++l) {
    const bool top = l == L - 1;
    T* layer_out;
    if (top) layer_out = out.output;
    else if (in.train) layer_out = (layer_in_[l + 1].resize(N * DS), layer_in_[l + 1].data());
    else layer_out = (mid_[l % 2].resize(N * DS), mid_[l % 2].data());
    // positions past a sequence's length are never written by the loop: they read zero
    if (in.lengths) std::fill_n(layer_out, N * DS, T(0));
    for (int64_t d = 0; d < D; ++d) {
      const int64_t k = l * D + d;
      const DirParams<T> p = dir_params(params, l, d);
      const T* h0 = in.h0 ? in.h0 + k * B * S : nullptr;
      const T* c0 = in.c0 ? in.c0 + k * B * H : nullptr;
      T* cn = out.c_n ? out.c_n + k * B * H : nullptr;
      if (lstm)
        forward_direction<LstmCell>(l, d, p, layer_input, cfg_.layer_input_size(l), layer_out,
                                    h0, c0, out.h_n + k * B * S, cn, in.train);
      else
        forward_direction<GruCell>(l, d, p, layer_input, cfg_.layer_input_size(l), layer_out,
                                   h0, nullptr, out.h_n + k * B * S, nullptr, in.train);
    }
    if (!top && in.train && cfg_.dropout > 0) apply_dropout(l + 1, layer_out, N * DS);
    layer_input = layer_out;
  }
  has_acts_ = in.train;
}

template <typename T>
template <typename Cell>
void Engine<T>::backward_direction(int64_t l, int64_t d, const DirParams<T>& p,
                                   const DirParams<T>& dp, const T* in, int64_t I_l,
                                   const T* d_out, const T* dhn, const T* dcn, T* d_in, T* dh0,
                                   T* dc0) {
  const int64_t B = shape_.B, Tn = shape_.T, N = B * Tn;
  const int64_t H = cfg_.hidden_size, S = cfg_.state_size(), G = cfg_.gate_size();
  const int64_t P = cfg_.proj_size, DS = cfg_.num_directions() * S;
  const DirStore<T>& st = store_[l * cfg_.num_directions() + d];

  dh_.resize(B * S);
  dc_.resize(B * H);
  for (int64_t j = 0; j < B; ++j) {
    const int64_t b = perm_[j];
    if (dhn) std::copy_n(dhn + b * S, S, dh_.data() + j * S);
    else std::fill_n(dh_.data() + j * S, S, T(0));
    if (dcn) std::copy_n(dcn + b * H, H, dc_.data() + j * H);
    else std::fill_n(dc_.data() + j * H, H, T(0));
  }
  fill_zero(d_x_, N * G);
  fill_zero(d_rec_, Tn * B * G);
  if (P > 0) fill_zero(d_hout_, Tn * B * S);
  dhraw_.resize(B * H);
  tmp_.resize(H);

  for (int64_t s = Tn - 1; s >= 0; --s) {
    const int64_t nb = active_[s];
    if (nb == 0) continue;
    if (d_out)
      for (int64_t j = 0; j < nb; ++j)
        Vec<T>(dh_.data() + j * S, S) +=
            CVec<T>(d_out + row(step_time(d, j, s), perm_[j]) * DS + d * S, S);
    T* dcell = dh_.data();  // dL/d(cell output), [nb, H]
    if (P > 0) {
      std::copy_n(dh_.data(), nb * S, d_hout_.data() + s * B * S);
      gemm_nn<T>(nb, H, P, dh_.data(), S, p.w_hr, H, dhraw_.data(), H, false);
      dcell = dhraw_.data();
    }
    for (int64_t j = 0; j < nb; ++j) {
      CellGradRow<T> r;
      r.act = st.act.data() + (s * B + j) * G;
      if (Cell::kHasC) {
        r.c_prev = st.cs.data() + (s * B + j) * H;
        r.c = st.cs.data() + ((s + 1) * B + j) * H;
      } else {
        r.h_prev = st.hs.data() + (s * B + j) * S;
        r.aux = st.aux.data() + (s * B + j) * H;
      }
      r.w_ci = p.w_ci;
      r.w_cf = p.w_cf;
      r.w_co = p.w_co;
      r.dh = dcell + j * H;
      r.dc = dc_.data() + j * H;
      r.d_rec = d_rec_.data() + (s * B + j) * G;
      r.d_xp = d_x_.data() + row(step_time(d, j, s), perm_[j]) * G;
      r.d_wci = dp.w_ci;
      r.d_wcf = dp.w_cf;
      r.d_wco = dp.w_co;
      r.tmp = tmp_.data();
      Cell::template backward_row<T>(H, r);
    }
    // with a projection the cell output is h_raw, and h_{t-1} reaches it only through W_hh
    if (P > 0) std::fill_n(dh_.data(), nb * S, T(0));
    // dL/dh_{t-1} += d_rec [nb, G] W_hh [G, S]
    gemm_nn<T>(nb, S, G, d_rec_.data() + s * B * G, G, p.w_hh, S, dh_.data(), S, true);
  }
  for (int64_t j = 0; j < B; ++j) {
    const int64_t b = perm_[j];
    if (dh0) std::copy_n(dh_.data() + j * S, S, dh0 + b * S);
    if (dc0 && Cell::kHasC) std::copy_n(dc_.data() + j * H, H, dc0 + b * H);
  }
  // weight gradients as whole-sequence products; padded rows carry zero gradient
  gemm_tn<T>(G, I_l, N, d_x_.data(), G, in, I_l, dp.w_ih, I_l, true);
  gemm_tn<T>(G, S, Tn * B, d_rec_.data(), G, st.hs.data(), S, dp.w_hh, S, true);
  if (dp.b_ih) {
    colsum_acc<T>(N, G, d_x_.data(), G, dp.b_ih);
    colsum_acc<T>(Tn * B, G, d_rec_.data(), G, dp.b_hh);
  }
  if (P > 0) gemm_tn<T>(P, H, Tn * B, d_hout_.data(), S, st.hraw.data(), H, dp.w_hr, H, true);
  // dL/d(layer input) [N, I_l] += d_x [N, G] W_ih [G, I_l]
  gemm_nn<T>(N, I_l, G, d_x_.data(), G, p.w_ih, I_l, d_in, I_l, true);
}

template <typename T>
void Engine<T>::backward(const T* params, const BackwardArgs<T>& in,
                         const BackwardOutputs<T>& out) {
  if (!has_acts_)
    throw Error("backward() needs a preceding forward(..., train=True) on this module");
  const int64_t L = cfg_.num_layers, D = cfg_.num_directions();
  const int64_t B = shape_.B, N = B * shape_.T, S = cfg_.state_size(), H = cfg_.hidden_size;
  const int64_t DS = D * S;
  const bool lstm = cfg_.cell == CellType::LSTM;
  T* pbase = const_cast<T*>(params);
  std::fill_n(out.d_params, num_params(cfg_), T(0));
  const T* d_out = in.d_output;
  for (int64_t l = L - 1; l >= 0; --l) {
    const int64_t I_l = cfg_.layer_input_size(l);
    T* d_in;
    if (l == 0) {
      d_in = out.d_x;
      std::fill_n(d_in, N * I_l, T(0));
    } else {
      fill_zero(d_mid_[l % 2], N * DS);
      d_in = d_mid_[l % 2].data();
    }
    for (int64_t d = 0; d < D; ++d) {
      const int64_t k = l * D + d;
      const DirParams<T> p = dir_params(pbase, l, d);
      const DirParams<T> dp = dir_params(out.d_params, l, d);
      const T* dhn = in.d_h_n ? in.d_h_n + k * B * S : nullptr;
      const T* dcn = in.d_c_n ? in.d_c_n + k * B * H : nullptr;
      T* dh0 = out.d_h0 ? out.d_h0 + k * B * S : nullptr;
      T* dc0 = out.d_c0 ? out.d_c0 + k * B * H : nullptr;
      if (lstm)
        backward_direction<LstmCell>(l, d, p, dp, layer_in_[l].data(), I_l, d_out, dhn, dcn,
                                     d_in, dh0, dc0);
      else
        backward_direction<GruCell>(l, d, p, dp, layer_in_[l].data(), I_l, d_out, dhn, nullptr,
                                    d_in, dh0, nullptr);
    }
    // the dropout mask of layer l's input is regenerated from the seed of the forward
    if (l > 0 && cfg_.dropout > 0) apply_dropout(l, d_in, N * DS);
    d_out = d_in;
  }
}

template class Engine<float>;
template class Engine<double>;

}  // namespace fastlstm::detail
