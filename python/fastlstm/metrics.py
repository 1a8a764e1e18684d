"""Metrics accumulated over an epoch (Keras's definitions), vectorized NumPy.

A metric keeps a running weighted sum and count: ``reset()``, ``update(y_true, y_pred,
weights=None)`` (``weights``: a 0/1 mask over sample elements, e.g. valid time steps),
``result()``. ``"accuracy"`` picks its kind from the loss and output shape as Keras does:
binary for one output unit, sparse categorical for integer labels, categorical otherwise.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "Metric",
    "MeanMetricWrapper",
    "BinaryAccuracy",
    "CategoricalAccuracy",
    "SparseCategoricalAccuracy",
    "MeanSquaredError",
    "MeanAbsoluteError",
    "RootMeanSquaredError",
    "get",
]


class Metric:
    name = "metric"

    def __init__(self, name=None):
        if name is not None:
            self.name = name
        self.reset()

    def reset(self):
        self._sum = 0.0
        self._count = 0.0

    def values(self, y_true, y_pred):
        """Per sample element values (the last axis reduced)."""
        raise NotImplementedError

    def update(self, y_true, y_pred, weights=None):
        v = np.asarray(self.values(y_true, y_pred), dtype=np.float64)
        if weights is None:
            self._sum += float(v.sum())
            self._count += v.size
        else:
            w = np.broadcast_to(np.asarray(weights, dtype=np.float64), v.shape)
            self._sum += float((v * w).sum())
            self._count += float(w.sum())

    def result(self):
        return self._sum / self._count if self._count else 0.0

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r})"


class MeanMetricWrapper(Metric):
    """Any ``fn(y_true, y_pred)`` returning per-sample values (or one number per batch,
    then weighted by the batch size)."""

    def __init__(self, fn, name=None):
        self.fn = fn
        super().__init__(name or getattr(fn, "__name__", "metric"))

    def values(self, y_true, y_pred):
        v = np.asarray(self.fn(y_true, y_pred), dtype=np.float64)
        if v.ndim == 0:
            return np.full(len(y_pred), float(v))
        return v


class BinaryAccuracy(Metric):
    name = "binary_accuracy"

    def __init__(self, name=None, threshold=0.5):
        self.threshold = float(threshold)
        super().__init__(name)

    def values(self, y_true, y_pred):
        return ((y_pred > self.threshold) == (y_true > 0.5)).mean(axis=-1)


class CategoricalAccuracy(Metric):
    name = "categorical_accuracy"

    def values(self, y_true, y_pred):
        return (np.argmax(y_pred, axis=-1) == np.argmax(y_true, axis=-1)).astype(np.float64)


class SparseCategoricalAccuracy(Metric):
    name = "sparse_categorical_accuracy"

    def values(self, y_true, y_pred):
        y = np.asarray(y_true)
        if y.ndim == y_pred.ndim:
            y = y[..., 0]
        return (np.argmax(y_pred, axis=-1) == y).astype(np.float64)


class MeanSquaredError(Metric):
    name = "mean_squared_error"

    def values(self, y_true, y_pred):
        d = np.asarray(y_pred, dtype=np.float64) - y_true
        return (d * d).mean(axis=-1)


class MeanAbsoluteError(Metric):
    name = "mean_absolute_error"

    def values(self, y_true, y_pred):
        return np.abs(np.asarray(y_pred, dtype=np.float64) - y_true).mean(axis=-1)


class RootMeanSquaredError(MeanSquaredError):
    name = "root_mean_squared_error"

    def result(self):
        return float(np.sqrt(super().result()))


_BY_NAME = {
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError,
    "mean_absolute_error": MeanAbsoluteError,
    "rmse": RootMeanSquaredError,
    "root_mean_squared_error": RootMeanSquaredError,
    "binary_accuracy": BinaryAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
}


def get(identifier, loss=None, output_shape=None):
    """A metric object from a name, a :class:`Metric`, or a function ``fn(y_true, y_pred)``.

    The metric is named as given (``"acc"`` logs as ``acc``, ``"mae"`` as ``mae``).
    """
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key in ("accuracy", "acc"):
            loss_name = getattr(loss, "name", "")
            from_logits = getattr(loss, "from_logits", False)
            if output_shape is not None and output_shape[-1] == 1:
                return BinaryAccuracy(name=identifier, threshold=0.0 if from_logits else 0.5)
            if loss_name == "sparse_categorical_crossentropy":
                return SparseCategoricalAccuracy(name=identifier)
            if loss_name == "binary_crossentropy":
                return BinaryAccuracy(name=identifier, threshold=0.0 if from_logits else 0.5)
            return CategoricalAccuracy(name=identifier)
        if key in _BY_NAME:
            return _BY_NAME[key](name=identifier)
    elif callable(identifier):
        return MeanMetricWrapper(identifier)
    raise ValueError(
        f"unknown metric {identifier!r}; expected 'accuracy', one of {sorted(_BY_NAME)}, a "
        "fastlstm.metrics.Metric or a function f(y_true, y_pred)"
    )
