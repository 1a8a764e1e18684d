"""Keras-shaped layers on NumPy arrays; the recurrent ones run in fastlstm's C++ engine.

Each layer has ``build(input_shape, dtype)`` (shapes without the batch axis, ``None`` for an
unknown length), ``forward(x, training=False, lengths=None) -> y``, ``backward(d_y) -> d_x``
(after a ``forward(..., training=True)``; fills ``grads``, overwriting), ``params``/``grads``
(dicts of views into one flat buffer each, under the names of the model file) and
``get_config()``/``from_config()`` in the model-file schema (``{"class": ..., "config": ...}``).

Masks travel as ``lengths`` (int array [B]): ``Embedding(mask_zero=True)`` makes them from
right-padded token rows (length = index of the last nonzero token + 1, so a zero inside a
sequence is an ordinary token), an explicit ``lengths=`` to ``fit``/``predict`` gives them
directly, and every layer passes them on except a recurrent layer with
``return_sequences=False``, which consumes them. A row of length 0 (all padding) behaves as in
Keras: a recurrent layer returns its initial state for it (zeros unless stateful) and sends
no gradient into it.

``go_backwards=True`` runs each sequence's valid steps in reverse; with ``return_sequences`` the
outputs come in that processing order (Keras's convention), still right-padded: output step j
of a sequence of length L is the state after reading x[L-1-j], and steps >= L are zero. (On
unpadded input this is exactly Keras; on padded input Keras reverses the padding too.)

Training keeps an LSTM's ``bias_hh`` fixed (Keras has a single bias; ``bias_ih`` plays it),
so optimizer steps match Keras's; GRU's two biases are both Keras weights and both train.
"""

from __future__ import annotations

import numpy as np

from . import initializers
from .optim import get_regularizer
from .rnn import GRU as _EngineGRU
from .rnn import LSTM as _EngineLSTM
from .rnn import _positive_int as _int_arg

__all__ = [
    "Layer",
    "Input",
    "InputLayer",
    "Embedding",
    "LSTM",
    "GRU",
    "Bidirectional",
    "Dense",
    "Dropout",
    "TimeDistributed",
    "layer_from_config",
]

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


# ------------------------------------------------------------------------------------- base
class Layer:
    """Base of every layer: shapes, the flat parameter buffer, the config round trip."""

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

    def weight_bytes(self):
        """Bytes of the weights as the engine keeps them (a quantized recurrent layer: its
        matrices in bf16, or int8 plus a float32 scale per row)."""
        return sum(v.nbytes for v in self.params.values()) if self.params else 0

    def count_params(self):
        return 0 if self.flat_params is None else int(self.flat_params.size)

    @property
    def fixed_weights(self):
        """Names of weights that training leaves unchanged (see LSTM)."""
        return ()

    # --------------------------------------------------------------------------- calls
    def compute_lengths(self, x, lengths):
        """The lengths (mask) this layer hands to the next one."""
        return lengths

    def forward(self, x, training=False, lengths=None):
        raise NotImplementedError

    def backward(self, d_y):
        raise NotImplementedError

    def __call__(self, x, training=False, lengths=None):
        """Runs the layer alone (building it on first use from ``x``'s shape)."""
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


class InputLayer:
    """Keras's ``Input(shape)``: a placeholder giving a Sequential its input shape."""

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
    """``Input(shape=(T, F))`` (or ``(T,)`` for token ids): gives a Sequential its input shape."""
    return InputLayer(shape, batch_size=batch_size, dtype=dtype, name=name,
                      batch_shape=batch_shape)


# ------------------------------------------------------------------------------------- Embedding
class Embedding(Layer):
    """Token ids [B, T] -> vectors [B, T, output_dim]; ``mask_zero=True`` makes id 0 padding."""

    def __init__(self, input_dim, output_dim, mask_zero=False, embeddings_initializer="uniform",
                 embeddings_regularizer=None, input_length=None, **kwargs):
        if input_length is not None and "input_shape" not in kwargs:
            kwargs["input_shape"] = (input_length,)
        super().__init__(**kwargs)
        self.input_dim = _int_arg(input_dim, "input_dim")
        self.output_dim = _int_arg(output_dim, "output_dim")
        self.mask_zero = bool(mask_zero)
        self.embeddings_initializer = initializers.get(embeddings_initializer,
                                                       "embeddings_initializer")
        if embeddings_regularizer is not None:
            self.regularizers["embeddings"] = get_regularizer(embeddings_regularizer)

    def _build(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(
                f"{self._label()} expects 2-D input [batch, time] of token ids, got input shape "
                f"{_shape_str((None,) + input_shape)}"
            )
        w = self.embeddings_initializer((self.input_dim, self.output_dim), self._rng, self.dtype)
        self._allocate([("embeddings", w)])
        return input_shape + (self.output_dim,)

    def _tokens(self, x):
        x = np.asarray(x)
        self._check_rank(x, 2, "[batch, time] of token ids")
        if x.dtype.kind in "iu":
            ids = x.astype(np.int64, copy=False)
        elif x.dtype.kind == "f":
            ids = x.astype(np.int64)
            if not np.array_equal(ids, x):
                raise ValueError(f"{self._label()} needs integer token ids, got non-integer values")
        elif x.dtype.kind == "b":
            ids = x.astype(np.int64)
        else:
            raise TypeError(f"{self._label()} needs integer token ids, got dtype {x.dtype}")
        if ids.size:
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= self.input_dim:
                b, t = np.argwhere((ids < 0) | (ids >= self.input_dim))[0]
                raise ValueError(
                    f"{self._label()}: token ids must be in [0, input_dim={self.input_dim}), got "
                    f"min {lo} and max {hi} (first bad id {ids[b, t]} at [{b}, {t}])"
                )
        return ids

    def compute_lengths(self, x, lengths):
        if not self.mask_zero:
            return lengths
        nz = np.asarray(x) != 0  # [B, T]
        T = nz.shape[1]
        last = T - np.argmax(nz[:, ::-1], axis=1)
        mask_len = np.where(nz.any(axis=1), last, 0).astype(np.int64)
        return mask_len if lengths is None else np.minimum(mask_len, lengths)

    def forward(self, x, training=False, lengths=None):
        ids = self._tokens(x)
        if training:
            self._ids = ids
        return self.params["embeddings"][ids]  # [B, T, D]

    def backward(self, d_y, need_input_grad=False):
        g = self.grads["embeddings"]
        g[...] = 0
        np.add.at(g, self._ids.ravel(), d_y.reshape(-1, self.output_dim))

    def _config(self):
        return {"input_dim": self.input_dim, "output_dim": self.output_dim,
                "mask_zero": self.mask_zero}


# ------------------------------------------------------------------------------------- recurrent
def _reverse_index(lengths, B, T):
    """[B, T] gather index that reverses each row's first ``lengths[b]`` steps (an involution)."""
    t = np.arange(T)[None, :]
    L = lengths[:, None]
    return np.where(t < L, L - 1 - t, t)


class _Recurrent(Layer):
    """LSTM and GRU as Keras layers over one engine module (batch-first, one layer)."""

    _engine_cls = None
    _gates = 4

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None,
                 bias_regularizer=None, dropout=0.0, recurrent_dropout=0.0,
                 return_sequences=False, return_state=False, go_backwards=False, stateful=False,
                 unroll=False, **kwargs):
        super().__init__(**kwargs)
        self.units = _int_arg(units, "units")
        if activation != "tanh" or recurrent_activation != "sigmoid":
            raise ValueError(
                f"{type(self).__name__}: the engine implements activation='tanh' and "
                f"recurrent_activation='sigmoid' only, got {activation!r} and "
                f"{recurrent_activation!r}"
            )
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer, "kernel_initializer")
        self.recurrent_initializer = initializers.get(recurrent_initializer,
                                                      "recurrent_initializer")
        self.bias_initializer = initializers.get(bias_initializer, "bias_initializer")
        self._regularizer_args = (kernel_regularizer, recurrent_regularizer, bias_regularizer)
        self.dropout = _rate_arg(dropout, "dropout")
        self.recurrent_dropout = _rate_arg(recurrent_dropout, "recurrent_dropout")
        if self.recurrent_dropout > 0:
            raise NotImplementedError(
                f"{type(self).__name__}(recurrent_dropout={self.recurrent_dropout}): the engine "
                "has no per-step dropout on the recurrent state; use dropout= (on the inputs) "
                "or a Dropout layer between recurrent layers"
            )
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.merge_mode = None  # set by Bidirectional
        self._directions = 1
        self._module = None
        self._state = None  # stateful: (h [D, B, H], c [D, B, H] or None)
        self._d_out_cache = None

    # --------------------------------------------------------------------------- building
    def _engine_kwargs(self):
        return {}

    def _build(self, input_shape):
        if len(input_shape) != 2 or input_shape[1] is None:
            raise ValueError(
                f"{self._label()} expects 3-D input [batch, time, features], got input shape "
                f"{_shape_str((None,) + input_shape)}"
            )
        F = input_shape[1]
        H, G = self.units, self._gates * self.units
        self._module = self._engine_cls(
            F, H, bias=self.use_bias, batch_first=True,
            bidirectional=self._directions == 2, dtype=self.dtype,
            seed=initializers.spawn_seed(), **self._engine_kwargs(),
        )
        p = self._module.params
        k_reg, r_reg, b_reg = (get_regularizer(r) for r in self._regularizer_args)
        for suffix in ("", "_reverse")[: self._directions]:
            # Keras kernel [F, G] / recurrent kernel [H, G]; the engine stores their transposes
            p["weight_ih_l0" + suffix][...] = self.kernel_initializer((F, G), self._rng, self.dtype).T
            p["weight_hh_l0" + suffix][...] = self.recurrent_initializer((H, G), self._rng, self.dtype).T
            if self.use_bias:
                p["bias_ih_l0" + suffix][...] = self._initial_bias(G)
                p["bias_hh_l0" + suffix][...] = self._initial_recurrent_bias(G)
            for peep in ("weight_ci_l0", "weight_cf_l0", "weight_co_l0"):
                if peep + suffix in p:
                    p[peep + suffix][...] = self.kernel_initializer((H,), self._rng, self.dtype)
            for name, reg in (("weight_ih_l0", k_reg), ("weight_hh_l0", r_reg),
                              ("bias_ih_l0", b_reg), ("bias_hh_l0", b_reg)):
                if reg is not None and name + suffix in p:
                    self.regularizers[name + suffix] = reg
        self._sync_views()
        out_feat = self._output_features()
        T = input_shape[0]
        return (T, out_feat) if self.return_sequences else (out_feat,)

    def _initial_bias(self, G):
        return self.bias_initializer((G,), self._rng, self.dtype)

    def _initial_recurrent_bias(self, G):
        return self.bias_initializer((G,), self._rng, self.dtype)

    def _output_features(self):
        if self._directions == 2 and self.merge_mode == "concat":
            return 2 * self.units
        return self.units

    @property
    def precision(self):
        """The weights' precision: the dtype's name, or "bf16"/"int8" after quantization."""
        return self._module.precision if self._module is not None else self.dtype.name

    def _quantize(self, mode):
        # the layer's engine module becomes its quantized copy (inference only); the model's
        # flat buffers no longer hold this layer's parameters
        self._module = self._module.quantize(mode)
        self._sync_views()

    def weight_bytes(self):
        if self.precision not in ("bf16", "int8"):
            return super().weight_bytes()
        total = 0
        for name, v in self.params.items():
            if name.startswith(("weight_ih", "weight_hh", "weight_hr")):
                total += v.size * 2 if self.precision == "bf16" else v.size + 4 * v.shape[0]
            else:
                total += v.nbytes
        return total

    def _sync_views(self):
        m = self._module
        self.flat_params, self.flat_grads = m.flat_params, m.flat_grads
        self.params, self.grads = m.params, m.grads

    def _bind(self, flat_params, flat_grads):
        self._module.use_buffers(flat_params, flat_grads)
        self._module.flat_grads[...] = 0
        self._sync_views()

    def reset_states(self, states=None):
        """Forgets the carried state (stateful layers); ``states`` sets it instead."""
        if states is None:
            self._state = None
            return
        h = np.asarray(states[0], dtype=self.dtype)
        c = np.asarray(states[1], dtype=self.dtype) if len(states) > 1 else None
        self._state = (h.reshape((self._directions,) + h.shape[-2:]),
                       None if c is None else c.reshape((self._directions,) + c.shape[-2:]))

    @property
    def states(self):
        """Keras's ``layer.states`` of a stateful layer: ``[h, c]`` (LSTM) or ``[h]`` (GRU),
        each [B, units], the state the next call starts from; None before the first call."""
        if self._state is None:
            return None
        h, c = self._state
        return [h[0].copy()] + ([] if c is None else [c[0].copy()])

    # --------------------------------------------------------------------------- calls
    def _check_x(self, x):
        x = np.asarray(x)
        self._check_rank(x, 3, "[batch, time, features]")
        F = self.input_shape[1]
        if x.shape[2] != F:
            raise ValueError(
                f"{self._label()} was built for {F} input features, got an input of shape "
                f"{x.shape}"
            )
        if x.dtype != self.dtype:
            if x.dtype.kind not in "fiub":
                raise TypeError(f"{self._label()} needs real-valued input, got dtype {x.dtype}")
            x = x.astype(self.dtype)
        return x

    def _initial_state(self, B):
        if not self.stateful or self._state is None:
            return None
        h, c = self._state
        if h.shape[1] != B:
            raise ValueError(
                f"stateful {self._label()} carries state for batches of {h.shape[1]} sequences, "
                f"got a batch of {B}: use the same batch size throughout (a sample count "
                "divisible by batch_size) or call reset_states()"
            )
        return h, c

    def compute_lengths(self, x, lengths):
        # a recurrent layer consumes the mask unless it returns sequences
        return lengths if self.return_sequences else None

    def _engine_call(self, x, hx, lengths, training):
        raise NotImplementedError

    def _engine_backward(self, d_output, d_h_n):
        raise NotImplementedError

    def forward(self, x, training=False, lengths=None):
        x = self._check_x(x)
        B, T, _ = x.shape
        zero, eng_len = None, None
        if lengths is not None:
            eng_len = lengths
            if (lengths == 0).any():
                zero = lengths == 0
                eng_len = np.maximum(lengths, 1)
            elif (lengths == T).all():
                eng_len = None  # no padding: the engine's plain path
        mask = None
        if training and self.dropout > 0:
            # one mask per sequence reused at every step (Keras's implementation=2)
            keep = 1.0 - self.dropout
            mask = (self._rng.random((B, 1, x.shape[2])) < keep).astype(self.dtype) / self.dtype.type(keep)
            x = x * mask
        rev = None
        if self.go_backwards:
            if eng_len is None:
                x = x[:, ::-1]
            else:
                rev = _reverse_index(eng_len, B, T)
                x = x[np.arange(B)[:, None], rev]
        x = np.ascontiguousarray(x)
        hx = self._initial_state(B)
        out, h_n, c_n = self._engine_call(x, hx, eng_len, training)
        if zero is not None:
            out[zero] = 0
            h_keep = np.zeros_like(h_n[:, :1]) if hx is None else hx[0][:, zero]
            h_n[:, zero] = h_keep
            if c_n is not None:
                c_n[:, zero] = 0 if hx is None else hx[1][:, zero]
        if self.stateful:
            self._state = (h_n.copy(), None if c_n is None else c_n.copy())
        if training:
            self._cache = (B, T, zero, mask, rev, x.shape)
        if self.return_sequences:
            y = self._merge(out[..., : self.units], out[..., self.units :], training) \
                if self._directions == 2 else out
        else:
            y = self._merge(h_n[0], h_n[1], training) if self._directions == 2 else h_n[0]
        self._last_states = (h_n, c_n)
        return y

    def _merge(self, f, b, training):
        mode = self.merge_mode
        if training and mode == "mul":
            self._merged_parts = (f, b)
        if mode == "concat":
            return np.concatenate([f, b], axis=-1)
        if mode == "sum":
            return f + b
        if mode == "mul":
            return f * b
        return (f + b) * self.dtype.type(0.5)

    def _merge_backward(self, d_y):
        mode = self.merge_mode
        if mode == "concat":
            return d_y
        if mode == "sum":
            return np.concatenate([d_y, d_y], axis=-1)
        if mode == "mul":
            f, b = self._merged_parts
            return np.concatenate([d_y * b, d_y * f], axis=-1)
        half = d_y * self.dtype.type(0.5)
        return np.concatenate([half, half], axis=-1)

    def backward(self, d_y, need_input_grad=True):
        B, T, zero, mask, rev, _ = self._cache
        D, H = self._directions, self.units
        d_y = np.asarray(d_y, dtype=self.dtype)
        if D == 2:
            d_y = self._merge_backward(d_y)
        if self.return_sequences:
            d_output = np.ascontiguousarray(d_y)
            if zero is not None:
                d_output = d_output.copy()
                d_output[zero] = 0
            d_h_n = None
        else:
            shape = (B, T, D * H)
            if self._d_out_cache is None or self._d_out_cache.shape != shape:
                self._d_out_cache = np.zeros(shape, dtype=self.dtype)
            d_output = self._d_out_cache
            d_h_n = np.ascontiguousarray(d_y.reshape(B, D, H).transpose(1, 0, 2))
            if zero is not None:
                d_h_n[:, zero] = 0
        d_x = self._engine_backward(d_output, d_h_n)
        if not need_input_grad:
            return None
        if self.go_backwards:
            d_x = d_x[:, ::-1] if rev is None else d_x[np.arange(B)[:, None], rev]
        if zero is not None:
            d_x = np.array(d_x)
            d_x[zero] = 0
        if mask is not None:
            d_x = d_x * mask
        return d_x

    def __call__(self, x, training=False, lengths=None, initial_state=None):
        if initial_state is not None:
            raise NotImplementedError("initial_state= is not supported; use stateful=True and "
                                      "reset_states(states)")
        y = super().__call__(x, training=training, lengths=lengths)
        if not self.return_state:
            return y
        h_n, c_n = self._last_states
        states = []
        for d in range(self._directions):
            states.append(h_n[d])
            if c_n is not None:
                states.append(c_n[d])
        return [y] + states

    # --------------------------------------------------------------------------- config
    def _config(self):
        cfg = {
            "units": self.units,
            "input_size": None if self.input_shape is None else self.input_shape[1],
            "return_sequences": self.return_sequences,
            "go_backwards": self.go_backwards,
        }
        cfg.update(self._extra_config())
        cfg["bias"] = self.use_bias
        if self.dropout:
            cfg["dropout"] = self.dropout
        if self.stateful:
            cfg["stateful"] = True
        return cfg

    def _extra_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        input_size = config.pop("input_size", None)
        config["use_bias"] = config.pop("bias", True)
        if input_size is not None:
            config.setdefault("input_shape", (None, input_size))
        return cls(**config)


class LSTM(_Recurrent):
    """Keras's ``LSTM`` on the engine: glorot_uniform kernel, orthogonal recurrent kernel,
    forget-gate bias 1 (all in ``bias_ih``; ``bias_hh`` 0), PyTorch's i,f,g,o gate order.

    ``peephole=True`` adds the engine's ONNX-style peephole weights (initialized like the
    kernel, as TF's PeepholeLSTMCell does).
    """

    _engine_cls = _EngineLSTM
    _gates = 4

    def __init__(self, units, unit_forget_bias=True, peephole=False, **kwargs):
        super().__init__(units, **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.peephole = bool(peephole)

    def _engine_kwargs(self):
        return {"peephole": self.peephole}

    @property
    def fixed_weights(self):
        # Keras's LSTM has one bias; the engine adds bias_ih and bias_hh. Training only bias_ih
        # (bias_hh stays at its value, 0 from Keras's init) gives Keras's updates exactly.
        if not self.use_bias:
            return ()
        return tuple(n for n in ("bias_hh_l0", "bias_hh_l0_reverse") if n in self.params)

    def _initial_bias(self, G):
        b = self.bias_initializer((G,), self._rng, self.dtype)
        if self.unit_forget_bias:
            H = self.units
            b[H : 2 * H] = 1.0
        return b

    def _initial_recurrent_bias(self, G):
        # Keras has one bias; the engine's second one starts at 0 so that their sum is Keras's
        return np.zeros(G, dtype=self.dtype)

    def _engine_call(self, x, hx, lengths, training):
        out, (h_n, c_n) = self._module.forward(x, hx, lengths=lengths, train=training)
        return out, h_n, c_n

    def _engine_backward(self, d_output, d_h_n):
        d_x, _ = self._module.backward(d_output, d_h_n)
        return d_x

    def _extra_config(self):
        return {"peephole": self.peephole}


class GRU(_Recurrent):
    """Keras's ``GRU`` (``reset_after=True``, its default) on the engine: PyTorch's r,z,n gate
    order and two biases (Keras's input and recurrent bias rows)."""

    _engine_cls = _EngineGRU
    _gates = 3

    def __init__(self, units, reset_after=True, **kwargs):
        if not reset_after:
            raise NotImplementedError(
                "GRU(reset_after=False) is not supported: the engine implements the "
                "reset-after GRU (Keras's default, PyTorch's and cuDNN's)"
            )
        if kwargs.get("peephole"):
            raise ValueError("peephole=True is an LSTM option; GRU has no cell state")
        kwargs.pop("peephole", None)
        super().__init__(units, **kwargs)

    def _engine_call(self, x, hx, lengths, training):
        out, h_n = self._module.forward(x, None if hx is None else hx[0], lengths=lengths,
                                        train=training)
        return out, h_n, None

    def _engine_backward(self, d_output, d_h_n):
        d_x, _ = self._module.backward(d_output, d_h_n)
        return d_x


_RECURRENT = {"LSTM": LSTM, "GRU": GRU}


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

    def forward(self, x, training=False, lengths=None):
        return self.layer.forward(x, training=training, lengths=lengths)

    def backward(self, d_y, need_input_grad=True):
        return self.layer.backward(d_y, need_input_grad)

    def compute_lengths(self, x, lengths):
        return self.layer.compute_lengths(x, lengths)

    @property
    def fixed_weights(self):
        return self.layer.fixed_weights

    def __call__(self, x, training=False, lengths=None):
        y = Layer.__call__(self, x, training=training, lengths=lengths)
        if not self.return_state:
            return y
        h_n, c_n = self.layer._last_states
        states = []
        for d in range(2):
            states.append(h_n[d])
            if c_n is not None:
                states.append(c_n[d])
        return [y] + states

    def get_config(self):
        return {"class": "Bidirectional",
                "config": {"merge_mode": self.merge_mode, "layer": self.layer.get_config()}}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        inner = layer_from_config(config.pop("layer"))
        return cls(inner, **config)


# ------------------------------------------------------------------------------------- Dense
class Dense(Layer):
    """``y = activation(x @ kernel + bias)`` on the last axis (per time step on 3-D input)."""

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.units = _int_arg(units, "units")
        self.activation = _activation_name(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer, "kernel_initializer")
        self.bias_initializer = initializers.get(bias_initializer, "bias_initializer")
        if kernel_regularizer is not None:
            self.regularizers["kernel"] = get_regularizer(kernel_regularizer)
        if bias_regularizer is not None and self.use_bias:
            self.regularizers["bias"] = get_regularizer(bias_regularizer)

    def _build(self, input_shape):
        if len(input_shape) < 1 or input_shape[-1] is None:
            raise ValueError(f"{self._label()} needs a known last input axis, got input shape "
                             f"{_shape_str((None,) + input_shape)}")
        F = input_shape[-1]
        named = [("kernel", self.kernel_initializer((F, self.units), self._rng, self.dtype))]
        if self.use_bias:
            named.append(("bias", self.bias_initializer((self.units,), self._rng, self.dtype)))
        self._allocate(named)
        return input_shape[:-1] + (self.units,)

    def forward(self, x, training=False, lengths=None, return_logits=False):
        x = np.asarray(x)
        F = self.input_shape[-1]
        if x.ndim < 2 or x.shape[-1] != F or x.ndim != len(self.input_shape) + 1:
            raise ValueError(
                f"{self._label()} was built for input of shape "
                f"{_shape_str((None,) + self.input_shape)}, got an array of shape {x.shape}"
            )
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        x2 = x.reshape(-1, F)
        z = x2 @ self.params["kernel"]
        if self.use_bias:
            z += self.params["bias"]
        act = self.activation
        if act == "linear":
            y = z
        elif act == "relu":
            y = np.maximum(z, 0)
        elif act == "tanh":
            y = np.tanh(z)
        elif act == "sigmoid":
            y = _sigmoid(z)
        else:
            y = _softmax(z)
        if training:
            self._x2, self._y2, self._xshape = x2, y, x.shape
        out_shape = x.shape[:-1] + (self.units,)
        self.logits = z.reshape(out_shape)
        return y.reshape(out_shape)

    def backward(self, d_y, need_input_grad=True, from_logits=False):
        """``from_logits=True``: ``d_y`` is already the gradient of the pre-activation (a loss
        fused with this layer's sigmoid/softmax)."""
        d = np.asarray(d_y, dtype=self.dtype).reshape(-1, self.units)
        y = self._y2
        act = self.activation
        if from_logits or act == "linear":
            d_z = d
        elif act == "relu":
            d_z = d * (y > 0)
        elif act == "tanh":
            d_z = d * (1 - y * y)
        elif act == "sigmoid":
            d_z = d * y * (1 - y)
        else:
            d_z = y * (d - (d * y).sum(axis=-1, keepdims=True))
        np.matmul(self._x2.T, d_z, out=self.grads["kernel"])
        if self.use_bias:
            np.sum(d_z, axis=0, out=self.grads["bias"])
        if not need_input_grad:
            return None
        return (d_z @ self.params["kernel"].T).reshape(self._xshape)

    def _config(self):
        return {"units": self.units,
                "input_dim": None if self.input_shape is None else self.input_shape[-1],
                "activation": self.activation, "use_bias": self.use_bias}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        input_dim = config.pop("input_dim", None)
        if input_dim is not None:
            config.setdefault("input_shape", (None, input_dim))
        return cls(**config)


def TimeDistributed(layer):
    """Keras's ``TimeDistributed(Dense(...))``: Dense already works per time step, so this
    returns the layer itself."""
    if not isinstance(layer, Dense):
        raise NotImplementedError("TimeDistributed supports Dense layers only")
    return layer


# ------------------------------------------------------------------------------------- Dropout
class Dropout(Layer):
    """Inverted dropout in training (each element kept with 1 - rate, scaled by 1/(1-rate));
    the identity at inference."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = _rate_arg(rate, "rate")
        if noise_shape is not None:
            raise NotImplementedError("Dropout(noise_shape=...) is not supported")
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self._fixed_rng = True  # fit keeps a user-seeded stream

    def _build(self, input_shape):
        return input_shape

    def forward(self, x, training=False, lengths=None):
        x = np.asarray(x)
        if self.input_shape is not None and x.ndim != len(self.input_shape) + 1:
            raise ValueError(f"{self._label()} was built for {len(self.input_shape) + 1}-D "
                             f"input, got an array of shape {x.shape}")
        if not training or self.rate == 0:
            self._mask = None
            return x
        keep = 1.0 - self.rate
        self._mask = (self._rng.random(x.shape) < keep).astype(x.dtype) / x.dtype.type(keep)
        return x * self._mask

    def backward(self, d_y, need_input_grad=True):
        if not need_input_grad:
            return None
        return d_y if self._mask is None else d_y * self._mask

    def _config(self):
        return {"rate": self.rate}


_CLASSES = {
    "Embedding": Embedding,
    "LSTM": LSTM,
    "GRU": GRU,
    "Bidirectional": Bidirectional,
    "Dense": Dense,
    "Dropout": Dropout,
}


def layer_from_config(layer):
    """A layer (unbuilt) from its model-file description ``{"class": ..., "config": ...}``."""
    if not isinstance(layer, dict) or "class" not in layer:
        raise ValueError(f"a layer description must be a dict with 'class' and 'config', got {layer!r}")
    cls = _CLASSES.get(layer["class"])
    if cls is None:
        raise ValueError(f"unknown layer class {layer['class']!r}; expected one of {sorted(_CLASSES)}")
    return cls.from_config(dict(layer.get("config", {})))
