"""Configures, builds and runs the C++ tests (ctest) from pytest, so the README's one test
command covers them. Needs CMake, Ninja and Eigen (cmeel-eigen): all in the 'test' extra."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool(name):
    path = shutil.which(name)
    if path is None:
        # the test extra installs cmake/ninja into the running interpreter's environment
        cand = os.path.join(os.path.dirname(sys.executable), name)
        path = cand if os.path.exists(cand) else None
    assert path is not None, f"{name} not found: install the test extra (pip install '.[test]')"
    return path


@pytest.fixture(scope="session")
def cpp_build(tmp_path_factory):
    build = tmp_path_factory.mktemp("cpp-build")
    cmake = _tool("cmake")
    cfg = [cmake, "-S", ROOT, "-B", str(build), "-G", "Ninja",
           f"-DCMAKE_MAKE_PROGRAM={_tool('ninja')}", "-DFASTLSTM_BUILD_TESTS=ON",
           "-DFASTLSTM_BUILD_PYTHON=OFF", f"-DPython_EXECUTABLE={sys.executable}"]
    r = subprocess.run(cfg, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([cmake, "--build", str(build), "-j2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-5000:]
    return build


def test_ctest(cpp_build):
    ctest = _tool("ctest")
    r = subprocess.run([ctest, "--output-on-failure"], cwd=cpp_build, capture_output=True,
                       text=True)
    print(r.stdout)
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-2000:]
    assert "tests passed" in r.stdout
