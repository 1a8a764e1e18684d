"""``fit``/``evaluate`` on data that does not fit in memory: a :class:`fastlstm.utils.Sequence`
(``len()`` batches, ``seq[i]`` -> ``(x, y)`` or ``(x, y, sample_weight)``) or any iterator or
generator of such batches (then ``steps_per_epoch`` says how many make an epoch; a generator
keeps its position from one epoch to the next, as in Keras)."""

from __future__ import annotations

import numpy as np

from ..rnn import _positive_int as _int_arg


def _batches(source, steps, epoch_end=True):
    """Yields ``steps`` batches (all of a Sequence's when ``steps`` is None)."""
    if hasattr(source, "__getitem__") and hasattr(source, "__len__"):
        n = len(source)
        steps = n if steps is None else steps
        for i in range(steps):
            yield source[i % n]
        if epoch_end and hasattr(source, "on_epoch_end"):
            source.on_epoch_end()
        return
    if steps is None:
        raise ValueError("steps_per_epoch is required when x is a generator or iterator (it "
                         "has no length)")
    it = source
    for i in range(steps):
        try:
            yield next(it)
        except StopIteration:
            raise ValueError(f"the data generator stopped after {i} batches; "
                             f"steps_per_epoch={steps} needs more") from None


def _unpack(model, batch, what):
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise ValueError(f"{what} must yield (x, y) or (x, y, sample_weight) batches, got "
                         f"{type(batch).__name__}")
    x, y = batch[0], batch[1]
    sw = batch[2] if len(batch) == 3 else None
    return model._prepare_all(x, y, None, sw, None)


def _source(x, what):
    if hasattr(x, "__getitem__") and hasattr(x, "__len__"):
        return x
    try:
        return iter(x)
    except TypeError:
        raise TypeError(f"{what} must be arrays, a fastlstm.utils.Sequence or a generator of "
                        f"batches, got {type(x).__name__}") from None


def fit_generator(model, x, epochs, verbose, callbacks, validation_data, steps_per_epoch,
                  initial_epoch):
    epochs = _int_arg(epochs, "epochs", minimum=0)
    initial_epoch = _int_arg(initial_epoch, "initial_epoch", minimum=0)
    verbose = model._verbose(verbose)
    if steps_per_epoch is not None:
        steps_per_epoch = _int_arg(steps_per_epoch, "steps_per_epoch")
    source = _source(x, "x")
    steps = steps_per_epoch if steps_per_epoch is not None else (
        len(source) if hasattr(source, "__len__") else None)
    if steps is None:
        raise ValueError("steps_per_epoch is required when x is a generator or iterator")
    val = None
    if validation_data is not None:
        if isinstance(validation_data, (tuple, list)):
            vl = validation_data[2] if len(validation_data) == 3 else None
            val = model._prepare_all(validation_data[0], validation_data[1], vl, None, None,
                                     ("x_val", "y_val"))
        else:
            val = _source(validation_data, "validation_data")
    model._fresh_streams()
    cb, history = model._callbacks(callbacks, verbose, epochs, steps, {})
    metrics = model._make_metrics()
    cb.on_train_begin()
    logs = {}
    for epoch in range(initial_epoch, epochs):
        prepared = (_unpack(model, b, "x") for b in _batches(source, steps))
        v = val
        if val is not None and not isinstance(val, tuple):
            v = lambda: evaluate_generator(model, val, None)  # noqa: E731
        logs = model._run_epoch(epoch, prepared, steps, metrics, cb, v, 32)
        if model.stop_training:
            break
    cb.on_train_end(logs)
    return history


def evaluate_generator(model, x, steps):
    source = _source(x, "x")
    if steps is not None:
        steps = _int_arg(steps, "steps")
    model._acquire()
    logs, total = {}, 0.0
    sums, count = {}, 0.0
    for batch in _batches(source, steps, epoch_end=False):
        xs, ys, masks, sw = _unpack(model, batch, "x")
        bl = model._evaluate_arrays(xs, ys, masks, sw, max(len(xs[0]), 1), None)
        n = float(len(xs[0]))
        for k, v in bl.items():
            sums[k] = sums.get(k, 0.0) + v * n
        count += n
    if count:
        logs = {k: v / count for k, v in sums.items()}
    return logs


def predict_generator(model, x, steps):
    source = _source(x, "x")
    if steps is not None:
        steps = _int_arg(steps, "steps")
    parts = []
    for batch in _batches(source, steps, epoch_end=False):
        xb = batch[0] if isinstance(batch, tuple) else batch
        out = model.predict(xb, batch_size=max(len(model._prepare_x(xb)[0]), 1), verbose=0)
        parts.append(out)
    if not parts:
        raise ValueError("the data gave no batches to predict")
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if isinstance(parts[0], list):
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
    return np.concatenate(parts)
