"""fastlstm: a fast CPU LSTM/GRU engine (C++/Eigen) with forward and backward.

PyTorch-shaped modules :class:`LSTM` and :class:`GRU` on NumPy arrays, a pure-NumPy oracle in
:mod:`fastlstm.reference`, and a C++ API for embedding (see ``cmake_prefix_path``).
"""

from importlib.metadata import PackageNotFoundError, version as _version
import os as _os

from . import _core
from .rnn import GRU, LSTM, LSTMStream

try:
    __version__ = _version("fastlstm")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = _core.build_info()["version"]

#: where the pip-installed package keeps its C++ headers, static library and CMake config:
#: ``cmake -DCMAKE_PREFIX_PATH=$(python -c "import fastlstm; print(fastlstm.cmake_prefix_path)")``
cmake_prefix_path = _os.path.join(_os.path.dirname(__file__), "lib", "cmake")


def build_info():
    """How the C++ core was built: version, compiler, flags, SIMD sets, Eigen version."""
    return dict(_core.build_info())


__all__ = ["LSTM", "GRU", "LSTMStream", "build_info", "cmake_prefix_path", "__version__"]
