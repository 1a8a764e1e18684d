"""Keras's ``Sequential``: a linear stack of layers, built as a one-input, one-output graph of
the functional :class:`~fastlstm.models.functional.Model` (the same machinery, no copy)."""

from __future__ import annotations

import numpy as np

from ..io import files as _files
from ..layers.base import Input, InputLayer, KerasTensor, Layer, _shape_str
from .functional import Model

__all__ = ["Sequential"]


def _kind_name(layer):
    return type(layer).__name__.lower()


class Sequential(Model):
    """A linear stack of layers, Keras's API::

        model = Sequential([Embedding(10000, 128, mask_zero=True), LSTM(128), Dense(1, activation="sigmoid")])
        model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
        model.fit(x, y, epochs=10, batch_size=32, validation_data=(x_val, y_val))
        p = model.predict(x_test)

    Inputs are NumPy arrays: [N, T, F] floats, or [N, T] integer tokens when the first layer
    is an Embedding. ``lengths=`` (int [N]) to fit/evaluate/predict gives right-padded
    sequences' valid lengths explicitly (the Embedding mask does it from the tokens).
    """

    def __init__(self, layers=None, name=None, dtype="float32"):
        key = np.dtype(dtype).name
        if key not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        Model.__init__(self, name=name or "sequential")
        self.dtype = np.dtype(key)
        self.layers = []
        self._input_shape = None
        self.built = False
        self.flat_params = None
        self.flat_grads = None
        for layer in layers or []:
            self.add(layer)

    # ------------------------------------------------------------------------------ structure
    def add(self, layer):
        """Appends a layer (or an ``Input(shape)`` first); builds when the input shape is known."""
        if isinstance(layer, KerasTensor) and layer.node is None:
            layer = layer._spec
        if isinstance(layer, InputLayer):
            if self.layers:
                raise ValueError("Input(...) must come before the first layer")
            self._input_shape = layer.shape
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add needs a fastlstm layer, got {type(layer).__name__}")
        if any(layer is l for l in self.layers):
            raise ValueError(f"{layer._label()} is already in this model")
        if getattr(layer, "return_state", False):
            raise ValueError(
                f"{layer._label()} has return_state=True: a Sequential layer has one output "
                "(call the layer directly to get its states)"
            )
        if layer.name is None:
            base = _kind_name(layer)
            used = {l.name for l in self.layers}
            layer.name = base
            k = 1
            while layer.name in used:
                layer.name = f"{base}_{k}"
                k += 1
        if not self.layers and self._input_shape is None:
            if layer._input_shape_arg is not None:
                self._input_shape = layer._input_shape_arg
            elif type(layer).__name__ == "Embedding":
                self._input_shape = (None,)  # token ids: nothing else to know
        self.layers.append(layer)
        self.built = False
        if self._input_shape is not None:
            self.build()

    def pop(self):
        if not self.layers:
            raise ValueError("there is no layer to remove")
        layer = self.layers.pop()
        self.built = False
        if self.layers and self._input_shape is not None:
            self.build()
        return layer

    def build(self, input_shape=None):
        """Builds every layer (as a graph) and allocates the model's flat buffers.

        ``input_shape`` includes the batch axis as in Keras (``(None, T, F)``, or
        ``(None, T)`` for tokens); without it the shape given by ``Input``/``input_shape=``.
        """
        if input_shape is not None:
            self._input_shape = Layer._shape_arg(tuple(input_shape)[1:])
        if self._input_shape is None:
            raise ValueError("build() needs input_shape=(None, timesteps, features)")
        if not self.layers:
            raise ValueError("the model has no layers")
        tokens = type(self.layers[0]).__name__ == "Embedding"
        inp = Input(self._input_shape, dtype="int64" if tokens else self.dtype.name)
        inp.compute_dtype = self.dtype.name
        x = inp
        shape = self._input_shape
        for i, layer in enumerate(self.layers):
            arg = layer._input_shape_arg
            if i > 0 and arg is not None and arg[-1] is not None and shape and arg[-1] != shape[-1]:
                raise ValueError(
                    f"layer {i} ({layer._label()}) was declared for inputs with {arg[-1]} "
                    f"features, but layer {i - 1} outputs {_shape_str((None,) + shape)}"
                )
            if layer.built and layer.dtype != self.dtype:
                raise ValueError(f"{layer._label()} was built as {layer.dtype.name}, the "
                                 f"model is {self.dtype.name}")
            try:
                x = layer(x)
            except ValueError as e:
                raise ValueError(f"layer {i} ({layer.name}): {e}") from None
            shape = x.shape[1:]
        layers = list(self.layers)
        self._init_graph(inp, x)
        self.layers = layers
        self._input_shape = tuple(self._input_shape)

    def _ensure_built(self, x):
        if self.built:
            return
        if not self.layers:
            raise ValueError("the model has no layers")
        x = np.asarray(x)
        first = self.layers[0]
        if type(first).__name__ == "Embedding":
            if x.ndim != 2:
                raise ValueError(f"the first layer is an Embedding: x must be 2-D [samples, "
                                 f"time] of token ids, got shape {x.shape}")
            self.build((None, None))
        else:
            if x.ndim != 3:
                hint = " (for one feature per time step use x[..., None])" if x.ndim == 2 else ""
                raise ValueError(f"layer 0 ({first._label()}) expects 3-D input [samples, time, "
                                 f"features], got an array of shape {x.shape}{hint}")
            self.build((None, None, x.shape[2]))

    # ------------------------------------------------------------------------------ config
    def get_config(self):
        """The MODEL object of the model file: class, dtype, layer list."""
        return {"class": "Sequential", "dtype": self.dtype.name,
                "layers": [layer.get_config() for layer in self.layers]}

    @classmethod
    def from_config(cls, config):
        """A model (built when the first layer's input size is known) from :meth:`get_config`."""
        from ..layers import layer_from_config

        if not isinstance(config, dict) or config.get("class") != "Sequential":
            raise ValueError(f"not a Sequential config: class {config.get('class') if isinstance(config, dict) else config!r}")
        layers = config.get("layers")
        if not isinstance(layers, list) or not layers:
            raise ValueError("a Sequential config needs a non-empty 'layers' list")
        model = cls(dtype=config.get("dtype", "float32"))
        for layer in [layer_from_config(l) for l in layers]:
            model.add(layer)
        return model

    def __getstate__(self):
        state = dict(self.__dict__)
        if self.built:
            state = {"_pickled": True, "config": self.get_config(),
                     "input_shape": self._input_shape, "weights": self.get_weight_dict(),
                     "name": self.name,
                     "compile": (self.optimizer, self._loss_arg, self._metrics_arg)
                     if self.compiled else None}
        return state

    def __setstate__(self, state):
        if not state.get("_pickled"):
            self.__dict__.update(state)
            return
        other = Sequential.from_config(state["config"])
        if not other.built:
            other.build((None,) + tuple(state["input_shape"]))
        other.set_weight_dict(state["weights"])
        other.name = state["name"]
        self.__dict__.update(other.__dict__)
        for leaf in self._leaves:
            leaf._owner = self
        if state["compile"] is not None:
            opt, loss, metrics = state["compile"]
            self.compile(opt, loss, metrics)

    def __repr__(self):
        return f"<Sequential {self.name!r}: {len(self.layers)} layers>"


# model files and the Keras importer build Sequential models through this registration
_files.register_model_class(Sequential)
