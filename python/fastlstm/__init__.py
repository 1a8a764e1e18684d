"""fastlstm: a fast CPU LSTM/GRU engine (C++/Eigen) with forward and backward.

PyTorch-shaped modules :class:`LSTM`, :class:`GRU` and :class:`Linear` on NumPy arrays (the
optimizers of :mod:`fastlstm.optim` take them: ``optim.Adam(params=[lstm, head])``), Keras-shaped
models, a pure-NumPy oracle in :mod:`fastlstm.reference`, and a C++ API for embedding (see
``cmake_prefix_path``).
"""

from importlib.metadata import PackageNotFoundError, version as _version
import os as _os

from . import _core, _threadpool
from .nn import Linear
from .rnn import GRU, LSTM, LSTMStream, Stream
from . import optim
from . import io
from . import callbacks, initializers, losses, metrics, optimizers, regularizers, utils
from .io import from_keras, from_onnx, from_torch, load, load_model, save, save_model
from .layers import Input
from .models import Model, Sequential, set_seed

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


def cpu_info():
    """The CPU and the kernels chosen for it: a dict with ``vendor``, ``model``, ``features``
    (the relevant instruction sets this CPU and OS support), ``levels`` (the kernel levels
    compiled in that this CPU runs, lowest first: generic, avx2, avx512, avx512_bf16, amx) and
    ``level`` (the one in use; ``FASTLSTM_CPU=<level>`` in the environment caps it)."""
    return dict(_core.cpu_info())


def set_num_threads(n):
    """Threads the engine uses per call (default: FASTLSTM_NUM_THREADS, else OMP_NUM_THREADS,
    else :func:`available_cpus`). ``n`` must be in ``[1, 4 * available_cpus()]``. Results are
    bitwise identical for any count. Safe while other threads run the engine: their running
    parallel region keeps its count, the next one uses ``n``. threadpoolctl's
    ``threadpool_limits`` drives the same setting."""
    import operator

    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an int, got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    cpus = _core.available_cpus()
    if n > 4 * cpus:
        raise ValueError(f"n must be at most {4 * cpus} (4 x the {cpus} CPUs this process may "
                         f"use), got {n}")
    _core.set_num_threads(n)


def get_num_threads():
    """Threads the engine uses per call."""
    return _core.get_num_threads()


def available_cpus():
    """CPUs this process may use: its affinity mask and its cgroup's CPU quota (rounded up)."""
    return _core.available_cpus()


_threadpool.register()


def __getattr__(name):
    # the optional integrations load on first use (their extras may be absent)
    if name in ("distributed", "dask"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LSTM", "GRU", "Linear", "Stream", "LSTMStream", "optim", "Sequential", "Model", "Input",
    "set_seed", "set_num_threads", "get_num_threads", "available_cpus", "save", "save_model",
    "load", "load_model", "from_torch", "from_keras", "from_onnx", "io", "build_info", "cpu_info",
    "cmake_prefix_path", "__version__", "callbacks", "initializers", "losses", "metrics",
    "optimizers", "regularizers", "utils",
]
