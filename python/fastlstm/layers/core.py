"""Keras's layers around a recurrent one: Embedding, Dense (any rank), Activation, Dropout,
SpatialDropout1D, Masking, RepeatVector, Flatten, Reshape, TimeDistributed. NumPy forward and
backward; masks pass through unchanged unless a layer's ``compute_mask`` says otherwise."""

from __future__ import annotations

import numpy as np

from .. import initializers
from ..optim import get_regularizer
from ..rnn import _positive_int as _int_arg
from .base import (
    _sequence_input,
    Layer,
    _activate,
    _activate_backward,
    _activation_name,
    _rate_arg,
    _shape_str,
)

__all__ = ["Embedding", "Dense", "Activation", "Dropout", "SpatialDropout1D", "Masking",
           "RepeatVector", "Flatten", "Reshape", "TimeDistributed"]


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

    def compute_mask(self, x, mask):
        # Keras: every id 0 is padding, wherever it is (left, right or a gap)
        if not self.mask_zero:
            return mask
        nz = np.asarray(x) != 0  # [B, T]
        return nz if mask is None else nz & mask

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
        y = _activate(self.activation, z)
        if training:
            self._x2, self._y2, self._xshape = x2, y, x.shape
        out_shape = x.shape[:-1] + (self.units,)
        self.logits = z.reshape(out_shape)
        return y.reshape(out_shape)

    def backward(self, d_y, need_input_grad=True, from_logits=False):
        """``from_logits=True``: ``d_y`` is already the gradient of the pre-activation (a loss
        fused with this layer's sigmoid/softmax)."""
        d = np.asarray(d_y, dtype=self.dtype).reshape(-1, self.units)
        d_z = d if from_logits else _activate_backward(self.activation, self._y2, d)
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
        self._mask = (self._rng.random(self._noise_shape(x)) < keep).astype(x.dtype) / x.dtype.type(keep)
        return x * self._mask

    def _noise_shape(self, x):
        return x.shape

    def backward(self, d_y, need_input_grad=True):
        if not need_input_grad:
            return None
        return d_y if self._mask is None else d_y * self._mask

    def _config(self):
        return {"rate": self.rate}



class SpatialDropout1D(Dropout):
    """Dropout of whole feature channels: one keep/drop draw per sequence and feature, the same
    at every time step (Keras's ``SpatialDropout1D``); the identity at inference."""

    def _build(self, input_shape):
        return _sequence_input(self, input_shape)

    def _noise_shape(self, x):
        return (x.shape[0], 1, x.shape[2])


class Activation(Layer):
    """``activation(x)`` elementwise (softmax over the last axis)."""

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = _activation_name(activation)

    def forward(self, x, training=False, lengths=None):
        x = np.asarray(x, dtype=self.dtype)
        y = _activate(self.activation, x)
        if training:
            self._y = y
        return y

    def backward(self, d_y, need_input_grad=True):
        if not need_input_grad:
            return None
        return _activate_backward(self.activation, self._y, np.asarray(d_y, dtype=self.dtype))

    def _config(self):
        return {"activation": self.activation}


class Masking(Layer):
    """Keras's ``Masking(mask_value)``: a time step whose features all equal ``mask_value`` is
    masked for the layers after it (and its features are set to 0)."""

    def __init__(self, mask_value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.mask_value = float(mask_value)

    def _build(self, input_shape):
        return _sequence_input(self, input_shape)

    def _keep(self, x):
        return (np.asarray(x) != self.mask_value).any(axis=-1)  # [B, T]

    def compute_mask(self, x, mask):
        keep = self._keep(x)
        return keep if mask is None else keep & mask

    def forward(self, x, training=False, lengths=None):
        x = np.asarray(x, dtype=self.dtype)
        keep = self._keep(x)[..., None].astype(self.dtype)
        if training:
            self._keep_f = keep
        return x * keep

    def backward(self, d_y, need_input_grad=True):
        return d_y * self._keep_f if need_input_grad else None

    def _config(self):
        return {"mask_value": self.mask_value}


class RepeatVector(Layer):
    """[B, F] -> [B, n, F]: the vector repeated at every one of ``n`` steps."""

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        self.n = _int_arg(n, "n")

    def _build(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"{self._label()} expects 2-D input [batch, features], got input "
                             f"shape {_shape_str((None,) + input_shape)}")
        return (self.n,) + tuple(input_shape)

    def compute_mask(self, x, mask):
        return None

    def forward(self, x, training=False, lengths=None):
        x = np.asarray(x, dtype=self.dtype)
        self._check_rank(x, 2, "[batch, features]")
        return np.repeat(x[:, None, :], self.n, axis=1)

    def backward(self, d_y, need_input_grad=True):
        return np.asarray(d_y).sum(axis=1) if need_input_grad else None

    def _config(self):
        return {"n": self.n}


class Flatten(Layer):
    """[B, d1, d2, ...] -> [B, d1*d2*...] (all but the batch axis known)."""

    def _build(self, input_shape):
        if any(s is None for s in input_shape):
            raise ValueError(f"{self._label()} needs every axis but the batch known, got input "
                             f"shape {_shape_str((None,) + input_shape)}")
        return (int(np.prod(input_shape, dtype=np.int64)),)

    def compute_mask(self, x, mask):
        return None  # as Keras: the time axis is gone

    def forward(self, x, training=False, lengths=None):
        x = np.asarray(x, dtype=self.dtype)
        if x.shape[1:] != tuple(self.input_shape):
            raise ValueError(f"{self._label()} was built for input "
                             f"{_shape_str((None,) + self.input_shape)}, got shape {x.shape}")
        self._xshape = x.shape
        return x.reshape(len(x), -1)

    def backward(self, d_y, need_input_grad=True):
        return np.asarray(d_y).reshape(self._xshape) if need_input_grad else None


class Reshape(Layer):
    """[B, ...] -> [B, *target_shape] (one entry may be -1)."""

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        shape = tuple(int(s) for s in target_shape)
        if sum(s == -1 for s in shape) > 1 or any(s == 0 or s < -1 for s in shape):
            raise ValueError(f"target_shape must hold positive sizes and at most one -1, got "
                             f"{target_shape}")
        self.target_shape = shape

    def _build(self, input_shape):
        if any(s is None for s in input_shape):
            raise ValueError(f"{self._label()} needs every axis but the batch known, got input "
                             f"shape {_shape_str((None,) + input_shape)}")
        n = int(np.prod(input_shape, dtype=np.int64))
        known = int(np.prod([s for s in self.target_shape if s != -1], dtype=np.int64))
        if -1 in self.target_shape:
            if n % known:
                raise ValueError(f"{self._label()}: cannot reshape {_shape_str(input_shape)} "
                                 f"into {self.target_shape}")
            return tuple(n // known if s == -1 else s for s in self.target_shape)
        if known != n:
            raise ValueError(f"{self._label()}: cannot reshape {_shape_str(input_shape)} "
                             f"({n} values) into {self.target_shape} ({known} values)")
        return self.target_shape

    def compute_mask(self, x, mask):
        return None

    def forward(self, x, training=False, lengths=None):
        x = np.asarray(x, dtype=self.dtype)
        if x.shape[1:] != tuple(self.input_shape):
            raise ValueError(f"{self._label()} was built for input "
                             f"{_shape_str((None,) + self.input_shape)}, got shape {x.shape}")
        self._xshape = x.shape
        return x.reshape((len(x),) + tuple(self.output_shape))

    def backward(self, d_y, need_input_grad=True):
        return np.asarray(d_y).reshape(self._xshape) if need_input_grad else None

    def _config(self):
        return {"target_shape": list(self.target_shape)}


class _TimeDistributed(Layer):
    """Applies ``layer`` to every time step: [B, T, ...] runs as [B*T, ...]."""

    def __init__(self, layer, **kwargs):
        if not isinstance(layer, Layer):
            raise TypeError(f"TimeDistributed wraps a fastlstm layer, got {type(layer).__name__}")
        super().__init__(**kwargs)
        self.layer = layer

    def build(self, input_shape, dtype="float32"):
        input_shape = self._shape_arg(input_shape)
        if len(input_shape) < 2:
            raise ValueError(f"TimeDistributed needs input [batch, time, ...], got input shape "
                             f"{_shape_str((None,) + input_shape)}")
        inner = self.layer.build(input_shape[1:], dtype)
        self.dtype = self.layer.dtype
        self.input_shape, self.output_shape = input_shape, (input_shape[0],) + tuple(inner)
        self.built = True
        self._sync()
        return self.output_shape

    def _sync(self):
        self.flat_params, self.flat_grads = self.layer.flat_params, self.layer.flat_grads
        self.params, self.grads = self.layer.params, self.layer.grads
        self.regularizers = self.layer.regularizers

    def _bind(self, flat_params, flat_grads):
        self.layer._bind(flat_params, flat_grads)
        self._sync()

    @property
    def fixed_weights(self):
        return self.layer.fixed_weights

    def _save_cache(self):
        return (dict(self.__dict__), self.layer._save_cache())

    def _restore_cache(self, cache):
        self.__dict__.update(cache[0])
        self.layer._restore_cache(cache[1])

    def forward(self, x, training=False, lengths=None):
        x = np.asarray(x)
        B, T = x.shape[:2]
        y = self.layer.forward(x.reshape((B * T,) + x.shape[2:]), training=training)
        self._bt = (B, T, x.shape)
        return y.reshape((B, T) + y.shape[1:])

    def backward(self, d_y, need_input_grad=True):
        B, T, xshape = self._bt
        d = np.asarray(d_y)
        d_x = self.layer.backward(d.reshape((B * T,) + d.shape[2:]), need_input_grad=need_input_grad)
        return None if d_x is None else d_x.reshape(xshape)

    def get_config(self):
        return {"class": "TimeDistributed", "config": {"layer": self.layer.get_config()}}

    @classmethod
    def from_config(cls, config):
        from .base import layer_from_config

        return cls(layer_from_config(dict(config)["layer"]))


def TimeDistributed(layer, **kwargs):
    """Keras's ``TimeDistributed(layer)``: the layer applied at every time step. A Dense
    already works on the last axis of any rank, so ``TimeDistributed(Dense(...))`` returns the
    Dense itself (the same computation, and a model file the C++ runner reads)."""
    if type(layer).__name__ == "Dense" and not kwargs:
        return layer
    return _TimeDistributed(layer, **kwargs)
