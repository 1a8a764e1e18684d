"""predict for every model: batches through the graph's inference pass, callbacks, outputs
packed as the model was built (one array, a list, or a dict by output name)."""

from __future__ import annotations

import numpy as np

from .. import callbacks as callbacks_mod
from ..rnn import _positive_int as _int_arg
from .inputs import _is_arrayish, _slice

__all__ = ["PredictMixin"]


class PredictMixin:
    def _pack_outputs(self, outs):
        if self._out_kind == "single":
            return outs[0]
        if self._out_kind == "dict":
            return dict(zip(self.output_names, outs))
        return list(outs)

    def predict(self, x, batch_size=None, verbose="auto", callbacks=None, lengths=None,
                steps=None):
        """The model's outputs for ``x`` in batches (inference: no dropout); ``x`` may also be
        a :class:`fastlstm.utils.Sequence` or a generator of batches (``steps`` of them)."""
        if steps is not None or not _is_arrayish(x):
            from .data import predict_generator

            return predict_generator(self, x, steps)
        batch_size = 32 if batch_size is None else _int_arg(batch_size, "batch_size")
        verbose = self._verbose(verbose)
        xs = self._prepare_x(x)
        masks = self._prepare_lengths(lengths, xs)
        self._acquire()
        n = len(xs[0])
        steps = -(-n // batch_size)
        cbs = list(callbacks or [])
        if verbose:
            cbs.insert(0, callbacks_mod.ProgbarLogger(verbose))
        cb = callbacks_mod.CallbackList(cbs, model=self, params={"verbose": verbose, "steps": steps})
        cb.on_predict_begin()
        parts = []
        for b in range(steps):
            sl = slice(b * batch_size, min((b + 1) * batch_size, n))
            cb.on_predict_batch_begin(b)
            outs, _ = self._run(_slice(xs, sl), _slice(masks, sl), False)
            parts.append(outs)
            cb.on_predict_batch_end(b, {"outputs": self._pack_outputs(outs)})
        cb.on_predict_end()
        if not parts:
            outs = [np.zeros((0,) + tuple(1 if s is None else s for s in t.shape[1:]),
                             dtype=self.dtype) for t in self._output_tensors]
        else:
            outs = [np.concatenate([p[k] for p in parts], axis=0)
                    for k in range(len(self._output_tensors))]
        return self._pack_outputs(outs)

    def _call_arrays(self, x, training=False, lengths=None):
        xs = self._prepare_x(x)
        self._acquire()
        outs, _ = self._run(xs, self._prepare_lengths(lengths, xs), bool(training))
        return self._pack_outputs(outs)

    def predict_on_batch(self, x, lengths=None):
        return self._call_arrays(x, lengths=lengths)
