"""The hooks through which ``fit``'s loop (:mod:`.training`) runs a global batch: here whole,
on one process. :mod:`fastlstm.distributed` subclasses :class:`OneProcess` (its
``DataParallel``) to split each global batch over MPI ranks, total the batch's losses and the
epoch's metrics over them, average the gradients and run the progress and file callbacks on
rank 0 only; the loop itself is the same for both."""

from __future__ import annotations

import math

import numpy as np

try:
    from .. import _core
except ImportError:  # the pure-NumPy parts of the package without the extension
    _core = None

__all__ = ["OneProcess", "ONE_PROCESS", "grads_finite"]


class OneProcess:
    """``fit`` on one process: every hook leaves the batch, the logs and the callbacks as
    they are."""

    size = 1
    stops_mid_epoch = True  # a callback's stop_training ends the epoch after that batch

    def begin(self, model, n):
        """Before the first epoch (the model is built; ``n`` training samples)."""

    def shuffle_rng(self, rng):
        return rng

    def callbacks(self, cbs):
        return cbs

    def part(self, rows, n):
        """This process's rows (a slice or indices) of the global batch ``rows``."""
        return rows

    def batch(self, model, values, counts, rows, d_outs):
        """This process's per-output losses of its ``rows`` (``counts``: each output's loss
        terms, None: one per row) -> the global batch's ``(values, count, d_outs)``: its
        per-output losses, its weight in the epoch's mean, the loss gradients to back-propagate
        here."""
        return values, _batch_count(rows, counts), d_outs

    def apply_step(self, model, value):
        """The optimizer step when loss and gradients are finite; else what is not."""
        if not math.isfinite(value):
            return f"the loss is {value}"
        if not grads_finite(model.flat_grads):
            return "the gradients contain NaN or infinity"
        model._apply_step()
        return None

    def totals(self, sums, metrics):
        """``sums`` (and the metrics' states) over all processes."""
        return sums

    def stop(self, flag):
        return flag


ONE_PROCESS = OneProcess()


def grads_finite(g):
    """Whether a gradient buffer holds no NaN or infinity (one C++ pass for a flat float32 or
    float64 buffer; NumPy otherwise)."""
    if _core is not None and g.dtype in (np.float32, np.float64) and g.ndim == 1 and \
            g.flags.c_contiguous:
        return _core.all_finite(g)
    return bool(np.isfinite(g).all())


def _batch_count(rows, counts):
    """How much a batch's mean loss weighs in the epoch's: the real steps of a masked
    sequence output, else the samples."""
    c = next((c for c in counts if c is not None), None)
    return float(rows) if c is None else c
