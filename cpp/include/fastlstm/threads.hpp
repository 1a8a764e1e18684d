// fastlstm: the engine's thread count (one persistent pool for the whole process).
#pragma once

namespace fastlstm {

// Threads the engine uses per call. Default: FASTLSTM_NUM_THREADS, else OMP_NUM_THREADS, else the
// CPUs in this process's affinity mask. n >= 1; results are bitwise identical for any n.
void set_num_threads(int n);
int get_num_threads();

}  // namespace fastlstm
