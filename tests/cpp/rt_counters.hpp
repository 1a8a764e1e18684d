// Counters for the real-time tests: heap allocations, and the calls through which a thread can
// block or be descheduled (mutexes, condition variables, yields), counted while enabled.
// Include in exactly one translation unit of a test executable: it defines malloc & co.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

// Counts heap allocations while enabled. On glibc, malloc itself is interposed, so Eigen's
// aligned allocations (which call malloc directly) are counted too.
static std::atomic<bool> g_counting{false};
static std::atomic<long> g_allocs{0};

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer) || \
    __has_feature(thread_sanitizer)
#define MT_SANITIZED 1
#endif
#endif

#if defined(MT_SANITIZED)
// sanitizers own the allocator: no counting (the normal build runs the check)
static constexpr bool kCountsAllocations = false;
#elif defined(__GLIBC__)
static constexpr bool kCountsAllocations = true;
extern "C" {
void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);
void* malloc(size_t n) {
  if (g_counting.load(std::memory_order_relaxed)) ++g_allocs;
  return __libc_malloc(n);
}
void* calloc(size_t n, size_t s) {
  if (g_counting.load(std::memory_order_relaxed)) ++g_allocs;
  return __libc_calloc(n, s);
}
void* realloc(void* p, size_t n) {
  if (g_counting.load(std::memory_order_relaxed)) ++g_allocs;
  return __libc_realloc(p, n);
}
void* memalign(size_t a, size_t n) {
  if (g_counting.load(std::memory_order_relaxed)) ++g_allocs;
  return __libc_memalign(a, n);
}
void* aligned_alloc(size_t a, size_t n) { return memalign(a, n); }
int posix_memalign(void** p, size_t a, size_t n) {
  *p = memalign(a, n);
  return *p ? 0 : 12;  // ENOMEM
}
}
#else
// elsewhere only operator new is seen (Eigen's own malloc calls are not)
static constexpr bool kCountsAllocations = true;
void* operator new(std::size_t n) {
  if (g_counting.load(std::memory_order_relaxed)) ++g_allocs;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  if (g_counting.load(std::memory_order_relaxed)) ++g_allocs;
  return std::malloc(n ? n : 1);
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept {
  return operator new(n, t);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
#endif


// ---------------------------------------------------------------- blocking calls
// glibc: the pthread entry points and sched_yield are interposed (std::mutex,
// std::condition_variable and std::this_thread::yield go through them) and forwarded to the
// C library's definitions.
static std::atomic<long> g_blocking{0};
#if !defined(MT_SANITIZED) && defined(__GLIBC__) && defined(__linux__)
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
static constexpr bool kCountsBlockingCalls = true;
template <typename F>
static F rt_next(const char* name, const char* version) {
  void* f = version ? dlvsym(RTLD_NEXT, name, version) : nullptr;
  if (!f) f = dlsym(RTLD_NEXT, name);
  return reinterpret_cast<F>(f);
}
static inline void rt_blocking_call() {
  if (g_counting.load(std::memory_order_relaxed)) ++g_blocking;
}
extern "C" {
int pthread_mutex_lock(pthread_mutex_t* m) {
  rt_blocking_call();
  static auto f = rt_next<int (*)(pthread_mutex_t*)>("pthread_mutex_lock", nullptr);
  return f(m);
}
int pthread_mutex_trylock(pthread_mutex_t* m) {
  rt_blocking_call();
  static auto f = rt_next<int (*)(pthread_mutex_t*)>("pthread_mutex_trylock", nullptr);
  return f(m);
}
int pthread_cond_broadcast(pthread_cond_t* c) {
  rt_blocking_call();
  static auto f = rt_next<int (*)(pthread_cond_t*)>("pthread_cond_broadcast", "GLIBC_2.3.2");
  return f(c);
}
int pthread_cond_signal(pthread_cond_t* c) {
  rt_blocking_call();
  static auto f = rt_next<int (*)(pthread_cond_t*)>("pthread_cond_signal", "GLIBC_2.3.2");
  return f(c);
}
int pthread_cond_wait(pthread_cond_t* c, pthread_mutex_t* m) {
  rt_blocking_call();
  static auto f =
      rt_next<int (*)(pthread_cond_t*, pthread_mutex_t*)>("pthread_cond_wait", "GLIBC_2.3.2");
  return f(c, m);
}
int sched_yield() noexcept {
  rt_blocking_call();
  static auto f = rt_next<int (*)()>("sched_yield", nullptr);
  return f();
}
}
#else
static constexpr bool kCountsBlockingCalls = false;
#endif
