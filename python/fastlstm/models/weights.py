"""A model's weights: lists and name -> array dicts in the model file's order, ``.npz`` files."""

from __future__ import annotations

import io
import os

import numpy as np

from ..io import files as _files
from ..io.atomic import atomic_write

__all__ = ["WeightsMixin"]


class WeightsMixin:
    # ------------------------------------------------------------------------------ precision
    def _check_trainable(self, what):
        if self.precision not in ("float32", "float64"):
            raise RuntimeError(f"{what}: the model was quantized to {self.precision} for "
                               "inference only (predict, evaluate, summary); train a float model")

    @property
    def precision(self):
        """"float32"/"float64" (the dtype), or "bf16"/"int8" after :meth:`quantize`."""
        for layer in getattr(self, "_leaves", ()):
            p = getattr(layer, "precision", None)
            if p in ("bf16", "int8"):
                return p
        return self.dtype.name

    def quantize(self, mode):
        """Keras 3's ``Model.quantize``, in place: every recurrent layer's weights go to
        ``mode`` ("bf16" or "int8", see :meth:`fastlstm.LSTM.quantize`); Embedding, Dense and
        the other layers stay float. Afterwards predict, evaluate and summary work; fit raises."""
        self._require_built("quantize()")
        layers = [layer for layer in self._leaves if hasattr(layer, "_quantize")]
        if not layers:
            raise ValueError("quantize(): the model has no recurrent layer to quantize")
        if self.precision not in ("float32", "float64"):
            raise ValueError(f"quantize(): the model is already quantized to {self.precision}")
        from ..rnn import _check_precision

        mode = _check_precision(mode)
        self._acquire()
        for layer in layers:
            layer._quantize(mode)

    def _require_built(self, what):
        if not self.built:
            raise ValueError(f"{what}: the model has not been built yet; give the first layer "
                             "input_shape=..., start with Input(shape), call build(), or call "
                             "the model on data first")

    def get_weights(self):
        """Copies of every weight, layer by layer, in the model file's order."""
        self._require_built("get_weights()")
        self._acquire()
        return [v.copy() for _, _, _, v in self._named_views()]

    def set_weights(self, weights):
        """Sets every weight from a list like :meth:`get_weights`'s (all checked first)."""
        self._require_built("set_weights()")
        self._acquire()
        views = [v for _, _, _, v in self._named_views()]
        if len(weights) != len(views):
            raise ValueError(f"the model has {len(views)} weight arrays, got a list of {len(weights)}")
        arrs = [np.asarray(w) for w in weights]
        for i, (v, a) in enumerate(zip(views, arrs)):
            if a.shape != v.shape:
                raise ValueError(f"weight {i} ({self._weight_names[i]}) must have shape "
                                 f"{v.shape}, got {a.shape}")
        for v, a in zip(views, arrs):
            v[...] = a

    def get_weight_dict(self):
        """``{"layers.{i}.{weight}": array copy}``: the model file's tensor names."""
        self._require_built("get_weight_dict()")
        self._acquire()
        return {name: v.copy() for name, _, _, v in self._named_views()}

    def set_weight_dict(self, weights, strict=True):
        """Sets weights from a ``get_weight_dict``-style dict; every name and shape is checked
        before anything is written."""
        self._require_built("set_weight_dict()")
        self._acquire()
        views = {name: v for name, _, _, v in self._named_views()}
        staged = {}
        for name, value in weights.items():
            if name not in views:
                if strict:
                    raise KeyError(f"unexpected weight {name!r}; the model has {sorted(views)}")
                continue
            a = np.asarray(value)
            if a.shape != views[name].shape:
                raise ValueError(f"weight {name!r} must have shape {views[name].shape}, got {a.shape}")
            staged[name] = a
        missing = sorted(set(views) - set(staged))
        if strict and missing:
            raise KeyError(f"missing weights: {missing}")
        for name, a in staged.items():
            views[name][...] = a

    def save_weights(self, path):
        """Writes the weights to a NumPy ``.npz`` file (names as :meth:`get_weight_dict`),
        atomically: ``path`` keeps its old content if anything fails."""
        buf = io.BytesIO()
        np.savez(buf, **self.get_weight_dict())
        atomic_write(path, [buf.getbuffer()])

    def load_weights(self, path):
        with np.load(os.fspath(path)) as data:
            self.set_weight_dict({k: data[k] for k in data.files})

    def save(self, path, include_optimizer=True, **kwargs):
        """Saves the architecture (the graph), the weights and, once compiled, the compile
        state (losses, metrics, optimizer with its slots unless ``include_optimizer=False``)
        as a fastlstm model file (:mod:`fastlstm.io`, docs/model-format.md)."""
        return _files.save_model(self, path, include_optimizer=include_optimizer, **kwargs)

