#include "cpu/parallel.hpp"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define FASTLSTM_PAUSE() _mm_pause()
#else
#define FASTLSTM_PAUSE() std::this_thread::yield()
#endif

#include "fastlstm/config.hpp"
#include "fastlstm/threads.hpp"

namespace fastlstm {
namespace detail {
namespace {

int env_threads(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return 0;
  char* end = nullptr;
  long n = std::strtol(v, &end, 10);
  return (end && *end == '\0' && n > 0 && n < 4096) ? int(n) : 0;
}

int default_threads() {
  if (int n = env_threads("FASTLSTM_NUM_THREADS")) return n;
  if (int n = env_threads("OMP_NUM_THREADS")) return n;
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  return std::max(1u, std::thread::hardware_concurrency());
}

std::atomic<int> g_threads{0};

// Workers spin briefly after a region (back-to-back calls, e.g. a stream's steps, find them
// awake), then sleep on a condition variable.
class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      ++generation_;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  bool try_run(int n, FunctionRef<void(int, int)> fn) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    while (int(workers_.size()) < n - 1) {
      const int tid = int(workers_.size()) + 1;
      // the worker must wait for the generation after this one, whenever it starts running
      const int seen = generation_.load(std::memory_order_acquire);
      workers_.emplace_back([this, tid, seen] { loop(tid, seen); });
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      fn_ = &fn;  // fn lives on the caller's stack until every worker is done
      n_ = n;
      pending_.store(n - 1, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    fn(0, n);
    for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins)
      if (spins < 2048) FASTLSTM_PAUSE();
      else std::this_thread::yield();
    return true;
  }

 private:
  void loop(int tid, int seen) {
    for (;;) {
      auto start = std::chrono::steady_clock::now();
      int spins = 0, now;
      while ((now = generation_.load(std::memory_order_acquire)) == seen) {
        FASTLSTM_PAUSE();
        if (++spins % 256 == 0 &&
            std::chrono::steady_clock::now() - start > std::chrono::microseconds(100)) {
          std::unique_lock<std::mutex> lock(mu_);
          cv_.wait(lock, [&] { return generation_.load() != seen; });
        }
      }
      seen = now;
      if (stop_) return;
      if (tid < n_) {
        (*fn_)(tid, n_);
        pending_.fetch_sub(1, std::memory_order_acq_rel);
      }
    }
  }

  std::mutex busy_, mu_;
  std::condition_variable cv_;
  std::vector<std::thread> workers_;
  const FunctionRef<void(int, int)>* fn_ = nullptr;
  int n_ = 0;
  bool stop_ = false;
  std::atomic<int> generation_{0};
  std::atomic<int> pending_{0};
};

Pool& pool() {
  static Pool p;
  return p;
}

}  // namespace

int max_threads() {
  int n = g_threads.load(std::memory_order_relaxed);
  if (n == 0) {
    n = default_threads();
    g_threads.store(n, std::memory_order_relaxed);
  }
  return n;
}

void parallel_region(int wanted, FunctionRef<void(int, int)> fn) {
  const int n = std::max(1, std::min(wanted, max_threads()));
  if (n == 1 || !pool().try_run(n, fn)) fn(0, 1);
}

void SpinBarrier::wait() {
  if (n_ == 1) return;
  const int gen = generation_.load(std::memory_order_acquire);
  if (count_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
    count_.store(0, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    return;
  }
  for (int spins = 0; generation_.load(std::memory_order_acquire) == gen; ++spins)
    if (spins < 2048) FASTLSTM_PAUSE();
    else std::this_thread::yield();
}

void parallel_for(int64_t n, int64_t grain, FunctionRef<void(int64_t, int64_t)> fn) {
  const int64_t chunks = (n + grain - 1) / grain;
  if (chunks <= 0) return;
  parallel_region(int(std::min<int64_t>(chunks, max_threads())), [&](int tid, int nt) {
    for (int64_t c = tid; c < chunks; c += nt) fn(c * grain, std::min(n, (c + 1) * grain));
  });
}

}  // namespace detail

void set_num_threads(int n) {
  if (n < 1) throw Error("num_threads must be >= 1, got " + std::to_string(n));
  detail::g_threads.store(n, std::memory_order_relaxed);
}

int get_num_threads() { return detail::max_threads(); }

}  // namespace fastlstm
