// The kernel table: every ISA-dependent function the engine calls, as function pointers filled
// once from the best level this CPU runs (capped by FASTLSTM_CPU). The kernels are compiled once
// per level from kernels/isa_kernels.cpp, each copy in its own namespace
// (fastlstm::detail::generic, ::avx2, ...), so the linker cannot mix them; the engine and
// everything else is compiled for the baseline and never names an ISA.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cells.hpp"
#include "kernels/lowp.hpp"
#include "lowp_step.hpp"
#include "stream.hpp"

namespace fastlstm::detail {

template <typename T>
struct TypedKernels {
  // C[M, N] (+)= A[M, K] B^T over weights packed by pack_panels (kernels/packed_gemm.hpp)
  void (*gemm_packed)(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* packed,
                      T* C, int64_t ldc, bool accumulate) = nullptr;
  // C[M, N] += A^T B (weight gradients), see gemm_atb
  void (*gemm_atb)(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* packed_b,
                   T* C, int64_t ldc, T* work) = nullptr;
  // C1[M, N1] += A^T B1 and C2[M, N2] += A^T B2 with A packed once: each the same bits as
  // its gemm_atb
  void (*gemm_atb2)(int64_t M, int64_t K, const T* A, int64_t lda, int64_t N1,
                    const T* packed_b1, T* C1, int64_t ldc1, int64_t N2, const T* packed_b2,
                    T* C2, int64_t ldc2, T* work) = nullptr;
  // rows of C per gemm_atb call for callers that split M: whole row blocks of this level, at
  // most 256 (work: kKC * (atb_grain + kMaxMR) elements)
  int64_t atb_grain = 0;
  // the gate math of a slice of units, per cell kind (index LstmKind::kIndex, GruKind::kIndex)
  void (*cell_forward[2])(int64_t n, int64_t H, int64_t rs, const CellRow<T>& r) = {};
  void (*cell_backward[2])(int64_t n, int64_t H, const CellGradRow<T>& r) = {};
  // one layer and row of a stream step (kernels/stream_step.hpp), per cell kind and block
  // width ([0]: kStreamU<T> units, [1]: half as many): returns the step function for a layer
  // of hidden size H and state size S (with or without peepholes), picked once when the stream
  // is made (a level may have versions for given sizes; every one gives the same bits)
  typename StreamStep<T>::LayerFn (*stream_layer[2][2])(int64_t H, int64_t S, bool peephole) = {};
};

struct KernelTable {
  const char* level = nullptr;
  int vector_floats = 1;  // floats per vector register of this level's float32 products
  // kernel_bench's FMA peak loop at this level's width: independent float32 multiply-add chains
  // in registers for `iters` rounds; returns a value of the chains (so the loop is not dropped)
  // and the float operations done in *flops
  float (*fma_loop)(int64_t iters, double* flops) = nullptr;
  // kernel_bench's and stream_bench's read-bandwidth loop at this level's width: the sum of
  // p[0, n) read `passes` times over (n a multiple of 128), in independent chains
  float (*read_sum)(const float* p, int64_t n, int64_t passes) = nullptr;
  TypedKernels<float> f32;
  TypedKernels<double> f64;
  // C[M, N] = q(A[M, K]) Wq^T for the columns [col0, col0 + N) of weights quantized by
  // quantize_pack (kernels/lowp.hpp); A's rows are quantized inside (bf16: rounded; int8: per
  // row, dynamic)
  void (*gemm_lowp)(int64_t M, int64_t N, const float* A, int64_t lda, const QPacked& W,
                    int64_t col0, float* C, int64_t ldc) = nullptr;
  // the same in two parts, when the same rows meet several column blocks: quantize A's M rows
  // once for W, then C[M, N] = q Wq^T for columns [col0, col0 + N)
  void (*quantize_rows)(const float* A, int64_t M, int64_t lda, const QPacked& W,
                        QRows& q) = nullptr;
  // (amx level: gemm_lowp_q needs the tile configuration that lowp_begin loads, on the calling
  // thread, with no other AMX code run on that thread since)
  void (*gemm_lowp_q)(int64_t N, const QRows& q, const QPacked& W, int64_t col0, float* C,
                      int64_t ldc) = nullptr;
  // C[M, N] = qa Wa^T + qb Wb^T (the same rows M, the same column order): an LSTM's input and
  // recurrent products of a step in one pass (bf16: summed in the accumulators; int8: each with
  // its own scales, the second added in float32); same thread requirement as gemm_lowp_q
  void (*gemm_lowp_q2)(int64_t N, const QRows& qa, const QPacked& Wa, const QRows& qb,
                       const QPacked& Wb, int64_t col0, float* C, int64_t ldc) = nullptr;
  // kernel_bench's low-precision peak loop: products of operands held in registers (amx: tiles;
  // avx512_bf16: vdpbf16ps / vpdpbusd on vectors) for `iters` rounds; returns the operations
  // done (a multiply-add counts 2). nullptr where the level has no such instructions.
  double (*lowp_peak_loop)(Precision p, int64_t iters) = nullptr;
  // prepares the calling thread for gemm_lowp_q (amx: loads the tile configuration; other
  // levels: nothing); gemm_lowp prepares itself
  void (*lowp_begin)() = nullptr;
  // the low-precision step of one batch row (kernels/stream_step_lowp.hpp, lowp_step.hpp): a
  // row's activations quantized for it (Kp elements: bf16 pairs or u8 quads, *scale: int8's),
  // then per cell kind (LstmKind::kIndex, GruKind::kIndex) a layer's groups [g0, g1): products
  // and cell pass, visited last to first with `reverse`; every level has it (plain loops
  // without AVX512_BF16 / AVX512_VNNI)
  void (*lowp_step_quantize)(Precision p, const float* a, int64_t K, int64_t Kp, uint8_t* dst,
                             float* scale) noexcept = nullptr;
  void (*lowp_step_layer[2])(const LowpStepView& L, const uint8_t* qx, float sx,
                             const uint8_t* qh, float sh, const float* h_prev, float* c,
                             float* h_out, int64_t g0, int64_t g1, bool reverse) noexcept = {};
};

// The table in use; the first call detects the CPU and reads FASTLSTM_CPU (throws
// fastlstm::Error when it names an unknown level or one this CPU or build lacks).
const KernelTable& kernels();

template <typename T>
inline const TypedKernels<T>& typed_kernels() {
  if constexpr (sizeof(T) == 4) return kernels().f32;
  else return kernels().f64;
}

// One per compiled level: fills every entry of the table with that level's kernels.
#define FASTLSTM_DECLARE_LEVEL(ns) \
  namespace ns {                   \
  void fill_kernels(KernelTable& t); \
  }
FASTLSTM_DECLARE_LEVEL(generic)
FASTLSTM_DECLARE_LEVEL(avx2)
FASTLSTM_DECLARE_LEVEL(avx512)
FASTLSTM_DECLARE_LEVEL(avx512_bf16)
FASTLSTM_DECLARE_LEVEL(amx)
#undef FASTLSTM_DECLARE_LEVEL

}  // namespace fastlstm::detail
