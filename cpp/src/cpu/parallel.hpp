// The one threading interface of the engine: a persistent pool that runs a region fn(tid, n) on n
// threads (the caller is thread 0), a spinning barrier for the one synchronization per time step,
// and parallel_for over fixed-size chunks (so the split never depends on the thread count).
#pragma once

#include <atomic>
#include <cstdint>
#include <type_traits>
#include <utility>

namespace fastlstm::detail {

// A non-owning reference to a callable: unlike std::function it never allocates (a stream's
// step must not touch the heap), and the callable outlives every call through it here.
template <typename Sig>
class FunctionRef;
template <typename R, typename... Args>
class FunctionRef<R(Args...)> {
 public:
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, FunctionRef>>>
  FunctionRef(F&& f)  // NOLINT: implicit, like std::function
      : obj_(const_cast<void*>(static_cast<const void*>(&f))),
        call_([](void* o, Args... a) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(o))(std::forward<Args>(a)...);
        }) {}
  R operator()(Args... a) const { return call_(obj_, std::forward<Args>(a)...); }

 private:
  void* obj_;
  R (*call_)(void*, Args...);
};

int max_threads();
// The most threads set_num_threads accepts: 4 x the CPUs this process may use.
int thread_limit();

// Runs fn(tid, n) for tid in [0, n) with n == wanted threads (callers pass at most max_threads()), and returns when all are done. A
// call made while the pool is busy (another caller thread), or when no more threads can be
// started, runs with n = 1 on the caller: no oversubscription. Safe in a fork()ed child.
void parallel_region(int wanted, FunctionRef<void(int, int)> fn);

class SpinBarrier {
 public:
  explicit SpinBarrier(int n) : n_(n) {}
  void wait();
  void reset(int n) {  // only while no thread waits
    n_ = n;
    count_.store(0);
  }

 private:
  int n_;
  alignas(64) std::atomic<int> count_{0};
  alignas(64) std::atomic<int> generation_{0};
};

// The least work, in multiply-adds, that is worth a thread of its own. A time step is split over
// n threads only when each gets at least `step` of the step's work (a barrier per step), a
// whole-sequence region only when each gets at least `region` of it (waking the pool's workers,
// which may be asleep, and one wait for the slowest). Below, the caller's thread does it all and
// no other thread is woken. The split never changes the results: every element is the same
// fixed-order chain of multiply-adds whichever thread computes it.
// A time step is also split where each thread gets at least `step_bytes` of the weights the
// step reads: a step of few rows is bound by reading W_hh, which two cores' caches deliver
// about twice as fast as one.
// An inference step of one or two rows inside a sequence call (engine.cpp; not a Stream's
// single step, which would wake the pool at every call) is split from `step_bytes_b1` bytes
// per thread: step_bytes, except on CPUs measured to gain from a finer split (parallel.cpp);
// setting step_bytes sets both.
struct MinThreadWork {
  int64_t step;
  int64_t region;
  int64_t step_bytes = -1;  // < 0 in set_min_thread_work: the default
  int64_t step_bytes_b1 = -1;  // read only: set with step_bytes
};
MinThreadWork min_thread_work();
// Changes them for this process (tests and calibration; values < 0 restore the defaults).
void set_min_thread_work(MinThreadWork w);

// The threads for `work` multiply-adds in `parts` independent parts: each thread gets at least
// `min_per_thread` of the work and at least one part, at most max_threads(), at least 1.
int threads_for(int64_t parts, int64_t work, int64_t min_per_thread);

// fn(begin, end) over [0, n) in chunks of `grain`; chunk boundaries depend only on n and grain.
// With work >= 0 (the multiply-adds of all of [0, n)), at most threads_for(chunks, work,
// min_thread_work().region) threads run it; with work < 0, up to one per chunk. Returns the
// threads it asked for.
int parallel_for(int64_t n, int64_t grain, FunctionRef<void(int64_t, int64_t)> fn,
                  int64_t work = -1);

}  // namespace fastlstm::detail
