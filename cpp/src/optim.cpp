// Fused optimizer updates (fastlstm/optim.hpp). Compiled with -ffp-contract=off like the rest
// of the library: every product and sum is rounded to T on its own, as NumPy's element-wise
// operations do, so the loops may be vectorized without changing a bit (each element is
// independent; sqrt and division are correctly rounded in both).
#include "fastlstm/optim.hpp"

#include <cmath>

namespace fastlstm {

namespace {
// NumPy's maximum: NaN when either is NaN
template <typename T>
inline T nan_max(T a, T b) {
  return (a != a || a >= b) ? a : b;
}
}  // namespace

template <typename T>
void adam_update(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v,
                 T* __restrict vhat, std::size_t n, const AdamStep& s) {
  const T c1 = T(s.one_minus_b1), c2 = T(s.one_minus_b2), eps = T(s.epsilon);
  const T alpha = T(s.alpha), corr = T(s.corr);
  if (vhat == nullptr && !s.after_correction) {  // the default configuration, branch-free
    for (std::size_t i = 0; i < n; ++i) {
      const T gi = g[i];
      const T mi = m[i] + (gi - m[i]) * c1;
      const T vi = v[i] + (gi * gi - v[i]) * c2;
      m[i] = mi;
      v[i] = vi;
      p[i] -= (mi / (std::sqrt(vi) + eps)) * alpha;
    }
    return;
  }
  for (std::size_t i = 0; i < n; ++i) {
    const T gi = g[i];
    const T mi = m[i] + (gi - m[i]) * c1;
    T vi = v[i] + (gi * gi - v[i]) * c2;
    m[i] = mi;
    v[i] = vi;
    if (vhat != nullptr) vi = vhat[i] = nan_max(vhat[i], vi);
    T d = std::sqrt(vi);
    if (s.after_correction) d = d * corr;
    p[i] -= (mi / (d + eps)) * alpha;
  }
}

template <typename T>
void sgd_update(T* __restrict p, const T* __restrict g, T* __restrict m, std::size_t n,
                double lr, double momentum, bool nesterov) {
  const T r = T(lr), mu = T(momentum);
  if (m == nullptr) {
    for (std::size_t i = 0; i < n; ++i) p[i] -= g[i] * r;
    return;
  }
  for (std::size_t i = 0; i < n; ++i) {
    const T u = g[i] * r;
    const T mi = m[i] * mu - u;
    m[i] = mi;
    if (nesterov) {
      p[i] = (p[i] - u) + mi * mu;
    } else {
      p[i] += mi;
    }
  }
}

template <typename T>
void rmsprop_update(T* __restrict p, const T* __restrict g, T* __restrict v, T* __restrict avg,
                    T* __restrict mom, std::size_t n, const RMSpropStep& s) {
  const T rho = T(s.rho), c = T(s.one_minus_rho), eps = T(s.epsilon), r = T(s.lr);
  const T mu = T(s.momentum);
  for (std::size_t i = 0; i < n; ++i) {
    const T gi = g[i];
    const T vi = v[i] * rho + (gi * gi) * c;
    v[i] = vi;
    T d;
    if (avg != nullptr) {
      const T ai = avg[i] * rho + gi * c;
      avg[i] = ai;
      d = (vi - ai * ai) + eps;
    } else {
      d = vi + eps;
    }
    const T u = (gi * r) / std::sqrt(d);
    if (mom != nullptr) {
      const T mi = mom[i] * mu + u;
      mom[i] = mi;
      p[i] -= mi;
    } else {
      p[i] -= u;
    }
  }
}

template <typename T>
void adagrad_update(T* __restrict p, const T* __restrict g, T* __restrict acc, std::size_t n,
                    double lr, double epsilon) {
  const T r = T(lr), eps = T(epsilon);
  for (std::size_t i = 0; i < n; ++i) {
    const T gi = g[i];
    const T ai = acc[i] + gi * gi;
    acc[i] = ai;
    p[i] -= (gi * r) / std::sqrt(ai + eps);
  }
}

template <typename T>
bool all_finite(const T* x, std::size_t n) {
  // x - x is 0 for a finite x and NaN for NaN or infinity; an integer OR over a block
  // vectorizes (a floating-point sum would not, without reassociation)
  constexpr std::size_t kBlock = 1024;
  for (std::size_t i0 = 0; i0 < n; i0 += kBlock) {
    const std::size_t i1 = i0 + kBlock < n ? i0 + kBlock : n;
    int bad = 0;
    for (std::size_t i = i0; i < i1; ++i) bad |= !(x[i] - x[i] == T(0));
    if (bad) return false;
  }
  return true;
}

#define FASTLSTM_OPTIM_INSTANTIATE(T)                                                      \
  template void adam_update<T>(T*, const T*, T*, T*, T*, std::size_t, const AdamStep&);    \
  template void sgd_update<T>(T*, const T*, T*, std::size_t, double, double, bool);        \
  template void rmsprop_update<T>(T*, const T*, T*, T*, T*, std::size_t,                   \
                                  const RMSpropStep&);                                     \
  template void adagrad_update<T>(T*, const T*, T*, std::size_t, double, double);        \
  template bool all_finite<T>(const T*, std::size_t);
FASTLSTM_OPTIM_INSTANTIATE(float)
FASTLSTM_OPTIM_INSTANTIATE(double)
#undef FASTLSTM_OPTIM_INSTANTIATE

}  // namespace fastlstm
