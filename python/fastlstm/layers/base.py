"""The layer base class, symbolic tensors and ``Input``: what every Keras-shaped layer shares.

A layer has ``build(input_shape, dtype)`` (shapes without the batch axis, ``None`` for an
unknown length), ``forward(x, training=False, lengths=None) -> y``, ``backward(d_y) -> d_x``
(after a ``forward(..., training=True)``; fills ``grads``, overwriting), ``params``/``grads``
(dicts of views into one flat buffer each, under the names of the model file) and
``get_config()``/``from_config()`` in the model-file schema (``{"class": ..., "config": ...}``).

Calling a layer on a :class:`KerasTensor` (from :func:`Input` or another layer's symbolic
call) records a :class:`Node` instead of computing: the graph that ``fastlstm.Model`` runs.
In a graph each layer runs through ``node_forward(xs, masks, training, node)`` and
``node_backward(d_ys, need_input_grad)`` (lists: a layer may take several inputs and give
several outputs); the defaults below wrap the one-input ``forward``/``backward``.

Masks are boolean arrays [B, T] (True: a real step) or None; a layer's ``compute_mask``
gives the mask of its output (the default passes the input's on unchanged).
"""

from __future__ import annotations

import numpy as np

from .. import initializers
from ..rnn import _positive_int as _int_arg

__all__ = ["Layer", "Input", "InputLayer", "KerasTensor", "Node"]

_ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid", "softmax")


def _rate_arg(value, name):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}") from None
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {v}")
    return v


def _shape_str(shape):
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _sigmoid(z):
    # exp of a non-positive number only: no overflow for any z
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype, copy=False)


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def _activation_name(activation):
    if activation is None:
        return "linear"
    if not isinstance(activation, str) or activation.lower() not in _ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; expected one of {list(_ACTIVATIONS)} or None"
        )
    return activation.lower()


def _activate(act, z):
    if act == "linear":
        return z
    if act == "relu":
        return np.maximum(z, 0)
    if act == "tanh":
        return np.tanh(z)
    if act == "sigmoid":
        return _sigmoid(z)
    return _softmax(z)


def _activate_backward(act, y, d):
    """d loss / d z from d loss / d y for ``y = act(z)`` (``y`` the forward's output)."""
    if act == "linear":
        return d
    if act == "relu":
        return d * (y > 0)
    if act == "tanh":
        return d * (1 - y * y)
    if act == "sigmoid":
        return d * y * (1 - y)
    return y * (d - (d * y).sum(axis=-1, keepdims=True))


def _lengths_to_mask(lengths, T):
    return np.arange(T)[None, :] < np.asarray(lengths)[:, None]


# ------------------------------------------------------------------------------------- graph
class KerasTensor:
    """A symbolic tensor: the shape (batch axis first, ``None`` where unknown) and dtype of a
    value the graph will compute, and the node that computes it."""

    def __init__(self, shape, dtype, node=None, index=0, name=None, compute_dtype=None):
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype).name
        self.node = node  # None for a model input
        self.index = index
        self.name = name
        # the float dtype the layers that read this tensor are built with
        self.compute_dtype = compute_dtype or (
            self.dtype if self.dtype in ("float32", "float64") else "float32")

    @property
    def ndim(self):
        return len(self.shape)

    def __repr__(self):
        who = f" (from {self.node.layer.name})" if self.node is not None else (
            f" (Input {self.name!r})" if self.name else " (Input)")
        return f"<KerasTensor shape={_shape_str(self.shape)} dtype={self.dtype}{who}>"

    def __hash__(self):
        return id(self)

    def __eq__(self, other):
        return self is other


class Node:
    """One call of a layer in a graph: its input tensors, output tensors and call options."""

    def __init__(self, layer, inputs, n_outputs, out_shapes, out_dtype, kwargs=None):
        self.layer = layer
        self.inputs = list(inputs)
        self.kwargs = dict(kwargs or {})
        self.outputs = [KerasTensor((None,) + tuple(s), out_dtype, node=self, index=i,
                                    compute_dtype=out_dtype)
                        for i, s in zip(range(n_outputs), out_shapes)]


def _flatten_tensors(obj):
    if isinstance(obj, KerasTensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _flatten_tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _flatten_tensors(o)]
    return []


def _is_symbolic(*objs):
    return any(_flatten_tensors(o) for o in objs)


# ------------------------------------------------------------------------------------- base
class Layer:
    """Base of every layer: shapes, the flat parameter buffer, the config round trip and the
    symbolic call that builds graphs."""

    def __init__(self, name=None, input_shape=None, batch_input_shape=None, input_dim=None,
                 dtype=None, trainable=True, **kwargs):
        if kwargs:
            raise TypeError(
                f"{type(self).__name__}() got unexpected keyword argument(s) {sorted(kwargs)}"
            )
        self.name = name
        if batch_input_shape is not None:
            input_shape = tuple(batch_input_shape)[1:]
        if input_dim is not None:
            input_shape = (_int_arg(input_dim, "input_dim"),)
        self._input_shape_arg = None if input_shape is None else self._shape_arg(input_shape)
        self._dtype_arg = None if dtype is None else np.dtype(dtype).name
        self.trainable = bool(trainable)
        self.built = False
        self.dtype = None
        self.input_shape = None  # without the batch axis
        self.output_shape = None
        self.params = {}
        self.grads = {}
        self.flat_params = None
        self.flat_grads = None
        self.regularizers = {}  # weight name -> regularizer
        self._owner = None  # the model whose flat buffer holds the weights now
        self._rng = initializers.spawn_rng()

    @staticmethod
    def _shape_arg(shape):
        if isinstance(shape, int):
            shape = (shape,)
        out = []
        for s in tuple(shape):
            out.append(None if s is None else _int_arg(s, "input_shape entry"))
        return tuple(out)

    # --------------------------------------------------------------------------- building
    def build(self, input_shape, dtype="float32"):
        """Creates the weights for inputs of ``input_shape`` (no batch axis)."""
        input_shape = self._shape_arg(input_shape)
        dtype = np.dtype(dtype).name
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        if self._dtype_arg is not None and self._dtype_arg != dtype:
            raise ValueError(
                f"{self._label()} was given dtype={self._dtype_arg!r} but the model is {dtype!r}"
            )
        self.dtype = np.dtype(dtype)
        self.output_shape = self._build(input_shape)
        self.input_shape = input_shape
        self.built = True
        return self.output_shape

    def _build(self, input_shape):
        return input_shape

    def _label(self):
        return f"{type(self).__name__} layer" + (f" {self.name!r}" if self.name else "")

    def _allocate(self, named):
        """One flat buffer for the layer's own arrays (the model later moves it)."""
        n = sum(a.size for _, a in named)
        self.flat_params = np.empty(n, dtype=self.dtype)
        self.flat_grads = np.zeros(n, dtype=self.dtype)
        off = 0
        for name, a in named:
            self.flat_params[off : off + a.size] = a.ravel()
            off += a.size
        self._shapes = [(name, a.shape) for name, a in named]
        self._make_views()

    def _make_views(self):
        self.params, self.grads, off = {}, {}, 0
        for name, shape in self._shapes:
            size = int(np.prod(shape, dtype=np.int64))
            self.params[name] = self.flat_params[off : off + size].reshape(shape)
            self.grads[name] = self.flat_grads[off : off + size].reshape(shape)
            off += size

    def _bind(self, flat_params, flat_grads):
        """Moves the weights into slices of the model-wide buffers (values copied)."""
        flat_params[...] = self.flat_params
        flat_grads[...] = 0
        self.flat_params, self.flat_grads = flat_params, flat_grads
        self._make_views()

    def count_params(self):
        return 0 if self.flat_params is None else int(self.flat_params.size)

    def weight_bytes(self):
        """Bytes of the weights as the engine keeps them (a quantized recurrent layer: its
        matrices in bf16, or int8 plus a float32 scale per row)."""
        return sum(v.nbytes for v in self.params.values()) if self.params else 0

    @property
    def fixed_weights(self):
        """Names of weights that training leaves unchanged (see LSTM)."""
        return ()

    def _leaf_layers(self):
        """The layers that own weights in the model buffer (a nested model lists its own)."""
        return [self]

    # --------------------------------------------------------------------------- calls
    def compute_mask(self, x, mask):
        """The mask of this layer's output given its input ``x`` and the input's mask."""
        return mask

    def forward(self, x, training=False, lengths=None):
        raise NotImplementedError

    def backward(self, d_y):
        raise NotImplementedError

    def node_forward(self, xs, masks, training, node):
        """One graph call: lists of inputs and their masks -> (outputs, output masks)."""
        x = xs[0]
        y = self.forward(x, training=training)
        return [y], [self.compute_mask(x, masks[0])]

    def node_backward(self, d_ys, need_input_grad, from_logits=False):
        """Gradients of the node's inputs from those of its outputs (None: no gradient)."""
        d = d_ys[0]
        if from_logits:
            return [self.backward(d, need_input_grad=need_input_grad, from_logits=True)]
        return [self.backward(d, need_input_grad=need_input_grad)]

    def _save_cache(self):
        """What backward needs from one call (a layer called twice in a graph keeps both)."""
        return dict(self.__dict__)

    def _restore_cache(self, cache):
        self.__dict__.update(cache)

    def _symbolic_shapes(self, shapes, dtype, kwargs):
        """Builds on first use; returns the output shapes (no batch axis) for input shapes."""
        shape = shapes[0]
        if not self.built:
            return [self.build(shape, dtype)]
        # the time axis is free (None or any length); features must agree
        if len(shape) != len(self.input_shape) or (
                len(shape) > 1 and shape[-1] != self.input_shape[-1]):
            raise ValueError(
                f"{self._label()} was built for input {_shape_str((None,) + self.input_shape)}, "
                f"got {_shape_str((None,) + tuple(shape))}"
            )
        return [self.compute_output_shape(shape)]

    def compute_output_shape(self, input_shape):
        """Output shape (no batch axis) of a built layer for ``input_shape``; the time axis
        follows the input's."""
        out = tuple(self.output_shape)
        if (len(out) == len(self.input_shape) and len(out) >= 2 and
                self.input_shape[0] != input_shape[0] and out[0] == self.input_shape[0]):
            out = (input_shape[0],) + out[1:]
        return out

    def _call_symbolic(self, inputs, kwargs=None):
        """Records a node calling this layer on symbolic ``inputs`` (a list)."""
        for t in inputs:
            if not isinstance(t, KerasTensor):
                raise TypeError(f"{self._label()}: mixing symbolic tensors with arrays in one "
                                f"call is not supported, got {type(t).__name__}")
        dtype = self._dtype_arg or inputs[0].compute_dtype
        shapes = [t.shape[1:] for t in inputs]
        out_shapes = self._symbolic_shapes(shapes, dtype, kwargs or {})
        if self.name is None:
            self.name = _unique_name(type(self).__name__)
        node = Node(self, inputs, len(out_shapes), out_shapes, self.dtype.name if self.dtype is
                    not None else dtype, kwargs)
        return node.outputs[0] if len(node.outputs) == 1 else list(node.outputs)

    def __call__(self, x, training=False, lengths=None, **kwargs):
        """Runs the layer alone (building it on first use from ``x``'s shape), or, on
        symbolic tensors, adds it to a graph."""
        if _is_symbolic(x):
            if kwargs:
                raise TypeError(f"{self._label()}() got unexpected keyword argument(s) "
                                f"{sorted(kwargs)}")
            return self._call_symbolic(_flatten_tensors(x))
        if kwargs:
            raise TypeError(f"{self._label()}() got unexpected keyword argument(s) {sorted(kwargs)}")
        x = np.asarray(x)
        if not self.built:
            dtype = "float64" if x.dtype == np.float64 else "float32"
            self.build(x.shape[1:], dtype)
        if lengths is not None:
            lengths = np.asarray(lengths, dtype=np.int64)
        return self.forward(x, training=training, lengths=lengths)

    def reset_states(self):
        pass

    def get_weights(self):
        return [v.copy() for v in self.params.values()]

    def set_weights(self, weights):
        names = list(self.params)
        if len(weights) != len(names):
            raise ValueError(
                f"{self._label()} has {len(names)} weights {names}, got a list of {len(weights)}"
            )
        arrs = [np.asarray(w) for w in weights]
        for name, a in zip(names, arrs):
            if a.shape != self.params[name].shape:
                raise ValueError(
                    f"weight {name!r} of {self._label()} must have shape "
                    f"{self.params[name].shape}, got {a.shape}"
                )
        for name, a in zip(names, arrs):
            self.params[name][...] = a

    # --------------------------------------------------------------------------- config
    def get_config(self):
        return {"class": type(self).__name__, "config": self._config()}

    def _config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def _check_rank(self, x, rank, what):
        if x.ndim != rank:
            raise ValueError(
                f"{self._label()} expects {rank}-D input {what}, got an array of shape {x.shape}"
            )

    def __repr__(self):
        shape = "" if not self.built else f" {_shape_str(self.input_shape)}->{_shape_str(self.output_shape)}"
        return f"<{type(self).__name__}{shape}>"


_NAME_COUNTS = {}


def _unique_name(base):
    """Keras-style automatic names for layers of graphs: lstm, lstm_1, ..."""
    key = "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(base))
    key = key.replace("l_s_t_m", "lstm").replace("g_r_u", "gru").lstrip("_")
    n = _NAME_COUNTS.get(key, 0)
    _NAME_COUNTS[key] = n + 1
    return key if n == 0 else f"{key}_{n}"


class InputLayer:
    """Keras's ``Input(shape)`` placeholder in a ``Sequential`` layer list."""

    def __init__(self, shape=None, batch_size=None, dtype=None, name=None, batch_shape=None):
        if batch_shape is not None:
            shape = tuple(batch_shape)[1:]
            batch_size = tuple(batch_shape)[0]
        if shape is None:
            raise ValueError("Input needs shape=(timesteps, features) or (timesteps,) for tokens")
        self.shape = Layer._shape_arg(shape)
        self.batch_size = batch_size
        self.dtype = dtype
        self.name = name

    def __repr__(self):
        return f"Input(shape={_shape_str(self.shape)})"


def Input(shape=None, batch_size=None, dtype=None, name=None, batch_shape=None):
    """``Input(shape=(T, F))`` (or ``(T,)`` with an integer ``dtype`` for token ids): a symbolic
    model input for ``fastlstm.Model(inputs, outputs)``; as the first entry of a
    ``Sequential`` it gives the model its input shape."""
    spec = InputLayer(shape, batch_size=batch_size, dtype=dtype, name=name,
                      batch_shape=batch_shape)
    dt = np.dtype(dtype if dtype is not None else "float32")
    if dt.kind not in "fiub":
        raise TypeError(f"Input dtype must be a number type, got {dt}")
    if dt.kind == "f" and dt.name not in ("float32", "float64"):
        raise ValueError(f"Input dtype must be float32 or float64 (or an integer type for "
                         f"tokens), got {dt.name}")
    t = KerasTensor((None,) + spec.shape, dt.name, name=name)
    t._spec = spec
    return t


# layer classes by their model-file name, filled by fastlstm.layers (its __init__ imports every
# layer module): wrappers (Bidirectional, TimeDistributed) rebuild their inner layer from here
_REGISTRY = {}


def layer_from_config(layer):
    """A layer (unbuilt) from its model-file description ``{"class": ..., "config": ...}``."""
    if not isinstance(layer, dict) or "class" not in layer:
        raise ValueError(f"a layer description must be a dict with 'class' and 'config', got {layer!r}")
    cls = _REGISTRY.get(layer["class"])
    if cls is None:
        raise ValueError(f"unknown layer class {layer['class']!r}; expected one of {sorted(_REGISTRY)}")
    return cls.from_config(dict(layer.get("config", {})))


def _sequence_input(layer, input_shape, features_known=False):
    """``input_shape`` (without the batch) when it is [time, features] (features given, if
    ``features_known``); else the ValueError that names the layer and the shape it got."""
    if len(input_shape) != 2 or (features_known and input_shape[1] is None):
        raise ValueError(f"{layer._label()} expects 3-D input [batch, time, features], got "
                         f"input shape {_shape_str((None,) + input_shape)}")
    return input_shape
