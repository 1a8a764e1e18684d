// A row-major matrix product over raw pointers by Eigen (the model file's Dense layers; the
// recurrent engine uses kernels/packed_gemm.hpp).
#pragma once

#include <Eigen/Core>
#include <cstdint>

namespace fastlstm::detail {

template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using MatMap = Eigen::Map<RowMat<T>, 0, Eigen::OuterStride<>>;
template <typename T>
using CMatMap = Eigen::Map<const RowMat<T>, 0, Eigen::OuterStride<>>;

// C[M, N] (+)= A[M, K] * B[K, N]
template <typename T>
inline void gemm_nn(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                    int64_t ldb, T* C, int64_t ldc, bool accumulate) {
  if (M == 0 || N == 0) return;
  MatMap<T> c(C, M, N, Eigen::OuterStride<>(ldc));
  if (K == 0) {
    if (!accumulate) c.setZero();
    return;
  }
  CMatMap<T> a(A, M, K, Eigen::OuterStride<>(lda));
  CMatMap<T> b(B, K, N, Eigen::OuterStride<>(ldb));
  if (accumulate)
    c.noalias() += a * b;
  else
    c.noalias() = a * b;
}

}  // namespace fastlstm::detail
