// fastlstm: the engine's thread count (one persistent pool for the whole process).
#pragma once

namespace fastlstm {

// Threads the engine uses per call. Default: FASTLSTM_NUM_THREADS, else OMP_NUM_THREADS (its
// first entry), else available_cpus(); an environment value above the limit is clamped to it.
// n must be in [1, 4 * available_cpus()], else fastlstm::Error. Results are bitwise identical
// for any n. Safe to call while other threads run the engine: a running parallel region keeps
// its thread count, the next one uses n.
void set_num_threads(int n);
int get_num_threads();

// CPUs this process may use: its affinity mask, and the cgroup CPU quota (rounded up) where one
// is set (containers, batch schedulers).
int available_cpus();

}  // namespace fastlstm
