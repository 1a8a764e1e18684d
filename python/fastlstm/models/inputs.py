"""Turning what ``fit``/``evaluate``/``predict`` are given into the graph's arrays: inputs
(one array, a list in input order or a dict by input name; token ids checked against every
Embedding that reads them), ``lengths=`` as a mask on the first input, targets per output
(prepared by each output's loss), sample and class weights."""

from __future__ import annotations

import numpy as np

from .. import losses as losses_mod

__all__ = ["DataMixin"]


def _shape_of(shape):
    from ..layers.base import _shape_str

    return _shape_str(shape)


class DataMixin:
    def _ensure_built(self, xs):
        pass

    def _as_list(self, x, names, what):
        n = len(names)
        if isinstance(x, dict):
            missing = [k for k in names if k not in x]
            if missing:
                raise ValueError(f"{what} is missing {missing}; the model takes {names}")
            return [x[k] for k in names]
        if isinstance(x, (list, tuple)) and n > 1:
            if len(x) != n:
                raise ValueError(f"{what} must be a list of {n} arrays ({names}), got {len(x)}")
            return list(x)
        if n > 1:
            raise ValueError(f"the model has {n} inputs/outputs {names}: {what} must be a list "
                             "or a dict of arrays")
        if isinstance(x, (list, tuple)) and len(x) == 1 and not np.isscalar(x[0]) and \
                np.ndim(x[0]) >= 1 and isinstance(x[0], np.ndarray):
            return [x[0]]
        return [x]

    def _prepare_x(self, x, name="x"):
        if x is None:
            raise ValueError(f"{name} is required")
        if not self.built:
            self._ensure_built(x)
        xs = self._as_list(x, self.input_names, name)
        out = []
        for i, (a, t) in enumerate(zip(xs, self._input_tensors)):
            nm = name if len(xs) == 1 else f"{name}[{self.input_names[i]!r}]"
            out.append(self._prepare_input(np.asarray(a), t, nm))
        n = {len(a) for a in out}
        if len(n) > 1:
            raise ValueError(f"the inputs in {name} must have the same number of samples, got "
                             f"{[len(a) for a in out]}")
        return out

    def _prepare_input(self, x, t, name):
        want = t.shape[1:]
        if np.dtype(t.dtype).kind in "iub":
            if x.ndim != len(want) + 1:
                raise ValueError(f"{name} must be {len(want) + 1}-D token ids "
                                 f"{_shape_of(t.shape)}, got shape {x.shape}")
            if x.dtype.kind == "f":
                ids = x.astype(np.int64)
                if not np.array_equal(ids, x):
                    raise ValueError(f"{name} must hold integer token ids, got non-integer values")
            elif x.dtype.kind not in "iub":
                raise TypeError(f"{name} must hold integer token ids, got dtype {x.dtype}")
            else:
                ids = x.astype(np.int64, copy=False)
            for node in self._nodes:  # every id checked once, before any training step
                if hasattr(node.layer, "_tokens") and any(i is t for i in node.inputs):
                    node.layer._tokens(ids)
            return ids
        if x.ndim != len(want) + 1:
            hint = " (for one feature per time step use x[..., None])" if \
                x.ndim == len(want) and len(want) == 2 else ""
            raise ValueError(f"{name} must be {len(want) + 1}-D input of shape "
                             f"{_shape_of(t.shape)}, got an array of shape {x.shape}{hint}")
        if x.ndim >= 2 and want and want[-1] is not None and x.shape[-1] != want[-1]:
            raise ValueError(f"{name} must have {want[-1]} features on its last axis (the "
                             f"model's input shape {_shape_of(t.shape)}), got shape {x.shape}")
        for ax in range(1, x.ndim):
            w = want[ax - 1]
            # the time axis (1) is free when the model has layers that take any length
            if w is not None and x.shape[ax] != w and not (ax == 1 and x.ndim == 3):
                raise ValueError(f"{name} must have shape {_shape_of(t.shape)}, got shape "
                                 f"{x.shape}")
        if x.dtype.kind not in "fiub":
            raise TypeError(f"{name} must hold numbers, got dtype {x.dtype}")
        x = x.astype(self.dtype, copy=False)
        if not np.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or infinity")
        return x

    def _prepare_lengths(self, lengths, xs, name="lengths"):
        """``lengths=`` (int [N]): right-padded sequences' valid lengths, as a mask on the
        first input."""
        if lengths is None:
            return [None] * len(xs)
        x = xs[0]
        arr = np.asarray(lengths)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}")
        if arr.shape != (len(x),):
            raise ValueError(f"{name} must have shape ({len(x)},) (one per sample), got {arr.shape}")
        if x.ndim < 2:
            raise ValueError(f"{name} needs a sequence input, got shape {x.shape}")
        T = x.shape[1]
        if arr.size and (arr.min() < 0 or arr.max() > T):
            raise ValueError(f"every entry of {name} must be in [0, T={T}], got min "
                             f"{arr.min()} and max {arr.max()}")
        return [np.arange(T)[None, :] < arr.astype(np.int64)[:, None]] + [None] * (len(xs) - 1)

    def _fill_shape(self, shape, y, n):
        """An output's shape with the unknown axes taken from the target array."""
        out = [n]
        for i, s in enumerate(shape[1:]):
            out.append(y.shape[i + 1] if s is None and y.ndim > i + 1 else (1 if s is None else s))
        return tuple(out)

    def _prepare_y(self, y, n, name="y", xname="x"):
        if y is None:
            raise ValueError(f"{name} is required")
        if isinstance(y, dict):  # outputs without a loss need no targets
            y = {k: y.get(k) for k, L in zip(self.output_names, self._losses)
                 if L is not None or k in y}
            y.update({k: None for k, L in zip(self.output_names, self._losses) if L is None})
        ys = self._as_list(y, self.output_names, name)
        out = []
        for k, (a, t) in enumerate(zip(ys, self._output_tensors)):
            if self._losses[k] is None:
                out.append(None)
                continue
            a = np.asarray(a)
            nm = name if len(ys) == 1 else f"{name}[{self.output_names[k]!r}]"
            if a.ndim == 0 or len(a) != n:
                raise ValueError(f"{xname} and {nm} must have the same number of samples, got {n} "
                                 f"and {len(a) if a.ndim else 'a scalar'}")
            out.append(self._losses[k].prepare_targets(a, self._fill_shape(t.shape, a, n)))
        return out

    def _prepare_sample_weight(self, sample_weight, class_weight, ys, n):
        sw = None
        if sample_weight is not None:
            sw = np.asarray(sample_weight, dtype=np.float64)
            if sw.ndim != 1 or len(sw) != n:
                raise ValueError(f"sample_weight must have shape ({n},) (one per sample), got "
                                 f"{sw.shape}")
            if not np.isfinite(sw).all() or sw.min() < 0:
                raise ValueError("sample_weight must be finite and >= 0")
        if class_weight is not None:
            if len(ys) != 1:
                raise ValueError("class_weight needs a model with one output (use "
                                 "sample_weight for several)")
            if not isinstance(class_weight, dict):
                raise TypeError(f"class_weight must be a dict {{class: weight}}, got "
                                f"{type(class_weight).__name__}")
            y = ys[0]
            L = self._losses[0]
            if isinstance(L, losses_mod.SparseCategoricalCrossentropy):
                cls = y
            elif y.shape[-1] > 1:
                cls = np.argmax(y, axis=-1)
            else:
                cls = np.rint(y[..., 0]).astype(np.int64)
            cls = np.asarray(cls)
            if cls.ndim > 1:
                raise ValueError("class_weight needs one class per sample (not per time step); "
                                 "use sample_weight")
            table = {int(k): float(v) for k, v in class_weight.items()}
            missing = sorted(set(np.unique(cls).tolist()) - set(table))
            if missing:
                raise ValueError(f"class_weight has no weight for class(es) {missing}")
            cw = np.array([table[int(c)] for c in cls], dtype=np.float64)
            sw = cw if sw is None else sw * cw
        return sw


    def _prepare_all(self, x, y, lengths, sample_weight, class_weight, names=("x", "y")):
        xs = self._prepare_x(x, names[0])
        self._ensure_outputs_compiled()
        n = len(xs[0])
        ys = self._prepare_y(y, n, names[1], names[0])
        masks = self._prepare_lengths(lengths, xs, "lengths" if names[0] == "x"
                                      else f"{names[0]} lengths")
        sw = self._prepare_sample_weight(sample_weight, class_weight, ys, n)
        return xs, ys, masks, sw


def _slice(arrs, sl):
    return [None if a is None else a[sl] for a in arrs]


def _is_arrayish(x):
    if x is None or isinstance(x, (np.ndarray, list, tuple, dict)):
        return True
    return hasattr(x, "__array__") or hasattr(x, "shape")
