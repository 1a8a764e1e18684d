// std::vector storage aligned to a cache line, for packed weights that kernels read with full
// SIMD-width loads: with malloc's 16-byte alignment every 64-byte load of a row spans two cache
// lines, which halves the rate at which weights stream from L2 (measured: a [512, 129] float
// matrix-vector product, 4.0 us unaligned vs 2.1 us aligned, on one Sapphire Rapids core).
// Large blocks are also offered transparent huge pages (below).
#pragma once

#include <cstddef>
#include <new>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace fastlstm::detail {

template <typename T, std::size_t Align = 64>
struct AlignedAllocator {
  using value_type = T;
  template <typename U>
  struct rebind {
    using other = AlignedAllocator<U, Align>;
  };
  AlignedAllocator() noexcept = default;
  template <typename U>
  AlignedAllocator(const AlignedAllocator<U, Align>&) noexcept {}
  // Blocks of kHugePage bytes or more (the packed weights of large layers) start on a 2 MB
  // boundary and are marked for transparent huge pages, where the system allows them only on
  // request: a step reads all of W_hh and W_ih, and in 4 KB pages 16 MB of weights are 4096
  // pages, twice what the second-level TLB holds. (Only a hint: without it, 4 KB pages.)
  static constexpr std::size_t kHugePage = std::size_t(1) << 21;
  static constexpr std::size_t align_for(std::size_t bytes) {
    return bytes >= kHugePage && kHugePage > Align ? kHugePage : Align;
  }
  T* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    void* p = ::operator new(bytes, std::align_val_t(align_for(bytes)));
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (bytes >= kHugePage) madvise(p, bytes & ~(kHugePage - 1), MADV_HUGEPAGE);
#endif
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t n) noexcept {
    ::operator delete(p, std::align_val_t(align_for(n * sizeof(T))));
  }
  template <typename U>
  bool operator==(const AlignedAllocator<U, Align>&) const noexcept { return true; }
  template <typename U>
  bool operator!=(const AlignedAllocator<U, Align>&) const noexcept { return false; }
};

template <typename T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

}  // namespace fastlstm::detail
