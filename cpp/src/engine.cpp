#include "engine.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <string>
#include <type_traits>

#include "cpu/parallel.hpp"
#include "kernels/dispatch.hpp"

namespace fastlstm::detail {

namespace {

template <typename V>
void fill_zero(V& v, size_t n) {
  v.resize(n);
  std::fill(v.begin(), v.end(), typename V::value_type(0));
}

// Buffers whose rows of finished sequences are read by the whole-sequence products must hold
// zeros there (0 * a stale NaN is NaN); without lengths every row is written, and clearing
// them would only cost memory bandwidth (about a third of a small training step).
template <typename V>
void prepare(V& v, size_t n, bool zero) {
  if (zero) fill_zero(v, n);
  else v.resize(n);
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
Engine<T>::Engine(const RNNConfig& config) : cfg_(config), layout_(param_layout(config)) {
  if (lowp() && !std::is_same_v<T, float>)
    throw Error(std::string("a ") + precision_name(cfg_.precision) +
                " network runs in float32: quantize a float64 network's parameters as float32");
  kernels();  // detects the CPU (and reports a bad FASTLSTM_CPU) before any work
}

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

// Hidden units are split in tiles of kTile units; a thread owns whole tiles, i.e. the columns
// of every gate of its units, so the fused gate pass needs no data from other threads and a
// time step costs one barrier (two with a projection). kTile = kNC keeps the partition of the
// hidden units aligned with the panels of the backward products.
constexpr int64_t kTile = kNC;
static_assert(kTile == kLowpUnits, "a tile of the engine is a group of the low-precision step");
constexpr int64_t kRowGrain = 16 * kMR;  // rows per chunk of the whole-sequence products
// Above this size the whole-sequence input projection would be read back from memory.
constexpr int64_t kXprojCacheBytes = int64_t(1) << 20;

// A time loop splits its steps' parts (unit tiles, state panels) over threads only where each
// thread gets min_thread_work().step multiply-adds per step (cpu/parallel.hpp); below, it runs
// on the caller's thread and no barrier is ever waited on.
// (or min_thread_work().step_bytes of the weights a step reads: `weights` elements of
// `elem_bytes` each).
// b1: an inference step of one or two rows (min_thread_work().step_bytes_b1).
inline int step_threads(int64_t parts, int64_t work_per_step, int64_t weights,
                        int64_t elem_bytes, bool b1 = false) {
  const MinThreadWork w = min_thread_work();
  return std::max(threads_for(parts, work_per_step, w.step),
                  threads_for(parts, weights * elem_bytes,
                              b1 ? w.step_bytes_b1 : w.step_bytes));
}

template <typename T>
void Engine<T>::pack_weights(const T* params, bool backward) {
  if (cache_packed_ && packed_valid_ && !backward) return;
  // Repack only when a parameter changed since the last packing: the parameters are the
  // caller's writable buffer (optimizers and users update it in place), so compare it with a
  // copy of what the forward packing read, bit for bit. Comparing only reads; packing on every
  // call also pushed the packed weights out of the cores' caches (measured: a batch-1 call of
  // 1000 steps, H=256, took 11.4 ms with it and 8.2 ms without). The backward packing is valid
  // while it was made from that same copy's parameters (pack_gen_ counts forward packings).
  const size_t n = static_cast<size_t>(num_params(cfg_));
  const bool same = packed_src_.size() == n &&
                    std::memcmp(packed_src_.data(), params, n * sizeof(T)) == 0;
  if (!backward && same) {
    packed_valid_ = true;
    return;
  }
  if (backward && same && packed_bw_gen_ == pack_gen_) return;
  const int64_t L = cfg_.num_layers, D = cfg_.num_directions();
  const int64_t H = cfg_.hidden_size, S = cfg_.state_size(), G = cfg_.gate_size();
  const int64_t P = cfg_.proj_size, ng = G / H;
  const int64_t tiles = (H + kTile - 1) / kTile;
  auto& A = backward ? pk_ih_t_ : pk_ih_;
  auto& B = backward ? pk_hh_t_ : pk_hh_;
  auto& C = backward ? pk_hr_t_ : pk_hr_;
  A.resize(L * D);
  B.resize(L * D);
  C.resize(L * D);
  for (int64_t l = 0; l < L; ++l)
    for (int64_t d = 0; d < D; ++d) {
      const int64_t k = l * D + d, I_l = cfg_.layer_input_size(l);
      const DirParams<T> p = dir_params(const_cast<T*>(params), l, d);
      if (backward) {
        // d_in = d_x W_ih ; dh = d_rec W_hh ; dhraw = dh W_hr : B^T is the weight itself
        A[k].resize(num_panels(I_l) * G * kNC);
        pack_panels<T>(I_l, G, p.w_ih, 1, I_l, A[k].data());
        B[k].resize(num_panels(S) * G * kNC);
        pack_panels<T>(S, G, p.w_hh, 1, S, B[k].data());
        if (P > 0) {
          C[k].resize(num_panels(H) * P * kNC);
          pack_panels<T>(H, P, p.w_hr, 1, H, C[k].data());
        }
        continue;
      }
      // W_ih and W_hh tile by tile, the gates of a tile's units side by side (gate stride
      // kTile): tile columns [i u0..u0+31 | f u0..u0+31 | g ... | o ...], zero past H. Panel pnl
      // of tile t holds gate pnl of the tile's units: rows pnl * H + u of the weight.
      const int64_t tile_cols = ng * kTile;
      auto pack_tiles = [&](const T* w, int64_t K, AlignedVector<T>& dst) {
        dst.resize(tiles * tile_cols * K);
        for (int64_t t = 0; t < tiles; ++t)
          for (int64_t pnl = 0; pnl < ng; ++pnl) {
            const int64_t u0 = t * kTile, nu = std::min(kTile, H - u0);
            pack_panels<T>(nu, K, w + (pnl * H + u0) * K, K, 1,
                           dst.data() + (t * tile_cols + pnl * kTile) * K);
          }
      };
      if (lowp()) {
        // the same column order, quantized (kernels/lowp.hpp): the low precision is a property
        // of the packed weights and of the product kernel only
        if constexpr (std::is_same_v<T, float>) {
          auto tile_rows = [&](const T* w, int64_t K) {
            std::vector<const float*> rows(size_t(tiles * tile_cols), nullptr);
            for (int64_t t = 0; t < tiles; ++t)
              for (int64_t pnl = 0; pnl < ng; ++pnl)
                for (int64_t u = 0; u < std::min(kTile, H - t * kTile); ++u)
                  rows[t * tile_cols + pnl * kTile + u] = w + (pnl * H + t * kTile + u) * K;
            return rows;
          };
          q_ih_.resize(L * D);
          q_hh_.resize(L * D);
          q_hr_.resize(L * D);
          quantize_pack(cfg_.precision, I_l, tile_rows(p.w_ih, I_l), q_ih_[k]);
          quantize_pack(cfg_.precision, S, tile_rows(p.w_hh, S), q_hh_[k]);
          if (P > 0) {
            std::vector<const float*> rows(static_cast<size_t>(P), nullptr);
            for (int64_t r = 0; r < P; ++r) rows[r] = p.w_hr + r * H;
            quantize_pack(cfg_.precision, H, rows, q_hr_[k]);
          }
          // and the same quantized weights in the batch-1 step's layout (lowp_step.hpp)
          if (int64_t(lp_step_.size()) != L * D) lp_step_.resize(L * D);
          lp_step_[k].pack(q_ih_[k], q_hh_[k], int(ng), H, p.b_ih, p.b_hh, p.w_ci, p.w_cf,
                           p.w_co);
        }
        continue;
      }
      pack_tiles(p.w_ih, I_l, A[k]);
      pack_tiles(p.w_hh, S, B[k]);
      if (P > 0) {
        C[k].resize(num_panels(P) * H * kNC);
        pack_panels<T>(P, H, p.w_hr, H, 1, C[k].data());
      }
    }
  if (backward) {
    packed_bw_gen_ = same ? pack_gen_ : -1;
  } else {
    packed_src_.assign(params, params + n);
    ++pack_gen_;
    packed_valid_ = true;
  }
}

template <typename T>
template <typename Cell>
void Engine<T>::forward_direction(int64_t l, int64_t d, const DirParams<T>& p, const T* in,
                                  int64_t I_l, T* out, const T* h0, const T* c0, T* hn, T* cn,
                                  bool train) {
  const int64_t B = shape_.B, Tn = shape_.T, N = B * Tn;
  const int64_t H = cfg_.hidden_size, S = cfg_.state_size(), G = cfg_.gate_size();
  const int64_t P = cfg_.proj_size, DS = cfg_.num_directions() * S, ng = Cell::kGates;
  const int64_t k = l * cfg_.num_directions() + d;
  const int64_t tiles = (H + kTile - 1) / kTile, tile_cols = ng * kTile;
  const T* b_hh = p.b_hh ? p.b_hh : zeros_.data();

  // The input projection x W_ih^T + b_ih, in the tiles' column order (Gp columns: per tile,
  // its units' gates side by side, zero past H; the bias reordered the same way in bx_). Two
  // schedules with the same per-element arithmetic (so the same bits): all steps at once before
  // the loop, one large product, when its result stays in cache or the batch is too small for a
  // product per step to run at speed; otherwise per step and tile inside the time loop, so that
  // it is read from L1/L2 and not from memory (about a tenth of the time for large batches).
  // A single step (a stream's) always takes the second: one parallel region instead of two,
  // and each thread reads the same part of W_ih on every step, which stays in its core's cache.
  const int64_t Gp = tiles * tile_cols;
  const T* pk_ih = pk_ih_[k].data();
  const TypedKernels<T>& kern = typed_kernels<T>();
  // C[M, ncols] = A[M, depth] W^T for the columns [col0, col0 + ncols) of a packed weight
  // (0: W_ih, 1: W_hh, 2: W_hr), in the network's precision
  // (low precision: with `pre`, A's rows as quantize_once left them)
  auto product = [&](int which, int64_t M, int64_t ncols, int64_t depth, const T* A, int64_t lda,
                     const T* pk, int64_t col0, T* C, int64_t ldc,
                     const QRows* pre = nullptr) {
    if constexpr (std::is_same_v<T, float>) {
      if (lowp()) {
        const QPacked& w = which == 0 ? q_ih_[k] : which == 1 ? q_hh_[k] : q_hr_[k];
        if (pre) kernels().gemm_lowp_q(ncols, *pre, w, col0, C, ldc);
        else kernels().gemm_lowp(M, ncols, A, lda, w, col0, C, ldc);
        return;
      }
    }
    kern.gemm_packed(M, ncols, depth, A, lda, pk + col0 * depth, C, ldc, false);
  };
  // low precision: a step's rows quantized once per thread for a weight, then used for each of
  // the thread's column blocks (not once per tile)
  auto quantize_once = [&](int which, const T* A, int64_t M, int64_t lda, QRows* q) {
    if constexpr (std::is_same_v<T, float>) {
      const QPacked& w = which == 0 ? q_ih_[k] : which == 1 ? q_hh_[k] : q_hr_[k];
      kernels().quantize_rows(A, M, lda, w, *q);
    }
  };
  bx_.assign(Gp, T(0));
  if (p.b_ih)
    for (int64_t t = 0; t < tiles; ++t)
      for (int64_t g = 0; g < ng; ++g)
        for (int64_t u = 0; u < std::min(kTile, H - t * kTile); ++u)
          bx_[t * tile_cols + g * kTile + u] = p.b_ih[g * H + t * kTile + u];
  // Low precision at batch 1 (inference): every step through the step kernel (lowp_step.hpp),
  // the input and recurrent products of a step in one pass and the cell pass behind them, the
  // kernel a bf16/int8 Stream runs (so a stream gives the sequence call's bits).
  const bool step1 = std::is_same_v<T, float> && lowp() && B == 1 && !train && !rmask_in_;
  const bool per_step =
      step1 || Tn == 1 || (B >= kMR && N * Gp * int64_t(sizeof(T)) > kXprojCacheBytes);
  // rows [r0, r1) and columns [c0, c1) of it, into dst (its row r0, column c0) at stride ldd
  auto project = [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1, const T* x, int64_t ldx,
                     T* dst, int64_t ldd, const QRows* pre = nullptr) {
    product(0, r1 - r0, c1 - c0, I_l, x + r0 * ldx, ldx, pk_ih, c0, dst, ldd, pre);
    if (p.b_ih)
      for (int64_t r = 0; r < r1 - r0; ++r)
        for (int64_t g = c0; g < c1; ++g) dst[r * ldd + g - c0] += bx_[g];
  };
  if (!per_step) {
    xproj_.resize(N * Gp);
    if (N >= 2 * kRowGrain) {
      used(parallel_for(N, kRowGrain, [&](int64_t r0, int64_t r1) {
        project(r0, r1, 0, Gp, in, I_l, xproj_.data() + r0 * Gp, Gp);
      }, N * Gp * I_l));
    } else {
      // few rows (short sequences of a small batch): split the weight panels instead, so each
      // thread streams only its part of W_ih
      const int64_t grain = 4;
      used(parallel_for(num_panels(Gp), grain, [&](int64_t q0, int64_t q1) {
        project(0, N, q0 * kNC, q1 * kNC, in, I_l, xproj_.data() + q0 * kNC, Gp);
      }, N * Gp * I_l));
    }
  }

  // the state, in sorted order
  h_[0].resize(B * S);
  h_[1].resize(B * S);
  c_.resize(B * H);
  for (int64_t j = 0; j < B; ++j) {
    const int64_t b = perm_[j];
    if (h0) std::copy_n(h0 + b * S, S, h_[0].data() + j * S);
    else std::fill_n(h_[0].data() + j * S, S, T(0));
    if (Cell::kHasC) {
      if (c0) std::copy_n(c0 + b * H, H, c_.data() + j * H);
      else std::fill_n(c_.data() + j * H, H, T(0));
    }
  }
  if (Tn == 0) std::copy_n(h_[0].data(), B * S, h_[1].data());
  DirStore<T>* st = train ? &store_[k] : nullptr;
  if (st) {
    st->act.resize(Tn * B * G);
    prepare(st->hs, (Tn + 1) * B * S, padded_);
    std::copy_n(h_[0].data(), B * S, st->hs.data());
    if (Cell::kHasC) {
      st->cs.resize((Tn + 1) * B * H);
      std::copy_n(c_.data(), B * H, st->cs.data());
    } else {
      st->aux.resize(Tn * B * H);
    }
    if (P > 0) prepare(st->hraw, Tn * B * H, padded_);
  }
  // recurrent dropout: this direction's masks in sorted row order (kept for backward)
  const int64_t nm = ng * S;  // mask entries per row
  const T* mk = nullptr;      // [B, ng*S]
  if (st) st->rmask.clear();
  if (rmask_in_) {
    std::vector<T>& dst = st ? st->rmask : rmask_;
    dst.resize(B * nm);
    for (int64_t j = 0; j < B; ++j)
      std::copy_n(rmask_in_ + (k * B + perm_[j]) * nm, nm, dst.data() + j * nm);
    mk = dst.data();
  }
  act_.resize(B * G);
  aux_.resize(B * H);
  hraw_.resize(B * H);
  // a step's multiply-adds: the recurrent product (and the projection, and x W_ih^T per step)
  const int64_t step_weights = G * (S + P + (per_step ? I_l : 0));
  const int64_t elem_bytes = !lowp() ? int64_t(sizeof(T))
                             : cfg_.precision == Precision::BF16 ? 2 : 1;
  const int nt_want = step_threads(tiles, B * step_weights, step_weights, elem_bytes,
                                   B <= 2 && !st);
  used(nt_want);
  if (int64_t(rec_.size()) < nt_want) rec_.resize(nt_want);
  if (int64_t(xrec_.size()) < nt_want) xrec_.resize(nt_want), xin_.resize(nt_want);
  if (mk && int64_t(hm_.size()) < nt_want) hm_.resize(nt_want);
  if (lowp() && int64_t(qrows_.size()) < 3 * nt_want) qrows_.resize(3 * nt_want);
  if (step1) {
    if (int64_t(lp_rows_.size()) < 2 * nt_want) lp_rows_.resize(2 * nt_want);
    for (int t = 0; t < nt_want; ++t) {
      lp_rows_[2 * t].shape(cfg_.precision, lp_step_[k].view.Kx);
      lp_rows_[2 * t + 1].shape(cfg_.precision, lp_step_[k].view.Kh);
    }
  }
  // the padded copy of h (see hpad below): float products only, where h's rows may be a
  // multiple of 4 KB apart (h_ at S, or the output's rows)
  const bool pad_h = std::is_same_v<T, float> && !lowp() &&
                     (a_rows_collide(S, S) ||
                      a_rows_collide((shape_.batch_first ? Tn : 1) * DS, S));
  const int64_t ldpad = a_row_pad(S);
  if (pad_h && int64_t(hpad_.size()) < nt_want) hpad_.resize(nt_want);
  for (int t = 0; t < nt_want; ++t) {
    if (pad_h) hpad_[t].resize(B * ldpad);
    rec_[t].resize(B * tile_cols);
    if (mk) hm_[t].resize(ng * B * S);
    if (per_step) {
      xrec_[t].resize(B * tile_cols);
      if (padded_) xin_[t].resize(B * I_l);
    }
  }
  const T* pk_hh = pk_hh_[k].data();
  const T* pk_hr = P > 0 ? pk_hr_[k].data() : nullptr;
  const int64_t proj_panels = P > 0 ? num_panels(P) : 0;

  // Copies the columns [c0, c1) of the new h of the running rows to the output, the kept
  // states, and h_n for the rows whose sequence ends at this step.
  auto publish = [&](int64_t s, int64_t nb, const T* hcur, int64_t c0_, int64_t c1_) {
    const int64_t w = c1_ - c0_;
    for (int64_t j = 0; j < nb; ++j)
      std::copy_n(hcur + j * S + c0_, w, out + row(step_time(d, j, s), perm_[j]) * DS + d * S + c0_);
    if (st)
      for (int64_t j = 0; j < nb; ++j)
        std::copy_n(hcur + j * S + c0_, w, st->hs.data() + ((s + 1) * B + j) * S + c0_);
    const int64_t next = s + 1 < Tn ? active_[s + 1] : 0;
    for (int64_t j = next; j < nb; ++j) std::copy_n(hcur + j * S + c0_, w, hn + perm_[j] * S + c0_);
  };

  // Low-precision LSTM with the input projected per step: the gates' pre-activation is the sum
  // of the two products, computed together (kernels' gemm_lowp_q2). (A GRU keeps them apart:
  // its candidate gate scales the recurrent part alone.)
  const bool fused = std::is_same_v<T, float> && lowp() && per_step && Cell::kHasC && !step1;
  // Inference of equal-length rows (B > 1, no projection, no recurrent mask): the cell pass
  // writes each step's h straight into the output rows of its time, where the next step's
  // product reads it (rows ldo apart), instead of into h_ and a copy per step; an LSTM keeps
  // no gates either (the inference buffers would be written and never read). Low precision
  // keeps h_, where its shared quantized rows of h are made.
  const bool direct = !st && !padded_ && P == 0 && !step1 && !mk && B > 1 && Tn > 0 && !lowp();
  const int64_t ldo = (shape_.batch_first ? Tn : 1) * DS;
  auto out_at = [&](int64_t s) { return out + row(step_time(d, 0, s), 0) * DS + d * S; };
  // Low-precision LSTM without lengths: a step's quantized input rows are shared by the
  // threads, in two buffers used by alternate steps; each thread quantizes its share of the
  // next step's rows before the step's last barrier, which publishes them (each thread
  // quantized all of them). bf16 without projection shares h the same way: each thread rounds
  // the h of its own units right after their cell pass. (int8 quantizes a row of h with the
  // maximum over all of it, which only the whole step knows: each thread quantizes all of h.)
  const Precision prec = cfg_.precision;
  const bool shared_x = fused && !padded_;
  const bool shared_h = shared_x && prec == Precision::BF16 && P == 0;
  const int64_t Kx = shared_x ? q_ih_[k].Kp : 0, Kh = shared_h ? q_hh_[k].Kp : 0;
  if (shared_x) {
    const int64_t Mp = (B + 15) / 16 * 16;  // whole AMX tiles of rows, zeros past B
    for (int i = 0; i < 2; ++i)
      for (int w = 0; w < (shared_h ? 2 : 1); ++w) {
        QRows& q = w == 0 ? lp_qx_[i] : lp_qh_[i];
        q.precision = prec;
        q.M = B;
        q.Kp = w == 0 ? Kx : Kh;
        q.shape(Mp, q.Kp);
        if (prec == Precision::BF16) {
          std::fill(q.bf.begin(), q.bf.end(), uint16_t(0));
        } else {
          std::fill(q.u8.begin(), q.u8.end(), uint8_t(128));  // the zero point
          std::fill(q.scale.begin(), q.scale.end(), 0.0f);
        }
      }
  }
  // low-precision inference keeps no gates: each thread's cell pass writes them to a scratch
  // row of its own, rewritten by every row and tile (stays in L1; [B, G] of them per step went
  // through L2, where the weights are read from)
  const bool act_scratch = lowp() && !st;
  if (act_scratch) {
    if (int64_t(act_tmp_.size()) < nt_want) act_tmp_.resize(nt_want);
    for (int t = 0; t < nt_want; ++t) act_tmp_[t].resize(3 * H + kTile);
  }
  SpinBarrier barrier(nt_want);
  parallel_region(nt_want, [&](int tid, int nt) {
    if (nt != nt_want) barrier.reset(nt);  // the pool was busy: this call runs alone
    const int64_t t0 = tiles * tid / nt, t1 = tiles * (tid + 1) / nt;
    const int64_t q0 = proj_panels * tid / nt, q1 = proj_panels * (tid + 1) / nt;
    T* rec = rec_[tid].data();
    T* xrec = per_step ? xrec_[tid].data() : nullptr;
    T* hm = mk ? hm_[tid].data() : nullptr;  // [ng, B, S]
    QRows* qh = lowp() ? &qrows_[3 * tid] : nullptr;  // this step's h, x, h_raw quantized
    QRows* qx = lowp() && per_step ? &qrows_[3 * tid + 1] : nullptr;
    QRows* qr = lowp() ? &qrows_[3 * tid + 2] : nullptr;
    if (qh) kernels().lowp_begin();  // per thread, once per time loop (AMX tile configuration)
    // shared_x: rows [j0, j1) of x are this thread's to quantize
    const int64_t j0 = B * tid / nt, j1 = B * (tid + 1) / nt;
    auto quantize_x_rows = [&](int64_t s_, QRows& q) {
      if constexpr (std::is_same_v<T, float>) {
        const int64_t ts = step_time(d, 0, s_);
        const bool bf = prec == Precision::BF16;
        float sc;
        for (int64_t j = j0; j < j1; ++j) {
          uint8_t* dst =
              bf ? reinterpret_cast<uint8_t*>(q.bf.data() + j * Kx) : q.u8.data() + j * Kx;
          kernels().lowp_step_quantize(prec, in + row(ts, j) * I_l, I_l, Kx, dst, &sc);
          if (!bf) q.scale[j] = sc;
        }
      }
    };
    if (shared_x) {  // step 0's rows: x and (shared_h) the initial h
      if (Tn > 0) quantize_x_rows(0, lp_qx_[0]);
      float sc;
      for (int64_t j = j0; j < j1 && shared_h; ++j)
        kernels().lowp_step_quantize(Precision::BF16,
                                     reinterpret_cast<const float*>(h_[0].data() + j * S), S, Kh,
                                     reinterpret_cast<uint8_t*>(lp_qh_[0].bf.data() + j * Kh),
                                     &sc);
      barrier.wait();
    }
    T* act_row = act_scratch ? act_tmp_[tid].data() : nullptr;
    for (int64_t s = 0; s < Tn; ++s) {
      const int64_t nb = active_[s];
      if (nb == 0) break;
      const T* hp = direct && s > 0 ? out_at(s - 1) : h_[s % 2].data();
      const int64_t ldh = direct && s > 0 ? ldo : S;  // between hp's rows
      T* hnext = direct ? out_at(s) : h_[(s + 1) % 2].data();
      const int64_t ldn = direct ? ldo : S;
      T* act_s = st ? st->act.data() + s * B * G : direct && Cell::kHasC ? nullptr : act_.data();
      if (shared_x) qx = &lp_qx_[s % 2];
      if (shared_h) qh = &lp_qh_[s % 2];
      T* aux_s = st && !Cell::kHasC ? st->aux.data() + s * B * H : aux_.data();
      T* hraw_s = st && P > 0 ? st->hraw.data() + s * B * H : hraw_.data();
      // per_step: the input rows of this step, [nb, I_l] at stride ldx (gathered when the
      // sequences have lengths: then each runs at its own time and in sorted order)
      const T* xs = nullptr;
      int64_t ldx = I_l;
      if (per_step && !padded_) {
        const int64_t ts = step_time(d, 0, s);
        xs = in + row(ts, 0) * I_l;
        ldx = (shape_.batch_first ? Tn : 1) * I_l;
      } else if (per_step) {
        T* g = xin_[tid].data();
        for (int64_t j = 0; j < nb; ++j)
          std::copy_n(in + row(step_time(d, j, s), perm_[j]) * I_l, I_l, g + j * I_l);
        xs = g;
      }
      if (step1 && t1 > t0) {
        // the batch-1 step: x and h quantized once per thread, then the thread's groups (= its
        // tiles: a group is a tile of kTile units) through the kernel, products and cell pass;
        // odd steps visit the groups last to first, so a step begins on the weights the one
        // before read last, still in L1 (the same bits)
        const KernelTable& kt = kernels();
        const LowpStepView& v = lp_step_[k].view;
        LowpStepRow& rx = lp_rows_[2 * tid];
        LowpStepRow& rh = lp_rows_[2 * tid + 1];
        kt.lowp_step_quantize(cfg_.precision, reinterpret_cast<const float*>(xs), I_l, v.Kx,
                              rx.q.data(), &rx.scale);
        kt.lowp_step_quantize(cfg_.precision, reinterpret_cast<const float*>(hp), S, v.Kh,
                              rh.q.data(), &rh.scale);
        kt.lowp_step_layer[Cell::kIndex](
            v, rx.q.data(), rx.scale, rh.q.data(), rh.scale, reinterpret_cast<const float*>(hp),
            Cell::kHasC ? reinterpret_cast<float*>(c_.data()) : nullptr,
            reinterpret_cast<float*>(P > 0 ? hraw_s : hnext), t0, t1, s % 2 == 1);
        if (P == 0) publish(s, nb, hnext, t0 * kTile, std::min(H, t1 * kTile));
      }
      if (qh && t1 > t0 && !step1) {
        if (!shared_h) quantize_once(1, hp, nb, ldh, qh);
        if (qx && !shared_x) quantize_once(0, xs, nb, ldx, qx);
      }
      // recurrent dropout: each thread makes the masked copies of h_{t-1} it reads (all S
      // columns; ng*nb*S multiplies against the products' ng*nb*S*kTile per tile)
      if (hm && t1 > t0)
        for (int64_t g = 0; g < ng; ++g)
          for (int64_t j = 0; j < nb; ++j) {
            const T* m = mk + j * nm + g * S;
            const T* h = hp + j * S;
            T* o = hm + (g * B + j) * S;
            for (int64_t c = 0; c < S; ++c) o[c] = h[c] * m[c];
          }
      // h's rows a multiple of 4 KB apart (S = 1024, 2048, ...): the float product would copy
      // them to padded rows for every tile; copied once per step and thread here instead
      const T* hpad = nullptr;
      if (pad_h && !hm && !qh && nb > 2 && t1 - t0 > 1 && a_rows_collide(ldh, S)) {
        T* hb = hpad_[tid].data();
        for (int64_t j = 0; j < nb; ++j) std::copy_n(hp + j * ldh, S, hb + j * ldpad);
        hpad = hb;
      }
      for (int64_t t = t0; t < t1 && !step1; ++t) {
        const int64_t u0 = t * kTile, nu = std::min(kTile, H - u0);
        if (fused) {
          // low-precision LSTM (never with recurrent dropout, which is training only): both
          // products of the tile in one pass into rec, b_ih in the cell's input term (the same
          // row of bx_ for every row)
          if constexpr (std::is_same_v<T, float>)
            kernels().gemm_lowp_q2(tile_cols, *qx, q_ih_[k], *qh, q_hh_[k], t * tile_cols, rec,
                                   tile_cols);
        } else {
          // the recurrent product of the running rows for this tile: [nb, ng*kTile]; with
          // recurrent dropout one product per gate, each on its own masked h_{t-1}
          if (hm)
            for (int64_t g = 0; g < ng; ++g)
              product(1, nb, kTile, S, hm + g * B * S, S, pk_hh, t * tile_cols + g * kTile,
                      rec + g * kTile, tile_cols);
          else
            product(1, nb, tile_cols, S, hpad ? hpad : hp, hpad ? ldpad : ldh, pk_hh,
                    t * tile_cols, rec, tile_cols, qh);
          if (per_step)
            project(0, nb, t * tile_cols, (t + 1) * tile_cols, xs, ldx, xrec, tile_cols, qx);
        }
        for (int64_t j = 0; j < nb; ++j) {
          CellRow<T> r;
          r.xp = fused      ? bx_.data() + t * tile_cols
                 : per_step ? xrec + j * tile_cols
                            : xproj_.data() + row(step_time(d, j, s), perm_[j]) * Gp + t * tile_cols;
          r.rec = rec + j * tile_cols;
          r.b_hh = b_hh + u0;
          if (p.w_ci) {
            r.w_ci = p.w_ci + u0;
            r.w_cf = p.w_cf + u0;
            r.w_co = p.w_co + u0;
          }
          r.c = c_.data() + j * H + u0;
          r.h_prev = hp + j * ldh + u0;
          r.h = (P > 0 ? hraw_s + j * H : hnext + j * ldn) + u0;
          r.act = act_row ? act_row : act_s ? act_s + j * G + u0 : nullptr;
          r.aux = aux_s + j * H + u0;
          kern.cell_forward[Cell::kIndex](nu, H, kTile, r);
        }
        if constexpr (std::is_same_v<T, float>)
          if (shared_h) {  // the new h of these units, rounded for the next step's product
            uint16_t* qn = lp_qh_[(s + 1) % 2].bf.data() + u0;
            float sc;
            for (int64_t j = 0; j < nb; ++j)
              kernels().lowp_step_quantize(Precision::BF16, hnext + j * S + u0, nu, nu,
                                           reinterpret_cast<uint8_t*>(qn + j * Kh), &sc);
          }
        if (st && Cell::kHasC)
          for (int64_t j = 0; j < nb; ++j)
            std::copy_n(c_.data() + j * H + u0, nu, st->cs.data() + ((s + 1) * B + j) * H + u0);
        if (P == 0 && !direct) publish(s, nb, hnext, u0, u0 + nu);
      }
      if (shared_x && s + 1 < Tn) quantize_x_rows(s + 1, lp_qx_[(s + 1) % 2]);
      if (P > 0) {  // LSTMP: h = h_raw W_hr^T, the P columns split in panels
        barrier.wait();
        if (qr && q1 > q0) quantize_once(2, hraw_s, nb, H, qr);
        for (int64_t q = q0; q < q1; ++q) {
          const int64_t c0_ = q * kNC, w = std::min(kNC, P - c0_);
          product(2, nb, w, H, hraw_s, H, pk_hr, c0_, hnext + c0_, S, qr);
          publish(s, nb, hnext, c0_, c0_ + w);
        }
      }
      barrier.wait();
    }
  });
  if (Tn == 0)
    for (int64_t j = 0; j < B; ++j) std::copy_n(h_[0].data() + j * S, S, hn + perm_[j] * S);
  if (direct)  // every row ends at the last step (perm_ is the identity without lengths)
    for (int64_t j = 0; j < B; ++j) std::copy_n(out_at(Tn - 1) + j * ldo, S, hn + j * S);
  if (Cell::kHasC && cn)
    for (int64_t j = 0; j < B; ++j) std::copy_n(c_.data() + j * H, H, cn + perm_[j] * H);
}

template <typename T>
void Engine<T>::forward(const SeqShape& shape, const ForwardArgs<T>& in,
                        const ForwardOutputs<T>& out) {
  has_acts_ = false;
  last_threads_ = 1;
  if (in.train && lowp())
    throw Error(std::string("a ") + precision_name(cfg_.precision) +
                " network is inference-only: forward(train=True) needs float weights");
  if (in.recurrent_mask && lowp())
    throw Error(std::string("recurrent_mask needs float weights: a ") +
                precision_name(cfg_.precision) + " network has no recurrent dropout");
  shape_ = shape;
  seed_ = in.dropout_seed;
  rmask_in_ = in.recurrent_mask;
  schedule(in.lengths);
  padded_ = in.lengths != nullptr;
  const int64_t L = cfg_.num_layers, D = cfg_.num_directions();
  const int64_t B = shape.B, N = B * shape.T, S = cfg_.state_size(), H = cfg_.hidden_size;
  const int64_t DS = D * S;
  const bool lstm = cfg_.cell == CellType::LSTM;
  T* params = const_cast<T*>(in.params);  // read only; DirParams is shared with gradients
  zeros_.assign(cfg_.gate_size(), T(0));
  pack_weights(params, false);
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
        forward_direction<LstmKind>(l, d, p, layer_input, cfg_.layer_input_size(l), layer_out,
                                    h0, c0, out.h_n + k * B * S, cn, in.train);
      else
        forward_direction<GruKind>(l, d, p, layer_input, cfg_.layer_input_size(l), layer_out,
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
  const int64_t k = l * cfg_.num_directions() + d;
  const DirStore<T>& st = store_[k];
  const TypedKernels<T>& kern = typed_kernels<T>();
  const int64_t tiles = (H + kTile - 1) / kTile;
  const int64_t s_panels = num_panels(S);

  dh_.resize(B * S);
  dc_.resize(B * H);
  for (int64_t j = 0; j < B; ++j) {
    const int64_t b = perm_[j];
    if (dhn) std::copy_n(dhn + b * S, S, dh_.data() + j * S);
    else std::fill_n(dh_.data() + j * S, S, T(0));
    if (dcn) std::copy_n(dcn + b * H, H, dc_.data() + j * H);
    else std::fill_n(dc_.data() + j * H, H, T(0));
  }
  if (P > 0) prepare(d_hout_, Tn * B * S, padded_);
  dhraw_.resize(B * H);
  const T* pk_hh_t = pk_hh_t_[k].data();
  const T* pk_hr_t = P > 0 ? pk_hr_t_[k].data() : nullptr;
  // recurrent dropout: the forward's masks, [B, ng*S] in sorted rows (nullptr: none)
  const int64_t ng = G / H, nm = ng * S;
  const T* mk = st.rmask.empty() ? nullptr : st.rmask.data();
  if (mk) dtmp_.resize(B * S);
  // An LSTM's gradient of the input projection equals d_rec, element for element; where its
  // rows are also in the same order (no lengths, time-major, the forward direction: row s*B + j
  // is time s, batch row j in both) d_rec serves as both and the cell pass writes it once.
  const bool alias = Cell::kHasC && !padded_ && !shape_.batch_first && d == 0;
  std::vector<T>& d_x_ = xproj_;  // the input projection's buffer is free during backward
  if (!alias) prepare(d_x_, N * G, padded_);
  prepare(d_rec_, Tn * B * G, padded_);
  T* d_x = alias ? d_rec_.data() : d_x_.data();

  // Thread tid owns hidden-unit tiles [t0, t1) (cell, dhraw) and state panels [q0, q1) (the
  // d_out accumulation and the product with W_hh). Without a projection S = H and kTile = kNC,
  // so both are the same columns.
  const int nt_want =
      step_threads(std::max(tiles, s_panels), B * G * (S + P), G * (S + P), sizeof(T));
  used(nt_want);
  SpinBarrier barrier(nt_want);
  parallel_region(nt_want, [&](int tid, int nt) {
    if (nt != nt_want) barrier.reset(nt);
    const int64_t t0 = tiles * tid / nt, t1 = tiles * (tid + 1) / nt;
    const int64_t q0 = s_panels * tid / nt, q1 = s_panels * (tid + 1) / nt;
    const int64_t sc0 = std::min(S, q0 * kNC), sc1 = std::min(S, q1 * kNC);
    for (int64_t s = Tn - 1; s >= 0; --s) {
      const int64_t nb = active_[s];
      if (nb == 0) continue;
      if (d_out)
        for (int64_t j = 0; j < nb; ++j) {
          const T* src = d_out + row(step_time(d, j, s), perm_[j]) * DS + d * S;
          for (int64_t c = sc0; c < sc1; ++c) dh_[j * S + c] += src[c];
        }
      T* dcell = dh_.data();  // dL/d(cell output) [nb, H]
      if (P > 0) {
        for (int64_t j = 0; j < nb; ++j)
          std::copy(dh_.begin() + j * S + sc0, dh_.begin() + j * S + sc1,
                    d_hout_.begin() + (s * B + j) * S + sc0);
        barrier.wait();
        for (int64_t t = t0; t < t1; ++t)
          kern.gemm_packed(nb, std::min(kTile, H - t * kTile), P, dh_.data(), S,
                         pk_hr_t + t * P * kNC, dhraw_.data() + t * kTile, H, false);
        dcell = dhraw_.data();
      }
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t u0 = t * kTile, nu = std::min(kTile, H - u0);
        for (int64_t j = 0; j < nb; ++j) {
          CellGradRow<T> r;
          r.act = st.act.data() + (s * B + j) * G + u0;
          if (Cell::kHasC) {
            r.c_prev = st.cs.data() + (s * B + j) * H + u0;
            r.c = st.cs.data() + ((s + 1) * B + j) * H + u0;
          } else {
            r.h_prev = st.hs.data() + (s * B + j) * S + u0;
            r.aux = st.aux.data() + (s * B + j) * H + u0;
          }
          if (p.w_ci) {
            r.w_ci = p.w_ci + u0;
            r.w_cf = p.w_cf + u0;
            r.w_co = p.w_co + u0;
            r.d_wci = dp.w_ci + u0;
            r.d_wcf = dp.w_cf + u0;
            r.d_wco = dp.w_co + u0;
          }
          r.dh = dcell + j * H + u0;
          r.dc = dc_.data() + j * H + u0;
          r.d_rec = d_rec_.data() + (s * B + j) * G + u0;
          r.d_xp = alias ? nullptr : d_x + row(step_time(d, j, s), perm_[j]) * G + u0;
          if (dp.b_ih) {
            r.d_bx = dp.b_ih + u0;
            r.d_bh = dp.b_hh + u0;
          }
          kern.cell_backward[Cell::kIndex](nu, H, r);
        }
      }
      barrier.wait();
      // dL/dh_{t-1} [nb, S] (+)= d_rec [nb, G] W_hh [G, S]; the GRU adds to its z * dh
      if (mk) {
        // recurrent dropout: sum over gates g of mask_g * (d_rec_g [nb, H] W_hh_g [H, S]);
        // W_hh_g is the depth rows [g*H, (g+1)*H) of each panel of W_hh's packing
        for (int64_t q = q0; q < q1; ++q) {
          const int64_t c0 = q * kNC, w = std::min(kNC, S - c0);
          if (Cell::kHasC)
            for (int64_t j = 0; j < nb; ++j) std::fill_n(dh_.data() + j * S + c0, w, T(0));
          for (int64_t g = 0; g < ng; ++g) {
            kern.gemm_packed(nb, w, H, d_rec_.data() + s * B * G + g * H, G,
                             pk_hh_t + (q * G + g * H) * kNC, dtmp_.data() + c0, S, false);
            for (int64_t j = 0; j < nb; ++j) {
              const T* m = mk + j * nm + g * S;
              const T* src = dtmp_.data() + j * S;
              T* dst = dh_.data() + j * S;
              for (int64_t c = c0; c < c0 + w; ++c) dst[c] += m[c] * src[c];
            }
          }
        }
      } else if (q1 > q0) {
        kern.gemm_packed(nb, std::min(S, q1 * kNC) - q0 * kNC, G, d_rec_.data() + s * B * G, G,
                       pk_hh_t + q0 * G * kNC, dh_.data() + q0 * kNC, S, !Cell::kHasC);
      }
    }
  });
  for (int64_t j = 0; j < B; ++j) {
    const int64_t b = perm_[j];
    if (dh0) std::copy_n(dh_.data() + j * S, S, dh0 + b * S);
    if (dc0 && Cell::kHasC) std::copy_n(dc_.data() + j * H, H, dc0 + b * H);
  }
  // weight gradients as whole-sequence products dW = D^T X (kernels/packed_gemm.hpp gemm_atb),
  // split in fixed chunks of output rows: the summation over the long axis is the same whatever
  // the thread count; padded rows carry zero gradient (the bias gradients were summed in the
  // gate pass above, by the thread that owns the units)
  auto pack_rows = [&](AlignedVector<T>& dst, int64_t cols, int64_t rows, const T* src) {
    dst.resize(num_panels(cols) * rows * kNC);
    // a copy, not a product: weighted as one multiply-add per 8 elements moved
    used(parallel_for(num_panels(cols), 1, [&](int64_t p0, int64_t p1) {
      for (int64_t q = p0; q < p1; ++q)  // panel q of src^T: columns q*kNC.. of src's rows
        pack_panels<T>(std::min(kNC, cols - q * kNC), rows, src + q * kNC, 1, cols,
                       dst.data() + q * rows * kNC);
    }, cols * rows / 8));
  };
  pack_rows(pk_in_, I_l, N, in);
  if (P > 0) pack_rows(pk_hraw_, H, Tn * B, st.hraw.data());
  const int64_t dw_grain = kern.atb_grain;
  auto atb = [&](int64_t M, int64_t Nc, int64_t K, const T* A, int64_t lda, const T* pk, T* C) {
    used(parallel_for(M, dw_grain, [&](int64_t m0, int64_t m1) {
      thread_local std::vector<T> work;
      work.resize(kKC * (dw_grain + kMaxMR));
      kern.gemm_atb(m1 - m0, Nc, K, A + m0, lda, pk, C + m0 * Nc, Nc, work.data());
    }, M * Nc * K));
  };
  // an LSTM's d_x is d_rec (alias): one packing of it for both products
  const bool both = alias && !mk;
  if (both) {
    pack_rows(pk_hs_, S, Tn * B, st.hs.data());
    used(parallel_for(G, dw_grain, [&](int64_t m0, int64_t m1) {
      thread_local std::vector<T> work;
      work.resize(kKC * (dw_grain + kMaxMR));
      kern.gemm_atb2(m1 - m0, N, d_rec_.data() + m0, G, S, pk_hs_.data(), dp.w_hh + m0 * S, S,
                     I_l, pk_in_.data(), dp.w_ih + m0 * I_l, I_l, work.data());
    }, G * (S + I_l) * N));
  } else {
    atb(G, I_l, N, d_x, G, pk_in_.data(), dp.w_ih);
  }
  if (mk) {
    // recurrent dropout: dW_hh_g [H, S] = d_rec_g^T (h_{t-1} * mask_g), gate by gate
    hsm_.resize(Tn * B * S);
    for (int64_t g = 0; g < ng; ++g) {
      parallel_for(Tn * B, kRowGrain, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const T* m = mk + (r % B) * nm + g * S;
          const T* h = st.hs.data() + r * S;
          T* o = hsm_.data() + r * S;
          for (int64_t c = 0; c < S; ++c) o[c] = h[c] * m[c];
        }
      });
      pack_rows(pk_hs_, S, Tn * B, hsm_.data());
      atb(H, S, Tn * B, d_rec_.data() + g * H, G, pk_hs_.data(), dp.w_hh + g * H * S);
    }
  } else if (!both) {
    pack_rows(pk_hs_, S, Tn * B, st.hs.data());
    atb(G, S, Tn * B, d_rec_.data(), G, pk_hs_.data(), dp.w_hh);
  }
  if (P > 0) atb(P, H, Tn * B, d_hout_.data(), S, pk_hraw_.data(), dp.w_hr);
  // dL/d(layer input) [N, I_l] (+)= d_x [N, G] W_ih [G, I_l]: the first direction writes it,
  // the reverse one adds
  const T* pk_ih_t = pk_ih_t_[k].data();
  used(parallel_for(N, kRowGrain, [&](int64_t r0, int64_t r1) {
    kern.gemm_packed(r1 - r0, I_l, G, d_x + r0 * G, G, pk_ih_t, d_in + r0 * I_l, I_l, d > 0);
  }, N * I_l * G));
}

template <typename T>
void Engine<T>::backward(const T* params, const BackwardArgs<T>& in,
                         const BackwardOutputs<T>& out) {
  if (lowp())
    throw Error(std::string("a ") + precision_name(cfg_.precision) +
                " network is inference-only: it has no backward()");
  if (!has_acts_)
    throw Error("backward() needs a preceding forward(..., train=True) on this module");
  const int64_t L = cfg_.num_layers, D = cfg_.num_directions();
  const int64_t B = shape_.B, N = B * shape_.T, S = cfg_.state_size(), H = cfg_.hidden_size;
  const int64_t DS = D * S;
  const bool lstm = cfg_.cell == CellType::LSTM;
  T* pbase = const_cast<T*>(params);
  last_threads_ = 1;
  std::fill_n(out.d_params, num_params(cfg_), T(0));
  pack_weights(params, true);
  const T* d_out = in.d_output;
  for (int64_t l = L - 1; l >= 0; --l) {
    const int64_t I_l = cfg_.layer_input_size(l);
    T* d_in;
    if (l == 0) {
      d_in = out.d_x;
    } else {
      d_mid_[l % 2].resize(N * DS);
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
        backward_direction<LstmKind>(l, d, p, dp, layer_in_[l].data(), I_l, d_out, dhn, dcn,
                                     d_in, dh0, dc0);
      else
        backward_direction<GruKind>(l, d, p, dp, layer_in_[l].data(), I_l, d_out, dhn, nullptr,
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
