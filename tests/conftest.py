"""Helpers shared by the test files, as fixtures."""

import os
import shutil
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool(name):
    path = shutil.which(name)
    if path is None:
        # the test extra installs cmake/ninja into the running interpreter's environment
        cand = os.path.join(os.path.dirname(sys.executable), name)
        path = cand if os.path.exists(cand) else None
    assert path is not None, f"{name} not found: install the test extra (pip install '.[test]')"
    return path


@pytest.fixture(scope="session")
def repo_root():
    """The repository's root directory (the C++ sources, examples and fixtures live there)."""
    return _ROOT


@pytest.fixture(scope="session")
def tool():
    """``tool("cmake")``: the path of a build tool from PATH or the interpreter's environment
    (where the test extra installs cmake and ninja); fails the test, naming the extra, if
    neither has it."""
    return _tool
