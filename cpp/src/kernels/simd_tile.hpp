// The float register tile of the packed products, written with intrinsics for the vector width
// the translation unit is compiled for (AVX-512: 16 floats, 32 registers; AVX2+FMA: 8 floats,
// 16 registers). The compiler's auto-vectorized loop (packed_gemm.hpp micro_tile) keeps the same
// arithmetic but does not always keep the accumulators in registers or schedule the loads well;
// these tiles do, on every CPU the ISA runs on.
//
// Arithmetic contract (the same as micro_tile's, so results are bitwise identical whichever tile
// runs): every C element is acc = fma(A[r,k], B[k,j], acc) over k = 0..K-1 in order starting
// from 0, then C = acc or C = C + acc. Neither the tile shape, the K blocking nor the ISA
// changes that chain.
//
// Everything here depends on the instruction set the translation unit is compiled for, so it is
// only compiled in the per-level kernel TUs (kernels/isa_kernels.cpp), inside that level's
// namespace fastlstm::detail::<level>::simd: no two levels' definitions share a name.
#pragma once

#ifndef FASTLSTM_ISA_NS
#error "kernels/simd_tile.hpp belongs to the per-level kernels (compile with -DFASTLSTM_ISA_NS)"
#endif

#include <cstdint>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

namespace fastlstm::detail::FASTLSTM_ISA_NS::simd {

#if defined(__AVX512F__)
constexpr bool kHave = true;
constexpr int kW = 16;  // floats per vector
constexpr int kRegs = 32;
using V = __m512;
inline V zero() { return _mm512_setzero_ps(); }
inline V load(const float* p) { return _mm512_loadu_ps(p); }
inline void store(float* p, V v) { _mm512_storeu_ps(p, v); }
inline V bcast(const float* p) { return _mm512_set1_ps(*p); }
inline V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
inline V add(V a, V b) { return _mm512_add_ps(a, b); }
#elif defined(__AVX2__) && defined(__FMA__)
constexpr bool kHave = true;
constexpr int kW = 8;
constexpr int kRegs = 16;
using V = __m256;
inline V zero() { return _mm256_setzero_ps(); }
inline V load(const float* p) { return _mm256_loadu_ps(p); }
inline void store(float* p, V v) { _mm256_storeu_ps(p, v); }
inline V bcast(const float* p) { return _mm256_broadcast_ss(p); }
inline V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V add(V a, V b) { return _mm256_add_ps(a, b); }
#else
constexpr bool kHave = false;
constexpr int kW = 1;
constexpr int kRegs = 0;
#endif

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
// dst[0, n) = src[0, n) for n <= kW: one masked load and store (gemm_atb's packing copies row
// pieces of MR floats; a library call per piece costs more than the copy)
inline void copy_short(const float* src, int64_t n, float* dst) {
#if defined(__AVX512F__)
  const __mmask16 m = __mmask16((1u << n) - 1u);
  _mm512_mask_storeu_ps(dst, m, _mm512_maskz_loadu_ps(m, src));
#else
  const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)),
                                       _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  _mm256_maskstore_ps(dst, m, _mm256_maskload_ps(src, m));
#endif
}

// dst[0, n) = src[0, n) for a whole row piece of N floats (N <= kW, known at compile time). On
// AVX2 a 4-float and a 2-float move: a masked store costs several cycles on AMD CPUs (Zen 3:
// gemm_atb's packing took 1/8 of a weight-gradient product's time with it; plain moves: + 7-9%
// on the products of train_small and train_large). AVX-512's masked moves are fast.
template <int N>
inline void copy_piece(const float* src, float* dst) {
#if defined(__AVX512F__)
  copy_short(src, N, dst);
#else
  if constexpr (N == 6) {
    _mm_storeu_ps(dst, _mm_loadu_ps(src));
    _mm_storel_pi(reinterpret_cast<__m64*>(dst + 4),
                  _mm_loadl_pi(_mm_setzero_ps(), reinterpret_cast<const __m64*>(src + 4)));
  } else {
    copy_short(src, N, dst);
  }
#endif
}

// MR rows x NV vectors of columns. Column vector v is at b + (v / vpp) * bstride + (v % vpp) * kW
// of each packed row (rows kNC = ldb floats apart, vpp vectors per panel row). A[r, k] at
// a[r * lda + k * ka]. acc is written to C (ldc) for the first nc columns (nc may be less than
// NV * kW at the matrix edge).
template <int MR, int NV>
inline void tile(int64_t K, const float* __restrict a, int64_t lda, int64_t ka,
                 const float* __restrict b, int64_t ldb, int64_t bstride, int vpp,
                 float* __restrict c, int64_t ldc, int64_t nc, bool accumulate,
                 bool resume = false) {
  // resume: C holds the chains' values after the previous K block (C = acc, never C + acc):
  // continue them, so a product cut in K blocks gives the bits of one uncut
  V acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const int64_t col = (v / vpp) * ldb + (v % vpp) * kW;
      if (!resume || col >= nc) {
        acc[r][v] = zero();
      } else if (col + kW <= nc) {
        acc[r][v] = load(c + r * ldc + col);
      } else {
        alignas(64) float tmp[kW] = {};
        for (int64_t j = 0; j < nc - col; ++j) tmp[j] = c[r * ldc + col + j];
        acc[r][v] = load(tmp);
      }
    }
  const float* bv[NV];
  for (int v = 0; v < NV; ++v) bv[v] = b + (v / vpp) * bstride + (v % vpp) * kW;
  for (int64_t k = 0; k < K; ++k) {
    V bk[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) bk[v] = load(bv[v] + k * ldb);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const V x = bcast(a + r * lda + k * ka);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] = fmadd(x, bk[v], acc[r][v]);
    }
  }
  // columns of vector v in C: (v / vpp) * kNC' + (v % vpp) * kW with kNC' = ldb (panel width)
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const int64_t col = (v / vpp) * ldb + (v % vpp) * kW;
      if (col >= nc) continue;
      float* cp = c + r * ldc + col;
      if (col + kW <= nc) {
        store(cp, accumulate ? add(load(cp), acc[r][v]) : acc[r][v]);
      } else {
        alignas(64) float tmp[kW];
        store(tmp, acc[r][v]);
        for (int64_t j = 0; j < nc - col; ++j) cp[j] = accumulate ? cp[j] + tmp[j] : tmp[j];
      }
    }
}
#endif

}  // namespace fastlstm::detail::FASTLSTM_ISA_NS::simd
