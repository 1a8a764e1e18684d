// The kernels of one ISA level. Nothing here instantiates a standard-library template that
// baseline code also uses (such copies are merged at link time, and the linker may keep either
// one): buffers are sized by baseline functions (QRows::shape in lowp.cpp), filled by memset.
// CMake compiles this file once per level, with that level's
// instruction-set flags and -DFASTLSTM_ISA_NS=<level>: every function here (and in the kernel
// headers it includes) lands in namespace fastlstm::detail::<level>, so copies for different
// levels never mix at link time. fill_kernels() puts this level's functions in the table.
//
// float32/float64: the same source at every level, with -ffp-contract=off and one std::fma per
// term (an FMA instruction where the level has one, the C library's correctly rounded fma on the
// baseline): every element is the same fixed-order chain of correctly rounded operations, so
// the results are bitwise identical at every level.
#ifndef FASTLSTM_ISA_NS
#error "compile with -DFASTLSTM_ISA_NS=<level>"
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX512BF16__) || defined(__AVX512VNNI__) || defined(__AMX_TILE__)
#include <immintrin.h>
#endif
#if defined(__AMX_TILE__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "kernels/cells.hpp"
#include "kernels/dispatch.hpp"
#include "kernels/lowp.hpp"
#include "kernels/lowp_avx2.hpp"
#include "kernels/packed_gemm.hpp"
#include "kernels/stream_step.hpp"
#include "kernels/stream_step_lowp.hpp"

namespace fastlstm::detail::FASTLSTM_ISA_NS {

namespace {

template <typename T, typename Cell>
void cell_forward(int64_t n, int64_t H, int64_t rs, const CellRow<T>& r) {
  Cell::template forward_units<T>(n, H, rs, r);
}
template <typename T, typename Cell>
void cell_backward(int64_t n, int64_t H, const CellGradRow<T>& r) {
  Cell::template backward_units<T>(n, H, r);
}

template <typename T>
void gemm_atb2(int64_t M, int64_t K, const T* A, int64_t lda, int64_t N1, const T* packed_b1,
               T* C1, int64_t ldc1, int64_t N2, const T* packed_b2, T* C2, int64_t ldc2,
               T* work) {
  const AtbOut<T> outs[2] = {{N1, packed_b1, C1, ldc1}, {N2, packed_b2, C2, ldc2}};
  gemm_atb_n<T>(M, K, A, lda, outs, 2, work);
}

template <typename T, typename Cell, int U>
typename StreamStep<T>::LayerFn pick_run_layer(int64_t, int64_t, bool) {
  return &run_layer<T, Cell, U>;
}

template <typename T>
void fill_typed(TypedKernels<T>& k) {
  k.gemm_packed = &gemm_packed<T>;
  k.gemm_atb = &gemm_atb<T>;
  k.gemm_atb2 = &gemm_atb2<T>;
  k.atb_grain = atb_row_grain<T>();
  static_assert(atb_row_grain<T>() <= 256, "the engine's work for gemm_atb assumes <= 256 rows");
  k.cell_forward[LstmKind::kIndex] = &cell_forward<T, LstmCell>;
  k.cell_forward[GruKind::kIndex] = &cell_forward<T, GruCell>;
  k.cell_backward[LstmKind::kIndex] = &cell_backward<T, LstmCell>;
  k.cell_backward[GruKind::kIndex] = &cell_backward<T, GruCell>;
  k.stream_layer[LstmKind::kIndex][0] = &pick_run_layer<T, LstmCell, kStreamU<T>>;
  k.stream_layer[LstmKind::kIndex][1] = &pick_run_layer<T, LstmCell, kStreamU<T> / 2>;
  k.stream_layer[GruKind::kIndex][0] = &pick_run_layer<T, GruCell, kStreamU<T>>;
  k.stream_layer[GruKind::kIndex][1] = &pick_run_layer<T, GruCell, kStreamU<T> / 2>;
#if FASTLSTM_HAVE_VOPS
  if constexpr (sizeof(T) == 4) {
    // float: the step in registers (the same bits, a shorter chain)
#if defined(__AVX512F__)
    constexpr int V16 = 512;
#else
    constexpr int V16 = 256;
#endif
    k.stream_layer[LstmKind::kIndex][0] = &pick_layer_reg<LstmCell, 16, V16>;
    k.stream_layer[LstmKind::kIndex][1] = &pick_layer_reg<LstmCell, 8, 256>;
    k.stream_layer[GruKind::kIndex][0] = &pick_layer_reg<GruCell, 16, V16>;
    k.stream_layer[GruKind::kIndex][1] = &pick_layer_reg<GruCell, 8, 256>;
    static_assert(kStreamU<float> == 16, "run_layer_reg: blocks of 16 and 8 floats");
  }
#endif
}

// ---- low precision --------------------------------------------------------------------------

constexpr int64_t kRowPad = 16;  // an AMX tile's rows

// Rows padded to whole AMX tiles (zero rows; u8: the zero point), so the tile path can read
// them; the other paths read only the first M. Each row as the batch-1 step quantizes its rows
// (lowp_step_quantize: vectorized where the level has AVX-512; the same bits at every level).
void quantize_rows_impl(Precision p, int64_t M, int64_t K, int64_t Kp, const float* A,
                        int64_t lda, QRows& q) {
  const int64_t Mp = (M + kRowPad - 1) / kRowPad * kRowPad;
  q.M = M;
  q.Kp = Kp;
  q.precision = p;
  q.shape(Mp, Kp);
  const bool bf = p == Precision::BF16;
  for (int64_t m = 0; m < Mp; ++m) {
    uint8_t* dst = bf ? reinterpret_cast<uint8_t*>(q.bf.data() + m * Kp) : q.u8.data() + m * Kp;
    float scale;
    if (m < M) lowp_step_quantize(p, A + m * lda, K, Kp, dst, &scale);
    else std::memset(dst, bf ? 0 : 128, size_t(Kp) * (bf ? 2 : 1));  // zero, or the zero point
    if (!bf) q.scale[m] = m < M ? scale : 0.0f;
  }
}

// Writes a block of accumulators (rows mr, columns [0, w) of one panel) to C, or adds it to C
// (Acc: the second product of C = qa Wa^T + qb Wb^T). (row r of the block at acc + r * ld)
template <bool Acc>
inline void store_bf16(int64_t mr, int64_t w, const float* acc, int64_t ld, float* C,
                       int64_t ldc) {
  for (int64_t r = 0; r < mr; ++r)
    for (int64_t j = 0; j < w; ++j)
      C[r * ldc + j] = Acc ? C[r * ldc + j] + acc[r * ld + j] : acc[r * ld + j];
}
template <bool Acc>
inline void store_i8(int64_t mr, int64_t w, const int32_t* acc, int64_t ld, const float* sa,
                     const float* sw, const int32_t* wsum, float* C, int64_t ldc) {
  for (int64_t r = 0; r < mr; ++r)
    for (int64_t j = 0; j < w; ++j) {
      const float v = float(acc[r * ld + j] - wsum[j]) * (sa[r] * sw[j]);
      C[r * ldc + j] = Acc ? C[r * ldc + j] + v : v;
    }
}

#if defined(__AVX512BF16__) && defined(__AVX512VNNI__)
// MR rows x NP panels with the AVX512_BF16 / AVX512_VNNI dot products: per k pair (quad), one
// 32-bit broadcast of a row's pair and two 16-column registers per panel.
template <int MR, int NP>
void tile_bf16(int64_t Kp, const uint16_t* a, const uint16_t* const* panels, float (*out)[NP][kNC]) {
  __m512 acc[MR][NP][2];
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < NP; ++q) acc[r][q][0] = acc[r][q][1] = _mm512_setzero_ps();
  for (int64_t kp = 0; kp < Kp / 2; ++kp) {
    __m512i b[NP][2];
    for (int q = 0; q < NP; ++q) {
      b[q][0] = _mm512_loadu_si512(panels[q] + kp * 2 * kNC);
      b[q][1] = _mm512_loadu_si512(panels[q] + kp * 2 * kNC + 32);
    }
    for (int r = 0; r < MR; ++r) {
      int32_t pair;
      std::memcpy(&pair, a + r * Kp + 2 * kp, 4);
      const __m512i av = _mm512_set1_epi32(pair);
      for (int q = 0; q < NP; ++q) {
        acc[r][q][0] = _mm512_dpbf16_ps(acc[r][q][0], (__m512bh)av, (__m512bh)b[q][0]);
        acc[r][q][1] = _mm512_dpbf16_ps(acc[r][q][1], (__m512bh)av, (__m512bh)b[q][1]);
      }
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < NP; ++q) {
      _mm512_storeu_ps(out[r][q], acc[r][q][0]);
      _mm512_storeu_ps(out[r][q] + 16, acc[r][q][1]);
    }
}
template <int MR, int NP>
void tile_i8(int64_t Kp, const uint8_t* a, const int8_t* const* panels, int32_t (*out)[NP][kNC]) {
  __m512i acc[MR][NP][2];
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < NP; ++q) acc[r][q][0] = acc[r][q][1] = _mm512_setzero_si512();
  for (int64_t kq = 0; kq < Kp / 4; ++kq) {
    __m512i b[NP][2];
    for (int q = 0; q < NP; ++q) {
      b[q][0] = _mm512_loadu_si512(panels[q] + kq * 4 * kNC);
      b[q][1] = _mm512_loadu_si512(panels[q] + kq * 4 * kNC + 64);
    }
    for (int r = 0; r < MR; ++r) {
      int32_t quad;
      std::memcpy(&quad, a + r * Kp + 4 * kq, 4);
      const __m512i av = _mm512_set1_epi32(quad);
      for (int q = 0; q < NP; ++q) {
        acc[r][q][0] = _mm512_dpbusd_epi32(acc[r][q][0], av, b[q][0]);
        acc[r][q][1] = _mm512_dpbusd_epi32(acc[r][q][1], av, b[q][1]);
      }
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < NP; ++q) {
      _mm512_storeu_si512(out[r][q], acc[r][q][0]);
      _mm512_storeu_si512(out[r][q] + 16, acc[r][q][1]);
    }
}
#elif defined(FASTLSTM_LOWP_AVX2)
// AVX2 without the dot-product instructions: the plain loops' arithmetic in 8-column vectors
// (kernels/lowp_avx2.hpp), two rows at a time against one panel (each weight vector loaded and
// split once for both rows).
template <bool BF, int MR, int NP, typename Acc>
void tile_avx2(int64_t Kp, const uint8_t* a, int64_t row_bytes, const uint8_t* const* panels,
               Acc (*out)[NP][kNC]) {
  const int64_t n = Kp / (BF ? 2 : 4), stride = 4 * kNC;
  if constexpr (MR == 1) {  // one row (batch-1 steps): two panels at a time
    int q = 0;
    for (; q + 2 <= NP; q += 2) {
      void* o[2] = {out[0][q], out[0][q + 1]};
      lowp_avx2::dot_cols<BF, 1, 2>(&a, n, &panels[q], stride, o);
    }
    if (q < NP) {
      void* o[1] = {out[0][q]};
      lowp_avx2::dot_cols<BF, 1, 1>(&a, n, &panels[q], stride, o);
    }
    return;
  }
  for (int q = 0; q < NP; ++q) {
    int r = 0;
    for (; r + 2 <= MR; r += 2) {
      const uint8_t* rows[2] = {a + r * row_bytes, a + (r + 1) * row_bytes};
      void* o[2] = {out[r][q], out[r + 1][q]};
      lowp_avx2::dot_cols<BF, 2, 1>(rows, n, &panels[q], stride, o);
    }
    if (r < MR) {
      const uint8_t* rows[1] = {a + r * row_bytes};
      void* o[1] = {out[r][q]};
      lowp_avx2::dot_cols<BF, 1, 1>(rows, n, &panels[q], stride, o);
    }
  }
}
template <int MR, int NP>
void tile_bf16(int64_t Kp, const uint16_t* a, const uint16_t* const* panels, float (*out)[NP][kNC]) {
  const uint8_t* p8[NP];
  for (int q = 0; q < NP; ++q) p8[q] = reinterpret_cast<const uint8_t*>(panels[q]);
  tile_avx2<true, MR, NP>(Kp, reinterpret_cast<const uint8_t*>(a), 2 * Kp, p8, out);
}
template <int MR, int NP>
void tile_i8(int64_t Kp, const uint8_t* a, const int8_t* const* panels, int32_t (*out)[NP][kNC]) {
  const uint8_t* p8[NP];
  for (int q = 0; q < NP; ++q) p8[q] = reinterpret_cast<const uint8_t*>(panels[q]);
  tile_avx2<false, MR, NP>(Kp, a, Kp, p8, out);
}
#else
// Without the dot-product instructions: the same arithmetic in plain loops (bf16: the two
// products of a pair added to the float32 accumulator in vdpbf16ps's order; int8: exact int32).
template <int MR, int NP>
void tile_bf16(int64_t Kp, const uint16_t* a, const uint16_t* const* panels, float (*out)[NP][kNC]) {
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < NP; ++q) {
      float acc[kNC] = {};
      float wl[kNC], wh[kNC];
      const uint16_t* pn = panels[q];
      for (int64_t kp = 0; kp < Kp / 2; ++kp) {
        const float a0 = from_bf16(a[r * Kp + 2 * kp]), a1 = from_bf16(a[r * Kp + 2 * kp + 1]);
        const uint16_t* b = pn + kp * 2 * kNC;
        for (int j = 0; j < kNC; ++j) {
          wl[j] = from_bf16(b[2 * j]);
          wh[j] = from_bf16(b[2 * j + 1]);
        }
        for (int j = 0; j < kNC; ++j) acc[j] = std::fma(a0, wl[j], std::fma(a1, wh[j], acc[j]));
      }
      for (int j = 0; j < kNC; ++j) out[r][q][j] = acc[j];
    }
}
template <int MR, int NP>
void tile_i8(int64_t Kp, const uint8_t* a, const int8_t* const* panels, int32_t (*out)[NP][kNC]) {
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < NP; ++q) {
      int32_t acc[kNC] = {};
      const int8_t* pn = panels[q];
      for (int64_t kq = 0; kq < Kp / 4; ++kq) {
        const uint8_t* ak = a + r * Kp + 4 * kq;
        const int32_t a0 = ak[0], a1 = ak[1], a2 = ak[2], a3 = ak[3];
        const int8_t* b = pn + kq * 4 * kNC;
        for (int j = 0; j < kNC; ++j)
          acc[j] += a0 * b[4 * j] + a1 * b[4 * j + 1] + a2 * b[4 * j + 2] + a3 * b[4 * j + 3];
      }
      for (int j = 0; j < kNC; ++j) out[r][q][j] = acc[j];
    }
}
#endif

// rows [0, mr) x panels [p0, p0 + NP) into C (columns from panel p0 on, ncols in all from C)
template <int MR, int NP, bool Acc>
void block(const QPacked& W, const QRows& q, int64_t m0, int64_t mr, int64_t p0, int64_t cbase,
           int64_t N, float* C, int64_t ldc) {
  const int64_t Kp = W.Kp;
  alignas(64) float accf[MR][NP][kNC];
  alignas(64) int32_t acci[MR][NP][kNC];
  const bool bf = W.precision == Precision::BF16;
  if (bf) {
    const uint16_t* panels[NP];
    for (int t = 0; t < NP; ++t) panels[t] = W.bf16.data() + (p0 + t) * Kp * kNC;
    tile_bf16<MR, NP>(Kp, q.bf.data() + m0 * Kp, panels, accf);
  } else {
    const int8_t* panels[NP];
    for (int t = 0; t < NP; ++t) panels[t] = W.i8.data() + (p0 + t) * Kp * kNC;
    tile_i8<MR, NP>(Kp, q.u8.data() + m0 * Kp, panels, acci);
  }
  for (int t = 0; t < NP; ++t) {
    const int64_t c0 = (p0 + t) * kNC - cbase;  // column of C
    const int64_t w = std::min<int64_t>(kNC, N - c0);
    if (w <= 0) break;
    if (bf)
      store_bf16<Acc>(mr, w, &accf[0][t][0], NP * kNC, C + m0 * ldc + c0, ldc);
    else
      store_i8<Acc>(mr, w, &acci[0][t][0], NP * kNC, q.scale.data() + m0,
               W.scale.data() + (p0 + t) * kNC,
               W.wsum.data() + (p0 + t) * kNC, C + m0 * ldc + c0, ldc);
  }
}

template <bool Acc, int R = 7>
void block_tail(const QPacked& W, const QRows& q, int64_t m0, int64_t mr, int64_t p0,
                int64_t cbase, int64_t N, float* C, int64_t ldc) {
  if constexpr (R >= 1) {
    if (mr == R) block<R, 1, Acc>(W, q, m0, mr, p0, cbase, N, C, ldc);
    else block_tail<Acc, R - 1>(W, q, m0, mr, p0, cbase, N, C, ldc);
  }
}

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AMX_INT8__)
// AMX. Accumulators: 16 x 16 float32 (int32) tiles, a block of 2 x 2 of them (32 rows, one
// panel's 32 columns) held in tile registers 0-3 across the whole depth; per depth step of one
// tile (32 bf16 / 64 int8 of k) the block's two A tiles (16 rows x 64 bytes of the quantized
// rows, registers 4-5) and two B tiles (the panel's column halves: 16 k-pair / k-quad rows x 64
// bytes at the panel's 128-byte row stride, registers 6-7) are loaded once each and feed two
// products each. The weights are read in the layout the dot-product kernels use (lowp.hpp), so
// one packing serves every level. Full blocks are stored straight into C (bf16) or converted
// from one tile-sized buffer (int8: the scales and the weight-sum correction, vectorized).
// Linux grants the tile data state per process on request (cpu/cpu_info.cpp asks before this
// level is chosen); the tile configuration is per thread and is loaded by lowp_begin (the engine
// calls it once per thread at the start of a time loop, so no other library's AMX code can run
// on that thread in between) or, for a standalone product (gemm_lowp), once per call. Reading
// the configuration back to check it (sttilecfg) costs as much as a small product, so it is
// never done. Never released between calls: the next user of the tiles configures them.
struct alignas(64) TileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

void amx_configure() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  // GCC 12 does not see ldtilecfg read the struct and may drop the stores above (seen: a
  // configuration of palette 1 with no rows, then SIGILL at the first tile instruction)
  __asm__ __volatile__("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

// rows [0, mr) and columns [0, w) of a 16 x 32 block (two tiles side by side in `acc`, row
// stride 32) into C
template <bool Acc>
inline void amx_store_i8(int64_t mr, int64_t w, const int32_t* acc, const float* sa,
                         const float* sw, const int32_t* wsum, float* C, int64_t ldc) {
  const __mmask16 m0 = w >= 16 ? __mmask16(0xffff) : __mmask16((1u << w) - 1);
  const __mmask16 m1 = w >= 32 ? __mmask16(0xffff) : w <= 16 ? __mmask16(0)
                                                             : __mmask16((1u << (w - 16)) - 1);
  const __m512 sw0 = _mm512_maskz_loadu_ps(m0, sw), sw1 = _mm512_maskz_loadu_ps(m1, sw + 16);
  const __m512i ws0 = _mm512_maskz_loadu_epi32(m0, wsum);
  const __m512i ws1 = _mm512_maskz_loadu_epi32(m1, wsum + 16);
  for (int64_t r = 0; r < mr; ++r) {
    const __m512 s = _mm512_set1_ps(sa[r]);
    const __m512i a0 = _mm512_sub_epi32(_mm512_load_si512(acc + r * 32), ws0);
    const __m512i a1 = _mm512_sub_epi32(_mm512_load_si512(acc + r * 32 + 16), ws1);
    // float(acc - wsum) * (sa * sw) (+ C), as store_i8 computes it
    __m512 v0 = _mm512_mul_ps(_mm512_cvtepi32_ps(a0), _mm512_mul_ps(s, sw0));
    __m512 v1 = _mm512_mul_ps(_mm512_cvtepi32_ps(a1), _mm512_mul_ps(s, sw1));
    if constexpr (Acc) {
      v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, C + r * ldc), v0);
      v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, C + r * ldc + 16), v1);
    }
    _mm512_mask_storeu_ps(C + r * ldc, m0, v0);
    if (m1) _mm512_mask_storeu_ps(C + r * ldc + 16, m1, v1);
  }
}

// One source of a product: quantized rows and the weight they were quantized for.
struct LowpSrc {
  const QRows* q;
  const QPacked* W;
};

// The depth loop of one block of one source into accumulators 0-3 (RB = 1: 0-1).
template <bool BF, int RB>
inline void amx_depth(const LowpSrc& src, int64_t m0, int64_t p) {
  const QPacked& W = *src.W;
  const int64_t Kp = W.Kp;
  if constexpr (BF) {
    const uint16_t* a = src.q->bf.data() + m0 * Kp;
    const uint16_t* b = W.bf16.data() + p * Kp * kNC;
    for (int64_t k0 = 0; k0 < Kp; k0 += 32) {
      _tile_loadd(4, a + k0, Kp * 2);
      _tile_loadd(6, b + k0 * kNC, 2 * kNC * 2);
      _tile_dpbf16ps(0, 4, 6);
      _tile_loadd(7, b + k0 * kNC + 32, 2 * kNC * 2);
      _tile_dpbf16ps(1, 4, 7);
      if constexpr (RB == 2) {
        _tile_loadd(5, a + 16 * Kp + k0, Kp * 2);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
    }
  } else {
    const uint8_t* a = src.q->u8.data() + m0 * Kp;
    const int8_t* b = W.i8.data() + p * Kp * kNC;
    for (int64_t k0 = 0; k0 < Kp; k0 += 64) {
      _tile_loadd(4, a + k0, Kp);
      _tile_loadd(6, b + k0 * kNC, 4 * kNC);
      _tile_dpbusd(0, 4, 6);
      _tile_loadd(7, b + k0 * kNC + 64, 4 * kNC);
      _tile_dpbusd(1, 4, 7);
      if constexpr (RB == 2) {
        _tile_loadd(5, a + 16 * Kp + k0, Kp);
        _tile_dpbusd(2, 5, 6);
        _tile_dpbusd(3, 5, 7);
      }
    }
  }
}

template <int RB>
inline void amx_zero() {
  _tile_zero(0);
  _tile_zero(1);
  if constexpr (RB == 2) {
    _tile_zero(2);
    _tile_zero(3);
  }
}

// The accumulators of row tile rt (tiles 2 rt and 2 rt + 1: 16 rows x kNC columns) to dst,
// rows ld floats apart (tile numbers are immediates: one branch per row tile)
inline void amx_store_row(int rt, float* dst, int64_t ld) {
  if (rt == 0) {
    _tile_stored(0, dst, ld * 4);
    _tile_stored(1, dst + 16, ld * 4);
  } else {
    _tile_stored(2, dst, ld * 4);
    _tile_stored(3, dst + 16, ld * 4);
  }
}

// One block: RB (1 or 2) row tiles from row m0 x the two halves of panel p, over the depth of
// each source: bf16 sums the sources in the accumulators and stores once; int8 (each source has
// its own scales) stores the first source and adds the second in float32, as store_i8 does.
template <bool BF, int RB>
inline void amx_block(const LowpSrc* src, int nsrc, int64_t M, int64_t m0, int64_t p,
                      int64_t col0, int64_t N, float* C, int64_t ldc) {
  const int64_t c0 = p * kNC - col0, w = std::min<int64_t>(kNC, N - c0);
  alignas(64) float buf[16 * kNC];
  if constexpr (BF) {
    amx_zero<RB>();
    for (int s = 0; s < nsrc; ++s) amx_depth<true, RB>(src[s], m0, p);
    for (int rt = 0; rt < RB; ++rt) {
      const int64_t r0 = m0 + 16 * rt, mr = std::min<int64_t>(16, M - r0);
      if (mr <= 0) break;
      float* dst = C + r0 * ldc + c0;
      if (mr == 16 && w == kNC) {  // straight into C
        amx_store_row(rt, dst, ldc);
        continue;
      }
      amx_store_row(rt, buf, kNC);
      store_bf16<false>(mr, w, buf, kNC, dst, ldc);
    }
  } else {
    for (int s = 0; s < nsrc; ++s) {
      amx_zero<RB>();
      amx_depth<false, RB>(src[s], m0, p);
      const QRows& q = *src[s].q;
      const QPacked& W = *src[s].W;
      for (int rt = 0; rt < RB; ++rt) {
        const int64_t r0 = m0 + 16 * rt, mr = std::min<int64_t>(16, M - r0);
        if (mr <= 0) break;
        amx_store_row(rt, buf, kNC);
        const int32_t* acc = reinterpret_cast<const int32_t*>(buf);
        float* dst = C + r0 * ldc + c0;
        const float* sa = q.scale.data() + r0;
        const float* sw = W.scale.data() + p * kNC;
        const int32_t* ws = W.wsum.data() + p * kNC;
        if (s == 0) amx_store_i8<false>(mr, w, acc, sa, sw, ws, dst, ldc);
        else amx_store_i8<true>(mr, w, acc, sa, sw, ws, dst, ldc);
      }
    }
  }
}

// Panels outer, pairs of row tiles inner (measured the same as the other order).
template <bool BF>
void amx_product_t(const LowpSrc* src, int nsrc, int64_t M, int64_t N, int64_t col0, float* C,
                   int64_t ldc) {
  const int64_t p_first = col0 / kNC, p_last = (col0 + N - 1) / kNC;
  const int64_t row_tiles = (M + 15) / 16;
  for (int64_t p = p_first; p <= p_last; ++p) {
    int64_t rt = 0;
    for (; rt + 2 <= row_tiles; rt += 2)
      amx_block<BF, 2>(src, nsrc, M, rt * 16, p, col0, N, C, ldc);
    if (rt < row_tiles)
      amx_block<BF, 1>(src, nsrc, M, rt * 16, p, col0, N, C, ldc);
  }
}

void amx_product(const LowpSrc* src, int nsrc, int64_t M, int64_t N, int64_t col0, float* C,
                 int64_t ldc) {
  if (src[0].W->precision == Precision::BF16) amx_product_t<true>(src, nsrc, M, N, col0, C, ldc);
  else amx_product_t<false>(src, nsrc, M, N, col0, C, ldc);
}
constexpr int64_t kAmxMinRows = 8;  // fewer rows: the dot-product kernel is as fast
#endif

// The dot-product kernels: C = q W^T, or C += q W^T (Acc)
template <bool Acc>
void dot_product(int64_t N, const QRows& q, const QPacked& W, int64_t col0, float* C,
                 int64_t ldc) {
  const int64_t M = q.M;
  const int64_t p_first = col0 / kNC, p_end = (col0 + N + kNC - 1) / kNC;
  if (M <= 2) {
    // batch-1 streaming: four panels at a time keep enough independent accumulators busy
    int64_t p = p_first;
    for (; p + 4 <= p_end; p += 4)
      for (int64_t m = 0; m < M; ++m) block<1, 4, Acc>(W, q, m, 1, p, col0, N, C, ldc);
    for (; p < p_end; ++p)
      for (int64_t m = 0; m < M; ++m) block<1, 1, Acc>(W, q, m, 1, p, col0, N, C, ldc);
    return;
  }
  for (int64_t p = p_first; p < p_end; ++p) {
    int64_t m = 0;
    for (; m + 8 <= M; m += 8) block<8, 1, Acc>(W, q, m, 8, p, col0, N, C, ldc);
    if (m < M) block_tail<Acc>(W, q, m, M - m, p, col0, N, C, ldc);
  }
}

void check_rows(const QRows& q, const QPacked& W) {
  if (q.precision != W.precision || q.Kp != W.Kp)
    throw Error("gemm_lowp: the rows were quantized for another weight");
}

void gemm_lowp_q(int64_t N, const QRows& q, const QPacked& W, int64_t col0, float* C,
                 int64_t ldc) {
  const int64_t M = q.M;
  if (M <= 0 || N <= 0) return;
  check_rows(q, W);
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AMX_INT8__)
  if (M >= kAmxMinRows) {
    const LowpSrc src{&q, &W};
    amx_product(&src, 1, M, N, col0, C, ldc);  // the caller ran lowp_begin on this thread
    return;
  }
#endif
  dot_product<false>(N, q, W, col0, C, ldc);
}

void gemm_lowp_q2(int64_t N, const QRows& qa, const QPacked& Wa, const QRows& qb,
                  const QPacked& Wb, int64_t col0, float* C, int64_t ldc) {
  const int64_t M = qa.M;
  if (M <= 0 || N <= 0) return;
  check_rows(qa, Wa);
  check_rows(qb, Wb);
  if (qb.M != M || Wa.precision != Wb.precision)
    throw Error("gemm_lowp: the two products differ in rows or precision");
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AMX_INT8__)
  if (M >= kAmxMinRows) {
    const LowpSrc src[2] = {{&qa, &Wa}, {&qb, &Wb}};
    amx_product(src, 2, M, N, col0, C, ldc);  // the caller ran lowp_begin on this thread
    return;
  }
#endif
  dot_product<false>(N, qa, Wa, col0, C, ldc);
  dot_product<true>(N, qb, Wb, col0, C, ldc);
}

void lowp_begin() {
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AMX_INT8__)
  amx_configure();
#endif
}

void quantize_rows(const float* A, int64_t M, int64_t lda, const QPacked& W, QRows& q) {
  quantize_rows_impl(W.precision, M, W.K, W.Kp, A, lda, q);
}

void gemm_lowp(int64_t M, int64_t N, const float* A, int64_t lda, const QPacked& W, int64_t col0,
               float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  thread_local QRows q;
  quantize_rows_impl(W.precision, M, W.K, W.Kp, A, lda, q);
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AMX_INT8__)
  if (M >= kAmxMinRows) amx_configure();
#endif
  gemm_lowp_q(N, q, W, col0, C, ldc);
}

// ---- kernel_bench's low-precision peak --------------------------------------------------------

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AMX_INT8__)
// Four accumulator tiles fed by two A and two B tiles loaded once (zeros): the tile unit's rate.
double lowp_peak_loop(Precision p, int64_t iters) {
  amx_configure();
  alignas(64) static const uint8_t zeros[16 * 64] = {};
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, zeros, 64);
  _tile_loadd(5, zeros, 64);
  _tile_loadd(6, zeros, 64);
  _tile_loadd(7, zeros, 64);
  if (p == Precision::BF16) {
    for (int64_t i = 0; i < iters; ++i) {
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
  } else {
    for (int64_t i = 0; i < iters; ++i) {
      _tile_dpbusd(0, 4, 6);
      _tile_dpbusd(1, 4, 7);
      _tile_dpbusd(2, 5, 6);
      _tile_dpbusd(3, 5, 7);
    }
  }
  alignas(64) float sink[16 * 16];
  _tile_stored(0, sink, 64);
  volatile float keep = sink[0];
  (void)keep;
  // per tile product: 16 x 16 outputs, 32 (bf16) or 64 (int8) multiply-adds each
  return 4.0 * double(iters) * 16 * 16 * (p == Precision::BF16 ? 32 : 64) * 2;
}
#elif defined(__AVX512BF16__) && defined(__AVX512VNNI__)
double lowp_peak_loop(Precision p, int64_t iters) {
  constexpr int kAcc = 24;
  const __m512i a = _mm512_set1_epi32(0x3f803f80), b = _mm512_set1_epi32(0x00010001);
  alignas(64) float sink[16];
  if (p == Precision::BF16) {
    __m512 acc[kAcc];
    for (int i = 0; i < kAcc; ++i) acc[i] = _mm512_setzero_ps();
    for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 24
      for (int i = 0; i < kAcc; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], (__m512bh)a, (__m512bh)b);
    }
    __m512 s = acc[0];
    for (int i = 1; i < kAcc; ++i) s = _mm512_add_ps(s, acc[i]);
    _mm512_storeu_ps(sink, s);
  } else {
    // GCC 12 keeps an array of __m512i accumulators of vpdpbusd partly on the stack (a store
    // and a move per instruction: 200 GOP/s measured on Zen 4, below what the int8 products
    // reached), so the chains are named registers of asm statements: 16 of them, no memory
    __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0,
            c7 = c0, c8 = c0, c9 = c0, c10 = c0, c11 = c0, c12 = c0, c13 = c0, c14 = c0, c15 = c0;
    // eight vpdpbusd, one per chain (an asm statement takes at most 30 operands: two per call)
    auto eight = [&a, &b](__m512i& x0, __m512i& x1, __m512i& x2, __m512i& x3, __m512i& x4,
                          __m512i& x5, __m512i& x6, __m512i& x7) __attribute__((always_inline)) {
      asm volatile(
          "vpdpbusd %[b], %[a], %[c0]\n\tvpdpbusd %[b], %[a], %[c1]\n\t"
          "vpdpbusd %[b], %[a], %[c2]\n\tvpdpbusd %[b], %[a], %[c3]\n\t"
          "vpdpbusd %[b], %[a], %[c4]\n\tvpdpbusd %[b], %[a], %[c5]\n\t"
          "vpdpbusd %[b], %[a], %[c6]\n\tvpdpbusd %[b], %[a], %[c7]"
          : [c0] "+v"(x0), [c1] "+v"(x1), [c2] "+v"(x2), [c3] "+v"(x3), [c4] "+v"(x4),
            [c5] "+v"(x5), [c6] "+v"(x6), [c7] "+v"(x7)
          : [a] "v"(a), [b] "v"(b));
    };
    for (int64_t it = 0; it < iters; ++it) {
      eight(c0, c1, c2, c3, c4, c5, c6, c7);
      eight(c8, c9, c10, c11, c12, c13, c14, c15);
    }
    __m512i s = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c0, c1), c2), c3);
    for (__m512i c : {c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15})
      s = _mm512_add_epi32(s, c);
    _mm512_storeu_si512(sink, s);
  }
  volatile float keep = sink[0];
  (void)keep;
  // per instruction: 16 lanes x 2 (bf16) or 4 (int8) multiply-adds
  return double(p == Precision::BF16 ? kAcc : 16) * double(iters) * 16 *
         (p == Precision::BF16 ? 2 : 4) * 2;
}
#elif defined(FASTLSTM_LOWP_AVX2)
float fma_loop(int64_t iters, double* flops);
// The AVX2 scheme's own instructions (kernels/lowp_avx2.hpp), operands in registers: bf16 is two
// float FMAs per pair, so its peak is the FMA loop's (one bf16 multiply-add per lane and FMA);
// int8 a vpmaddwd (8 lanes x 2 multiply-adds) added into an int32 accumulator.
double lowp_peak_loop(Precision p, int64_t iters) {
  if (p == Precision::BF16) {
    double flops = 0;
    volatile float keep = fma_loop(iters, &flops);
    (void)keep;
    return flops;
  }
  alignas(32) int32_t sink[8];
  {
    constexpr int kI = 8;  // the adds' latency is 1: 8 chains and no register spilled
    __m256i acc[kI];
    for (int i = 0; i < kI; ++i) acc[i] = _mm256_setzero_si256();
    // one vpmaddwd and one vpaddd per 16 multiply-adds, as in the kernel; the empty asm makes
    // each product's operand look new (so the product is not hoisted out of the loop) without
    // adding an instruction or a dependency
    const __m256i a = _mm256_set1_epi32(0x00010001), b = _mm256_set1_epi32(0x00020002);
    for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 8
      for (int i = 0; i < kI; ++i) {
        __m256i x = a;
        asm volatile("" : "+x"(x));
        acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(x, b));
      }
    }
    __m256i s = acc[0];
    for (int i = 1; i < kI; ++i) s = _mm256_add_epi32(s, acc[i]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(sink), s);
  }
  volatile int32_t keep = sink[0];
  (void)keep;
  return 8.0 * double(iters) * 8 * 2 * 2;  // 8 chains x 8 lanes x 2 multiply-adds (2 ops each)
}
#endif

// ---- kernel_bench's FMA peak ---------------------------------------------------------------

// Independent accumulator chains (enough to cover the FMA latency on every port), operands in
// registers, no memory access in the loop: the float32 multiply-add rate of this level's
// vectors (generic: scalar fma, as its kernels run).
float fma_loop(int64_t iters, double* flops) {
  float sink = 0;
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
  using namespace simd;
  constexpr int kAcc = kRegs >= 32 ? 24 : 12;
  V acc[kAcc];
  for (int i = 0; i < kAcc; ++i) acc[i] = zero();
  const float bx = 0.999f, cx = 1e-7f;
  const V b = bcast(&bx), c = bcast(&cx);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 32
    for (int i = 0; i < kAcc; ++i) acc[i] = fmadd(acc[i], b, c);
  }
  alignas(64) float tmp[kW];
  for (int i = 0; i < kAcc; ++i) {
    store(tmp, acc[i]);
    sink += tmp[0];
  }
  *flops = 2.0 * kW * kAcc * double(iters);
#else
  constexpr int kAcc = 8;
  float acc[kAcc] = {};
  const float b = 0.999f;
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 32
    for (int i = 0; i < kAcc; ++i) acc[i] = std::fma(acc[i], b, 1e-7f);
  }
  for (int i = 0; i < kAcc; ++i) sink += acc[i];
  *flops = 2.0 * kAcc * double(iters);
#endif
  return sink;
}

// The read-bandwidth loop of kernel_bench and stream_bench: the sum of p[0, n) read `passes`
// times over (n a multiple of 128). Eight independent vector sums kept in registers, so the
// adds' latency never limits the loads, and one reduction at the end of the call: the time is
// the loads'. (The former loop, one pass per call into 128 partial sums in memory, zeroed them
// with a rep stos and added them up one after the other, some 500 cycles per call: as long as
// the reads of the 16 KB buffer it timed, so its "L1 bandwidth" was a fraction of the real one.)
float read_sum(const float* p, int64_t n, int64_t passes) {
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
  constexpr int kV = simd::kW;
  simd::V s0 = simd::zero(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
  for (int64_t r = 0; r < passes; ++r)
    for (int64_t i = 0; i + 8 * kV <= n; i += 8 * kV) {
      const float* q = p + i;
      s0 = simd::add(s0, simd::load(q));
      s1 = simd::add(s1, simd::load(q + kV));
      s2 = simd::add(s2, simd::load(q + 2 * kV));
      s3 = simd::add(s3, simd::load(q + 3 * kV));
      s4 = simd::add(s4, simd::load(q + 4 * kV));
      s5 = simd::add(s5, simd::load(q + 5 * kV));
      s6 = simd::add(s6, simd::load(q + 6 * kV));
      s7 = simd::add(s7, simd::load(q + 7 * kV));
    }
  s0 = simd::add(simd::add(simd::add(s0, s1), simd::add(s2, s3)),
                 simd::add(simd::add(s4, s5), simd::add(s6, s7)));
  alignas(64) float lanes[kV];
  simd::store(lanes, s0);
  float sum = 0;
  for (int j = 0; j < kV; ++j) sum += lanes[j];
  return sum;
#else
  // baseline: eight scalar chains (SSE2 registers at best); the same structure
  float s[8] = {};
  for (int64_t r = 0; r < passes; ++r)
    for (int64_t i = 0; i + 8 <= n; i += 8)
      for (int j = 0; j < 8; ++j) s[j] += p[i + j];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
#endif
}

}  // namespace

void fill_kernels(KernelTable& t) {
  fill_typed(t.f32);
  fill_typed(t.f64);
  t.gemm_lowp = &gemm_lowp;
  t.quantize_rows = &quantize_rows;
  t.gemm_lowp_q = &gemm_lowp_q;
  t.gemm_lowp_q2 = &gemm_lowp_q2;
  t.lowp_begin = &lowp_begin;
  t.lowp_step_quantize = &lowp_step_quantize;
  t.lowp_step_layer[LstmKind::kIndex] = &lowp_step_layer<LstmCell>;
  t.lowp_step_layer[GruKind::kIndex] = &lowp_step_layer<GruCell>;
#if (defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AMX_INT8__)) || \
    (defined(__AVX512BF16__) && defined(__AVX512VNNI__)) || defined(FASTLSTM_LOWP_AVX2)
  t.lowp_peak_loop = &lowp_peak_loop;
#endif
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
  t.vector_floats = simd::kW;
#else
  t.vector_floats = 1;
#endif
  t.fma_loop = &fma_loop;
  t.read_sum = &read_sum;
}

}  // namespace fastlstm::detail::FASTLSTM_ISA_NS
