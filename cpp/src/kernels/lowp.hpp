// Low-precision weights (bf16, int8) and their product kernel. The precision of a network is a
// property of its packed weights and of this product: the engine's time loop and the float32
// cell pass are the same as for float32 weights.
//
// Layout, like the float panels of packed_gemm.hpp (kNC = 32 columns per panel, column n of the
// product = row n of the weight), with the depth K padded with zeros to Kp:
//  - bf16: panel p = [Kp/2][kNC][2] (pairs of consecutive k side by side: what vdpbf16ps and the
//    AMX bf16 tiles read); Kp a multiple of 32 (one AMX tile row).
//  - int8: panel p = [Kp/4][kNC][4] (quads of k: vpdpbusd, AMX int8); Kp a multiple of 64;
//    symmetric per column (= per gate and unit) scale max|w| / 127, weights in [-127, 127].
// Activations: bf16 rounds each element to nearest-even; int8 quantizes each row of A per call
// (dynamic): s = max|a| / 127, q = round(a / s) in [-127, 127], stored as q + 128 (u8). Then
// sum_k (q + 128) w = sum_k q w + 128 sum_k w, and the product subtracts wsum = 128 sum_k w:
// the u8 x s8 form that VNNI (vpdpbusd) and AMX (tdpbusd) multiply, int32 accumulation (exact).
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "aligned.hpp"
#include "fastlstm/config.hpp"
#include "kernels/packed_gemm.hpp"

namespace fastlstm::detail {

struct QPacked {
  Precision precision = Precision::Float32;
  int64_t N = 0, K = 0, Kp = 0;   // columns (weight rows), depth, padded depth
  // cache-line aligned: the kernels read whole 64-byte rows of a panel
  AlignedVector<uint16_t> bf16;   // bf16: panel p at p * Kp * kNC
  AlignedVector<int8_t> i8;       // int8: panel p at p * Kp * kNC
  std::vector<float> scale;       // int8: [panels * kNC] per column
  std::vector<int32_t> wsum;      // int8: [panels * kNC] 128 * sum_k w
  size_t bytes() const {
    return bf16.size() * 2 + i8.size() + scale.size() * 4 + wsum.size() * 4;
  }
};

// Activation rows quantized for one weight's products (kernels' quantize_rows): [Mp, Kp] bf16
// or u8 (rows past M and depth past K: zero, or the u8 zero point 128; Mp = M rounded up to
// whole AMX tiles of 16 rows) and the int8 per-row scales. Quantized once, used by every
// product of those rows with that weight (e.g. a step's h with each unit tile of W_hh).
struct QRows {
  Precision precision = Precision::Float32;
  int64_t M = 0, Kp = 0;
  AlignedVector<uint16_t> bf;  // aligned: AMX loads 64-byte rows of it
  AlignedVector<uint8_t> u8;
  std::vector<float> scale;
  // sizes the buffer of `precision` for Mp rows of Kp (out of line: baseline code)
  void shape(int64_t Mp, int64_t Kp);
};

// static: each translation unit (baseline or ISA level) keeps its own copy
static inline uint16_t to_bf16(float x) {  // round to nearest even (NaN stays NaN)
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
static inline float from_bf16(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

static inline int64_t lowp_depth_pad(Precision p, int64_t K) {
  const int64_t m = p == Precision::Int8 ? 64 : 32;
  return (K + m - 1) / m * m;
}

// Quantizes and packs a weight given as N rows of K floats (rows[n] == nullptr: a zero row, the
// padding of a unit tile).
void quantize_pack(Precision p, int64_t K, const std::vector<const float*>& rows, QPacked& out);

}  // namespace fastlstm::detail
