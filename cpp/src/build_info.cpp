#include "fastlstm/build_info.hpp"

#include <Eigen/Core>

#include <string>

namespace fastlstm {

namespace {
std::string simd_compiled_in() {
  std::string s;
  auto add = [&](const char* name) { s += s.empty() ? name : std::string(" ") + name; };
#ifdef __AVX512F__
  add("AVX512F");
#endif
#ifdef __AVX512BW__
  add("AVX512BW");
#endif
#ifdef __AVX512VL__
  add("AVX512VL");
#endif
#ifdef __AVX2__
  add("AVX2");
#endif
#ifdef __FMA__
  add("FMA");
#endif
#ifdef __AVX__
  add("AVX");
#endif
#ifdef __SSE4_2__
  add("SSE4.2");
#endif
#ifdef __SSE2__
  add("SSE2");
#endif
#ifdef __ARM_NEON
  add("NEON");
#endif
  return s.empty() ? "none" : s;
}
}  // namespace

BuildInfo build_info() {
  BuildInfo b;
  b.version = FASTLSTM_VERSION;
  b.compiler = FASTLSTM_COMPILER;
  b.flags = FASTLSTM_CXX_FLAGS;
  b.build_type = FASTLSTM_BUILD_TYPE;
  b.simd = simd_compiled_in() + " (Eigen uses: " + Eigen::SimdInstructionSetsInUse() + ")";
  b.eigen_version = std::to_string(EIGEN_WORLD_VERSION) + "." +
                    std::to_string(EIGEN_MAJOR_VERSION) + "." +
                    std::to_string(EIGEN_MINOR_VERSION);
  return b;
}

}  // namespace fastlstm
