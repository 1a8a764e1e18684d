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

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace fastlstm::detail {

constexpr int64_t kNC = 32;  // columns per panel
constexpr int kMR = 8;       // rows per micro-tile (8 x 32 accumulators fit the register file;
                             // measured 220 vs 195 GFLOP/s for 6 rows, 64 x 2048 x 512)

static inline int64_t num_panels(int64_t N) { return (N + kNC - 1) / kNC; }  // static: one per TU

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

#ifdef FASTLSTM_ISA_NS
// The products themselves: compiled once per ISA level (kernels/isa_kernels.cpp), each copy in
// its own namespace fastlstm::detail::<level>, reached through the kernel table (dispatch.hpp).
namespace FASTLSTM_ISA_NS {

// MR rows x NP panels: acc[r][p][j] = sum_k A[r, k] * panel_p[k, j], k in order, one fma each.
// A[r, k] is at A[r * lda + k * ka] (ka = 1 but in gemm_atb's packed row blocks).
template <typename T, int MR, int NP>
inline void micro_tile(int64_t K, const T* __restrict A, int64_t lda, const T* __restrict panels,
                       int64_t panel_stride, T* __restrict C, int64_t ldc, int64_t nc,
                       bool accumulate, int64_t ka = 1) {
  T acc[MR][NP][kNC];
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < NP; ++q)
      for (int j = 0; j < kNC; ++j) acc[r][q][j] = T(0);
  for (int64_t k = 0; k < K; ++k)
    for (int q = 0; q < NP; ++q) {
      const T* __restrict pk = panels + q * panel_stride + k * kNC;
      for (int r = 0; r < MR; ++r) {
        const T a = A[r * lda + k * ka];
        for (int j = 0; j < kNC; ++j) acc[r][q][j] = std::fma(a, pk[j], acc[r][q][j]);
      }
    }
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < NP; ++q) {
      T* c = C + r * ldc + q * kNC;
      const int64_t w = std::min(kNC, nc - q * kNC);
      if (accumulate)
        for (int64_t j = 0; j < w; ++j) c[j] += acc[r][q][j];
      else
        for (int64_t j = 0; j < w; ++j) c[j] = acc[r][q][j];
    }
}

// Rows [0, M) of one panel in tiles of kMR rows; the last M % kMR rows with a smaller tile of
// the same per-element arithmetic.
template <typename T, int R = kMR - 1>
inline void panel_tail(int64_t rows, int64_t K, const T* A, int64_t lda, const T* panel, T* C,
                       int64_t ldc, int64_t nc, bool accumulate, int64_t ka = 1) {
  if constexpr (R >= 1) {
    if (rows == R) micro_tile<T, R, 1>(K, A, lda, panel, 0, C, ldc, nc, accumulate, ka);
    else panel_tail<T, R - 1>(rows, K, A, lda, panel, C, ldc, nc, accumulate, ka);
  }
}

// C[M, N] (+)= A[M, K] * B^T over the consecutive panels of a packed B (panel p at
// packed + p * K * kNC, columns p * kNC ...).
template <typename T>
void gemm_packed(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* packed,
                 T* C, int64_t ldc, bool accumulate) {
  const int64_t np = num_panels(N), stride = K * kNC;
  if (M <= 2) {
    // one or two rows (batch-1 streaming): four panels at a time give the FMA units enough
    // independent accumulators; one panel at a time is latency bound
    int64_t p = 0;
    for (; p + 4 <= np; p += 4)
      for (int64_t m = 0; m < M; ++m)
        micro_tile<T, 1, 4>(K, A + m * lda, lda, packed + p * stride, stride, C + m * ldc + p * kNC,
                            ldc, N - p * kNC, accumulate);
    for (; p < np; ++p)
      for (int64_t m = 0; m < M; ++m)
        micro_tile<T, 1, 1>(K, A + m * lda, lda, packed + p * stride, stride, C + m * ldc + p * kNC,
                            ldc, N - p * kNC, accumulate);
    return;
  }
  for (int64_t p = 0; p < np; ++p) {
    const T* panel = packed + p * stride;
    const int64_t nc = std::min(kNC, N - p * kNC);
    int64_t m = 0;
    for (; m + kMR <= M; m += kMR)
      micro_tile<T, kMR, 1>(K, A + m * lda, lda, panel, 0, C + m * ldc + p * kNC, ldc, nc,
                            accumulate);
    panel_tail<T>(M - m, K, A + m * lda, lda, panel, C + m * ldc + p * kNC, ldc, nc, accumulate);
  }
}

}  // namespace FASTLSTM_ISA_NS
#endif  // FASTLSTM_ISA_NS

// C[M, N] += A^T B for A [K, M] and B [K, N], both row-major, K the long axis (the weight
// gradients: K = time steps x batch rows). B comes packed (pack_panels(N, K, B, 1, ldb)); A is
// packed per block of kKC rows into row blocks [M / kMR][kc][kMR] in `work` (kKC * M elements).
// K is cut in blocks so a panel's block stays in L2 while every row block passes over it; the
// partial sums of each block are added to C in block order: the result depends on K, never on
// how M is split over threads.
constexpr int64_t kKC = 256;

#ifdef FASTLSTM_ISA_NS
namespace FASTLSTM_ISA_NS {
template <typename T>
void gemm_atb(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* packed_b, T* C,
              int64_t ldc, T* work) {
  const int64_t np = num_panels(N), stride = K * kNC;
  const int64_t mb = (M + kMR - 1) / kMR;
  for (int64_t k0 = 0; k0 < K; k0 += kKC) {
    const int64_t kc = std::min(kKC, K - k0);
    for (int64_t b = 0; b < mb; ++b) {
      T* dst = work + b * kKC * kMR;
      const int64_t m = b * kMR, mr = std::min<int64_t>(kMR, M - m);
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t r = 0; r < mr; ++r) dst[k * kMR + r] = A[(k0 + k) * lda + m + r];
    }
    for (int64_t p = 0; p < np; ++p) {
      const T* panel = packed_b + p * stride + k0 * kNC;
      const int64_t nc = std::min(kNC, N - p * kNC);
      for (int64_t b = 0; b < mb; ++b) {
        const int64_t m = b * kMR, mr = std::min<int64_t>(kMR, M - m);
        T* c = C + m * ldc + p * kNC;
        const T* a = work + b * kKC * kMR;
        if (mr == kMR) micro_tile<T, kMR, 1>(kc, a, 1, panel, 0, c, ldc, nc, true, kMR);
        else panel_tail<T>(mr, kc, a, 1, panel, c, ldc, nc, true, kMR);
      }
    }
  }
}

}  // namespace FASTLSTM_ISA_NS
#endif  // FASTLSTM_ISA_NS

}  // namespace fastlstm::detail
