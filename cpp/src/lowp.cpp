// Quantizing and packing weights for the low-precision products (kernels/lowp.hpp); baseline
// code, run once per packing.
#include <algorithm>
#include <cmath>

#include "kernels/lowp.hpp"

namespace fastlstm::detail {

void QRows::shape(int64_t Mp, int64_t Kp_) {
  if (precision == Precision::BF16) {
    bf.resize(size_t(Mp * Kp_));
  } else {
    u8.resize(size_t(Mp * Kp_));
    scale.resize(size_t(Mp));
  }
}

void quantize_pack(Precision p, int64_t K, const std::vector<const float*>& rows, QPacked& out) {
  const int64_t N = int64_t(rows.size()), np = num_panels(N), Kp = lowp_depth_pad(p, K);
  out.precision = p;
  out.N = N;
  out.K = K;
  out.Kp = Kp;
  out.bf16.clear();
  out.i8.clear();
  out.scale.clear();
  out.wsum.clear();
  if (p == Precision::BF16) {
    out.bf16.assign(size_t(np * Kp * kNC), 0);
    for (int64_t n = 0; n < N; ++n) {
      if (!rows[n]) continue;
      uint16_t* panel = out.bf16.data() + (n / kNC) * Kp * kNC;
      const int64_t j = n % kNC;
      for (int64_t k = 0; k < K; ++k) panel[((k / 2) * kNC + j) * 2 + k % 2] = to_bf16(rows[n][k]);
    }
    return;
  }
  if (p != Precision::Int8) throw Error("quantize_pack: precision must be bf16 or int8");
  out.i8.assign(size_t(np * Kp * kNC), 0);
  out.scale.assign(size_t(np * kNC), 0.0f);
  out.wsum.assign(size_t(np * kNC), 0);
  for (int64_t n = 0; n < N; ++n) {
    if (!rows[n]) continue;
    const float* w = rows[n];
    float mx = 0.0f;
    for (int64_t k = 0; k < K; ++k) mx = std::max(mx, std::fabs(w[k]));
    if (!(mx > 0.0f) || !std::isfinite(mx)) {
      if (!std::isfinite(mx)) throw Error("quantize: the weights hold a NaN or infinity");
      continue;  // an all-zero row: scale 0, product 0
    }
    const float inv = 127.0f / mx;
    out.scale[n] = mx / 127.0f;
    int8_t* panel = out.i8.data() + (n / kNC) * Kp * kNC;
    const int64_t j = n % kNC;
    int32_t sum = 0;
    for (int64_t k = 0; k < K; ++k) {
      const float q = std::min(127.0f, std::max(-127.0f, std::nearbyint(w[k] * inv)));
      panel[((k / 4) * kNC + j) * 4 + k % 4] = int8_t(q);
      sum += int32_t(q);
    }
    out.wsum[n] = 128 * sum;
  }
}

}  // namespace fastlstm::detail
