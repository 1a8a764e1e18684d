// The float activations of kernels/activations.hpp on whole vector registers, written with
// intrinsics: the same operations in the same order, operation for operation (max/min for the
// clamp, the rounding trick, the two-part range reduction, the same Horner polynomial, the same
// NaN rule), so every lane gives the bits the scalar functions give, at every level; only the
// compiler's freedom is gone. Left to itself, GCC turns the scalar clamp and NaN rule of
// exp_f32 into mask arithmetic and blends that lengthen the dependent chain, which is the whole
// cost of a streaming step at small sizes (kernels/stream_step.hpp: run_layer_reg).
//
// VOps<256> (AVX2+FMA, AVX-512) and VOps<512> (AVX-512): one gate block of 8 or 16 units
// per register. Only compiled in the per-level kernel TUs, inside that level's namespace.
#pragma once

#ifndef FASTLSTM_ISA_NS
#error "kernels/simd_act.hpp belongs to the per-level kernels (compile with -DFASTLSTM_ISA_NS)"
#endif

#include <cstdint>

#include "kernels/activations.hpp"

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#define FASTLSTM_HAVE_VOPS 1
#else
#define FASTLSTM_HAVE_VOPS 0
#endif

namespace fastlstm::detail::FASTLSTM_ISA_NS::simd {

#if FASTLSTM_HAVE_VOPS
// VOps<256>: __m256; VOps<512>: __m512 (widths as tags: a vector type as a template argument
// loses its attributes)
template <int Bits>
struct VOps;

template <>
struct VOps<256> {
  using V = __m256;
  static constexpr int kL = 8;
  static V set1(float a) { return _mm256_set1_ps(a); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  // (a > b ? a : b) and (a < b ? a : b), lane by lane (a NaN in a gives b)
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  static V neg(V a) { return _mm256_xor_ps(a, _mm256_set1_ps(-0.0f)); }
  // 2^n for integral n in [-126, 127], in the exponent bits
  static V pow2n(V n) {
    const __m256i e = _mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
  }
  // x != x ? x : y
  static V nan_or(V x, V y) { return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q)); }
  // x < lo ? a : x > hi ? c : x != x ? x : b, with one blend after b (the rest is off b's chain)
  static V fix_range(V x, V lo, V hi, V a, V c, V b) {
    const V m_lo = _mm256_cmp_ps(x, lo, _CMP_LT_OQ), m_hi = _mm256_cmp_ps(x, hi, _CMP_GT_OQ);
    const V m = _mm256_or_ps(_mm256_or_ps(m_lo, m_hi), _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    const V repl = _mm256_blendv_ps(_mm256_blendv_ps(x, a, m_lo), c, m_hi);
    return _mm256_blendv_ps(b, repl, m);
  }
  // the first n (1 <= n <= kL) floats at p, zeros past them; their store to p
  static V load_n(const float* p, int n) {
    if (n == kL) return load(p);
    if (n == 1) return _mm256_zextps128_ps256(_mm_load_ss(p));  // one load, forwarded
#if defined(__AVX512F__)
    return _mm256_maskz_loadu_ps(__mmask8((1u << n) - 1), p);
#else
    alignas(32) float t[kL] = {};
    for (int j = 0; j < n; ++j) t[j] = p[j];
    return load(t);
#endif
  }
  static void store_n(float* p, V v, int n) {
    if (n == kL) return store(p, v);
    if (n == 1) return _mm_store_ss(p, _mm256_castps256_ps128(v));
#if defined(__AVX512F__)
    _mm256_mask_storeu_ps(p, __mmask8((1u << n) - 1), v);
#else
    alignas(32) float t[kL];
    store(t, v);
    for (int j = 0; j < n; ++j) p[j] = t[j];
#endif
  }
};

#if defined(__AVX512F__)
template <>
struct VOps<512> {
  using V = __m512;
  static constexpr int kL = 16;
  static V set1(float a) { return _mm512_set1_ps(a); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  static V neg(V a) {
    return _mm512_castsi512_ps(
        _mm512_xor_si512(_mm512_castps_si512(a), _mm512_set1_epi32(int32_t(0x80000000u))));
  }
  static V pow2n(V n) {
    const __m512i e = _mm512_add_epi32(_mm512_cvttps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
  }
  static V nan_or(V x, V y) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), y, x);
  }
  static V fix_range(V x, V lo, V hi, V a, V c, V b) {
    const __mmask16 m_lo = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    const __mmask16 m_hi = _mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ);
    const __mmask16 m = m_lo | m_hi | _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    const V repl = _mm512_mask_blend_ps(m_hi, _mm512_mask_blend_ps(m_lo, x, a), c);
    return _mm512_mask_blend_ps(m, b, repl);
  }
  static V load_n(const float* p, int n) {
    if (n == kL) return load(p);
    if (n == 1) return _mm512_zextps128_ps512(_mm_load_ss(p));
    return _mm512_maskz_loadu_ps(__mmask16((1u << n) - 1), p);
  }
  static void store_n(float* p, V v, int n) {
    if (n == kL) return store(p, v);
    if (n == 1) return _mm_store_ss(p, _mm512_castps512_ps128(v));
    _mm512_mask_storeu_ps(p, __mmask16((1u << n) - 1), v);
  }
};
#endif

// exp_f32 (kernels/activations.hpp) of k * x, lane by lane, for k = 1 or 2 (tanh's exp(2x)),
// with the same bits as exp_f32(k * x), in fewer dependent steps:
//   - exp_f32 clamps its argument to [-87, 88] before the range reduction; here the reduction
//     runs on the argument as it is and the lanes outside [-87, 88] (and NaN) are replaced at
//     the end by exp_f32(-87), exp_f32(88) (the scalar function on those constants) and the
//     NaN itself: the same value for every input, the clamp off the chain;
//   - k x log2(e) is computed as x (k log2(e)): k = 2 scales exactly (a power of two, far from
//     overflow here), so the product is bitwise the same, one multiply off the chain.
template <int Bits, int K = 1, typename VT = typename VOps<Bits>::V>
FASTLSTM_ACT_INLINE VT exp_core(VT xk, VT xlog2e) {  // xk = k x, xlog2e = k x log2(e) (rounded once)
  using O = VOps<Bits>;
  const VT big = O::set1(12582912.0f);
  const VT n = O::sub(O::add(xlog2e, big), big);
  VT r = O::fma(n, O::set1(-0.693359375f), xk);
  r = O::fma(n, O::set1(2.12194440e-4f), r);
  VT p = O::set1(1.9875691500e-4f);
  p = O::fma(p, r, O::set1(1.3981999507e-3f));
  p = O::fma(p, r, O::set1(8.3334519073e-3f));
  p = O::fma(p, r, O::set1(4.1665795894e-2f));
  p = O::fma(p, r, O::set1(1.6666665459e-1f));
  p = O::fma(p, r, O::set1(5.0000001201e-1f));
  const VT y = O::add(O::fma(p, O::mul(r, r), r), O::set1(1.0f));
  return O::mul(y, O::pow2n(n));
}

template <int Bits, int K, typename VT = typename VOps<Bits>::V>
FASTLSTM_ACT_INLINE VT exp_kx(VT x) {
  using O = VOps<Bits>;
  const float l2e = 1.44269504088896341f;
  const VT xk = K == 1 ? x : O::mul(O::set1(float(K)), x);
  const VT y = exp_core<Bits>(xk, O::mul(x, O::set1(float(K) * l2e)));
  // exp_f32 at the clamp bounds (constants: the compiler folds them)
  const VT lo = O::set1(-87.0f), hi = O::set1(88.0f);
  const VT y_lo = O::set1(exp_f32(-87.0f)), y_hi = O::set1(exp_f32(88.0f));
  return O::fix_range(xk, lo, hi, y_lo, y_hi, y);
}

// exp_f32(x), lane by lane
template <int Bits, typename VT = typename VOps<Bits>::V>
FASTLSTM_ACT_INLINE VT exp_v(VT x) {
  return exp_kx<Bits, 1>(x);
}

// sigmoid(x) = 1 / (1 + exp(-x))
template <int Bits, typename VT = typename VOps<Bits>::V>
FASTLSTM_ACT_INLINE VT sigmoid_v(VT x) {
  using O = VOps<Bits>;
  return O::div(O::set1(1.0f), O::add(O::set1(1.0f), exp_kx<Bits, 1>(O::neg(x))));
}

// tanh_act(x) = 1 - 2 / (1 + exp(2 x))
template <int Bits, typename VT = typename VOps<Bits>::V>
FASTLSTM_ACT_INLINE VT tanh_v(VT x) {
  using O = VOps<Bits>;
  return O::sub(O::set1(1.0f),
                O::div(O::set1(2.0f), O::add(O::set1(1.0f), exp_kx<Bits, 2>(x))));
}
#endif  // FASTLSTM_HAVE_VOPS

}  // namespace fastlstm::detail::FASTLSTM_ISA_NS::simd
