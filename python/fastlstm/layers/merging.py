"""Keras's merge layers: Concatenate, Add, Multiply, Average over a list of same-shaped inputs
(Concatenate: same shape but for its axis). The output mask is the AND of the inputs' masks."""

from __future__ import annotations

import numpy as np

from .base import Layer, _is_symbolic, _flatten_tensors, _shape_str

__all__ = ["Concatenate", "Add", "Multiply", "Average"]


def _merge_masks(masks):
    out = None
    for m in masks:
        if m is not None:
            out = m if out is None else out & m
    return out


class _Merge(Layer):
    def _check_shapes(self, shapes):
        if len(shapes) < 2:
            raise ValueError(f"{self._label()} needs a list of at least 2 inputs, got {len(shapes)}")
        first = tuple(shapes[0])
        for s in shapes[1:]:
            if tuple(s) != first:
                raise ValueError(f"{self._label()} needs inputs of one shape, got "
                                 f"{[_shape_str((None,) + tuple(s)) for s in shapes]}")
        return first

    def _symbolic_shapes(self, shapes, dtype, kwargs):
        out = self._check_shapes([tuple(s) for s in shapes])
        if not self.built:
            self.dtype = np.dtype(dtype)
            self.input_shape, self.output_shape = tuple(shapes[0]), out
            self.built = True
        return [out]

    def __call__(self, inputs, training=False, **kwargs):
        if kwargs:
            raise TypeError(f"{self._label()}() got unexpected keyword argument(s) {sorted(kwargs)}")
        if not isinstance(inputs, (list, tuple)):
            raise TypeError(f"{self._label()} is called on a list of inputs, got "
                            f"{type(inputs).__name__}")
        if _is_symbolic(inputs):
            return self._call_symbolic(_flatten_tensors(inputs))
        xs = [np.asarray(x) for x in inputs]
        dtype = "float64" if any(x.dtype == np.float64 for x in xs) else "float32"
        self._symbolic_shapes([x.shape[1:] for x in xs], dtype, {})
        return self.node_forward(xs, [None] * len(xs), training, None)[0][0]

    def node_forward(self, xs, masks, training, node):
        xs = [np.asarray(x, dtype=self.dtype) for x in xs]
        shapes = {x.shape for x in xs}
        if len(shapes) != 1 and not isinstance(self, Concatenate):
            raise ValueError(f"{self._label()} needs inputs of one shape, got "
                             f"{[x.shape for x in xs]}")
        self._xs = xs if training else None
        return [self._merge(xs)], [_merge_masks(masks)]

    def node_backward(self, d_ys, need_input_grad, from_logits=False):
        if not need_input_grad:
            return [None] * len(self._xs)
        return self._merge_backward(np.asarray(d_ys[0]), self._xs)


class Add(_Merge):
    """Elementwise sum of the inputs."""

    def _merge(self, xs):
        out = xs[0].copy()
        for x in xs[1:]:
            out += x
        return out

    def _merge_backward(self, d, xs):
        return [d] * len(xs)


class Average(_Merge):
    """Elementwise mean of the inputs."""

    def _merge(self, xs):
        out = xs[0].copy()
        for x in xs[1:]:
            out += x
        return out / out.dtype.type(len(xs))

    def _merge_backward(self, d, xs):
        return [d / d.dtype.type(len(xs))] * len(xs)


class Multiply(_Merge):
    """Elementwise product of the inputs."""

    def _merge(self, xs):
        out = xs[0].copy()
        for x in xs[1:]:
            out *= x
        return out

    def _merge_backward(self, d, xs):
        out = []
        for i in range(len(xs)):
            g = d.copy()
            for j, x in enumerate(xs):
                if j != i:
                    g *= x
            out.append(g)
        return out


class Concatenate(_Merge):
    """The inputs joined along ``axis`` (default the last)."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)

    def _check_shapes(self, shapes):
        if len(shapes) < 2:
            raise ValueError(f"{self._label()} needs a list of at least 2 inputs, got {len(shapes)}")
        rank = len(shapes[0]) + 1
        ax = self.axis if self.axis >= 0 else rank + self.axis
        if not 1 <= ax < rank:
            raise ValueError(f"{self._label()}: axis {self.axis} is out of range for inputs of "
                             f"rank {rank} (the batch axis cannot be joined)")
        a = ax - 1
        for s in shapes[1:]:
            if len(s) != len(shapes[0]) or any(
                    i != a and p is not None and q is not None and p != q
                    for i, (p, q) in enumerate(zip(s, shapes[0]))):
                raise ValueError(f"{self._label()} needs inputs of one shape except on axis "
                                 f"{self.axis}, got {[_shape_str((None,) + tuple(s)) for s in shapes]}")
        size = None if any(s[a] is None for s in shapes) else sum(s[a] for s in shapes)
        out = list(shapes[0])
        out[a] = size
        return tuple(out)

    def _merge(self, xs):
        self._sizes = [x.shape[self.axis] for x in xs]
        return np.concatenate(xs, axis=self.axis)

    def _merge_backward(self, d, xs):
        cuts = np.cumsum([x.shape[self.axis] for x in xs])[:-1]
        return list(np.split(d, cuts, axis=self.axis))

    def _config(self):
        return {"axis": self.axis}
