"""The engine's parameter names (PyTorch's) at the import/export edge: loading named arrays into
a module all-or-nothing, and the gate-order permutations between PyTorch, Keras and ONNX."""

from __future__ import annotations

import numpy as np

__all__ = []


def _float_dtype(dtype, sample):
    if dtype is not None:
        return np.dtype(dtype).name
    return "float64" if np.asarray(sample).dtype == np.float64 else "float32"


def _load_params(module, params, prefix="", source="state_dict"):
    """Shape-checks every tensor against ``module.params`` (names must match exactly), then
    copies; nothing is written unless everything fits."""
    missing = [n for n in module.params if n not in params]
    unexpected = [n for n in params if n not in module.params]
    if missing:
        raise ValueError(f"{source} is missing {[prefix + n for n in missing]}")
    if unexpected:
        raise ValueError(f"{source} has unexpected tensors {[prefix + n for n in unexpected]} "
                         f"for {module!r}")
    staged = {}
    for name, target in module.params.items():
        arr = np.asarray(params[name])
        if arr.dtype.kind not in "fiu":
            raise ValueError(f"{source} tensor {prefix + name!r} must hold real numbers, got "
                             f"dtype {arr.dtype}")
        if arr.shape != target.shape:
            raise ValueError(f"{source} tensor {prefix + name!r} has shape {arr.shape}, "
                             f"expected {target.shape}")
        staged[name] = arr
    for name, arr in staged.items():
        module.params[name][...] = arr


# =============================================================================== gate orders
def _blocks(a, order, size):
    """Reorders the gate blocks (each ``size`` rows) of a along axis 0."""
    return np.concatenate([a[b * size:(b + 1) * size] for b in order], axis=0)


# position k of the target holds source block ORDER[k]
_ONNX_TO_TORCH_LSTM = (0, 2, 3, 1)  # ONNX i,o,f,c -> torch i,f,g,o
_TORCH_TO_ONNX_LSTM = (0, 3, 1, 2)  # torch i,f,g,o -> ONNX i,o,f,c
_ZRH_RZN = (1, 0, 2)  # ONNX/Keras z,r,h <-> torch r,z,n (its own inverse)

