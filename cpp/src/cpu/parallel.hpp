// The one threading interface of the engine: a persistent pool that runs a region fn(tid, n) on n
// threads (the caller is thread 0), a spinning barrier for the one synchronization per time step,
// and parallel_for over fixed-size chunks (so the split never depends on the thread count).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>

namespace fastlstm::detail {

int max_threads();

// Runs fn(tid, n) for tid in [0, n) with n <= wanted threads, and returns when all are done. A
// call made while the pool is busy (another caller thread) runs with n = 1 on the caller: no
// oversubscription.
void parallel_region(int wanted, const std::function<void(int, int)>& fn);

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

// fn(begin, end) over [0, n) in chunks of `grain`; chunk boundaries depend only on n and grain.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace fastlstm::detail
