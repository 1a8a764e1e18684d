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
#include <type_traits>
#include <vector>

#ifdef FASTLSTM_ISA_NS
#include "aligned.hpp"
#include "kernels/simd_tile.hpp"
#endif

namespace fastlstm::detail {

constexpr int64_t kNC = 32;  // columns per panel

constexpr int kMR = 8;       // rows per micro-tile (8 x 32 accumulators fit the register file;
                             // measured 220 vs 195 GFLOP/s for 6 rows, 64 x 2048 x 512)

static inline int64_t num_panels(int64_t N) { return (N + kNC - 1) / kNC; }  // static: one per TU

// Rows of a left operand a multiple of 4 KB apart all fall in one L1 set (see simd::gemm_packed):
// the float products copy such an operand to rows a_row_pad(K) floats apart (an odd number of
// cache lines) before they run. A caller that runs several products on the same rows (the
// engine's forward step, tile by tile) copies them once itself, to rows that far apart.
static inline bool a_rows_collide(int64_t lda, int64_t K) { return lda % 1024 == 0 && K >= 32; }
static inline int64_t a_row_pad(int64_t K) {
  const int64_t ld = (K + 15) / 16 * 16;
  return (ld / 16) % 2 == 0 ? ld + 16 : ld;
}

// Packs B, logically [N, K] with element (n, k) at b[n * sn + k * sk], into num_panels(N) panels.
// Runs on every training call (the weights change at every step) and on the backward's
// activation panels: a panel row is one contiguous copy where b's rows are (sn == 1), else
// each column n is read along k in order; columns past N are zero.
template <typename T>
void pack_panels(int64_t N, int64_t K, const T* b, int64_t sn, int64_t sk, T* out) {
  for (int64_t p = 0; p < num_panels(N); ++p) {
    T* dst = out + p * K * kNC;
    const int64_t n0 = p * kNC, nn = std::min(kNC, N - n0);
    if (sn == 1) {
      for (int64_t k = 0; k < K; ++k) {
        const T* src = b + n0 + k * sk;
        T* row = dst + k * kNC;
        for (int64_t j = 0; j < nn; ++j) row[j] = src[j];
        for (int64_t j = nn; j < kNC; ++j) row[j] = T(0);
      }
      continue;
    }
    if (nn < kNC)
      for (int64_t k = 0; k < K; ++k)
        for (int64_t j = nn; j < kNC; ++j) dst[k * kNC + j] = T(0);
    for (int64_t j = 0; j < nn; ++j) {
      const T* src = b + (n0 + j) * sn;
      for (int64_t k = 0; k < K; ++k) dst[k * kNC + j] = src[k * sk];
    }
  }
}

#ifdef FASTLSTM_ISA_NS
// The products themselves: compiled once per ISA level (kernels/isa_kernels.cpp), each copy in
// its own namespace fastlstm::detail::<level>, reached through the kernel table (dispatch.hpp).
namespace FASTLSTM_ISA_NS {

// Software prefetch of the 64-byte lines [b0, b1) of the block at p into the caches (L2): the
// next panel block is fetched while the current one is computed on. Nothing is read.
inline void prefetch_lines(const void* p, int64_t b0, int64_t b1) {
#if defined(__GNUC__)
  const char* c = static_cast<const char*>(p);
  for (int64_t b = b0; b < b1; b += 64) __builtin_prefetch(c + b, 0, 2);
#else
  (void)p, (void)b0, (void)b1;
#endif
}
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

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
// The float products with the register tiles of kernels/simd_tile.hpp. A tile spans kTileV
// vectors of columns (AVX-512: one panel, 32 columns in 2 registers; AVX2: half a panel, 16
// columns in 2 registers) and kTileM rows, as many as the register file holds next to the
// loaded panel row and the broadcast: 14 x 2 = 28 accumulators of 32 (AVX-512), 6 x 2 of 16
// (AVX2).
namespace simd {
constexpr int kVpp = int(kNC) / kW;  // vectors per panel row
constexpr int kTileV = 2;
#ifndef FASTLSTM_TILE_M
constexpr int kTileM = (kRegs - kTileV - 2) / kTileV;
#else
constexpr int kTileM = FASTLSTM_TILE_M;
#endif

// rows [0, rows) with rows < R, one tile of that many rows
template <int R, int NV>
inline void tile_rows(int rows, int64_t K, const float* a, int64_t lda, int64_t ka,
                      const float* b, int64_t bstride, float* c, int64_t ldc, int64_t nc,
                      bool accumulate, bool resume = false) {
  if constexpr (R >= 1) {
    if (rows == R)
      tile<R, NV>(K, a, lda, ka, b, kNC, bstride, kVpp, c, ldc, nc, accumulate, resume);
    else
      tile_rows<R - 1, NV>(rows, K, a, lda, ka, b, bstride, c, ldc, nc, accumulate, resume);
  }
}

// K block of the products: a panel's block (kKB x 128 bytes, 32 KB) stays in L1 while every row
// tile passes over it. Only products that overwrite C are cut (the chains continue from C).
// Measured on Sapphire Rapids (48 KB L1), single thread: 256 against 128 + 3-6% on 64 x 2048 x
// 512 and 128 x 4096 x 1024; 64: - 8-12%.
#ifndef FASTLSTM_KB
constexpr int64_t kKB = 256;
#else
constexpr int64_t kKB = FASTLSTM_KB;
#endif

// Software prefetch of the next panel block from this many rows of A (see gemm_packed). AVX-512
// levels: 96 (Sapphire Rapids, 2 MB L2: 64 x 2048 x 512 lost 8% with it, its weights in L2).
// AVX2: 32; the CPUs of that level have small L2s (Zen 2/3: 512 KB), which the step's weight
// tiles and its A operands do not share without evictions: batch_inf (64 rows) ran in 0.79-0.96
// of the time at 2 threads (six alternated rounds, Zen 3), 0.82-0.99 at 1, train_large 0.83-1.03,
// train_small 0.76-1.13 (four rounds each, a shared machine).
#ifndef FASTLSTM_PF_ROWS
constexpr int64_t kPrefetchRows = kW == 8 ? 32 : 96;
#else
constexpr int64_t kPrefetchRows = FASTLSTM_PF_ROWS;
#endif

// C[M, ncols] (+)= A[M, K] B for one column block of kTileV vectors (b at its first column):
// the rows in tiles of kTileM or fewer, as even as can be (128 rows: 8 tiles of 13 and 2 of 12,
// not 9 of 14 and one of 2, whose 4 accumulators leave the FMA units idle half the time)
inline void column_block(int64_t M, int64_t K, const float* A, int64_t lda, int64_t ka,
                         const float* b, float* C, int64_t ldc, int64_t nc, bool accumulate,
                         const float* next_b = nullptr) {
  const int64_t kb = accumulate || M <= kTileM ? K : kKB;
  const int64_t tiles = (M + kTileM - 1) / kTileM, base = tiles ? M / tiles : 0,
                extra = M - base * tiles;
  for (int64_t k0 = 0; k0 < K || k0 == 0; k0 += kb) {
    const int64_t kc = std::min(kb, K - k0);
    const bool resume = k0 > 0;
    const float* a = A + k0 * ka;
    const float* bk = b + k0 * kNC;
    // what the next K block (or the next column block's first) reads of the panels: its rows
    // of kTileV vectors, fetched a tile's share at a time while this block's tiles run
    const bool more = k0 + kb < K;
    const float* nb = M < kPrefetchRows ? nullptr : more ? b + (k0 + kb) * kNC : next_b;
    const int64_t nkc = more ? std::min(kb, K - k0 - kb) : std::min(kb, K);
    const int64_t nbytes = nb ? nkc * kNC * int64_t(sizeof(float)) : 0;
    int64_t m = 0;
    for (int64_t t = 0; t < tiles; ++t) {
      if (nbytes) prefetch_lines(nb, nbytes * t / tiles, nbytes * (t + 1) / tiles);
      const int rows = int(base + (t < extra ? 1 : 0));
      if (rows == kTileM)
        tile<kTileM, kTileV>(kc, a + m * lda, lda, ka, bk, kNC, 0, kVpp, C + m * ldc, ldc, nc,
                             accumulate, resume);
      else
        tile_rows<kTileM - 1, kTileV>(rows, kc, a + m * lda, lda, ka, bk, 0, C + m * ldc, ldc,
                                      nc, accumulate, resume);
      m += rows;
    }
    if (K == 0) break;
  }
}

inline void gemm_packed(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                        const float* packed, float* C, int64_t ldc, bool accumulate) {
  const int64_t np = num_panels(N), stride = K * kNC;
  if (M <= 2) {
    // one or two rows (streams): 8 vectors of columns at a time give the FMA units enough
    // independent accumulators; each row of the panels is read once per row of A
    constexpr int NV = 8, PP = NV / kVpp > 0 ? NV / kVpp : 1;  // panels per block
    int64_t p = 0;
    for (; p + PP <= np; p += PP)
      for (int64_t m = 0; m < M; ++m)
        tile<1, NV>(K, A + m * lda, lda, 1, packed + p * stride, kNC, stride, kVpp,
                    C + m * ldc + p * kNC, ldc, N - p * kNC, accumulate);
    for (; p < np; ++p)
      for (int64_t m = 0; m < M; ++m)
        tile<1, kVpp>(K, A + m * lda, lda, 1, packed + p * stride, kNC, 0, kVpp,
                      C + m * ldc + p * kNC, ldc, N - p * kNC, accumulate);
    return;
  }
  // Rows of A a multiple of 4 KB apart (power-of-two sizes from 1024 floats; a batch-first
  // output's rows, T * S floats apart) all fall in one of L1's 64 sets: a tile's 14 rows then
  // evict each other's lines before the 16 k steps of a line are used, and A comes from L2 at
  // every k (Zen 4, 32 KB 8-way L1, one thread: 128 x 4096 x 1024 at lda 1024 ran at 56-73% of
  // the FMA peak, at lda 1040 92-96%). Such an A is copied, 128 rows at a time, to rows an odd
  // number of cache lines apart. The same FMA chains, so the same bits. (Rows 2 KB apart, two
  // sets, measured no faster copied: the copy's cost, about 5% at 64 x 128 x 512, is not won
  // back.)
  if (a_rows_collide(lda, K)) {
    const int64_t ld = a_row_pad(K);
    const int64_t rows = std::min<int64_t>(M, 128);
    thread_local std::vector<float, detail::AlignedAllocator<float>> abuf;
    if (int64_t(abuf.size()) < rows * ld) abuf.resize(size_t(rows * ld));
    for (int64_t m0 = 0; m0 < M; m0 += rows) {
      const int64_t mr = std::min(rows, M - m0);
      for (int64_t r = 0; r < mr; ++r) std::copy_n(A + (m0 + r) * lda, K, abuf.data() + r * ld);
      gemm_packed(mr, N, K, abuf.data(), ld, packed, C + m0 * ldc, ldc, accumulate);
    }
    return;
  }
  // the panel the next column block reads (whole panel rows: they come in whole lines); only
  // for enough rows (kPrefetchRows; measured on Sapphire Rapids: + 10-14% on 128 x 4096 x 1024
  // and 128 x 4096 x 512, where the weights come from memory every step; - 8% on 64 x 2048 x
  // 512, where they come from L2 and the hardware prefetchers keep up)
  const bool pf = M >= kPrefetchRows;
  for (int64_t p = 0; p < np; ++p)
    for (int v0 = 0; v0 < kVpp; v0 += kTileV) {
      const int64_t col = p * kNC + v0 * kW;
      if (col >= N) break;
      const float* next = !pf || v0 + kTileV < kVpp ? nullptr
                          : p + 1 < np              ? packed + (p + 1) * stride
                                                    : nullptr;
      column_block(M, K, A, lda, 1, packed + p * stride + v0 * kW, C + col, ldc, N - col,
                   accumulate, next);
    }
}
}  // namespace simd
#endif

// C[M, N] (+)= A[M, K] * B^T over the consecutive panels of a packed B (panel p at
// packed + p * K * kNC, columns p * kNC ...).
template <typename T>
void gemm_packed(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* packed,
                 T* C, int64_t ldc, bool accumulate) {
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
  if constexpr (std::is_same_v<T, float>) {
    simd::gemm_packed(M, N, K, A, lda, packed, C, ldc, accumulate);
    return;
  }
#endif
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
// packed per block of kKC rows into row blocks [M / MR][kc][MR] in `work` (kKC * M elements
// rounded up to whole row blocks: kKC * (M + kMaxMR) is always enough).
// K is cut in blocks so a panel's block stays in L2 while every row block passes over it; the
// partial sums of each block are added to C in block order: the result depends on K, never on
// how M is split over threads.
#ifndef FASTLSTM_KC
constexpr int64_t kKC = 256;
#else
constexpr int64_t kKC = FASTLSTM_KC;
#endif
// The largest row block of any level (AVX-512: 14, AVX2: 6, generic: kMR): the engine, compiled
// for the baseline, sizes gemm_atb's work with it; each level checks its own against it.
constexpr int64_t kMaxMR = 16;

#ifdef FASTLSTM_ISA_NS
namespace FASTLSTM_ISA_NS {
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
template <typename T>
constexpr int64_t atb_mr() { return std::is_same_v<T, float> ? simd::kTileM : kMR; }
#else
template <typename T>
constexpr int64_t atb_mr() { return kMR; }
#endif
static_assert(atb_mr<float>() <= kMaxMR && atb_mr<double>() <= kMaxMR,
              "kMaxMR must bound every level's row block");
// rows of C per call for callers that split M (about 256, whole row blocks; the kernel table's
// atb_grain)
template <typename T>
constexpr int64_t atb_row_grain() { return atb_mr<T>() * (256 / atb_mr<T>()); }

// One product of gemm_atb_n: C[M, N] += A^T B, B packed as in gemm_atb.
template <typename T>
struct AtbOut {
  int64_t N;
  const T* packed_b;
  T* C;
  int64_t ldc;
};

// gemm_atb for `nout` products of the same A (the gradients of W_ih and W_hh share d_rec): A's
// block is packed once and serves them all, the products one after the other.
template <typename T>
void gemm_atb_n(int64_t M, int64_t K, const T* A, int64_t lda, const AtbOut<T>* outs, int nout,
                T* work) {
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
  constexpr bool kSimd = std::is_same_v<T, float>;
#else
  constexpr bool kSimd = false;
#endif
  constexpr int64_t MR = atb_mr<T>();  // rows per packed row block
  const int64_t mb = (M + MR - 1) / MR;
  for (int64_t k0 = 0; k0 < K; k0 += kKC) {
    const int64_t kc = std::min(kKC, K - k0);
    // row by row of A (each read once, front to back: the prefetchers follow), into the row
    // blocks
    for (int64_t k = 0; k < kc; ++k) {
      const T* src = A + (k0 + k) * lda;
      if (k + 8 < K - k0) prefetch_lines(src + 8 * lda, 0, M * int64_t(sizeof(T)));
      int64_t b = 0;
      if constexpr (kSimd) {
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
        static_assert(MR <= simd::kW, "a row piece is one masked vector");
        for (; (b + 1) * MR <= M; ++b)
          simd::copy_piece<int(MR)>(src + b * MR, work + b * kKC * MR + k * MR);
        if (b < mb) simd::copy_short(src + b * MR, M - b * MR, work + b * kKC * MR + k * MR);
#endif
      } else {
        for (; (b + 1) * MR <= M; ++b)
          std::copy_n(src + b * MR, MR, work + b * kKC * MR + k * MR);
        if (b < mb) std::copy_n(src + b * MR, M - b * MR, work + b * kKC * MR + k * MR);
      }
    }
    for (int o = 0; o < nout; ++o)  // the products one after the other, each panel by panel
    for (int64_t p = 0, N = outs[o].N, np = num_panels(N), stride = K * kNC; p < np; ++p) {
      const T* packed_b = outs[o].packed_b;
      T* C = outs[o].C;
      const int64_t ldc = outs[o].ldc;
      const T* panel = packed_b + p * stride + k0 * kNC;
      const int64_t nc = std::min(kNC, N - p * kNC);
      // the next panel's block (or the first panel's of the next K block), a row block's share
      // at a time: it comes from memory, and the tiles would wait for it
      const T* next = p + 1 < np ? panel + stride : k0 + kKC < K ? packed_b + (k0 + kKC) * kNC
                                                               : nullptr;
      const int64_t nbytes =
          next ? std::min(kKC, p + 1 < np ? kc : K - k0 - kKC) * kNC * int64_t(sizeof(T)) : 0;
      for (int64_t b = 0; b < mb; ++b) {
        const int64_t m = b * MR, mr = std::min<int64_t>(MR, M - m);
        T* c = C + m * ldc + p * kNC;
        const T* a = work + b * kKC * MR;
        if (nbytes) prefetch_lines(next, nbytes * b / mb, nbytes * (b + 1) / mb);
        if constexpr (kSimd) {
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
          for (int v0 = 0; v0 < simd::kVpp; v0 += simd::kTileV) {
            const int64_t col = v0 * simd::kW;
            if (col >= nc) break;
            if (mr == MR)
              simd::tile<int(MR), simd::kTileV>(kc, a, 1, MR, panel + col, kNC, 0, simd::kVpp,
                                                c + col, ldc, nc - col, true);
            else
              simd::tile_rows<int(MR) - 1, simd::kTileV>(int(mr), kc, a, 1, MR, panel + col, 0,
                                                         c + col, ldc, nc - col, true);
          }
#endif
        } else if (mr == MR) {
          micro_tile<T, kMR, 1>(kc, a, 1, panel, 0, c, ldc, nc, true, MR);
        } else {
          panel_tail<T>(mr, kc, a, 1, panel, c, ldc, nc, true, MR);
        }
      }
    }
  }
}

template <typename T>
void gemm_atb(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* packed_b, T* C,
              int64_t ldc, T* work) {
  const AtbOut<T> out{N, packed_b, C, ldc};
  gemm_atb_n<T>(M, K, A, lda, &out, 1, work);
}

}  // namespace FASTLSTM_ISA_NS
#endif  // FASTLSTM_ISA_NS

}  // namespace fastlstm::detail
