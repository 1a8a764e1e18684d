// Sigmoid and tanh that the compiler vectorizes inside plain loops (no library calls), and that
// give the same bits for an element whatever its position or alignment (no scalar/vector split
// with different arithmetic): the fused gate pass stays deterministic.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#ifndef FASTLSTM_ISA_NS
#error "kernels/activations.hpp belongs to the per-ISA kernel sources (kernels/isa_kernels.cpp)"
#endif

// Forced inline: the gate loops are vectorized only if these are inlined into them, and GCC
// (12, -O3 -fPIC) otherwise keeps exp_f32 out of line and calls it per element (measured: the
// LSTM gate pass at 2.2 GB/s instead of 22, fastlstm bench --kernels).
#if defined(__GNUC__)
#define FASTLSTM_ACT_INLINE inline __attribute__((always_inline))
#else
#define FASTLSTM_ACT_INLINE inline
#endif

namespace fastlstm::detail::FASTLSTM_ISA_NS {

// exp(x) for float: range reduction x = n ln2 + r with |r| <= ln2/2 (+ rounding slack) (ln2 split in two parts for
// an exact n ln2), then the degree-6 minimax polynomial of Cephes' expf (S. Moshier); relative
// error below 2e-7 on [-87, 88]. 2^n is built in the exponent bits.
// Defined for every input: -Inf gives exp(-87), +Inf exp(88) (the clamp), NaN gives NaN (the
// clamp maps NaN to -87 so the integer conversion below never sees it, and the last line puts
// the NaN back).
FASTLSTM_ACT_INLINE float exp_f32(float x_in) {
  // plain comparisons and the rounding trick below, because std::fmin/fmax/floor keep GCC from
  // vectorizing the loop this is inlined into
  float x = x_in >= -87.0f ? x_in : -87.0f;  // NaN -> -87
  x = x > 88.0f ? 88.0f : x;
  // n = round(x / ln2): adding 1.5 * 2^23 rounds to an integer in float arithmetic (exact for
  // |x / ln2| < 2^22); no -ffast-math here, so the compiler keeps (v + C) - C
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = std::fma(n, -0.693359375f, x);
  r = std::fma(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  const float y = std::fma(p, r * r, r) + 1.0f;
  // n in [-126, 127]: the biased exponent n + 127 is in [1, 254], never negative
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return x_in != x_in ? x_in : y * scale;
}

FASTLSTM_ACT_INLINE float sigmoid(float x) { return 1.0f / (1.0f + exp_f32(-x)); }
// tanh(x) = 1 - 2 / (1 + e^{2x}): absolute error below 3e-7 (relative error grows near 0, where
// tanh(x) ~ x; the parity tests bound the absolute error against the float64 reference)
FASTLSTM_ACT_INLINE float tanh_act(float x) { return 1.0f - 2.0f / (1.0f + exp_f32(2.0f * x)); }

// float64: the C library's functions (correctly rounded or nearly), element by element
inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
inline double tanh_act(double x) { return std::tanh(x); }

}  // namespace fastlstm::detail::FASTLSTM_ISA_NS
