// Row-major matrix products over raw pointers (leading dimensions in elements). Eigen does the
// work; these wrappers only give the engine one vocabulary: C (+)= A B^T, A B, A^T B.
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

// C[M, N] (+)= A[M, K] * B[N, K]^T
template <typename T>
inline void gemm_nt(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                    int64_t ldb, T* C, int64_t ldc, bool accumulate) {
  if (M == 0 || N == 0) return;
  MatMap<T> c(C, M, N, Eigen::OuterStride<>(ldc));
  if (K == 0) {
    if (!accumulate) c.setZero();
    return;
  }
  CMatMap<T> a(A, M, K, Eigen::OuterStride<>(lda));
  CMatMap<T> b(B, N, K, Eigen::OuterStride<>(ldb));
  if (accumulate)
    c.noalias() += a * b.transpose();
  else
    c.noalias() = a * b.transpose();
}

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

// C[M, N] (+)= A[K, M]^T * B[K, N]   (K is the long, summed axis: whole-sequence weight gradients)
template <typename T>
inline void gemm_tn(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                    int64_t ldb, T* C, int64_t ldc, bool accumulate) {
  if (M == 0 || N == 0) return;
  MatMap<T> c(C, M, N, Eigen::OuterStride<>(ldc));
  if (K == 0) {
    if (!accumulate) c.setZero();
    return;
  }
  CMatMap<T> a(A, K, M, Eigen::OuterStride<>(lda));
  CMatMap<T> b(B, K, N, Eigen::OuterStride<>(ldb));
  if (accumulate)
    c.noalias() += a.transpose() * b;
  else
    c.noalias() = a.transpose() * b;
}

// y[N] += column sums of A[M, N]
template <typename T>
inline void colsum_acc(int64_t M, int64_t N, const T* A, int64_t lda, T* y) {
  if (M == 0 || N == 0) return;
  CMatMap<T> a(A, M, N, Eigen::OuterStride<>(lda));
  Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>> v(y, N);
  v += a.colwise().sum();
}

}  // namespace fastlstm::detail
