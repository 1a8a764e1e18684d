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
#include "fastlstm/cpu.hpp"
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

  // Strict (elastic = false): fn(tid, n) runs on exactly n threads, for regions whose threads
  // wait on each other (a barrier per time step). Elastic: the region is open to the workers
  // until the caller has finished fn(0, n); a worker that joins before runs fn(k, n) (k: the
  // order it joined in), one that comes later (asleep, or not scheduled on a loaded machine)
  // skips it, and the caller waits only for those that joined. fn must then share its work out
  // dynamically (parallel_for: chunks taken from a counter), never by tid.
  bool try_run(int n, FunctionRef<void(int, int)> fn, bool elastic) {
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
      fn_ = &fn;  // fn lives on the caller's stack until every worker in it is done
      pending_.store(elastic ? 0 : n - 1, std::memory_order_relaxed);
      const uint32_t gen = uint32_t(generation_.load(std::memory_order_relaxed)) + 1;
      entry_.store((uint64_t(gen) << 32) | (elastic ? 0 : kStrict) | (uint64_t(n) << kNShift),
                   std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    fn(0, n);
    int wait_for = 0;  // strict: pending_ counts down to 0
    if (elastic) wait_for = int(entry_.fetch_or(kClosed, std::memory_order_acq_rel) & kCount);
    for (int spins = 0; pending_.load(std::memory_order_acquire) != (elastic ? wait_for : 0);
         ++spins)
      if (spins < 2048) FASTLSTM_PAUSE();
      else std::this_thread::yield();
    return true;
  }

 private:
  // entry_: generation (bits 32-63), kClosed, kStrict, threads n (bits 15-29; thread_limit()
  // is far below 2^15), workers joined (bits 0-14, elastic)
  static constexpr int kNShift = 15;
  static constexpr uint64_t kClosed = uint64_t(1) << 31, kStrict = uint64_t(1) << 30,
                            kCount = (uint64_t(1) << kNShift) - 1;
  static int threads_of(uint64_t e) { return int((e >> kNShift) & kCount); }

  // Elastic region of generation `gen`: joins it unless it is closed, full or over; returns
  // the tid (>= 1), or 0.
  int join(int gen) {
    uint64_t e = entry_.load(std::memory_order_acquire);
    for (;;) {
      if (uint32_t(e >> 32) != uint32_t(gen) || (e & kClosed)) return 0;
      const int joined = int(e & kCount);
      if (joined >= threads_of(e) - 1) return 0;
      if (entry_.compare_exchange_weak(e, e + 1, std::memory_order_acq_rel)) return joined + 1;
    }
  }

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
      const uint64_t e = entry_.load(std::memory_order_acquire);
      if (uint32_t(e >> 32) != uint32_t(now)) continue;  // a later region began meanwhile
      const int n = threads_of(e);
      if (e & kStrict) {
        // the caller waits for all n - 1 workers of a strict region: it is still this one
        if (tid < n) {
          (*fn_)(tid, n);
          pending_.fetch_sub(1, std::memory_order_acq_rel);
        }
      } else if (const int k = join(now)) {
        (*fn_)(k, n);
        pending_.fetch_add(1, std::memory_order_acq_rel);  // elastic: counts up to the joined
      }
    }
  }

  std::mutex busy_, mu_;
  std::condition_variable cv_;
  std::vector<std::thread> workers_;
  const FunctionRef<void(int, int)>* fn_ = nullptr;
  bool stop_ = false;
  std::atomic<int> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> entry_{0};  // the current region (see kNShift)
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
  if (n == 1 || !pool().try_run(n, fn, false)) fn(0, 1);
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

namespace {
// Measured on a 2-core Sapphire Rapids VM shared with other jobs (load 6-12), forward +
// backward of small LSTMs at 1 and 2 threads, interleaved: with both threads running, a barrier
// costs well under 1 us (a batch-1 H=64 step split in two was faster than one thread), but on a
// busy machine a partner thread that is not scheduled stalls every barrier, and splitting steps
// of 0.3M-4M multiply-adds per thread made training 1.2-4x slower than one thread; whole-sequence
// products of 2.5M-10M per thread were slower too (1.2-1.5x), 40M per thread broke even. Steps
// are split at 2M multiply-adds per thread (about 60 us of one core's work), products at 16M
// (about 0.3 ms): the small models of the benchmark's grid (up to B=32, H=128) train on one
// thread, and larger ones keep their threads.
//
// Re-measured on the same machine when quiet (load about 1), forward + backward at 1 and 2
// threads: steps whose weights are small lose when split even at 0.26M multiply-adds per thread
// ((32, 8, 8, 64) 1.35x, (8, 40, 8, 128) 1.16x one thread's time), while a step that reads a
// large W_hh wins at few multiply-adds: batch 1, H = 256 (0.13M per thread, 1 MB of W_hh) ran
// in 0.83x (fwd + bwd) and stream_b1's forward in 0.58x. Hence the third threshold: a step is
// also split where each thread reads at least 256 KB of weights.
//
// AMD Zen 4 (2-core VM, quiet, 2026-12-02), forward + backward at 1 and 2 threads, medians of
// 25 calls, two rounds: with the steps split at 0.5M multiply-adds per thread, (32, 40, 8, 128)
// took 5.1-5.5 ms against 7.3-8.1 split at 2M and 8.4-9.0 on one thread, (32, 8, 8, 128) 1.11
// against 1.36 (PyTorch at 2 threads: 4.7 and 1.4 ms); split at 0.25M, (32, 8, 8, 64) lost 5%.
// So on AMD CPUs with AVX-512 (Zen 4 and later) steps are split at 2^19; on the Intel VMs at
// 2^21 (not re-measured at lower thresholds); Zen 3 below.
//
// Batch-1 inference on the same Zen 4 (1000 steps, medians of 15 calls, two rounds, ms, 1
// thread -> 2 threads split at 32 KB of weights per thread): float32 I=64 H=128 3.9 -> 2.7-2.9,
// I=64 H=64 1.3-1.55 -> 1.0; int8 I=64 H=256 4.3-5.3 -> 2.6-3.3 (its 328 KB were below the 512
// KB that splits at 256 KB per thread), bf16 I=64 H=128 2.4 -> 1.5-1.7. Training steps did not
// gain from that byte threshold ((32, 8, 8, 64) 0.46 -> 0.50-0.76 ms), so it is for inference
// steps of one or two rows only.
//
// AMD Zen 3 (2-core VM, AVX2 only, shared with other tenants, 2026-12-02), forward + backward
// at 2 threads, thresholds alternated in one process, medians of 9-15 rounds of the best of 7
// calls, time against the split at 2^21: at 2^18 (32, 40, 8, 64) 0.74-0.77, (32, 8, 8, 128)
// 0.74-0.76, (8, 40, 8, 128) 0.74, (8, 8, 8, 128) 0.82-0.85, (32, 8, 8, 64) 0.87-0.90; at 2^19
// only (32, 8, 8, 128) gained (0.74). Seven other shapes stayed within 0.98-1.01; (8, 40, 8,
// 64) measured 1.03 and 1.07 in two runs (at 2^17 1.04), (1, 40, 8, 128) 1.13 and 0.96. A core
// of half Zen 4's vector width takes twice as long for the same multiply-adds, so a split pays
// from half the work: AMD CPUs without AVX-512 split steps at 2^18. Batch-1 inference (300
// steps, medians of 9 rounds) at 32 KB of weights per thread against the default: int8 I=64
// H=256 0.57, float32 I=64 H=128 0.68, I=64 H=64 0.82, int8 I=64 H=128 0.78 (float32 and bf16
// at H = 256 were split already): the 32 KB byte threshold holds for every AMD CPU.
constexpr MinThreadWork kDefaultMinWork{int64_t(1) << 21, int64_t(1) << 24, int64_t(1) << 18};
struct CpuDefaults {
  int64_t step = kDefaultMinWork.step;
  int64_t step_bytes_b1 = kDefaultMinWork.step_bytes;
};
const CpuDefaults& cpu_defaults() {
  static const CpuDefaults d = [] {
    CpuDefaults r;
    try {
      const CpuInfo info = fastlstm::cpu_info();
      const bool avx512 = std::find(info.features.begin(), info.features.end(), "avx512f") !=
                          info.features.end();
      if (info.vendor == "AuthenticAMD") {
        r.step = int64_t(1) << (avx512 ? 19 : 18);
        r.step_bytes_b1 = int64_t(1) << 15;
      }
    } catch (...) {
    }
    return r;
  }();
  return d;
}
std::atomic<int64_t> g_min_step{-1};  // < 0: the CPU's default
std::atomic<int64_t> g_min_region{kDefaultMinWork.region};
std::atomic<int64_t> g_min_step_bytes{-1};  // < 0: the default (and the CPU's for b1)
}  // namespace

MinThreadWork min_thread_work() {
  const int64_t step = g_min_step.load(std::memory_order_relaxed);
  const int64_t bytes = g_min_step_bytes.load(std::memory_order_relaxed);
  const CpuDefaults& d = cpu_defaults();
  return {step < 0 ? d.step : step, g_min_region.load(std::memory_order_relaxed),
          bytes < 0 ? kDefaultMinWork.step_bytes : bytes, bytes < 0 ? d.step_bytes_b1 : bytes};
}

void set_min_thread_work(MinThreadWork w) {
  g_min_step.store(w.step < 0 ? -1 : w.step, std::memory_order_relaxed);
  g_min_region.store(w.region < 0 ? kDefaultMinWork.region : w.region,
                     std::memory_order_relaxed);
  g_min_step_bytes.store(w.step_bytes < 0 ? -1 : w.step_bytes, std::memory_order_relaxed);
}

int threads_for(int64_t parts, int64_t work, int64_t min_per_thread) {
  int64_t n = std::min<int64_t>(parts, max_threads());
  if (min_per_thread > 0) n = std::min(n, work / min_per_thread);
  return int(std::max<int64_t>(1, n));
}

int parallel_for(int64_t n, int64_t grain, FunctionRef<void(int64_t, int64_t)> fn,
                 int64_t work) {
  const int64_t chunks = (n + grain - 1) / grain;
  if (chunks <= 0) return 1;
  const int want = work < 0 ? int(std::min<int64_t>(chunks, max_threads()))
                            : threads_for(chunks, work, min_thread_work().region);
  // chunks are taken from a counter by whichever threads are running (an elastic region): a
  // worker that is asleep or not scheduled delays nothing
  std::atomic<int64_t> next{0};
  auto body = [&](int, int) {
    for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < chunks;)
      fn(c * grain, std::min(n, (c + 1) * grain));
  };
  const int nt = std::max(1, std::min(want, thread_limit()));
  if (nt == 1 || !pool().try_run(nt, body, true)) body(0, 1);  // one thread: no region, no lock
  return want;
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
