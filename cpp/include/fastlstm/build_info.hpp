// fastlstm: how this copy of the library was built.
#pragma once

#include <string>

namespace fastlstm {

struct BuildInfo {
  std::string version;       // the project version (pyproject.toml is the one source)
  std::string compiler;      // e.g. "GNU 12.2.0"
  std::string flags;         // the C++ flags of the build type
  std::string simd;          // instruction sets compiled in, e.g. "AVX512F AVX2 FMA SSE4.2"
  std::string eigen_version; // e.g. "3.4.1"
  std::string build_type;    // e.g. "Release"
};

BuildInfo build_info();

}  // namespace fastlstm
