// A matrix product over weights packed once into column panels: C[M, n] (+)= A[M, K] * B^T,
// with B (the weights, [N, K]) stored as panels of kNC columns, each [K][kNC] contiguous:
//
//   panel p:  k=0: B[pN+0,0] B[pN+1,0] ... B[pN+31,0]   <- one or two SIMD registers wide
//             k=1: B[pN+0,1] ...
//             ...                                        (N padded with zeros to whole panels)
//
// Why not Eigen here: Eigen repacks its right-hand operand on every call (the recurrent weights,
// T times per sequence), and its summation order depends on the matrix sizes (GEMV for one row,
// size-dependent blocking). This kernel sums every C element over k = 0..K-1 in order with one
// fused multiply-add per term, whatever M, the row block or the thread: results are bitwise
// identical for any thread count and for a sequence whatever else shares its batch.
#pragma once

#include <cmath>
#include <cstdint>

namespace fastlstm::detail {

constexpr int64_t kNC = 32;  // columns per panel
constexpr int kMR = 6;       // rows per micro-tile (6 x 32 accumulators fit the register file)

inline int64_t num_panels(int64_t N) { return (N + kNC - 1) / kNC; }

// Packs B, logically [N, K] with element (n, k) at b[n * sn + k * sk], into num_panels(N) panels.
template <typename T>
void pack_panels(int64_t N, int64_t K, const T* b, int64_t sn, int64_t sk, T* out) {
  for (int64_t p = 0; p < num_panels(N); ++p) {
    T* dst = out + p * K * kNC;
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < kNC; ++j) {
        const int64_t n = p * kNC + j;
        dst[k * kNC + j] = n < N ? b[n * sn + k * sk] : T(0);
      }
  }
}

template <typename T, int MR>
inline void micro_tile(int64_t K, const T* __restrict A, int64_t lda, const T* __restrict panel,
                       T* __restrict C, int64_t ldc, int64_t nc, bool accumulate) {
  T acc[MR][kNC];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < kNC; ++j) acc[r][j] = T(0);
  for (int64_t k = 0; k < K; ++k) {
    const T* __restrict pk = panel + k * kNC;
    for (int r = 0; r < MR; ++r) {
      const T a = A[r * lda + k];
      for (int j = 0; j < kNC; ++j) acc[r][j] = std::fma(a, pk[j], acc[r][j]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    T* c = C + r * ldc;
    if (accumulate)
      for (int64_t j = 0; j < nc; ++j) c[j] += acc[r][j];
    else
      for (int64_t j = 0; j < nc; ++j) c[j] = acc[r][j];
  }
}

// C[M, nc] (+)= A[M, K] * panel, nc <= kNC (the panel's first nc columns are stored).
template <typename T>
void gemm_panel(int64_t M, int64_t K, const T* A, int64_t lda, const T* panel, int64_t nc, T* C,
                int64_t ldc, bool accumulate) {
  int64_t m = 0;
  for (; m + kMR <= M; m += kMR)
    micro_tile<T, kMR>(K, A + m * lda, lda, panel, C + m * ldc, ldc, nc, accumulate);
  const T* a = A + m * lda;
  T* c = C + m * ldc;
  switch (M - m) {  // the same per-element arithmetic as the full tiles
    case 5: micro_tile<T, 5>(K, a, lda, panel, c, ldc, nc, accumulate); break;
    case 4: micro_tile<T, 4>(K, a, lda, panel, c, ldc, nc, accumulate); break;
    case 3: micro_tile<T, 3>(K, a, lda, panel, c, ldc, nc, accumulate); break;
    case 2: micro_tile<T, 2>(K, a, lda, panel, c, ldc, nc, accumulate); break;
    case 1: micro_tile<T, 1>(K, a, lda, panel, c, ldc, nc, accumulate); break;
    default: break;
  }
}

// C[M, N] (+)= A[M, K] * B^T over all panels of a packed B.
template <typename T>
void gemm_packed(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* packed,
                 T* C, int64_t ldc, bool accumulate) {
  for (int64_t p = 0; p < num_panels(N); ++p)
    gemm_panel<T>(M, K, A, lda, packed + p * K * kNC, std::min(kNC, N - p * kNC), C + p * kNC,
                  ldc, accumulate);
}

}  // namespace fastlstm::detail
