"""Configures, builds and runs the C++ tests (ctest) from pytest, so the README's one test
command covers them. Needs CMake, Ninja and Eigen (cmeel-eigen): all in the 'test' extra."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def cpp_build(tmp_path_factory, tool):
    build = tmp_path_factory.mktemp("cpp-build")
    cmake = tool("cmake")
    cfg = [cmake, "-S", ROOT, "-B", str(build), "-G", "Ninja",
           f"-DCMAKE_MAKE_PROGRAM={tool('ninja')}", "-DFASTLSTM_BUILD_TESTS=ON",
           "-DFASTLSTM_BUILD_PYTHON=OFF", f"-DPython_EXECUTABLE={sys.executable}"]
    r = subprocess.run(cfg, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([cmake, "--build", str(build), "-j2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-5000:]
    return build


def test_ctest(cpp_build, tool):
    ctest = tool("ctest")
    r = subprocess.run([ctest, "--output-on-failure"], cwd=cpp_build, capture_output=True,
                       text=True)
    print(r.stdout)
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-2000:]
    assert "tests passed" in r.stdout


CONSUMER_CMAKE = """cmake_minimum_required(VERSION 3.18)
project(consumer LANGUAGES CXX)
set(FASTLSTM_BUILD_PYTHON OFF CACHE BOOL "" FORCE)
add_subdirectory({root} fastlstm-build)
add_executable(consumer main.cpp)
target_link_libraries(consumer PRIVATE fastlstm::fastlstm)
"""

CONSUMER_MAIN = """#include <fastlstm/fastlstm.hpp>
#include <cstdio>
int main(int argc, char** argv) {
  auto model = fastlstm::Model::load(argv[1], /*verify=*/true);  // runs the stored self-check
  std::printf("verified %s\\n", argv[1]);
  try {
    fastlstm::Model::load(argv[2]);
  } catch (const fastlstm::Error& e) {
    std::printf("refused: %s\\n", e.what());
    return 0;
  }
  return 1;
}
"""


def test_add_subdirectory_consumer(tmp_path, tool):
    """A C++ app that vendors fastlstm with add_subdirectory() builds, links fastlstm::fastlstm,
    loads a model file with its self-check, and gets a fastlstm::Error for a missing file; its
    build type stays its own (fastlstm does not force Release on it)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "CMakeLists.txt").write_text(CONSUMER_CMAKE.format(root=ROOT.replace("\\", "/")))
    (src / "main.cpp").write_text(CONSUMER_MAIN)
    build = tmp_path / "build"
    cmake = tool("cmake")
    r = subprocess.run([cmake, "-S", str(src), "-B", str(build), "-G", "Ninja",
                        f"-DCMAKE_MAKE_PROGRAM={tool('ninja')}",
                        f"-DPython_EXECUTABLE={sys.executable}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # the parent project chooses the build type: fastlstm sets its default only as top level
    cache = (build / "CMakeCache.txt").read_text()
    assert "CMAKE_BUILD_TYPE:STRING=\n" in cache, [
        line for line in cache.splitlines() if line.startswith("CMAKE_BUILD_TYPE")]
    r = subprocess.run([cmake, "--build", str(build), "-j2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-5000:]
    model = os.path.join(ROOT, "tests", "data", "cpp", "lstm_stacked_bidir_proj.safetensors")
    r = subprocess.run([str(build / "consumer"), model, str(tmp_path / "missing.safetensors")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verified" in r.stdout and "refused:" in r.stdout and "missing" in r.stdout
