// The low-precision step kernel of one batch row (layout and arithmetic: lowp_step.hpp):
// quantize the row's x and h once, then per group of 32 units the input and recurrent products
// in one pass over the group's weights (one 32-bit broadcast of x's or h's pair / quad per k
// step against two vectors per gate: vdpbf16ps / vpdpbusd, 2 * ng independent accumulators per
// part), and the cell pass of kernels/cells.hpp on the group's units behind them, while they
// are in L1. Compiled per ISA level (kernels/isa_kernels.cpp); levels without AVX512_BF16 and
// AVX512_VNNI run the same arithmetic in plain loops (bf16: the pair's two products added to
// the accumulator in vdpbf16ps's order; int8: exact int32 sums), with AVX2 vectors where the
// level has them (kernels/lowp_avx2.hpp).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#ifndef FASTLSTM_ISA_NS
#error "kernels/stream_step_lowp.hpp is compiled per ISA level (kernels/isa_kernels.cpp) only"
#endif

#if defined(__AVX512F__) || (defined(__AVX512BF16__) && defined(__AVX512VNNI__))
#include <immintrin.h>
#endif

#include "kernels/cells.hpp"
#include "kernels/lowp.hpp"
#include "kernels/lowp_avx2.hpp"
#include "lowp_step.hpp"

namespace fastlstm::detail::FASTLSTM_ISA_NS {

// a[0, K) -> dst: Kp bf16 (zero padded) or Kp u8 (q + 128, padded with 128) and *scale (int8:
// max|a| / 127). The same bits as quantize_rows (kernels/isa_kernels.cpp), vectorized.
inline void lowp_step_quantize(Precision p, const float* a, int64_t K, int64_t Kp, uint8_t* dst,
                               float* scale) noexcept {
  int64_t k = 0;
  if (p == Precision::BF16) {
    uint16_t* d = reinterpret_cast<uint16_t*>(dst);
#if defined(__AVX512F__)
    const __m512i lo = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1);
    const __m512i absm = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    for (; k + 16 <= K; k += 16) {
      const __m512i u = _mm512_castps_si512(_mm512_loadu_ps(a + k));
      const __m512i hi = _mm512_srli_epi32(u, 16);
      const __m512i r = _mm512_srli_epi32(
          _mm512_add_epi32(_mm512_add_epi32(u, lo), _mm512_and_si512(hi, one)), 16);
      const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, absm), inf);
      const __m512i v = _mm512_mask_or_epi32(r, nan, hi, _mm512_set1_epi32(0x40));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + k), _mm512_cvtepi32_epi16(v));
    }
#endif
    for (; k < K; ++k) d[k] = to_bf16(a[k]);
    for (; k < Kp; ++k) d[k] = 0;
    *scale = 1.0f;
    return;
  }
  float mx = 0.0f;
#if defined(__AVX512F__)
  {
    __m512 m = _mm512_setzero_ps();
    for (; k + 16 <= K; k += 16) m = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(a + k)), m);
    mx = _mm512_reduce_max_ps(m);  // max is exact: any order gives the same value
  }
#endif
  for (; k < K; ++k) mx = std::max(mx, std::fabs(a[k]));
  const float inv = mx > 0.0f ? 127.0f / mx : 0.0f;
  *scale = mx / 127.0f;
  k = 0;
#if defined(__AVX512F__)
  {
    const __m512 vi = _mm512_set1_ps(inv), lo = _mm512_set1_ps(-127.0f),
                 hi = _mm512_set1_ps(127.0f);
    const __m512i zp = _mm512_set1_epi32(128);
    for (; k + 16 <= K; k += 16) {
      __m512 v = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_loadu_ps(a + k), vi),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);  // (as std::min(127, std::max(-127, v)))
      const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), zp);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + k), _mm512_cvtepi32_epi8(q));
    }
  }
#endif
  for (; k < K; ++k) {
    const float v = std::min(127.0f, std::max(-127.0f, std::nearbyint(a[k] * inv)));
    dst[k] = uint8_t(int32_t(v) + 128);
  }
  for (; k < Kp; ++k) dst[k] = 128;
}

// The products of NGR consecutive groups from gi (1 or 2: two groups share each broadcast of
// x's or h's pair / quad and double the independent accumulator chains, 4 * ng per part; every
// output is still one chain over k in order): xp [NGR][ng][32] = v_x + b_ih, rec = v_h.
template <int NG, bool BF, int NGR>
inline void lowp_step_products(const LowpStepView& L, int64_t gi, const uint8_t* qx, float sx,
                               const uint8_t* qh, float sh, float* __restrict xp,
                               float* __restrict rec) noexcept {
  constexpr int C = NG * 32;         // columns of a group
  constexpr int E = BF ? 2 : 4;      // elements per k step
  const int64_t nx = L.Kx / E, nh = L.Kh / E;
#if defined(__AVX512BF16__) && defined(__AVX512VNNI__)
  constexpr int NV = C / 16;  // vectors per k step and group (two per gate)
  using Acc = std::conditional_t<BF, __m512, __m512i>;
  Acc ax[NGR][NV], ah[NGR][NV];
  const uint8_t* w[NGR];
  for (int r = 0; r < NGR; ++r) w[r] = L.w + (gi + r) * L.gstride;
  // acc[r][j] = sum over the n k steps of q's element against group r's weights from wp[r]
  auto part = [&](const uint8_t* q, int64_t n, const uint8_t* const* wp, Acc (*acc)[NV])
      __attribute__((always_inline)) {
    for (int r = 0; r < NGR; ++r)
      for (int j = 0; j < NV; ++j) {
        if constexpr (BF) acc[r][j] = _mm512_setzero_ps();
        else acc[r][j] = _mm512_setzero_si512();
      }
    for (int64_t kk = 0; kk < n; ++kk) {
      int32_t e;
      std::memcpy(&e, q + 4 * kk, 4);
      const __m512i a = _mm512_set1_epi32(e);
      for (int r = 0; r < NGR; ++r) {
        const uint8_t* wk = wp[r] + kk * (C * 4);
        for (int j = 0; j < NV; ++j) {
          const __m512i b = _mm512_load_si512(wk + 64 * j);
          if constexpr (BF) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], (__m512bh)a, (__m512bh)b);
          else acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], a, b);
        }
      }
    }
  };
  part(qx, nx, w, ax);
  const uint8_t* wh[NGR];
  for (int r = 0; r < NGR; ++r) wh[r] = w[r] + nx * (C * 4);
  part(qh, nh, wh, ah);
  for (int r = 0; r < NGR; ++r) {
    const int64_t o = (gi + r) * C;
    const float* bih = L.b_ih + o;
    float* xo = xp + r * C;
    float* ro = rec + r * C;
    if constexpr (BF) {
      for (int j = 0; j < NV; ++j) {
        _mm512_store_ps(xo + 16 * j, _mm512_add_ps(ax[r][j], _mm512_loadu_ps(bih + 16 * j)));
        _mm512_store_ps(ro + 16 * j, ah[r][j]);
      }
    } else {
      const __m512 vsx = _mm512_set1_ps(sx), vsh = _mm512_set1_ps(sh);
      for (int j = 0; j < NV; ++j) {
        const __m512 vx = _mm512_mul_ps(
            _mm512_cvtepi32_ps(_mm512_sub_epi32(ax[r][j], _mm512_loadu_si512(L.ws_x + o + 16 * j))),
            _mm512_mul_ps(vsx, _mm512_loadu_ps(L.sw_x + o + 16 * j)));
        const __m512 vh = _mm512_mul_ps(
            _mm512_cvtepi32_ps(_mm512_sub_epi32(ah[r][j], _mm512_loadu_si512(L.ws_h + o + 16 * j))),
            _mm512_mul_ps(vsh, _mm512_loadu_ps(L.sw_h + o + 16 * j)));
        _mm512_store_ps(xo + 16 * j, _mm512_add_ps(vx, _mm512_loadu_ps(bih + 16 * j)));
        _mm512_store_ps(ro + 16 * j, vh);
      }
    }
  }
#else
  for (int r = 0; r < NGR; ++r) {
    const uint8_t* w = L.w + (gi + r) * L.gstride;
    const int64_t o = (gi + r) * C;
    const float* bih = L.b_ih + o;
    float* xo = xp + r * C;
    float* ro = rec + r * C;
    if constexpr (BF) {
      const uint16_t* wb = reinterpret_cast<const uint16_t*>(w);
      auto part = [&](const uint8_t* q8, int64_t n, const uint16_t* wp, float* acc) {
#ifdef FASTLSTM_LOWP_AVX2
        lowp_avx2::dot_row<true>(q8, n, reinterpret_cast<const uint8_t*>(wp), C * 4, C, acc);
#else
        const uint16_t* q = reinterpret_cast<const uint16_t*>(q8);
        for (int j = 0; j < C; ++j) acc[j] = 0.0f;
        float wl[C], wh[C];
        for (int64_t kk = 0; kk < n; ++kk) {
          const float a0 = from_bf16(q[2 * kk]), a1 = from_bf16(q[2 * kk + 1]);
          const uint16_t* b = wp + kk * (C * 2);
          for (int j = 0; j < C; ++j) {
            wl[j] = from_bf16(b[2 * j]);
            wh[j] = from_bf16(b[2 * j + 1]);
          }
          for (int j = 0; j < C; ++j) acc[j] = std::fma(a0, wl[j], std::fma(a1, wh[j], acc[j]));
        }
#endif
      };
      part(qx, nx, wb, xo);
      part(qh, nh, wb + nx * (C * 2), ro);
      for (int j = 0; j < C; ++j) xo[j] = xo[j] + bih[j];
    } else {
      const int8_t* wi = reinterpret_cast<const int8_t*>(w);
      auto part = [&](const uint8_t* q, int64_t n, const int8_t* wp, int32_t* acc) {
#ifdef FASTLSTM_LOWP_AVX2
        lowp_avx2::dot_row<false>(q, n, reinterpret_cast<const uint8_t*>(wp), C * 4, C, acc);
#else
        for (int j = 0; j < C; ++j) acc[j] = 0;
        for (int64_t kk = 0; kk < n; ++kk) {
          const int32_t a0 = q[4 * kk], a1 = q[4 * kk + 1], a2 = q[4 * kk + 2], a3 = q[4 * kk + 3];
          const int8_t* b = wp + kk * (C * 4);
          for (int j = 0; j < C; ++j)
            acc[j] += a0 * b[4 * j] + a1 * b[4 * j + 1] + a2 * b[4 * j + 2] + a3 * b[4 * j + 3];
        }
#endif
      };
      int32_t ax[C], ah[C];
      part(qx, nx, wi, ax);
      part(qh, nh, wi + nx * (C * 4), ah);
      for (int j = 0; j < C; ++j) {
        xo[j] = float(ax[j] - L.ws_x[o + j]) * (sx * L.sw_x[o + j]) + bih[j];
        ro[j] = float(ah[j] - L.ws_h[o + j]) * (sh * L.sw_h[o + j]);
      }
    }
  }
#endif
}

// One layer and batch row: the groups [g0, g1) (the units [32 g0, min(H, 32 g1))). qx, qh:
// the row's x and h_prev quantized by lowp_step_quantize (scales sx, sh); c updated in place
// (LSTM), the cell's output (before any projection) into h_out. reverse: the groups visited
// last to first (the callers alternate it from step to step, so a step starts on the weights
// the previous one read last, still in L1; every output's chain is the same, so the same bits).
// Groups go through the products two at a time (one broadcast of x's or h's pair / quad for
// both) when the two fit in L1 together with room to spare; larger ones one at a time, so that
// the group a step ends on is the one the next step begins with, whole, in L1.
template <typename Cell>
void lowp_step_layer(const LowpStepView& L, const uint8_t* qx, float sx, const uint8_t* qh,
                     float sh, const float* h_prev, float* c, float* h_out, int64_t g0,
                     int64_t g1, bool reverse) noexcept {
  constexpr int NG = Cell::kGates, C = NG * 32;
  alignas(64) float xp[2 * C], rec[2 * C], act[C], aux[32];
  const int64_t H = L.H;
  const bool bf = L.precision == Precision::BF16;
  const int64_t chunk = 2 * L.gstride <= kLowpStepPairBytes ? 2 : 1;
  // the products of the groups [gi, gi + n) (n = 1 or 2), then the cell pass of each
  auto run = [&](int64_t gi, int64_t n) __attribute__((always_inline)) {
    if (n == 2) {
      if (bf) lowp_step_products<NG, true, 2>(L, gi, qx, sx, qh, sh, xp, rec);
      else lowp_step_products<NG, false, 2>(L, gi, qx, sx, qh, sh, xp, rec);
    } else {
      if (bf) lowp_step_products<NG, true, 1>(L, gi, qx, sx, qh, sh, xp, rec);
      else lowp_step_products<NG, false, 1>(L, gi, qx, sx, qh, sh, xp, rec);
    }
    for (int64_t r0 = 0; r0 < n; ++r0) {
      const int64_t g = gi + r0, u0 = g * 32;
      // the sequence engine's cell pass on a group whose gate stride is 32 (b_hh, act too)
      const int64_t nu = H - u0 >= 32 ? 32 : H - u0;
      stream_cell_block<Cell>(L, u0, nu, 32, xp + r0 * C, rec + r0 * C, L.b_hh + g * C, c, h_prev,
                              h_out, act, aux);
    }
  };
  if (!reverse) {
    for (int64_t gi = g0; gi < g1; gi += chunk) run(gi, g1 - gi >= chunk ? chunk : 1);
  } else {
    for (int64_t e = g1; e > g0; e -= chunk) {
      const int64_t n = e - g0 >= chunk ? chunk : 1;
      run(e - n, n);
    }
  }
}

}  // namespace fastlstm::detail::FASTLSTM_ISA_NS
