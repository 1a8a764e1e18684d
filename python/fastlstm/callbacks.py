"""Keras-shaped callbacks for :meth:`fastlstm.models.Sequential.fit`, and the progress bar.

A callback receives ``set_model``/``set_params`` and the ``on_*`` hooks Keras defines; logs
are plain dicts of floats (``loss``, metrics, ``val_*`` at epoch end). Batch logs carry the
running means of the epoch so far, as in Keras 3.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time

import numpy as np

__all__ = [
    "Callback",
    "CallbackList",
    "History",
    "ProgbarLogger",
    "Progbar",
    "EarlyStopping",
    "ModelCheckpoint",
    "CSVLogger",
    "LambdaCallback",
    "ReduceLROnPlateau",
    "LearningRateScheduler",
    "TerminateOnNaN",
]


class Callback:
    """Base class: every hook is a no-op."""

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_begin(self, batch, logs=None):
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch_end(batch, logs)

    def on_batch_begin(self, batch, logs=None):
        pass

    def on_batch_end(self, batch, logs=None):
        pass

    def on_test_begin(self, logs=None):
        pass

    def on_test_end(self, logs=None):
        pass

    def on_test_batch_begin(self, batch, logs=None):
        pass

    def on_test_batch_end(self, batch, logs=None):
        pass

    def on_predict_begin(self, logs=None):
        pass

    def on_predict_end(self, logs=None):
        pass

    def on_predict_batch_begin(self, batch, logs=None):
        pass

    def on_predict_batch_end(self, batch, logs=None):
        pass


class CallbackList:
    """Calls each hook on every callback in order (progress bar first, History last)."""

    def __init__(self, callbacks=None, model=None, params=None):
        self.callbacks = []
        for cb in callbacks or []:
            if not isinstance(cb, Callback):
                raise TypeError(
                    f"callbacks must be fastlstm.callbacks.Callback objects, got "
                    f"{type(cb).__name__}"
                )
            self.callbacks.append(cb)
        for cb in self.callbacks:
            if model is not None:
                cb.set_model(model)
            if params is not None:
                cb.set_params(params)

    def implements(self, *hooks):
        """Whether any callback does something in one of ``hooks`` (a hook it overrides, or
        the Keras alias the base's hook calls: ``on_batch_end`` for ``on_train_batch_end``);
        ``fit`` skips the per-batch hooks, and their logs, when none does."""
        names = set(hooks)
        for h in hooks:
            if h.startswith("on_train_batch_"):
                names.add("on_batch_" + h[len("on_train_batch_"):])
        for cb in self.callbacks:
            for h in names:
                if h in vars(cb) or getattr(type(cb), h, None) is not getattr(Callback, h):
                    return True
        return False

    def __getattr__(self, hook):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def call(*args, **kwargs):
            for cb in self.callbacks:
                getattr(cb, hook)(*args, **kwargs)

        return call


class History(Callback):
    """``history.history``: a dict of per-epoch lists; ``history.epoch``: epoch indices."""

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


def _format_value(v):
    if isinstance(v, (float, np.floating)):
        if v != 0 and abs(v) < 1e-3:
            return f"{v:.4e}"
        return f"{v:.4f}"
    return str(v)


def _format_time(seconds):
    if seconds >= 3600:
        return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    if seconds >= 60:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    return f"{int(round(seconds))}s"


class Progbar:
    """A one-line progress bar: ``12/32 [=====>....] - ETA: 3s - loss: 0.6931``.

    Redraws at most every ``interval`` seconds (and on the last step), so a fast batch loop
    pays one clock read per step.
    """

    def __init__(self, target, width=30, verbose=1, interval=0.1, stream=None, unit="step"):
        self.target = target
        self.width = width
        self.verbose = verbose
        self.interval = interval
        self.stream = stream if stream is not None else sys.stdout
        self.unit = unit
        self._start = time.perf_counter()
        self._last = 0.0
        self._last_len = 0

    def _interactive(self):
        isatty = getattr(self.stream, "isatty", None)
        try:
            return bool(isatty and isatty())
        except (ValueError, OSError):  # a closed stream
            return False

    def update(self, current, values=None, finalize=False):
        if self.verbose == 0:
            return
        now = time.perf_counter()
        if not finalize and (self.verbose == 2 or not self._interactive()):
            # verbose=2, or output to a file or pipe: one line when the epoch ends, no redraws
            return
        if not finalize and now - self._last < self.interval:
            return
        self._last = now
        elapsed = now - self._start
        parts = []
        target = self.target
        if self.verbose == 1 or finalize:
            if target is not None:
                digits = len(str(target))
                head = f"{current:>{digits}}/{target}"
            else:
                head = f"{current}"
            if self.verbose == 1 and target:
                done = int(self.width * current / target)
                bar = "=" * max(done - 1, 0) + (">" if done < self.width else "=") if done else ""
                bar = "[" + bar.ljust(self.width, ".") + "]"
                head = f"{head} {bar}"
            parts.append(head)
        per_step = elapsed / max(current, 1)
        if finalize:
            parts.append(_format_time(elapsed))
            parts.append(f"{per_step * 1e3:.0f}ms/{self.unit}" if per_step >= 1e-3 else
                         f"{per_step * 1e6:.0f}us/{self.unit}")
        elif target:
            parts.append(f"ETA: {_format_time(per_step * (target - current))}")
        for k, v in (values or {}).items():
            parts.append(f"{k}: {_format_value(v)}")
        line = " - ".join(parts)
        pad = max(self._last_len - len(line), 0)
        self._last_len = len(line)
        if self.verbose == 1 and self._interactive():
            self.stream.write("\r" + line + " " * pad + ("\n" if finalize else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


class ProgbarLogger(Callback):
    """The progress output of ``fit``/``evaluate``/``predict``: ``verbose=1`` a live bar per
    epoch, ``verbose=2`` one line per epoch, ``0`` nothing."""

    def __init__(self, verbose=1, stream=None):
        super().__init__()
        self.verbose = verbose
        self.stream = stream
        self._bar = None
        self._in_fit = False

    def _new_bar(self, steps):
        self._bar = Progbar(steps, verbose=self.verbose, stream=self.stream)

    def on_train_begin(self, logs=None):
        self._in_fit = True

    def on_train_end(self, logs=None):
        self._in_fit = False

    def on_epoch_begin(self, epoch, logs=None):
        stream = self.stream if self.stream is not None else sys.stdout
        stream.write(f"Epoch {epoch + 1}/{self.params.get('epochs')}\n")
        self._new_bar(self.params.get("steps"))
        self._seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self._seen = batch + 1
        self._bar.update(batch + 1, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._bar.update(self._seen, logs, finalize=True)

    def on_test_begin(self, logs=None):
        if not self._in_fit:
            self._new_bar(self.params.get("steps"))
            self._seen = 0

    def on_test_batch_end(self, batch, logs=None):
        if not self._in_fit:
            self._seen = batch + 1
            self._bar.update(batch + 1, logs)

    def on_test_end(self, logs=None):
        if not self._in_fit:
            self._bar.update(self._seen, logs, finalize=True)

    def on_predict_begin(self, logs=None):
        self._new_bar(self.params.get("steps"))
        self._seen = 0

    def on_predict_batch_end(self, batch, logs=None):
        self._seen = batch + 1
        self._bar.update(batch + 1)

    def on_predict_end(self, logs=None):
        self._bar.update(self._seen, finalize=True)


# ------------------------------------------------------------------------------------- monitors
def _mode_op(monitor, mode):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        name = monitor.lower()
        mode = "max" if any(k in name for k in ("acc", "auc", "precision", "recall")) else "min"
    return mode


def _monitor_value(logs, monitor, who):
    logs = logs or {}
    if monitor not in logs:
        raise ValueError(
            f"{who} monitors {monitor!r}, which is not in the logs; available: "
            f"{sorted(logs)} (val_* entries need validation_data or validation_split)"
        )
    return float(logs[monitor])


class EarlyStopping(Callback):
    """Stops when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    epochs; ``restore_best_weights`` puts back the best epoch's weights at the end."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        super().__init__()
        self.monitor = monitor
        self.mode = _mode_op(monitor, mode)
        self.min_delta = abs(float(min_delta))
        self.patience = int(patience)
        self.verbose = verbose
        self.baseline = baseline
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)

    def _better(self, current, reference):
        if self.mode == "min":
            return current + self.min_delta < reference
        return current - self.min_delta > reference

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        current = _monitor_value(logs, self.monitor, "EarlyStopping")
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
        self.wait += 1
        if self._better(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._better(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Saves the model (``model.save``) or its weights (``save_weights_only``) after each epoch,
    or only when ``monitor`` improves (``save_best_only``). ``filepath`` may hold
    ``{epoch:02d}`` and log keys, e.g. ``"ckpt-{epoch:02d}-{val_loss:.3f}.fastlstm"``."""

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=False, mode="auto", save_freq="epoch",
                 initial_value_threshold=None):
        super().__init__()
        if save_freq != "epoch":
            raise NotImplementedError("ModelCheckpoint supports save_freq='epoch' only")
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.mode = _mode_op(monitor, mode)
        self.best = initial_value_threshold

    def on_train_begin(self, logs=None):
        if self.best is None:
            self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            current = _monitor_value(logs, self.monitor, "ModelCheckpoint")
            better = current < self.best if self.mode == "min" else current > self.best
            if not better:
                if self.verbose > 0:
                    print(f"Epoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")
                return
            if self.verbose > 0:
                print(f"Epoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to "
                      f"{current:.5f}, saving model to {path}")
            self.best = current
        elif self.verbose > 0:
            print(f"Epoch {epoch + 1}: saving model to {path}")
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)


class CSVLogger(Callback):
    """Appends one row per epoch (``epoch`` then the log keys, sorted) to a CSV file."""

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename = os.fspath(filename)
        self.sep = separator
        self.append = bool(append)
        self.keys = None

    def on_train_begin(self, logs=None):
        self._write_header = not (self.append and os.path.exists(self.filename)
                                  and os.path.getsize(self.filename) > 0)
        if not self.append:
            open(self.filename, "w").close()
        self.keys = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
        with open(self.filename, "a", newline="") as f:
            w = csv.writer(f, delimiter=self.sep, lineterminator="\n")
            if self._write_header:
                w.writerow(["epoch"] + self.keys)
                self._write_header = False
            w.writerow([epoch] + [logs.get(k, "NA") for k in self.keys])


class LambdaCallback(Callback):
    """A callback from plain functions: ``on_epoch_end=lambda epoch, logs: ...`` etc."""

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None,
                 on_train_end=None, on_train_batch_begin=None, on_train_batch_end=None,
                 on_batch_begin=None, on_batch_end=None):
        super().__init__()
        self._fns = {
            "on_epoch_begin": on_epoch_begin,
            "on_epoch_end": on_epoch_end,
            "on_train_begin": on_train_begin,
            "on_train_end": on_train_end,
            "on_train_batch_begin": on_train_batch_begin or on_batch_begin,
            "on_train_batch_end": on_train_batch_end or on_batch_end,
        }

    def on_epoch_begin(self, epoch, logs=None):
        if self._fns["on_epoch_begin"]:
            self._fns["on_epoch_begin"](epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self._fns["on_epoch_end"]:
            self._fns["on_epoch_end"](epoch, logs)

    def on_train_begin(self, logs=None):
        if self._fns["on_train_begin"]:
            self._fns["on_train_begin"](logs)

    def on_train_end(self, logs=None):
        if self._fns["on_train_end"]:
            self._fns["on_train_end"](logs)

    def on_train_batch_begin(self, batch, logs=None):
        if self._fns["on_train_batch_begin"]:
            self._fns["on_train_batch_begin"](batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        if self._fns["on_train_batch_end"]:
            self._fns["on_train_batch_end"](batch, logs)


class ReduceLROnPlateau(Callback):
    """Multiplies the learning rate by ``factor`` when ``monitor`` has not improved by
    ``min_delta`` for ``patience`` epochs (not below ``min_lr``; ``cooldown`` epochs of rest)."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto",
                 min_delta=1e-4, cooldown=0, min_lr=0.0):
        super().__init__()
        if not 0.0 < float(factor) < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        self.monitor = monitor
        self.factor = float(factor)
        self.patience = int(patience)
        self.verbose = verbose
        self.mode = _mode_op(monitor, mode)
        self.min_delta = abs(float(min_delta))
        self.cooldown = int(cooldown)
        self.min_lr = float(min_lr)

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.cooldown_counter = 0
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        opt = self.model.optimizer
        logs["learning_rate"] = float(opt.learning_rate)
        current = _monitor_value(logs, self.monitor, "ReduceLROnPlateau")
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        better = (current < self.best - self.min_delta if self.mode == "min"
                  else current > self.best + self.min_delta)
        if better:
            self.best = current
            self.wait = 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = float(opt.learning_rate)
                if old > self.min_lr:
                    new = max(old * self.factor, self.min_lr)
                    opt.learning_rate = new
                    if self.verbose > 0:
                        print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}.")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


class LearningRateScheduler(Callback):
    """Sets the learning rate at each epoch start to ``schedule(epoch, lr)``."""

    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model.optimizer
        lr = float(self.schedule(epoch, float(opt.learning_rate)))
        opt.learning_rate = lr
        if self.verbose > 0:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class TerminateOnNaN(Callback):
    """Kept for Keras compatibility: ``fit`` already stops with an error on a NaN loss."""
