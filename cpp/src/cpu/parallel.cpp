#include "cpu/parallel.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <system_error>
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
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
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

// A positive integer from the environment, else 0. OMP_NUM_THREADS may be a list for nested
// levels ("4,2"): its first entry counts.
int env_threads(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return 0;
  char* end = nullptr;
  long n = std::strtol(v, &end, 10);
  if (!end || (*end != '\0' && *end != ',') || n <= 0) return 0;
  return int(std::min<long>(n, 1 << 20));
}

#if defined(__linux__)
// CPUs' worth of the cgroup's CPU quota (v2 cpu.max, v1 cfs_quota_us / cfs_period_us),
// rounded up, taking the smallest along the path to the root; 0 when there is no quota.
// Containers and batch schedulers limit CPUs this way without changing the affinity mask.
int quota_cpus(const std::string& quota_file, const std::string& period_file) {
  std::ifstream q(quota_file);
  std::string a, b;
  if (!(q >> a)) return 0;
  if (a == "max" || a == "-1") return 0;
  if (period_file.empty()) {
    if (!(q >> b)) return 0;
  } else {
    std::ifstream pf(period_file);
    if (!(pf >> b)) return 0;
  }
  char* e1 = nullptr;
  char* e2 = nullptr;
  const double quota = std::strtod(a.c_str(), &e1), period = std::strtod(b.c_str(), &e2);
  if (*e1 || *e2 || quota <= 0 || period <= 0) return 0;
  return std::max(1, int(std::ceil(quota / period)));
}

int cgroup_cpus() {
  std::ifstream f("/proc/self/cgroup");
  std::string line;
  int best = 0;
  auto take = [&](int n) {
    if (n > 0 && (best == 0 || n < best)) best = n;
  };
  while (std::getline(f, line)) {
    // "hierarchy-id:controllers:path"; v2 is "0::path"
    const auto c1 = line.find(':'), c2 = line.find(':', c1 + 1);
    if (c1 == std::string::npos || c2 == std::string::npos) continue;
    const std::string ctrl = line.substr(c1 + 1, c2 - c1 - 1);
    std::string path = line.substr(c2 + 1);
    for (;;) {
      if (ctrl.empty()) {
        take(quota_cpus("/sys/fs/cgroup" + path + "/cpu.max", ""));
      } else if (ctrl.find("cpu") != std::string::npos) {
        for (const char* dir : {"/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu"})
          take(quota_cpus(std::string(dir) + path + "/cpu.cfs_quota_us",
                          std::string(dir) + path + "/cpu.cfs_period_us"));
      }
      if (path.empty() || path == "/") break;
      const auto slash = path.find_last_of('/');
      path = slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
    }
  }
  return best;
}
#endif

int available_cpus() {
  int n = int(std::max(1u, std::thread::hardware_concurrency()));
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) n = CPU_COUNT(&set);
  if (const int q = cgroup_cpus()) n = std::min(n, q);
#endif
  return n;
}

int cpus() {
  static const int n = available_cpus();
  return n;
}

int default_threads() {
  int n = env_threads("FASTLSTM_NUM_THREADS");
  if (!n) n = env_threads("OMP_NUM_THREADS");
  if (!n) n = cpus();
  return std::min(n, thread_limit());
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
    try {
      while (int(workers_.size()) < n - 1) {
        const int tid = int(workers_.size()) + 1;
        // the worker must wait for the generation after this one, whenever it starts running
        const int seen = generation_.load(std::memory_order_acquire);
        workers_.emplace_back([this, tid, seen] { loop(tid, seen); });
      }
    } catch (const std::system_error&) {
      return false;  // no more threads to be had (ulimit, memory): the caller runs alone
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

// The pool is created on first use. A fork()ed child has only the forking thread: the parent's
// workers do not exist there and the pool's locks and counters are in whatever state they were,
// so the child abandons that pool (its memory is leaked on purpose: destroying it would join
// threads that are not there) and makes a fresh one on its next parallel region.
std::mutex g_pool_mu;
std::atomic<Pool*> g_pool{nullptr};

void before_fork() { g_pool_mu.lock(); }  // no pool is being created while the process forks
void after_fork_parent() { g_pool_mu.unlock(); }
void after_fork_child() {
  g_pool.store(nullptr, std::memory_order_relaxed);
  g_pool_mu.unlock();  // held by this thread since before_fork
}

struct PoolOwner {  // joins the workers at exit
  ~PoolOwner() { delete g_pool.exchange(nullptr); }
} g_pool_owner;

Pool& pool() {
  if (Pool* p = g_pool.load(std::memory_order_acquire)) return *p;
  std::lock_guard<std::mutex> lock(g_pool_mu);
  if (!g_pool.load(std::memory_order_relaxed)) {
#if defined(__unix__) || defined(__APPLE__)
    static const bool registered =
        pthread_atfork(before_fork, after_fork_parent, after_fork_child) == 0;
    (void)registered;
#endif
    g_pool.store(new Pool, std::memory_order_release);
  }
  return *g_pool.load(std::memory_order_relaxed);
}

}  // namespace

int thread_limit() { return 4 * cpus(); }

int max_threads() {
  int n = g_threads.load(std::memory_order_relaxed);
  if (n == 0) {
    n = default_threads();
    g_threads.store(n, std::memory_order_relaxed);
  }
  return n;
}

void parallel_region(int wanted, FunctionRef<void(int, int)> fn) {
  // n is `wanted` or 1, never in between: the caller sized its barrier and per-thread buffers
  // for `wanted` (from max_threads() when it started), so a set_num_threads() from another
  // thread meanwhile takes effect at the next region, not in the middle of this one.
  const int n = std::max(1, std::min(wanted, thread_limit()));
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
  const int limit = detail::thread_limit();
  if (n < 1 || n > limit)
    throw Error("num_threads must be between 1 and " + std::to_string(limit) + " (4 x the " +
                std::to_string(limit / 4) + " CPUs this process may use), got " +
                std::to_string(n));
  detail::g_threads.store(n, std::memory_order_relaxed);
}

int get_num_threads() { return detail::max_threads(); }

int available_cpus() { return detail::cpus(); }

}  // namespace fastlstm
