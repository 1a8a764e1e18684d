"""Losses with their gradients (Keras's definitions and reductions), vectorized NumPy.

A loss is computed per *sample element* (the last axis reduced: one value per sample, or per
sample and time step on 3-D outputs), then averaged over the elements a mask keeps (all of
them without a mask). ``value_and_grad`` returns the loss and its gradient with respect to the
model output or, given ``logits=``, to the pre-activation of a final sigmoid/softmax: the
fused, numerically stable form (no log of a rounded probability, no division by it).

Without logits, the probability forms follow Keras: probabilities clipped to
[1e-7, 1 - 1e-7] (no gradient through the clipped ones), categorical outputs renormalized to
sum to 1.
"""

from __future__ import annotations

import math

import numpy as np

try:
    from . import _core
except ImportError:  # pragma: no cover - the package always ships its extension
    _core = None

__all__ = [
    "Loss",
    "LossFunction",
    "MeanSquaredError",
    "MeanAbsoluteError",
    "Huber",
    "BinaryCrossentropy",
    "CategoricalCrossentropy",
    "SparseCategoricalCrossentropy",
    "get",
    "mse",
    "mae",
    "huber",
    "binary_crossentropy",
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
]

_EPS = 1e-7


def _sigmoid(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _log_sigmoid_neg_abs(z):
    # log(1 + exp(-|z|)) without overflow
    return np.log1p(np.exp(-np.abs(z)))


def _reduce(values, weights):
    """(mean, per-element factor for the gradient): sum(w*l)/sum(w) over sample elements."""
    if weights is None:
        n = values.size
        return float(values.sum(dtype=np.float64)) / max(n, 1), 1.0 / max(n, 1)
    w = weights.astype(values.dtype, copy=False)
    total = float(w.sum(dtype=np.float64))
    if total == 0:
        return 0.0, np.zeros_like(w)
    return float((values * w).sum(dtype=np.float64)) / total, w / values.dtype.type(total)


def _mean_last(a):
    """``a.mean(axis=-1)`` for a float array, in place of a's sums, without the Python layer
    of ``mean``: the same reduction and the same division (by the count as an intp), so the
    same bits."""
    out = np.add.reduce(a, axis=-1)
    return np.true_divide(out, np.intp(a.shape[-1]), out=out, casting="unsafe")


def _check_finite(y, name):
    if y.dtype.kind != "f":
        return
    if _core is not None and y.dtype in (np.float32, np.float64) and y.flags.c_contiguous:
        # one pass in C++ without the temporary boolean array (once per fit over all targets)
        ok = _core.all_finite(y.reshape(-1))
    else:
        ok = bool(np.isfinite(y).all())
    if not ok:
        raise ValueError(f"{name}: the targets y contain NaN or infinity")


class Loss:
    """Base class. ``loss(y_true, y_pred)`` -> float (mean over samples), Keras-style."""

    name = "loss"
    from_logits = False

    def __call__(self, y_true, y_pred, mask=None):
        y_pred = np.asarray(y_pred, dtype=np.float64)
        y_true = self.prepare_targets(y_true, y_pred.shape)
        value, _ = self.value_and_grad(y_true, y_pred, mask, need_grad=False)
        return value

    # --- targets -------------------------------------------------------------------
    def prepare_targets(self, y, out_shape):
        """Validates the targets for outputs of ``out_shape`` (batch axis first) and returns
        them in the shape and dtype the loss uses. Raises ValueError naming the problem."""
        y = np.asarray(y)
        if y.dtype.kind not in "fiub":
            raise TypeError(f"{self.name}: targets must be numbers, got dtype {y.dtype}")
        y = y.astype(np.float64) if y.dtype.kind != "f" else y
        _check_finite(y, self.name)
        out_shape = tuple(out_shape)
        if y.shape[1:] == out_shape[1:]:
            return y
        if len(y.shape) == len(out_shape) - 1 and out_shape[-1] == 1 and y.shape[1:] == out_shape[1:-1]:
            return y.reshape(y.shape + (1,))
        raise ValueError(
            f"{self.name}: y has shape {y.shape[1:]} per sample but the model outputs "
            f"{out_shape[1:]} per sample"
        )

    def value_and_grad(self, y_true, y_pred, weights=None, logits=None, need_grad=True):
        """The mean loss and its gradient w.r.t. ``y_pred``. A subclass either overrides this
        or defines ``call(y_true, y_pred)`` (per-sample values: ``y_pred.shape[:-1]``) and,
        for training, ``gradient(y_true, y_pred)`` (d value / d y_pred, ``y_pred``'s shape)."""
        call = getattr(self, "call", None)
        if call is None:
            raise NotImplementedError(f"{type(self).__name__} defines neither call() nor "
                                      "value_and_grad()")
        return _custom_value_and_grad(self.name, call, getattr(self, "gradient", None),
                                      y_true, y_pred, weights, need_grad)

    def get_config(self):
        return {"name": self.name}

    def __repr__(self):
        return f"{type(self).__name__}()"


def _custom_value_and_grad(name, fn, grad_fn, y_true, y_pred, weights, need_grad):
    v = np.asarray(fn(y_true, y_pred), dtype=np.float64)
    want = y_pred.shape[:-1]
    if v.shape != want:
        raise ValueError(f"loss {name!r} must return one value per sample element, shape "
                         f"{want}, got {v.shape}")
    value, f = _reduce(v, weights)
    if not need_grad:
        return value, None
    if grad_fn is None:
        raise TypeError(
            f"loss {name!r} has no gradient: training needs d loss / d y_pred. Give the "
            "function a .gradient(y_true, y_pred) attribute, or subclass fastlstm.losses.Loss "
            "with call() and gradient()")
    g = np.asarray(grad_fn(y_true, y_pred), dtype=y_pred.dtype)
    if g.shape != y_pred.shape:
        raise ValueError(f"the gradient of loss {name!r} must have y_pred's shape "
                         f"{y_pred.shape}, got {g.shape}")
    f = f[..., None] if isinstance(f, np.ndarray) else f
    return value, g * np.asarray(f, dtype=y_pred.dtype)


class LossFunction(Loss):
    """A Python function ``fn(y_true, y_pred)`` -> per-sample values (NumPy arrays) as a loss;
    training needs ``fn.gradient(y_true, y_pred)`` -> d value / d y_pred (y_pred's shape)."""

    def __init__(self, fn, name=None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "custom_loss")

    def value_and_grad(self, y_true, y_pred, weights=None, logits=None, need_grad=True):
        return _custom_value_and_grad(self.name, self.fn, getattr(self.fn, "gradient", None),
                                      y_true, y_pred, weights, need_grad)


class MeanSquaredError(Loss):
    name = "mean_squared_error"

    def value_and_grad(self, y_true, y_pred, weights=None, logits=None, need_grad=True):
        diff = y_pred - y_true.astype(y_pred.dtype, copy=False)
        K = diff.shape[-1]
        if weights is None:
            # every element weighs the same: the mean of the per-element means is the mean of
            # all squares, one fused multiply-and-sum (einsum) instead of a square array, a
            # per-element row reduction and their sum (a training step's loss at
            # [32, 8, 64] took three passes and ~30 us; the value may differ from those in the
            # last bits, the gradient is the same expression as below, bit for bit)
            flat = diff.reshape(-1)
            value = float(np.einsum("i,i->", flat, flat)) / max(flat.size, 1)
            f = 1.0 / max(math.prod(diff.shape[:-1]), 1)
        else:
            value, f = _reduce(_mean_last(diff * diff), weights)
        if not need_grad:
            return value, None
        f = f[..., None] if isinstance(f, np.ndarray) else f
        diff *= np.asarray(f, dtype=diff.dtype) * (2.0 / K)  # diff is ours: the gradient in place
        return value, diff


class MeanAbsoluteError(Loss):
    name = "mean_absolute_error"

    def value_and_grad(self, y_true, y_pred, weights=None, logits=None, need_grad=True):
        diff = y_pred - y_true.astype(y_pred.dtype, copy=False)
        K = diff.shape[-1]
        value, f = _reduce(np.abs(diff).mean(axis=-1), weights)
        if not need_grad:
            return value, None
        f = f[..., None] if isinstance(f, np.ndarray) else f
        return value, np.sign(diff) * (np.asarray(f, dtype=diff.dtype) / K)


class Huber(Loss):
    """``0.5*e^2`` for ``|e| <= delta``, ``delta*(|e| - 0.5*delta)`` beyond (Keras's Huber)."""

    name = "huber_loss"

    def __init__(self, delta=1.0):
        self.delta = float(delta)
        if not self.delta > 0:
            raise ValueError(f"delta must be > 0, got {delta}")

    def value_and_grad(self, y_true, y_pred, weights=None, logits=None, need_grad=True):
        e = y_pred - y_true.astype(y_pred.dtype, copy=False)
        a = np.abs(e)
        d = self.delta
        small = a <= d
        per = np.where(small, 0.5 * e * e, d * (a - 0.5 * d))
        K = e.shape[-1]
        value, f = _reduce(per.mean(axis=-1), weights)
        if not need_grad:
            return value, None
        f = f[..., None] if isinstance(f, np.ndarray) else f
        g = np.where(small, e, d * np.sign(e))
        return value, g * (np.asarray(f, dtype=e.dtype) / K)

    def get_config(self):
        return {"name": self.name, "delta": self.delta}


class BinaryCrossentropy(Loss):
    """Mean over the last axis of ``-(t log p + (1-t) log(1-p))``; targets in [0, 1]."""

    name = "binary_crossentropy"

    def __init__(self, from_logits=False):
        self.from_logits = bool(from_logits)

    def prepare_targets(self, y, out_shape):
        y = super().prepare_targets(y, out_shape)
        if y.size and (y.min() < 0 or y.max() > 1):
            raise ValueError(
                f"{self.name}: targets must be in [0, 1], got min {y.min()} and max {y.max()}"
            )
        return y

    def value_and_grad(self, y_true, y_pred, weights=None, logits=None, need_grad=True):
        if self.from_logits and logits is None:
            logits = y_pred
        t = y_true.astype(y_pred.dtype, copy=False)
        K = t.shape[-1]
        if logits is not None:
            z = logits
            per = np.maximum(z, 0) - z * t + _log_sigmoid_neg_abs(z)
            value, f = _reduce(per.mean(axis=-1), weights)
            if not need_grad:
                return value, None
            f = f[..., None] if isinstance(f, np.ndarray) else f
            return value, (_sigmoid(z).astype(z.dtype, copy=False) - t) * (np.asarray(f, dtype=z.dtype) / K)
        p = np.clip(y_pred, _EPS, 1 - _EPS)
        per = -(t * np.log(p) + (1 - t) * np.log(1 - p))
        value, f = _reduce(per.mean(axis=-1), weights)
        if not need_grad:
            return value, None
        f = f[..., None] if isinstance(f, np.ndarray) else f
        inside = (y_pred > _EPS) & (y_pred < 1 - _EPS)
        g = (-t / p + (1 - t) / (1 - p)) * inside
        return value, g * (np.asarray(f, dtype=y_pred.dtype) / K)

    def get_config(self):
        return {"name": self.name, "from_logits": self.from_logits}


class CategoricalCrossentropy(Loss):
    """``-sum t log p`` over the last axis; targets one-hot (or distributions)."""

    name = "categorical_crossentropy"

    def __init__(self, from_logits=False):
        self.from_logits = bool(from_logits)

    def prepare_targets(self, y, out_shape):
        y = np.asarray(y)
        if y.dtype.kind not in "fiub":
            raise TypeError(f"{self.name}: targets must be numbers, got dtype {y.dtype}")
        if y.shape[1:] != tuple(out_shape)[1:]:
            hint = ""
            if y.shape[1:] == tuple(out_shape)[1:-1] or y.shape[1:] == tuple(out_shape)[1:-1] + (1,):
                hint = " (integer class labels need loss='sparse_categorical_crossentropy')"
            raise ValueError(
                f"{self.name}: y has shape {y.shape[1:]} per sample but the model outputs "
                f"{tuple(out_shape)[1:]} per sample; categorical targets are one-hot{hint}"
            )
        y = y.astype(np.float64) if y.dtype.kind != "f" else y
        _check_finite(y, self.name)
        if y.size and y.min() < 0:
            raise ValueError(f"{self.name}: targets must be >= 0 (one-hot), got min {y.min()}")
        return y

    def value_and_grad(self, y_true, y_pred, weights=None, logits=None, need_grad=True):
        if self.from_logits and logits is None:
            logits = y_pred
        t = y_true.astype(y_pred.dtype, copy=False)
        tsum = t.sum(axis=-1, keepdims=True)
        if logits is not None:
            z = logits
            zmax = z.max(axis=-1, keepdims=True)
            e = np.exp(z - zmax)
            s = e.sum(axis=-1, keepdims=True)
            lse = np.log(s) + zmax
            per = (tsum * lse - (t * z).sum(axis=-1, keepdims=True))[..., 0]
            value, f = _reduce(per, weights)
            if not need_grad:
                return value, None
            f = f[..., None] if isinstance(f, np.ndarray) else f
            return value, (e / s * tsum - t) * np.asarray(f, dtype=z.dtype)
        S = y_pred.sum(axis=-1, keepdims=True)
        q = y_pred / S
        qc = np.clip(q, _EPS, 1 - _EPS)
        per = -(t * np.log(qc)).sum(axis=-1)
        value, f = _reduce(per, weights)
        if not need_grad:
            return value, None
        f = f[..., None] if isinstance(f, np.ndarray) else f
        inside = (q > _EPS) & (q < 1 - _EPS)
        d_q = -t / qc * inside
        # through q = p / S: d_p = (d_q - sum(d_q * q)) / S
        d_p = (d_q - (d_q * q).sum(axis=-1, keepdims=True)) / S
        return value, d_p * np.asarray(f, dtype=y_pred.dtype)

    def get_config(self):
        return {"name": self.name, "from_logits": self.from_logits}


class SparseCategoricalCrossentropy(Loss):
    """Categorical cross-entropy with integer class labels (shape = output shape minus its
    class axis, or with a trailing 1)."""

    name = "sparse_categorical_crossentropy"

    def __init__(self, from_logits=False):
        self.from_logits = bool(from_logits)

    def prepare_targets(self, y, out_shape):
        y = np.asarray(y)
        out_shape = tuple(out_shape)
        C = out_shape[-1]
        if y.shape[1:] == out_shape[1:-1] + (1,) and len(out_shape) > 1:
            y = y.reshape(y.shape[:-1])
        if y.shape[1:] != out_shape[1:-1]:
            raise ValueError(
                f"{self.name}: y has shape {y.shape[1:]} per sample; integer labels for an "
                f"output of {out_shape[1:]} per sample need shape {out_shape[1:-1]}"
            )
        if y.dtype.kind == "f":
            _check_finite(y, self.name)
            yi = y.astype(np.int64)
            if not np.array_equal(yi, y):
                raise ValueError(f"{self.name}: labels must be integers, got non-integer values")
            y = yi
        elif y.dtype.kind in "iub":
            y = y.astype(np.int64)
        else:
            raise TypeError(f"{self.name}: labels must be integers, got dtype {y.dtype}")
        if y.size and (y.min() < 0 or y.max() >= C):
            raise ValueError(
                f"{self.name}: labels must be integers in [0, {C}) (the model outputs {C} "
                f"classes), got min {y.min()} and max {y.max()}"
            )
        return y

    def value_and_grad(self, y_true, y_pred, weights=None, logits=None, need_grad=True):
        if self.from_logits and logits is None:
            logits = y_pred
        lab = y_true[..., None]
        if logits is not None:
            z = logits
            zmax = z.max(axis=-1, keepdims=True)
            e = np.exp(z - zmax)
            s = e.sum(axis=-1, keepdims=True)
            per = (np.log(s) + zmax - np.take_along_axis(z, lab, axis=-1))[..., 0]
            value, f = _reduce(per, weights)
            if not need_grad:
                return value, None
            f = f[..., None] if isinstance(f, np.ndarray) else f
            g = e / s
            np.put_along_axis(g, lab, np.take_along_axis(g, lab, axis=-1) - 1, axis=-1)
            return value, g * np.asarray(f, dtype=z.dtype)
        S = y_pred.sum(axis=-1, keepdims=True)
        q = y_pred / S
        q_lab = np.take_along_axis(q, lab, axis=-1)
        qc = np.clip(q_lab, _EPS, 1 - _EPS)
        per = -np.log(qc)[..., 0]
        value, f = _reduce(per, weights)
        if not need_grad:
            return value, None
        f = f[..., None] if isinstance(f, np.ndarray) else f
        inside = (q_lab > _EPS) & (q_lab < 1 - _EPS)
        d_qlab = -1.0 / qc * inside  # d loss / d q[label]
        # through q = p / S: d_p_j = (d_q_j - d_qlab * q_lab) / S, d_q nonzero only at label
        d_p = np.broadcast_to(-(d_qlab * q_lab) / S, y_pred.shape).copy()
        np.put_along_axis(d_p, lab, np.take_along_axis(d_p, lab, axis=-1) + d_qlab / S, axis=-1)
        return value, d_p * np.asarray(f, dtype=y_pred.dtype)

    def get_config(self):
        return {"name": self.name, "from_logits": self.from_logits}


mse = MeanSquaredError
mae = MeanAbsoluteError
huber = Huber
binary_crossentropy = BinaryCrossentropy
categorical_crossentropy = CategoricalCrossentropy
sparse_categorical_crossentropy = SparseCategoricalCrossentropy

_LOSSES = {
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError,
    "mean_absolute_error": MeanAbsoluteError,
    "huber": Huber,
    "huber_loss": Huber,
    "binary_crossentropy": BinaryCrossentropy,
    "bce": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
}


def get(identifier):
    """A loss from its Keras name or a :class:`Loss` instance (or class)."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if isinstance(identifier, str) and identifier.lower() in _LOSSES:
        return _LOSSES[identifier.lower()]()
    if callable(identifier) and not isinstance(identifier, (str, type)):
        return LossFunction(identifier)
    raise ValueError(
        f"unknown loss {identifier!r}; expected one of {sorted(_LOSSES)} or a "
        "fastlstm.losses.Loss instance"
    )
