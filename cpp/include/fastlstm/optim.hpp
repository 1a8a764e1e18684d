// fastlstm: fused optimizer updates over flat parameter buffers (one call per step for all the
// parameters of a model).
//
// Each function does, element by element, exactly the float operations of the array formulas of
// fastlstm.optim (Keras's forms), in the same order and in the buffers' precision T, with no
// fused multiply-add: the results are bitwise those of the NumPy formulas. Scalars are given
// in double, as Python computes them, and rounded to T once, as NumPy does with dtype(x).
// Buffers are n elements each and must not overlap; null optional slots are not used.
#pragma once

#include <cstddef>

namespace fastlstm {

// Adam / AdamW (weight decay is applied by the caller):
//   m += (g - m)*one_minus_b1; v += (g*g - v)*one_minus_b2; (vhat = max(vhat, v); v = vhat)
//   d = sqrt(v) (* corr when after_correction) + eps; p -= (m / d) * alpha
struct AdamStep {
  double one_minus_b1, one_minus_b2, epsilon, alpha, corr;
  bool after_correction;
};
template <typename T>
void adam_update(T* p, const T* g, T* m, T* v, T* vhat, std::size_t n, const AdamStep& s);

// SGD: u = g*lr; without momentum p -= u; with it m = m*momentum - u, then p += m
// (nesterov: p -= u; p += m*momentum).
template <typename T>
void sgd_update(T* p, const T* g, T* m, std::size_t n, double lr, double momentum,
                bool nesterov);

// RMSprop: v = v*rho + g*g*one_minus_rho; centered: avg = avg*rho + g*one_minus_rho,
// d = sqrt((v - avg*avg) + eps), else d = sqrt(v + eps); u = (g*lr)/d;
// momentum: mom = mom*momentum + u, p -= mom; else p -= u.
struct RMSpropStep {
  double rho, one_minus_rho, epsilon, lr, momentum;
};
template <typename T>
void rmsprop_update(T* p, const T* g, T* v, T* avg, T* mom, std::size_t n,
                    const RMSpropStep& s);

// Adagrad: acc += g*g; p -= (g*lr)/sqrt(acc + eps).
template <typename T>
void adagrad_update(T* p, const T* g, T* acc, std::size_t n, double lr, double epsilon);

// Whether every element is finite (no NaN, no infinity): the check of the gradients before a
// step, one pass with no sum that could overflow.
template <typename T>
bool all_finite(const T* x, std::size_t n);

}  // namespace fastlstm
