"""Keras's ``Bidirectional(layer, merge_mode)`` over the engine's bidirectional module."""

from __future__ import annotations

import numpy as np

from .base import Layer, _flatten_tensors, _is_symbolic
from .recurrent import _Recurrent

__all__ = ["Bidirectional"]


class Bidirectional(Layer):
    """Keras's ``Bidirectional(layer, merge_mode)`` on the engine's bidirectional module.

    The forward and backward halves get independent initial weights (as Keras's copy of the
    layer does); weights use the engine's names (``..._l0`` then ``..._l0_reverse``).
    """

    def __init__(self, layer, merge_mode="concat", **kwargs):
        if not isinstance(layer, _Recurrent):
            raise TypeError(f"Bidirectional wraps an LSTM or GRU layer, got {type(layer).__name__}")
        if merge_mode not in ("concat", "sum", "mul", "ave"):
            raise ValueError(
                f"merge_mode must be 'concat', 'sum', 'mul' or 'ave', got {merge_mode!r}"
            )
        if layer.go_backwards:
            raise ValueError("Bidirectional(layer) needs a layer with go_backwards=False")
        if layer.stateful:
            raise NotImplementedError("a stateful layer inside Bidirectional is not supported")
        if layer.built:
            raise ValueError("Bidirectional needs an unbuilt layer (it creates both directions)")
        if layer._input_shape_arg is not None and "input_shape" not in kwargs:
            kwargs["input_shape"] = layer._input_shape_arg
        super().__init__(**kwargs)
        self.layer = layer
        self.merge_mode = merge_mode
        layer.merge_mode = merge_mode
        layer._directions = 2
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        self.stateful = False

    def build(self, input_shape, dtype="float32"):
        out = self.layer.build(input_shape, dtype)
        self.dtype = self.layer.dtype
        self.input_shape, self.output_shape = self.layer.input_shape, out
        self.built = True
        self._sync()
        return out

    def _sync(self):
        self.flat_params, self.flat_grads = self.layer.flat_params, self.layer.flat_grads
        self.params, self.grads = self.layer.params, self.layer.grads
        self.regularizers = self.layer.regularizers

    @property
    def precision(self):
        return self.layer.precision

    def _quantize(self, mode):
        self.layer._quantize(mode)
        self._sync()

    def weight_bytes(self):
        return self.layer.weight_bytes()

    def _bind(self, flat_params, flat_grads):
        self.layer._bind(flat_params, flat_grads)
        self._sync()

    def forward(self, x, training=False, lengths=None, mask=None, initial_state=None):
        return self.layer.forward(x, training=training, lengths=lengths, mask=mask,
                                  initial_state=initial_state)

    def backward(self, d_y, need_input_grad=True, d_states=None):
        return self.layer.backward(d_y, need_input_grad, d_states=d_states)

    def compute_mask(self, x, mask):
        return self.layer.compute_mask(x, mask)

    @property
    def fixed_weights(self):
        return self.layer.fixed_weights

    def _symbolic_shapes(self, shapes, dtype, kwargs):
        if not self.built:
            self.build(shapes[0], dtype)
        return self.layer._symbolic_shapes(shapes, dtype, kwargs)

    def node_forward(self, xs, masks, training, node):
        return self.layer.node_forward(xs, masks, training, node)

    def node_backward(self, d_ys, need_input_grad, from_logits=False):
        return self.layer.node_backward(d_ys, need_input_grad)

    def _save_cache(self):
        return (dict(self.__dict__), self.layer._save_cache())

    def _restore_cache(self, cache):
        self.__dict__.update(cache[0])
        self.layer._restore_cache(cache[1])

    def __call__(self, x, training=False, lengths=None, initial_state=None, mask=None):
        if _is_symbolic(x, initial_state):
            return Layer._call_symbolic(self, _flatten_tensors(x) +
                                        _flatten_tensors(initial_state or []))
        x = np.asarray(x)
        if not self.built:
            self.build(x.shape[1:], "float64" if x.dtype == np.float64 else "float32")
        return self.layer.__call__(x, training=training, lengths=lengths,
                                   initial_state=initial_state, mask=mask)

    def get_config(self):
        return {"class": "Bidirectional",
                "config": {"merge_mode": self.merge_mode, "layer": self.layer.get_config()}}

    @classmethod
    def from_config(cls, config):
        from .base import layer_from_config

        config = dict(config)
        inner = layer_from_config(config.pop("layer"))
        return cls(inner, **config)

