"""compile / fit / evaluate / predict for every model (the functional ``Model`` and its linear
case ``Sequential``), over the graph passes ``_run``/``_backward`` of the model.

A training step (:meth:`Trainer._train_batch`): forward through the graph (the recurrent
layers in the C++ engine), each output's loss and its gradient (fused with a final
sigmoid/softmax when the loss is a cross-entropy on it), times its loss weight, backward
through the graph, the regularizers' gradient, a check that loss and gradients are finite, one
optimizer step. Losses of 3-D outputs are averaged over the real (unmasked) steps; sample
weights multiply each sample's loss (Keras's "sum over batch size": the weighted sum divided by
the number of real elements).
"""

from __future__ import annotations

import numpy as np

from .. import callbacks as callbacks_mod
from .. import initializers, optim
from .. import losses as losses_mod
from .. import metrics as metrics_mod
from ..rnn import _positive_int as _int_arg
from .inputs import DataMixin, _is_arrayish, _slice
from .parallel import ONE_PROCESS
from .predicting import PredictMixin
from .saving import CompileStateMixin
from .weights import WeightsMixin

__all__ = ["Trainer", "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """The loss (or a gradient) became NaN/inf during ``fit``; ``epoch`` and ``batch`` are
    1-based. The model keeps the weights from before the failing step."""

    def __init__(self, message, epoch, batch):
        super().__init__(message)
        self.epoch = epoch
        self.batch = batch


def _per_output(value, names, what, default=None):
    """A per-output list from one value, a list (in output order) or a dict by output name."""
    n = len(names)
    if isinstance(value, dict):
        unknown = set(value) - set(names)
        if unknown:
            raise ValueError(f"{what} names unknown output(s) {sorted(unknown)}; the model's "
                             f"outputs are {names}")
        return [value.get(k, default) for k in names]
    if isinstance(value, (list, tuple)) and n > 1 and len(value) == n:
        return list(value)
    if isinstance(value, (list, tuple)) and n > 1:
        raise ValueError(f"{what} must have one entry per output ({n}: {names}), got "
                         f"{len(value)}")
    return [value] * n


class Trainer(PredictMixin, DataMixin, WeightsMixin, CompileStateMixin):
    """The Keras training API over a model's graph (mixed into ``Model``)."""

    _parallel = ONE_PROCESS  # how fit splits each batch (fastlstm.distributed sets another)

    def __init__(self):
        self.optimizer = None
        self.loss = None
        self.compiled = False
        self.stop_training = False
        self.history = None
        self._metric_ids = []

    # ------------------------------------------------------------------------------ compile
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None,
                **kwargs):
        """Sets the optimizer (name or object), the loss(es) and metrics. With several
        outputs ``loss``, ``metrics`` and ``loss_weights`` may be lists (output order) or
        dicts (by output name); one loss is used for every output."""
        unsupported = set(kwargs) - {"run_eagerly", "jit_compile", "steps_per_execution"}
        if unsupported:
            raise TypeError(f"compile() got unsupported argument(s) {sorted(unsupported)}")
        if loss is None:
            raise ValueError("compile() needs a loss, e.g. loss='mse' or "
                             "loss='sparse_categorical_crossentropy'")
        self.optimizer = optim.get(optimizer)
        self._loss_arg, self._metrics_arg, self._loss_weights_arg = loss, metrics, loss_weights
        self.compiled = True
        self._outputs_compiled_for = None
        if self.built:
            self._ensure_outputs_compiled()
            if getattr(self.optimizer, "_n", None) != self.flat_params.size:
                self.optimizer.build(self.flat_params.size, self.dtype, self._segments)
        else:
            # check the names now (a Sequential without input shape builds at fit)
            for l in (loss if isinstance(loss, (list, tuple)) else
                      loss.values() if isinstance(loss, dict) else [loss]):
                if l is not None:
                    losses_mod.get(l)
            self.loss = losses_mod.get(loss) if not isinstance(loss, (list, tuple, dict)) else None
            ms = metrics if isinstance(metrics, (list, tuple)) else [] if metrics is None else [metrics]
            for m in ms:
                if isinstance(m, (str, metrics_mod.Metric)) or callable(m):
                    metrics_mod.get(m, self.loss, (2,))
            self._metric_ids = list(ms)

    def _ensure_outputs_compiled(self):
        if getattr(self, "_outputs_compiled_for", None) is not self._output_tensors:
            self._compile_outputs()
            self._outputs_compiled_for = self._output_tensors

    def _compile_outputs(self):
        names = self.output_names
        losses = _per_output(self._loss_arg, names, "loss")
        self._losses = [None if l is None else losses_mod.get(l) for l in losses]
        if all(l is None for l in self._losses):
            raise ValueError("compile(): every output's loss is None")
        lw = self._loss_weights_arg
        self._loss_weights = [1.0 if w is None else float(w)
                              for w in _per_output(lw if lw is not None else 1.0, names,
                                                   "loss_weights", 1.0)]
        metrics = self._metrics_arg
        if metrics is None:
            per = [[] for _ in names]
        elif isinstance(metrics, dict):
            per = [m if isinstance(m, (list, tuple)) else [m]
                   for m in _per_output(metrics, names, "metrics", [])]
        elif isinstance(metrics, (list, tuple)) and len(names) > 1 and metrics and all(
                isinstance(m, (list, tuple)) for m in metrics):
            per = [list(m) for m in _per_output(list(metrics), names, "metrics")]
        else:
            ms = list(metrics) if isinstance(metrics, (list, tuple)) else [metrics]
            per = [ms for _ in names]
        self._metric_ids = per[0] if len(names) == 1 else per
        self._metric_spec = per
        self.loss = self._losses[0] if len(names) == 1 else self._losses
        shapes = [t.shape[1:] for t in self._output_tensors]
        for k, ms in enumerate(per):  # fail on unknown names now, not at fit
            for m in ms:
                metrics_mod.get(m, self._losses[k], shapes[k] or (2,))

    def _make_metrics(self):
        shapes = [t.shape[1:] for t in self._output_tensors]
        out = []
        for k, ms in enumerate(self._metric_spec):
            for m in ms:
                obj = metrics_mod.get(m, self._losses[k], shapes[k])
                if isinstance(m, metrics_mod.Metric):
                    obj.reset()
                prefix = "" if len(shapes) == 1 else self.output_names[k] + "_"
                out.append((k, prefix + obj.name, obj))
        return out

    def _update_fused(self):
        """Per output: the node whose Dense sigmoid/softmax the cross-entropy fuses with."""
        fused = []
        for k, t in enumerate(self._output_tensors):
            L, node = self._losses[k], t.node
            last = None if node is None else node.layer
            ok = (
                L is not None and last is not None and type(last).__name__ == "Dense"
                and not L.from_logits and id(last) not in self._multi_call
                and self._consumers[id(t)] == 1
                and ((last.activation == "sigmoid" and isinstance(L, losses_mod.BinaryCrossentropy))
                     or (last.activation == "softmax" and isinstance(
                         L, (losses_mod.CategoricalCrossentropy,
                             losses_mod.SparseCategoricalCrossentropy))))
            )
            fused.append(node if ok else None)
        self._fused_nodes = fused
        self._fused = any(f is not None for f in fused)

    def _check_compiled(self, what):
        if not self.compiled:
            raise RuntimeError(f"the model must be compiled before {what}: call "
                               "model.compile(optimizer=..., loss=...) first")

    # ------------------------------------------------------------------------------ losses
    def _elem_weights(self, out, mask, sw):
        """Weights over an output's sample elements (None: all 1) and the normalizer."""
        m = mask if (mask is not None and out.ndim == 3 and mask.shape == out.shape[:2]) else None
        if sw is None:
            return m
        w = sw.reshape((-1,) + (1,) * (out.ndim - 2)).astype(out.dtype)
        w = np.broadcast_to(w, out.shape[:-1])
        return w * m if m is not None else w

    def _losses_of(self, ys, outs, masks, sw, need_grad):
        """(total loss, per-output values, per-output d_out, per-output weights)."""
        total, values, d_outs, weights = 0.0, [], [], []
        self._counts = []
        for k, (L, y, out, m) in enumerate(zip(self._losses, ys, outs, masks)):
            if L is None:
                values.append(None)
                d_outs.append(None)
                weights.append(None)
                self._counts.append(None)
                continue
            w = self._elem_weights(out, m, sw)
            mk = self._elem_weights(out, m, None)
            self._counts.append(None if mk is None else float(mk.sum()))
            fused = self._fused_nodes[k]
            logits = None if fused is None else fused.layer.logits
            v, d = L.value_and_grad(y, out, w, logits=logits, need_grad=need_grad)
            if sw is not None:
                # Keras divides the weighted sum by the number of real elements, not by the
                # sum of the weights: rescale the weighted mean
                count = float(np.prod(out.shape[:-1])) if mk is None else float(mk.sum())
                wsum = float(np.sum(w, dtype=np.float64))
                scale = wsum / count if count else 0.0
                v *= scale
                if d is not None:
                    d = d * d.dtype.type(scale)
            lw = self._loss_weights[k]
            total += lw * v
            values.append(v)
            if d is not None and lw != 1.0:
                d = d * d.dtype.type(lw)
            d_outs.append(d)
            weights.append(w)
        return total, values, d_outs, weights

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

    def _batch_losses(self, xs, ys, masks, sw, training, par):
        """Forward and losses of this process's rows of a batch, made the global batch's by
        ``par``: (outputs, loss, per-output losses, d_outs, weights); ``self._count``: the
        batch's weight in the epoch's mean."""
        k, rows = len(self._output_tensors), len(xs[0])
        if rows:
            outs, oms = self._run(xs, masks, training)
            _, values, d_outs, weights = self._losses_of(ys, outs, oms, sw, need_grad=training)
        else:  # a rank with no rows of this global batch (more ranks than rows)
            outs, values, d_outs, weights = None, [None] * k, [None] * k, [None] * k
            self._counts = [0.0] * k
        values, self._count, d_outs = par.batch(self, values, self._counts, rows, d_outs)
        value = 0.0
        for lw, v in zip(self._loss_weights, values):
            if v is not None:
                value += lw * v
        return outs, value, values, d_outs, weights

    def _train_step(self, xs, ys, masks, sw, par=ONE_PROCESS):
        """Loss and gradients of one batch (dropout active); fills ``flat_grads``."""
        self.flat_grads[...] = 0
        outs, value, values, d_outs, weights = self._batch_losses(xs, ys, masks, sw, True, par)
        if outs is not None:
            self._backward(d_outs, fused=[f for f in self._fused_nodes if f is not None])
        if self._reg is not None:
            value += self._penalty(with_grad=True)
        return value, values, outs, weights

    def compute_loss_and_gradients(self, x, y, lengths=None, sample_weight=None):
        """The training loss of one batch (with regularization; dropout active) and a copy of
        the flat gradient; the weights do not change."""
        self._check_compiled("compute_loss_and_gradients")
        self._check_trainable("compute_loss_and_gradients")
        xs, ys, masks, sw = self._prepare_all(x, y, lengths, sample_weight, None)
        self._update_fused()
        value = self._train_step(xs, ys, masks, sw)[0]
        return value, self.flat_grads.copy()

    def _frozen_ranges(self):
        """Flat ranges the optimizer must not move: layers with ``trainable=False`` and each
        layer's ``fixed_weights`` (an LSTM's ``bias_hh``: Keras has one bias, so the engine's
        second one stays where it is and the trained bias is exactly Keras's)."""
        # the same every step unless a layer's trainable flag or the buffer changed: cached
        flags = tuple(layer.trainable for layer in self._leaves)
        cached = getattr(self, "_frozen_cache", None)
        if cached is not None and cached[0] is self.flat_params and cached[1] is self._leaves \
                and cached[2] == flags:
            return cached[3]
        out = []
        base, item = self.flat_params.ctypes.data, self.flat_params.itemsize
        for layer, (a, b) in zip(self._leaves, self._leaf_ranges):
            if b == a:
                continue
            if not layer.trainable:
                out.append((a, b))
                continue
            for name in layer.fixed_weights:
                v = layer.params[name]
                start = (v.ctypes.data - base) // item
                out.append((start, start + v.size))
        self._frozen_cache = (self.flat_params, self._leaves, flags, out)
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
    def _train_batch(self, xb, yb, mb, swb, epoch, b, steps):
        """One optimizer step on one batch (this process's part of it)."""
        par = self._parallel
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            # a non-finite loss is detected below and reported with epoch and batch
            value, values, out, weights = self._train_step(xb, yb, mb, swb, par)
        what = par.apply_step(self, value)
        if what is not None:
            raise NonFiniteLossError(
                f"training stopped at epoch {epoch + 1}, batch {b + 1} of {steps}: {what}."
                " The weights from before this step are kept. Usual causes: a learning "
                "rate too high (try clipnorm= or a smaller rate) or bad input values.",
                epoch + 1, b + 1)
        return value, values, out, weights

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0,
            lengths=None, sample_weight=None, class_weight=None, steps_per_epoch=None):
        """Trains for ``epochs`` epochs; returns the :class:`~fastlstm.callbacks.History`.

        ``validation_data``: ``(x_val, y_val)`` or ``(x_val, y_val, lengths_val)``.
        ``validation_split``: the last fraction of the samples (before shuffling), as Keras.
        A NaN/inf loss stops training with :class:`NonFiniteLossError` naming the epoch and
        batch; the weights are those from before that step.
        """
        self._check_compiled("fit")
        self._check_trainable("fit")
        if steps_per_epoch is not None or not _is_arrayish(x):
            from .data import fit_generator

            return fit_generator(self, x, epochs=epochs, verbose=verbose, callbacks=callbacks,
                                 validation_data=validation_data,
                                 steps_per_epoch=steps_per_epoch, initial_epoch=initial_epoch)
        batch_size = 32 if batch_size is None else _int_arg(batch_size, "batch_size")
        epochs = _int_arg(epochs, "epochs", minimum=0)
        initial_epoch = _int_arg(initial_epoch, "initial_epoch", minimum=0)
        verbose = self._verbose(verbose)
        vs = float(validation_split)
        if not 0.0 <= vs < 1.0:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split}")
        xs, ys, masks, sw = self._prepare_all(x, y, lengths, sample_weight, class_weight)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be (x_val, y_val) or "
                                 "(x_val, y_val, lengths_val)")
            vl = validation_data[2] if len(validation_data) == 3 else None
            val = self._prepare_all(validation_data[0], validation_data[1], vl, None, None,
                                    ("x_val", "y_val"))
        elif vs > 0:
            n_all = len(xs[0])
            split = int(n_all * (1.0 - vs))
            if split == 0 or split == n_all:
                raise ValueError(f"validation_split={vs} leaves "
                                 f"{'no training' if split == 0 else 'no validation'} samples "
                                 f"out of {n_all}")
            tail, head = slice(split, None), slice(0, split)
            val = (_slice(xs, tail), _slice(ys, tail), _slice(masks, tail),
                   None if sw is None else sw[tail])
            xs, ys, masks = _slice(xs, head), _slice(ys, head), _slice(masks, head)
            sw = None if sw is None else sw[head]
        n = len(xs[0])
        if n == 0:
            raise ValueError("x has no samples")
        if any(getattr(l, "stateful", False) for l in self._leaves) and n % batch_size:
            raise ValueError(
                f"a stateful layer needs every batch to have the same size: {n} samples are "
                f"not divisible by batch_size={batch_size}"
            )
        par = self._parallel
        par.begin(self, n)
        steps = -(-n // batch_size)
        rng = par.shuffle_rng(self._fresh_streams())
        cb, history = self._callbacks(callbacks, verbose, epochs, steps,
                                      {"batch_size": batch_size, "samples": n})
        train_metrics = self._make_metrics()
        cb.on_train_begin()
        logs = {}
        for epoch in range(initial_epoch, epochs):
            order = rng.permutation(n) if shuffle else None

            def batches(order=order):
                for b in range(steps):
                    sl = slice(b * batch_size, min((b + 1) * batch_size, n)) if order is None \
                        else order[b * batch_size : (b + 1) * batch_size]
                    sl = par.part(sl, n)
                    yield (_slice(xs, sl), _slice(ys, sl), _slice(masks, sl),
                           None if sw is None else sw[sl])

            logs = self._run_epoch(epoch, batches(), steps, train_metrics, cb, val, batch_size)
            self.stop_training = par.stop(self.stop_training)
            if self.stop_training:
                break
        cb.on_train_end(logs)
        return history

    def _fresh_streams(self):
        # fresh random streams from the global seed: set_seed(n) before fit fixes them all
        # (made at first use: a layer without dropout never draws from its stream)
        rng = initializers.spawn_rng(lazy=True)
        for layer in self._leaves:
            if not getattr(layer, "_fixed_rng", False):
                layer._rng = initializers.spawn_rng(lazy=True)
            inner = getattr(layer, "layer", None)
            if inner is not None:
                inner._rng = initializers.spawn_rng(lazy=True)
        return rng

    def _callbacks(self, callbacks, verbose, epochs, steps, extra):
        self._acquire()
        self._ensure_outputs_compiled()
        self._update_fused()
        history = callbacks_mod.History()
        cbs = list(callbacks or [])
        if verbose:
            cbs.insert(0, callbacks_mod.ProgbarLogger(verbose))
        cbs = self._parallel.callbacks(cbs)
        cbs.append(history)
        params = {"verbose": verbose, "epochs": epochs, "steps": steps}
        params.update(extra)
        cb = callbacks_mod.CallbackList(cbs, model=self, params=params)
        history.set_params(params)
        self.history = history
        self.stop_training = False
        return cb, history

    def _logs(self, sums, metrics, penalty=0.0):
        """Logs from the sums ``[loss * count, count, per-output loss * count...]``."""
        loss_sum, loss_count, part_sum = sums[0], sums[1], sums[2:]
        logs = {"loss": (loss_sum / loss_count if loss_count else 0.0) + penalty}
        if len(self._output_tensors) > 1:
            for k, L in enumerate(self._losses):
                if L is not None:
                    logs[f"{self.output_names[k]}_loss"] = \
                        part_sum[k] / loss_count if loss_count else 0.0
        for _, name, m in metrics:
            logs[name] = m.result()
        return logs

    def _accumulate(self, sums, yb, value, values, outs, weights, metrics):
        count = self._count
        sums[0] += value * count
        sums[1] += count
        for k, v in enumerate(values):
            if v is not None:
                sums[2 + k] += v * count
        if outs is not None:  # None: this rank had no rows of the batch
            for k, _, m in metrics:
                m.update(yb[k], outs[k], weights[k])

    def _run_epoch(self, epoch, batches, steps, train_metrics, cb, val, batch_size):
        par = self._parallel
        for _, _, m in train_metrics:
            m.reset()
        cb.on_epoch_begin(epoch)
        sums = [0.0] * (2 + len(self._output_tensors))
        # the per-batch hooks and their running logs only when a callback has them
        hooks = not isinstance(cb, callbacks_mod.CallbackList) or cb.implements(
            "on_train_batch_begin", "on_train_batch_end")
        for b, (xb, yb, mb, swb) in enumerate(batches):
            if hooks:
                cb.on_train_batch_begin(b)
            value, values, out, weights = self._train_batch(xb, yb, mb, swb, epoch, b, steps)
            self._accumulate(sums, yb, value, values, out, weights, train_metrics)
            # running logs: the global batches' loss; the metrics of this process's rows
            if hooks:
                cb.on_train_batch_end(b, self._logs(sums, train_metrics))
            if self.stop_training and par.stops_mid_epoch:
                break
        epoch_logs = self._logs(par.totals(sums, train_metrics), train_metrics)
        if val is not None:
            vlogs = val() if callable(val) else \
                self._evaluate_arrays(*val, batch_size=batch_size, cb=None, par=par)
            epoch_logs.update({"val_" + k: v for k, v in vlogs.items()})
        cb.on_epoch_end(epoch, epoch_logs)
        return epoch_logs

    @staticmethod
    def _verbose(verbose):
        if verbose == "auto":
            return 1
        if verbose not in (0, 1, 2, False, True):
            raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
        return int(verbose)

    # ------------------------------------------------------------------------------ evaluate
    def _evaluate_arrays(self, xs, ys, masks, sw, batch_size, cb, par=ONE_PROCESS):
        """Loss and metrics over the samples in batches (``par``: each split over the
        processes as in ``fit``)."""
        self._acquire()
        self._ensure_outputs_compiled()
        self._update_fused()
        metrics = self._make_metrics()
        n = len(xs[0])
        sums = [0.0] * (2 + len(self._output_tensors))
        penalty = self._penalty(with_grad=False) if self._reg is not None else 0.0
        for b in range(-(-n // batch_size)):
            sl = par.part(slice(b * batch_size, min((b + 1) * batch_size, n)), n)
            if cb is not None:
                cb.on_test_batch_begin(b)
            xb, yb, mb = _slice(xs, sl), _slice(ys, sl), _slice(masks, sl)
            swb = None if sw is None else sw[sl]
            outs, value, values, _, weights = self._batch_losses(xb, yb, mb, swb, False, par)
            self._accumulate(sums, yb, value, values, outs, weights, metrics)
            if cb is not None:
                cb.on_test_batch_end(b, self._logs(sums, metrics, penalty))
        if n == 0:
            return {}
        return self._logs(par.totals(sums, metrics), metrics, penalty)

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", callbacks=None,
                 return_dict=False, lengths=None, sample_weight=None, steps=None):
        """The loss (with regularization) and metrics on ``(x, y)``: a float without metrics,
        else ``[loss, metric...]`` (``return_dict=True``: a dict)."""
        self._check_compiled("evaluate")
        if steps is not None or not _is_arrayish(x):
            from .data import evaluate_generator

            logs = evaluate_generator(self, x, steps)
        else:
            batch_size = 32 if batch_size is None else _int_arg(batch_size, "batch_size")
            verbose = self._verbose(verbose)
            xs, ys, masks, sw = self._prepare_all(x, y, lengths, sample_weight, None)
            cbs = list(callbacks or [])
            if verbose:
                cbs.insert(0, callbacks_mod.ProgbarLogger(verbose))
            cb = callbacks_mod.CallbackList(
                cbs, model=self, params={"verbose": verbose, "steps": -(-len(xs[0]) // batch_size)})
            cb.on_test_begin()
            logs = self._evaluate_arrays(xs, ys, masks, sw, batch_size, cb)
            cb.on_test_end(logs)
        if return_dict:
            return logs
        if len(logs) == 1:
            return logs["loss"]
        return list(logs.values())

    # ------------------------------------------------------------------------------ predict
    def train_on_batch(self, x, y, lengths=None, return_dict=False, sample_weight=None,
                       class_weight=None):
        """One optimizer step on one batch; returns the loss (and metrics) of that batch."""
        self._check_compiled("train_on_batch")
        self._check_trainable("train_on_batch")
        xs, ys, masks, sw = self._prepare_all(x, y, lengths, sample_weight, class_weight)
        self._acquire()
        self._update_fused()
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            value, values, out, weights = self._train_step(xs, ys, masks, sw)
        what = ONE_PROCESS.apply_step(self, value)
        if what is not None:
            raise NonFiniteLossError(f"train_on_batch: {what}; the weights were not changed",
                                     0, 1)
        logs = {"loss": value}
        if len(values) > 1:
            logs.update({f"{n}_loss": v for n, v in zip(self.output_names, values)
                         if v is not None})
        for k, name, m in self._make_metrics():
            m.update(ys[k], out[k], weights[k])
            logs[name] = m.result()
        if return_dict:
            return logs
        return logs["loss"] if len(logs) == 1 else list(logs.values())

    def test_on_batch(self, x, y, lengths=None, return_dict=False, sample_weight=None):
        n = len(self._prepare_x(x)[0])
        return self.evaluate(x, y, batch_size=max(n, 1), verbose=0, lengths=lengths,
                             return_dict=return_dict, sample_weight=sample_weight)

    # ------------------------------------------------------------------------------ state
    def reset_states(self):
        """Forgets the state carried by stateful recurrent layers."""
        for layer in self.layers:
            layer.reset_states()
