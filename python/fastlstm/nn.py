"""The PyTorch-shaped module protocol shared by :class:`~fastlstm.LSTM`, :class:`~fastlstm.GRU`
and :class:`Linear`, and the :class:`Linear` layer itself.

A module keeps its parameters in one flat buffer (``flat_params``) and its gradients in another
(``flat_grads``); ``params``/``grads`` are dicts of writable views of them under PyTorch's
names, in PyTorch's order. ``forward(x, train=None)`` keeps what ``backward`` needs when
training (``train=None``: the module's mode, :meth:`Module.train`/:meth:`Module.eval`);
``backward(d_y, accumulate=False)`` writes the gradients into ``grads``, or adds them with
``accumulate=True`` (PyTorch's ``.grad`` behaviour, for gradient accumulation).
"""

from __future__ import annotations

import math
import operator

import numpy as np

__all__ = ["Module", "Linear"]

_DTYPES = {"float32": np.float32, "float64": np.float64}


def _as_dtype(dtype):
    try:
        key = np.dtype(dtype).name
    except TypeError:
        key = None
    if key not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return np.dtype(_DTYPES[key])


def _positive_int(value, name, minimum=1):
    try:
        if isinstance(value, (bool, np.bool_)):  # an int subclass, but never meant as a size
            raise TypeError
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def _real_array(value, name):
    """``np.asarray(value)``, refusing dtypes that would not convert to float losslessly
    (complex drops its imaginary part; strings and objects fail later with no name)."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


def _to_numpy(value):
    if hasattr(value, "detach"):
        value = value.detach()
    if hasattr(value, "cpu"):
        value = value.cpu()
    if hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value)


class Module:
    """Flat parameter and gradient buffers with named views, modes, and the parameter API."""

    def _init_buffers(self, layout):
        """``layout``: [(name, shape, offset)] in buffer order (the engine's for LSTM/GRU)."""
        self._layout = [(name, tuple(shape), off) for name, shape, off in layout]
        n = sum(math.prod(shape) for _, shape, _ in self._layout)
        self.flat_params = np.zeros(n, dtype=self.dtype)
        self.flat_grads = np.zeros(n, dtype=self.dtype)
        self.params = self._views(self.flat_params)
        self.grads = self._views(self.flat_grads)
        self.training = True

    def _views(self, flat):
        return {name: flat[off:off + math.prod(shape)].reshape(shape)
                for name, shape, off in self._layout}

    def use_buffers(self, flat_params, flat_grads):
        """Moves parameters and gradients into caller-owned 1-D arrays (e.g. slices of one
        model-wide buffer that an optimizer updates in one operation). Current values are
        copied in; ``params``/``grads`` become views of the new buffers."""
        n = self.flat_params.size
        for name, arr in (("flat_params", flat_params), ("flat_grads", flat_grads)):
            if not isinstance(arr, np.ndarray) or arr.dtype != self.dtype or arr.shape != (n,):
                raise ValueError(
                    f"{name} must be a 1-D {self.dtype.name} array of {n} elements, got "
                    f"{getattr(arr, 'dtype', type(arr).__name__)} {getattr(arr, 'shape', '')}"
                )
            if not arr.flags.c_contiguous or not arr.flags.writeable:
                raise ValueError(f"{name} must be C-contiguous and writable")
        flat_params[...] = self.flat_params
        flat_grads[...] = self.flat_grads
        self.flat_params, self.flat_grads = flat_params, flat_grads
        self.params = self._views(flat_params)
        self.grads = self._views(flat_grads)

    # ------------------------------------------------------------------ PyTorch's parameter API
    def parameters(self):
        """The parameter views (writable, sharing ``flat_params``) in PyTorch's order."""
        return iter(list(self.params.values()))

    def named_parameters(self):
        """``(name, view)`` pairs under PyTorch's names, in PyTorch's order."""
        return iter(list(self.params.items()))

    def zero_grad(self):
        """Sets every gradient to zero (needed between steps with ``accumulate=True``)."""
        self.flat_grads[...] = 0

    def train(self, mode=True):
        """Training mode (the default): ``forward`` keeps what ``backward`` needs and applies
        dropout. Returns the module."""
        self.training = bool(mode)
        return self

    def eval(self):
        """Inference mode: ``forward`` keeps nothing for backward and applies no dropout."""
        return self.train(False)

    def _train_flag(self, train):
        return self.training if train is None else bool(train)

    def _write_grads(self, compute, accumulate):
        """Runs ``compute()``, which overwrites ``flat_grads``; with ``accumulate`` the previous
        gradients are added back (PyTorch's accumulation)."""
        if not accumulate:
            return compute()
        before = self.flat_grads.copy()
        out = compute()
        self.flat_grads += before
        return out

    def state_dict(self):
        """A dict of copies of the parameters under PyTorch's names."""
        return {name: v.copy() for name, v in self.params.items()}

    def load_state_dict(self, state_dict, strict=True):
        """Copies arrays (NumPy or anything with ``.numpy()``/``__array__``) into the parameters.

        Every shape is checked before anything is written, so a failed load changes nothing.
        """
        staged = {}
        for name, value in state_dict.items():
            if name not in self.params:
                if strict:
                    raise KeyError(
                        f"unexpected parameter {name!r}; expected {sorted(self.params)}"
                    )
                continue
            arr = _real_array(_to_numpy(value), f"parameter {name!r}")
            if arr.shape != self.params[name].shape:
                raise ValueError(
                    f"parameter {name!r} must have shape {self.params[name].shape}, "
                    f"got {arr.shape}"
                )
            staged[name] = arr
        missing = sorted(set(self.params) - set(staged))
        if strict and missing:
            raise KeyError(f"missing parameters: {missing}")
        for name, arr in staged.items():
            self.params[name][...] = arr


class Linear(Module):
    """``y = x @ weight.T + bias`` on the last axis of ``x`` (any leading axes), PyTorch's
    ``nn.Linear``: ``weight`` [out_features, in_features], ``bias`` [out_features], both from
    U(-1/sqrt(in_features), 1/sqrt(in_features)) as PyTorch initializes them.

    ``lin(x)`` is inference; ``lin.forward(x, train=None)`` keeps ``x`` when training;
    ``d_x = lin.backward(d_y, accumulate=False)`` fills ``lin.grads``.
    """

    def __init__(self, in_features, out_features, bias=True, dtype="float32", seed=None):
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        self.bias = bool(bias)
        self.dtype = _as_dtype(dtype)
        O, In = self.out_features, self.in_features
        layout = [("weight", (O, In), 0)] + ([("bias", (O,), O * In)] if self.bias else [])
        self._init_buffers(layout)
        self._rng = np.random.default_rng(seed)
        self._x = None
        self.reset_parameters()

    def reset_parameters(self):
        k = 1.0 / math.sqrt(self.in_features)
        self.flat_params[...] = self._rng.uniform(-k, k, size=self.flat_params.shape)

    def _prepare_x(self, x):
        x = _real_array(x, "x")
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have in_features={self.in_features} on its last axis, got "
                             f"shape {x.shape}")
        return x.astype(self.dtype, copy=False)

    def __call__(self, x):
        return self.forward(x, train=False)

    def forward(self, x, train=None):
        x = self._prepare_x(x)
        y = x @ self.params["weight"].T
        if self.bias:
            y += self.params["bias"]
        # a copy: changing the caller's array later must not change the gradients
        self._x = x.copy() if self._train_flag(train) else None
        return y

    def backward(self, d_y, accumulate=False):
        """Gradients of the last ``forward(x, train=True)``: returns d_x (x's shape) and writes
        d_weight, d_bias into ``grads`` (adds them with ``accumulate=True``)."""
        if self._x is None:
            raise RuntimeError("backward() needs a preceding forward(..., train=True)")
        x = self._x
        d_y = _real_array(d_y, "d_y")
        expected = x.shape[:-1] + (self.out_features,)
        if d_y.shape != expected:
            raise ValueError(f"d_y must have shape {expected}, got {d_y.shape}")
        d_y = d_y.astype(self.dtype, copy=False)
        x2, d2 = x.reshape(-1, self.in_features), d_y.reshape(-1, self.out_features)

        def compute():
            np.matmul(d2.T, x2, out=self.grads["weight"])
            if self.bias:
                np.sum(d2, axis=0, out=self.grads["bias"])

        self._write_grads(compute, accumulate)
        return d_y @ self.params["weight"]

    def __repr__(self):
        extra = "" if self.bias else ", bias=False"
        return (f"Linear(in_features={self.in_features}, out_features={self.out_features}"
                f"{extra}, dtype='{self.dtype.name}')")
