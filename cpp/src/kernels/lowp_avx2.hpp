// The bf16 and int8 dot products on AVX2 + FMA, for CPUs without AVX512_BF16 / VNNI (AMD Zen 2
// and 3, Intel before Ice Lake): the arithmetic of the plain loops they replace, 8 columns per
// vector, so the results are those of the generic level (int8: the same bits at every level).
//
// Weights come as k steps of E elements per column, the columns of a k step side by side
// (lowp.hpp: bf16 pairs, E = 2; int8 quads, E = 4), 4 bytes per column and k step, one k step
// `stride` bytes after the previous.
//  - bf16: a 32-bit column entry holds (w_k, w_k+1); w_k as float = entry << 16, w_k+1 = entry
//    with the low half cleared. acc = fma(a_k, w_k, fma(a_k+1, w_k+1, acc)) (the plain loop's
//    order).
//  - int8: an entry's bytes (w0, w1, w2, w3) become the 16-bit pairs (w0, w2) (shifted up and
//    back, arithmetically) and (w1, w3) (shifted down); vpmaddwd against the activations'
//    u8 pairs (a0, a2) and (a1, a3), zero-extended to 16 bits, gives a0 w0 + a2 w2 and
//    a1 w1 + a3 w3 per column in 32 bits: at most 2 x 255 x 127, exact (vpmaddubsw, which would
//    read the bytes directly, saturates at 16 bits). int32 sums are exact in any order.
#pragma once

#ifndef FASTLSTM_ISA_NS
#error "kernels/lowp_avx2.hpp belongs to the per-level kernels (kernels/isa_kernels.cpp)"
#endif

#if defined(__AVX2__) && defined(__FMA__) && \
    !(defined(__AVX512BF16__) && defined(__AVX512VNNI__))
#define FASTLSTM_LOWP_AVX2 1

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace fastlstm::detail::FASTLSTM_ISA_NS::lowp_avx2 {

// out[r][p][0, 32) = the products of R activation rows (a[r]: their k steps, 4 bytes each) with
// NP blocks of 32 columns (w[p]: the block's first column at k step 0) over n k steps. R * NP * 4
// accumulators: (R, NP) = (1, 2) or (2, 1) keep 8 of the 16 registers, enough independent
// chains to cover the FMA latency (bf16: two dependent FMAs per k step and column).
template <bool BF, int R, int NP>
inline void dot_cols(const uint8_t* const* a, int64_t n, const uint8_t* const* w, int64_t stride,
                     void* const* out) noexcept {
  constexpr int NV = 4 * NP;  // vectors of 8 columns per row
  if constexpr (BF) {
    __m256 acc[R][NV];
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_ps();
    const __m256i hi_mask = _mm256_set1_epi32(int32_t(0xffff0000u));
    for (int64_t k = 0; k < n; ++k) {
      __m256 a0[R], a1[R];
      for (int r = 0; r < R; ++r) {
        int32_t e;
        std::memcpy(&e, a[r] + 4 * k, 4);
        const __m256i ev = _mm256_set1_epi32(e);
        a0[r] = _mm256_castsi256_ps(_mm256_slli_epi32(ev, 16));
        a1[r] = _mm256_castsi256_ps(_mm256_and_si256(ev, hi_mask));
      }
      for (int v = 0; v < NV; ++v) {
        const __m256i b = _mm256_loadu_si256(
            reinterpret_cast<const __m256i*>(w[v / 4] + k * stride + 32 * (v % 4)));
        const __m256 wl = _mm256_castsi256_ps(_mm256_slli_epi32(b, 16));
        const __m256 wh = _mm256_castsi256_ps(_mm256_and_si256(b, hi_mask));
        for (int r = 0; r < R; ++r)
          acc[r][v] = _mm256_fmadd_ps(a0[r], wl, _mm256_fmadd_ps(a1[r], wh, acc[r][v]));
      }
    }
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v)
        _mm256_storeu_ps(static_cast<float*>(out[r * NP + v / 4]) + 8 * (v % 4), acc[r][v]);
  } else {
    __m256i acc[R][NV];
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_si256();
    for (int64_t k = 0; k < n; ++k) {
      __m256i a02[R], a13[R];
      for (int r = 0; r < R; ++r) {
        uint32_t e;
        std::memcpy(&e, a[r] + 4 * k, 4);
        a02[r] = _mm256_set1_epi32(int32_t(e & 0x00ff00ffu));
        a13[r] = _mm256_set1_epi32(int32_t((e >> 8) & 0x00ff00ffu));
      }
      for (int v = 0; v < NV; ++v) {
        const __m256i b = _mm256_loadu_si256(
            reinterpret_cast<const __m256i*>(w[v / 4] + k * stride + 32 * (v % 4)));
        const __m256i w02 = _mm256_srai_epi16(_mm256_slli_epi16(b, 8), 8);
        const __m256i w13 = _mm256_srai_epi16(b, 8);
        for (int r = 0; r < R; ++r)
          acc[r][v] = _mm256_add_epi32(
              acc[r][v], _mm256_add_epi32(_mm256_madd_epi16(a02[r], w02),
                                          _mm256_madd_epi16(a13[r], w13)));
      }
    }
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v)
        _mm256_storeu_si256(
            reinterpret_cast<__m256i*>(static_cast<int32_t*>(out[r * NP + v / 4]) + 8 * (v % 4)),
            acc[r][v]);
  }
}

// One activation row against C consecutive columns (C a multiple of 32; the stream step's
// group: C = gates x 32), into out[0, C) (float for bf16, int32 for int8)
template <bool BF>
inline void dot_row(const uint8_t* a, int64_t n, const uint8_t* w, int64_t stride, int C,
                    void* out) noexcept {
  const size_t esz = 4;  // float or int32
  int c = 0;
  for (; c + 64 <= C; c += 64) {
    const uint8_t* wp[2] = {w + 4 * c, w + 4 * (c + 32)};
    void* op[2] = {static_cast<char*>(out) + esz * c, static_cast<char*>(out) + esz * (c + 32)};
    dot_cols<BF, 1, 2>(&a, n, wp, stride, op);
  }
  if (c < C) {
    const uint8_t* wp[1] = {w + 4 * c};
    void* op[1] = {static_cast<char*>(out) + esz * c};
    dot_cols<BF, 1, 1>(&a, n, wp, stride, op);
  }
}

}  // namespace fastlstm::detail::FASTLSTM_ISA_NS::lowp_avx2

#endif
