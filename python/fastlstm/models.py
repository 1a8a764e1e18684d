"""Keras's ``Sequential`` model on fastlstm's layers: compile, fit, evaluate, predict.

All weights of a model live in ONE flat buffer (``model.flat_params``) and all gradients in
another (``model.flat_grads``): the engine modules use slices of them (``use_buffers``) and
Dense/Embedding weights are views, so an optimizer step is a few vectorized operations over
the whole model. Offsets are aligned to 64 bytes; the gaps stay zero.

A training step: forward through the layers (the recurrent ones in the C++ engine), the loss
and its gradient (fused with a final sigmoid/softmax when the loss is a cross-entropy on it),
backward through the layers in reverse, the regularizers' gradient, a check that loss and
gradients are finite, one optimizer step.
"""

from __future__ import annotations

import io
import math
import os

import numpy as np

from . import callbacks as callbacks_mod
from . import initializers, optim
from . import losses as losses_mod
from . import metrics as metrics_mod
from .initializers import set_seed
from .layers import (
    Dense,
    Embedding,
    InputLayer,
    Layer,
    _shape_str,
    layer_from_config,
)
from .io import files as _files
from .io.atomic import atomic_write
from .rnn import _positive_int as _int_arg

__all__ = ["Sequential", "set_seed", "load_model", "NonFiniteLossError"]

_ALIGN = 16  # elements: 64 bytes in float32


class NonFiniteLossError(FloatingPointError):
    """The loss (or a gradient) became NaN/inf during ``fit``; ``epoch`` and ``batch`` are
    1-based. The model keeps the weights from before the failing step."""

    def __init__(self, message, epoch, batch):
        super().__init__(message)
        self.epoch = epoch
        self.batch = batch


def load_model(path, **kwargs):
    """Loads a model file (delegates to :func:`fastlstm.io.load_model`)."""
    return _files.load_model(path, **kwargs)


def _kind_name(layer):
    return type(layer).__name__.lower()


class Sequential:
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
        self.dtype = np.dtype(key)
        self.name = name or "sequential"
        self.layers = []
        self._input_shape = None
        self.built = False
        self.flat_params = None
        self.flat_grads = None
        self.output_shape = None
        self.optimizer = None
        self.loss = None
        self.metrics = []
        self.compiled = False
        self.stop_training = False
        self.history = None
        self._fused = False
        for layer in layers or []:
            self.add(layer)

    # ------------------------------------------------------------------------------ structure
    def add(self, layer):
        """Appends a layer (or an ``Input(shape)`` first); builds when the input shape is known."""
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
            elif isinstance(layer, Embedding):
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
        """Builds every layer and allocates the model's flat buffers.

        ``input_shape`` includes the batch axis as in Keras (``(None, T, F)``, or
        ``(None, T)`` for tokens); without it the shape given by ``Input``/``input_shape=``.
        """
        if input_shape is not None:
            self._input_shape = Layer._shape_arg(tuple(input_shape)[1:])
        if self._input_shape is None:
            raise ValueError("build() needs input_shape=(None, timesteps, features)")
        if not self.layers:
            raise ValueError("the model has no layers")
        shape = self._input_shape
        for i, layer in enumerate(self.layers):
            arg = layer._input_shape_arg
            if i > 0 and arg is not None and arg[-1] is not None and shape and arg[-1] != shape[-1]:
                raise ValueError(
                    f"layer {i} ({layer._label()}) was declared for inputs with {arg[-1]} "
                    f"features, but layer {i - 1} outputs {_shape_str((None,) + shape)}"
                )
            if layer.built:
                if layer.dtype != self.dtype:
                    raise ValueError(f"{layer._label()} was built as {layer.dtype.name}, the "
                                     f"model is {self.dtype.name}")
                # the time axis is free (None or any length); features must agree
                if len(layer.input_shape) != len(shape) or (
                        len(shape) > 1 and layer.input_shape[-1] != shape[-1]):
                    raise ValueError(
                        f"{layer._label()} was built for input {_shape_str((None,) + layer.input_shape)}, "
                        f"got {_shape_str((None,) + shape)}"
                    )
                shape = layer.output_shape
            else:
                try:
                    shape = layer.build(shape, self.dtype)
                except ValueError as e:
                    raise ValueError(f"layer {i} ({layer.name}): {e}") from None
        self.output_shape = shape
        self._allocate()
        self.built = True

    def _allocate(self):
        sizes = [layer.count_params() for layer in self.layers]
        offsets, off = [], 0
        for n in sizes:
            offsets.append(off)
            off += -(-n // _ALIGN) * _ALIGN
        total = max(off, 1)
        fp = np.zeros(total, dtype=self.dtype)
        fg = np.zeros(total, dtype=self.dtype)
        for layer, o, n in zip(self.layers, offsets, sizes):
            if n:
                layer._bind(fp[o : o + n], fg[o : o + n])
        self.flat_params, self.flat_grads = fp, fg
        self._layer_ranges = [(o, o + n) for o, n in zip(offsets, sizes)]
        item = fp.itemsize
        base = fp.ctypes.data
        segs, names = [], []
        l1 = np.zeros(total, dtype=self.dtype)
        l2 = np.zeros(total, dtype=self.dtype)
        any_reg = False
        for i, layer in enumerate(self.layers):
            for name, view in layer.params.items():
                start = (view.ctypes.data - base) // item
                segs.append(start)
                names.append(f"layers.{i}.{name}")
                reg = layer.regularizers.get(name)
                if reg is not None:
                    any_reg = True
                    l1[start : start + view.size] = reg.l1
                    l2[start : start + view.size] = reg.l2
        order = np.argsort(segs, kind="stable")
        self._segments = np.asarray(segs, dtype=np.int64)[order]
        self._weight_names = names
        self._reg = None
        if any_reg:
            self._reg = (l1 if l1.any() else None, l2 if l2.any() else None)
            self._reg_tmp = np.zeros(total, dtype=self.dtype)
        if self.optimizer is not None:
            self.optimizer.build(total, self.dtype, self._segments)

    def _ensure_built(self, x):
        if self.built:
            return
        if not self.layers:
            raise ValueError("the model has no layers")
        x = np.asarray(x)
        first = self.layers[0]
        if isinstance(first, Embedding):
            if x.ndim != 2:
                raise ValueError(f"the first layer is an Embedding: x must be 2-D [samples, "
                                 f"time] of token ids, got shape {x.shape}")
            self.build((None, None))
        else:
            if x.ndim != 3:
                raise ValueError(self._rank_message(x))
            self.build((None, None, x.shape[2]))

    def _rank_message(self, x):
        first = self.layers[0]
        hint = ""
        if x.ndim == 2:
            hint = " (for one feature per time step use x[..., None])"
        return (f"layer 0 ({first._label()}) expects 3-D input [samples, time, features], got "
                f"an array of shape {x.shape}{hint}")

    # ------------------------------------------------------------------------------ compile
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """Sets the optimizer (name or object), the loss (name or object) and metrics."""
        unsupported = set(kwargs) - {"run_eagerly", "jit_compile", "steps_per_execution"}
        if unsupported:
            raise TypeError(f"compile() got unsupported argument(s) {sorted(unsupported)}")
        if loss is None:
            raise ValueError("compile() needs a loss, e.g. loss='mse' or "
                             "loss='sparse_categorical_crossentropy'")
        self.optimizer = optim.get(optimizer)
        self.loss = losses_mod.get(loss)
        if metrics is None:
            metrics = []
        elif isinstance(metrics, (str, metrics_mod.Metric)) or callable(metrics):
            metrics = [metrics]
        self._metric_ids = list(metrics)
        for m in self._metric_ids:  # fail on unknown names now, not at fit
            metrics_mod.get(m, self.loss, self.output_shape or (2,))
        self.compiled = True
        if self.built and getattr(self.optimizer, "_n", None) != self.flat_params.size:
            self.optimizer.build(self.flat_params.size, self.dtype, self._segments)

    def _make_metrics(self):
        return [metrics_mod.get(m, self.loss, self.output_shape) for m in self._metric_ids]

    def _update_fused(self):
        last = self.layers[-1]
        L = self.loss
        self._fused = (
            isinstance(last, Dense)
            and not L.from_logits
            and ((last.activation == "sigmoid" and isinstance(L, losses_mod.BinaryCrossentropy))
                 or (last.activation == "softmax" and isinstance(
                     L, (losses_mod.CategoricalCrossentropy,
                         losses_mod.SparseCategoricalCrossentropy))))
        )

    # ------------------------------------------------------------------------------ data
    def _prepare_x(self, x, name="x"):
        if x is None:
            raise ValueError(f"{name} is required")
        x = np.asarray(x)
        self._ensure_built(x)
        first = self.layers[0]
        if isinstance(first, Embedding):
            if x.ndim != 2:
                raise ValueError(f"the first layer is an Embedding: {name} must be 2-D "
                                 f"[samples, time] of token ids, got shape {x.shape}")
            return first._tokens(x)  # every id checked once, before any training step
        if x.ndim != 3:
            raise ValueError(self._rank_message(x).replace("input", f"input {name}", 1))
        F = self._input_shape[-1]
        if x.shape[2] != F:
            raise ValueError(f"{name} must have {F} features on its last axis (the model's "
                             f"input shape {_shape_str((None,) + self._input_shape)}), got "
                             f"shape {x.shape}")
        if x.dtype.kind not in "fiub":
            raise TypeError(f"{name} must hold numbers, got dtype {x.dtype}")
        x = x.astype(self.dtype, copy=False)
        if not np.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or infinity")
        return x

    @staticmethod
    def _prepare_lengths(lengths, x, name="lengths"):
        if lengths is None:
            return None
        arr = np.asarray(lengths)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}")
        if arr.shape != (len(x),):
            raise ValueError(f"{name} must have shape ({len(x)},) (one per sample), got {arr.shape}")
        T = x.shape[1]
        if arr.size and (arr.min() < 0 or arr.max() > T):
            raise ValueError(f"every entry of {name} must be in [0, T={T}], got min "
                             f"{arr.min()} and max {arr.max()}")
        return arr.astype(np.int64)

    def _out_shape(self, x):
        """The output shape for input ``x`` (batch axis first, unknown time filled in)."""
        T = x.shape[1]
        return (len(x),) + tuple(T if s is None else s for s in self.output_shape)

    def _check_compiled(self, what):
        if not self.compiled:
            raise RuntimeError(f"the model must be compiled before {what}: call "
                               "model.compile(optimizer=..., loss=...) first")

    def _prepare_xy(self, x, y, lengths, name_x="x", name_y="y"):
        x = self._prepare_x(x, name_x)
        if y is None:
            raise ValueError(f"{name_y} is required")
        y = np.asarray(y)
        if y.ndim == 0 or len(y) != len(x):
            raise ValueError(
                f"{name_x} and {name_y} must have the same number of samples, got {len(x)} "
                f"and {len(y) if y.ndim else 'a scalar'}"
            )
        lengths = self._prepare_lengths(lengths, x, "lengths" if name_x == "x" else f"{name_x} lengths")
        y = self.loss.prepare_targets(y, self._out_shape(x))
        return x, y, lengths

    # ------------------------------------------------------------------------------ passes
    def _forward(self, x, lengths, training):
        for layer in self.layers:
            nxt = layer.compute_lengths(x, lengths)
            x = layer.forward(x, training=training, lengths=lengths)
            lengths = nxt
        return x, lengths

    @staticmethod
    def _weights(out, lengths):
        if lengths is None or out.ndim != 3:
            return None
        return np.arange(out.shape[1])[None, :] < lengths[:, None]

    def _penalty(self, with_grad):
        l1, l2 = self._reg
        p, tmp = self.flat_params, self._reg_tmp
        value = 0.0
        if l1 is not None:
            np.abs(p, out=tmp)
            value += float(np.dot(tmp, l1))
            if with_grad:
                np.sign(p, out=tmp)
                tmp *= l1
                self.flat_grads += tmp
        if l2 is not None:
            np.multiply(p, p, out=tmp)
            value += float(np.dot(tmp, l2))
            if with_grad:
                np.multiply(p, l2, out=tmp)
                tmp *= 2
                self.flat_grads += tmp
        return value

    def _loss_of(self, y, out, weights, need_grad):
        logits = self.layers[-1].logits if self._fused else None
        return self.loss.value_and_grad(y, out, weights, logits=logits, need_grad=need_grad)

    def _train_step(self, xb, yb, lb):
        out, lengths = self._forward(xb, lb, training=True)
        weights = self._weights(out, lengths)
        value, d = self._loss_of(yb, out, weights, need_grad=True)
        for i in range(len(self.layers) - 1, self._first_trainable - 1, -1):
            layer = self.layers[i]
            need = i > self._first_trainable
            if i == len(self.layers) - 1 and self._fused:
                d = layer.backward(d, need_input_grad=need, from_logits=True)
            else:
                d = layer.backward(d, need_input_grad=need)
        if self._reg is not None:
            value += self._penalty(with_grad=True)
        return value, out, weights

    def compute_loss_and_gradients(self, x, y, lengths=None):
        """The training loss of one batch (with regularization; dropout active) and a copy of
        the flat gradient; the weights do not change."""
        self._check_compiled("compute_loss_and_gradients")
        x, y, lengths = self._prepare_xy(x, y, lengths)
        self._update_fused()
        self._first_trainable = next(
            (i for i, l in enumerate(self.layers) if l.count_params() > 0), len(self.layers))
        self.flat_grads[...] = 0
        value, _, _ = self._train_step(x, y, lengths)
        return value, self.flat_grads.copy()

    def _frozen_ranges(self):
        """Flat ranges the optimizer must not move: layers with ``trainable=False`` and each
        layer's ``fixed_weights`` (an LSTM's ``bias_hh``: Keras has one bias, so the engine's
        second one stays where it is and the trained bias is exactly Keras's)."""
        out = []
        base, item = self.flat_params.ctypes.data, self.flat_params.itemsize
        for layer, (a, b) in zip(self.layers, self._layer_ranges):
            if b == a:
                continue
            if not layer.trainable:
                out.append((a, b))
                continue
            for name in layer.fixed_weights:
                v = layer.params[name]
                start = (v.ctypes.data - base) // item
                out.append((start, start + v.size))
        return out

    def _apply_step(self):
        frozen = self._frozen_ranges()
        saved = []
        for a, b in frozen:
            self.flat_grads[a:b] = 0
            saved.append(self.flat_params[a:b].copy())
        self.optimizer.apply(self.flat_params, self.flat_grads)
        for (a, b), s in zip(frozen, saved):
            self.flat_params[a:b] = s

    # ------------------------------------------------------------------------------ fit
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0,
            lengths=None):
        """Trains for ``epochs`` epochs; returns the :class:`~fastlstm.callbacks.History`.

        ``validation_data``: ``(x_val, y_val)`` or ``(x_val, y_val, lengths_val)``.
        ``validation_split``: the last fraction of the samples (before shuffling), as Keras.
        A NaN/inf loss stops training with :class:`NonFiniteLossError` naming the epoch and
        batch; the weights are those from before that step.
        """
        self._check_compiled("fit")
        batch_size = 32 if batch_size is None else _int_arg(batch_size, "batch_size")
        epochs = _int_arg(epochs, "epochs", minimum=0)
        initial_epoch = _int_arg(initial_epoch, "initial_epoch", minimum=0)
        verbose = self._verbose(verbose)
        vs = float(validation_split)
        if not 0.0 <= vs < 1.0:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split}")
        x, y, lengths = self._prepare_xy(x, y, lengths)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be (x_val, y_val) or "
                                 "(x_val, y_val, lengths_val)")
            vl = validation_data[2] if len(validation_data) == 3 else None
            val = self._prepare_xy(validation_data[0], validation_data[1], vl, "x_val", "y_val")
        elif vs > 0:
            split = int(len(x) * (1.0 - vs))
            if split == 0 or split == len(x):
                raise ValueError(f"validation_split={vs} leaves "
                                 f"{'no training' if split == 0 else 'no validation'} samples "
                                 f"out of {len(x)}")
            val = (x[split:], y[split:], None if lengths is None else lengths[split:])
            x, y = x[:split], y[:split]
            lengths = None if lengths is None else lengths[:split]
        n = len(x)
        if n == 0:
            raise ValueError("x has no samples")
        stateful = [l for l in self.layers if getattr(l, "stateful", False)]
        if stateful and n % batch_size:
            raise ValueError(
                f"a stateful layer needs every batch to have the same size: {n} samples are "
                f"not divisible by batch_size={batch_size}"
            )
        self._update_fused()
        self._first_trainable = next(
            (i for i, l in enumerate(self.layers) if l.count_params() > 0), len(self.layers))
        # fresh random streams from the global seed: set_seed(n) before fit fixes them all
        rng = initializers.spawn_rng()
        for layer in self.layers:
            if not getattr(layer, "_fixed_rng", False):
                layer._rng = initializers.spawn_rng()
            inner = getattr(layer, "layer", None)
            if inner is not None:
                inner._rng = initializers.spawn_rng()
        steps = -(-n // batch_size)
        history = callbacks_mod.History()
        cbs = list(callbacks or [])
        if verbose:
            cbs.insert(0, callbacks_mod.ProgbarLogger(verbose))
        cbs.append(history)
        params = {"verbose": verbose, "epochs": epochs, "steps": steps, "batch_size": batch_size,
                  "samples": n}
        cb = callbacks_mod.CallbackList(cbs, model=self, params=params)
        history.set_params(params)
        self.history = history
        self.stop_training = False
        train_metrics = self._make_metrics()
        cb.on_train_begin()
        logs = {}
        for epoch in range(initial_epoch, epochs):
            for m in train_metrics:
                m.reset()
            cb.on_epoch_begin(epoch)
            order = rng.permutation(n) if shuffle else None
            loss_sum, loss_count = 0.0, 0.0
            for b in range(steps):
                if order is None:
                    sl = slice(b * batch_size, min((b + 1) * batch_size, n))
                else:
                    sl = order[b * batch_size : (b + 1) * batch_size]
                xb, yb = x[sl], y[sl]
                lb = None if lengths is None else lengths[sl]
                cb.on_train_batch_begin(b)
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    # a non-finite loss is detected below and reported with epoch and batch
                    value, out, weights = self._train_step(xb, yb, lb)
                gsum = float(self.flat_grads.sum(dtype=np.float64))
                if not (math.isfinite(value) and math.isfinite(gsum)):
                    what = f"the loss is {value}" if not math.isfinite(value) else \
                        "the gradients contain NaN or infinity"
                    raise NonFiniteLossError(
                        f"training stopped at epoch {epoch + 1}, batch {b + 1} of {steps}: {what}."
                        " The weights from before this step are kept. Usual causes: a learning "
                        "rate too high (try clipnorm= or a smaller rate) or bad input values.",
                        epoch + 1, b + 1)
                self._apply_step()
                count = float(len(xb) if weights is None else weights.sum())
                loss_sum += value * count
                loss_count += count
                for m in train_metrics:
                    m.update(yb, out, weights)
                logs = {"loss": loss_sum / loss_count if loss_count else 0.0}
                for m in train_metrics:
                    logs[m.name] = m.result()
                cb.on_train_batch_end(b, logs)
                if self.stop_training:
                    break
            epoch_logs = dict(logs)
            if val is not None:
                vlogs = self._evaluate_arrays(*val, batch_size=batch_size, cb=None)
                epoch_logs.update({"val_" + k: v for k, v in vlogs.items()})
            cb.on_epoch_end(epoch, epoch_logs)
            logs = epoch_logs
            if self.stop_training:
                break
        cb.on_train_end(logs)
        return history

    @staticmethod
    def _verbose(verbose):
        if verbose == "auto":
            return 1
        if verbose not in (0, 1, 2, False, True):
            raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
        return int(verbose)

    # ------------------------------------------------------------------------------ evaluate
    def _evaluate_arrays(self, x, y, lengths, batch_size, cb):
        self._update_fused()
        metrics = self._make_metrics()
        loss_sum, loss_count = 0.0, 0.0
        n = len(x)
        logs = {}
        penalty = self._penalty(with_grad=False) if self._reg is not None else 0.0
        for b in range(-(-n // batch_size)):
            sl = slice(b * batch_size, min((b + 1) * batch_size, n))
            if cb is not None:
                cb.on_test_batch_begin(b)
            out, lb = self._forward(x[sl], None if lengths is None else lengths[sl], False)
            weights = self._weights(out, lb)
            value, _ = self._loss_of(y[sl], out, weights, need_grad=False)
            count = float(len(out) if weights is None else weights.sum())
            loss_sum += value * count
            loss_count += count
            for m in metrics:
                m.update(y[sl], out, weights)
            logs = {"loss": (loss_sum / loss_count if loss_count else 0.0) + penalty}
            for m in metrics:
                logs[m.name] = m.result()
            if cb is not None:
                cb.on_test_batch_end(b, logs)
        return logs

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", callbacks=None,
                 return_dict=False, lengths=None):
        """The loss (with regularization) and metrics on ``(x, y)``: a float without metrics,
        else ``[loss, metric...]`` (``return_dict=True``: a dict)."""
        self._check_compiled("evaluate")
        batch_size = 32 if batch_size is None else _int_arg(batch_size, "batch_size")
        verbose = self._verbose(verbose)
        x, y, lengths = self._prepare_xy(x, y, lengths)
        cbs = list(callbacks or [])
        if verbose:
            cbs.insert(0, callbacks_mod.ProgbarLogger(verbose))
        cb = callbacks_mod.CallbackList(cbs, model=self,
                                        params={"verbose": verbose, "steps": -(-len(x) // batch_size)})
        cb.on_test_begin()
        logs = self._evaluate_arrays(x, y, lengths, batch_size, cb)
        cb.on_test_end(logs)
        if return_dict:
            return logs
        if len(logs) == 1:
            return logs["loss"]
        return list(logs.values())

    # ------------------------------------------------------------------------------ predict
    def predict(self, x, batch_size=None, verbose="auto", callbacks=None, lengths=None):
        """The model's outputs for ``x`` in batches (inference: no dropout)."""
        batch_size = 32 if batch_size is None else _int_arg(batch_size, "batch_size")
        verbose = self._verbose(verbose)
        x = self._prepare_x(x)
        lengths = self._prepare_lengths(lengths, x)
        n = len(x)
        steps = -(-n // batch_size)
        cbs = list(callbacks or [])
        if verbose:
            cbs.insert(0, callbacks_mod.ProgbarLogger(verbose))
        cb = callbacks_mod.CallbackList(cbs, model=self, params={"verbose": verbose, "steps": steps})
        cb.on_predict_begin()
        outs = []
        for b in range(steps):
            sl = slice(b * batch_size, min((b + 1) * batch_size, n))
            cb.on_predict_batch_begin(b)
            out, _ = self._forward(x[sl], None if lengths is None else lengths[sl], False)
            outs.append(out)
            cb.on_predict_batch_end(b, {"outputs": out})
        cb.on_predict_end()
        if not outs:
            return np.zeros(self._out_shape(x), dtype=self.dtype)
        return np.concatenate(outs, axis=0)

    def __call__(self, x, training=False, lengths=None):
        x = self._prepare_x(x)
        return self._forward(x, self._prepare_lengths(lengths, x), bool(training))[0]

    def predict_on_batch(self, x, lengths=None):
        return self(x, lengths=lengths)

    def train_on_batch(self, x, y, lengths=None, return_dict=False):
        """One optimizer step on one batch; returns the loss (and metrics) of that batch."""
        self._check_compiled("train_on_batch")
        x, y, lengths = self._prepare_xy(x, y, lengths)
        self._update_fused()
        self._first_trainable = next(
            (i for i, l in enumerate(self.layers) if l.count_params() > 0), len(self.layers))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            value, out, weights = self._train_step(x, y, lengths)
        if not (math.isfinite(value) and math.isfinite(float(self.flat_grads.sum(dtype=np.float64)))):
            raise NonFiniteLossError(f"train_on_batch: the loss is {value} (or a gradient is not "
                                     "finite); the weights were not changed", 0, 1)
        self._apply_step()
        logs = {"loss": value}
        for m in self._make_metrics():
            m.update(y, out, weights)
            logs[m.name] = m.result()
        if return_dict:
            return logs
        return logs["loss"] if len(logs) == 1 else list(logs.values())

    def test_on_batch(self, x, y, lengths=None, return_dict=False):
        return self.evaluate(x, y, batch_size=max(len(x), 1), verbose=0, lengths=lengths,
                             return_dict=return_dict)

    # ------------------------------------------------------------------------------ state
    def reset_states(self):
        """Forgets the state carried by stateful recurrent layers."""
        for layer in self.layers:
            layer.reset_states()

    # ------------------------------------------------------------------------------ weights
    def _require_built(self, what):
        if not self.built:
            raise ValueError(f"{what}: the model has not been built yet; give the first layer "
                             "input_shape=..., start with Input(shape), call build(), or call "
                             "the model on data first")

    def count_params(self):
        self._require_built("count_params()")
        return sum(layer.count_params() for layer in self.layers)

    def get_weights(self):
        """Copies of every weight, layer by layer, in the model file's order."""
        self._require_built("get_weights()")
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights):
        """Sets every weight from a list like :meth:`get_weights`'s (all checked first)."""
        self._require_built("set_weights()")
        views = [v for layer in self.layers for v in layer.params.values()]
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
        return {f"layers.{i}.{name}": v.copy()
                for i, layer in enumerate(self.layers) for name, v in layer.params.items()}

    def set_weight_dict(self, weights, strict=True):
        """Sets weights from a ``get_weight_dict``-style dict; every name and shape is checked
        before anything is written."""
        self._require_built("set_weight_dict()")
        views = {f"layers.{i}.{name}": v
                 for i, layer in enumerate(self.layers) for name, v in layer.params.items()}
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

    def save(self, path, **kwargs):
        """Saves architecture and weights as a fastlstm model file (:mod:`fastlstm.io`)."""
        return _files.save_model(self, path, **kwargs)

    # ------------------------------------------------------------------------------ config
    def get_config(self):
        """The MODEL object of the model file: class, dtype, layer list."""
        return {"class": "Sequential", "dtype": self.dtype.name,
                "layers": [layer.get_config() for layer in self.layers]}

    @classmethod
    def from_config(cls, config):
        """A model (built when the first layer's input size is known) from :meth:`get_config`."""
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
                     "compile": (self.optimizer, self.loss, getattr(self, "_metric_ids", None))
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
        if state["compile"] is not None:
            opt, loss, metrics = state["compile"]
            self.compile(opt, loss, metrics)

    # ------------------------------------------------------------------------------ summary
    def summary(self, print_fn=None, line_length=72):
        """Prints a table of layers, output shapes and parameter counts."""
        self._require_built("summary()")
        out = print_fn or print
        widths = (int(line_length * 0.45), int(line_length * 0.35))
        rows = []
        for layer in self.layers:
            rows.append((f"{layer.name} ({type(layer).__name__})",
                         _shape_str((None,) + tuple(layer.output_shape)),
                         f"{layer.count_params():,}"))
        out(f'Model: "{self.name}"')
        out("_" * line_length)
        out(f"{'Layer (type)':<{widths[0]}}{'Output Shape':<{widths[1]}}{'Param #':>{line_length - sum(widths)}}")
        out("=" * line_length)
        for i, (a, b, c) in enumerate(rows):
            out(f"{a:<{widths[0]}}{b:<{widths[1]}}{c:>{line_length - sum(widths)}}")
            if i < len(rows) - 1:
                out("")
        out("=" * line_length)
        total = self.count_params()
        trainable = sum(l.count_params() - sum(l.params[n].size for n in l.fixed_weights)
                        for l in self.layers if l.trainable)
        out(f"Total params: {total:,}")
        out(f"Trainable params: {trainable:,}")
        out(f"Non-trainable params: {total - trainable:,}")
        out("_" * line_length)

    def __repr__(self):
        return f"<Sequential {self.name!r}: {len(self.layers)} layers>"


# model files and the Keras importer build Sequential models through this registration
_files.register_model_class(Sequential)
