"""fastlstm: a fast CPU LSTM/GRU engine (C++/Eigen) with forward and backward.

PyTorch-shaped modules :class:`LSTM`, :class:`GRU` and :class:`Linear` on NumPy arrays (the
optimizers of :mod:`fastlstm.optim` take them: ``optim.Adam(params=[lstm, head])``), Keras-shaped
models, a pure-NumPy oracle in :mod:`fastlstm.reference`, and a C++ API for embedding (see
``cmake_prefix_path``).
"""

from importlib.metadata import PackageNotFoundError, version as _version
import os as _os

from . import _core
from .nn import Linear
from .rnn import GRU, LSTM, LSTMStream, Stream
from . import optim
from . import io
from .io import from_keras, from_onnx, from_torch, load, load_model, save, save_model
from .models import Sequential, set_seed

try:
    __version__ = _version("fastlstm")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = _core.build_info()["version"]

#: where the pip-installed package keeps its C++ headers, static library and CMake config:
#: ``cmake -DCMAKE_PREFIX_PATH=$(python -c "import fastlstm; print(fastlstm.cmake_prefix_path)")``
#: (the C++ files are installed beside the compiled extension, which an editable install keeps
#: in site-packages while the Python files stay in the source tree)
cmake_prefix_path = _os.path.join(_os.path.dirname(_core.__file__), "lib", "cmake")


def build_info():
    """How the C++ core was built: version, compiler, flags, SIMD sets, Eigen version."""
    info = dict(_core.build_info())
    info["num_threads"] = _core.get_num_threads()
    return info


def set_num_threads(n):
    """Threads the engine uses per call (default: the CPUs available to this process, or
    FASTLSTM_NUM_THREADS / OMP_NUM_THREADS). Results are bitwise identical for any count."""
    import operator

    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an int, got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _core.set_num_threads(n)


def get_num_threads():
    """Threads the engine uses per call."""
    return _core.get_num_threads()


__all__ = [
    "LSTM", "GRU", "Linear", "Stream", "LSTMStream", "optim", "Sequential", "set_seed", "set_num_threads",
    "get_num_threads", "save", "save_model", "load", "load_model", "from_torch", "from_keras", "from_onnx", "io", "build_info",
    "cmake_prefix_path", "__version__",
]
