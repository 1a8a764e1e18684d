"""Keras's ``utils`` a Keras program imports: ``pad_sequences`` (Keras's defaults: pad and
truncate at the front), ``to_categorical``, ``set_random_seed`` and :class:`Sequence`, a
``keras.utils.PyDataset``-like base for data that does not fit in memory."""

from __future__ import annotations

import numpy as np

from .initializers import set_seed

__all__ = ["pad_sequences", "to_categorical", "set_random_seed", "Sequence", "PyDataset"]


def set_random_seed(seed):
    """Seeds every generator fastlstm's layers use, Python's ``random`` and NumPy's global one."""
    set_seed(seed)


def pad_sequences(sequences, maxlen=None, dtype="int32", padding="pre", truncating="pre",
                  value=0.0):
    """A list of sequences -> a [N, maxlen] array, as Keras: by default padded and truncated
    at the front (``padding="pre"``), so the end of each sequence is kept and aligned."""
    if padding not in ("pre", "post"):
        raise ValueError(f"padding must be 'pre' or 'post', got {padding!r}")
    if truncating not in ("pre", "post"):
        raise ValueError(f"truncating must be 'pre' or 'post', got {truncating!r}")
    try:
        seqs = [np.asarray(s) for s in sequences]
    except TypeError:
        raise TypeError("sequences must be a list of sequences (lists or arrays)") from None
    lengths = [len(s) if s.ndim else 0 for s in seqs]
    if maxlen is None:
        maxlen = max(lengths, default=0)
    elif int(maxlen) < 0:
        raise ValueError(f"maxlen must be >= 0, got {maxlen}")
    maxlen = int(maxlen)
    tail = ()
    for s in seqs:
        if s.ndim > 1 and len(s):
            tail = s.shape[1:]
            break
    out = np.full((len(seqs), maxlen) + tail, value, dtype=dtype)
    for i, s in enumerate(seqs):
        if not len(s) or maxlen == 0:
            continue
        if s.ndim and s.shape[1:] != tail:
            raise ValueError(f"sequence {i} has entries of shape {s.shape[1:]}, the others "
                             f"{tail}")
        s = s[-maxlen:] if truncating == "pre" else s[:maxlen]
        if padding == "post":
            out[i, : len(s)] = s
        else:
            out[i, maxlen - len(s):] = s
    return out


def to_categorical(y, num_classes=None, dtype="float32"):
    """Integer labels [...] -> one-hot [..., num_classes] (a trailing axis of 1 is dropped)."""
    y = np.asarray(y)
    if y.dtype.kind == "f":
        yi = y.astype(np.int64)
        if not np.array_equal(yi, y):
            raise ValueError("to_categorical needs integer labels, got non-integer values")
        y = yi
    elif y.dtype.kind not in "iub":
        raise TypeError(f"to_categorical needs integer labels, got dtype {y.dtype}")
    if y.ndim > 1 and y.shape[-1] == 1:
        y = y[..., 0]
    if y.size and y.min() < 0:
        raise ValueError(f"labels must be >= 0, got min {y.min()}")
    n = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if y.size and y.max() >= n:
        raise ValueError(f"labels must be < num_classes={n}, got max {y.max()}")
    out = np.zeros(y.shape + (n,), dtype=dtype)
    np.put_along_axis(out, y[..., None].astype(np.int64), 1, axis=-1)
    return out


class Sequence:
    """Batches for ``fit``/``evaluate``/``predict`` from a source that does not fit in memory,
    as Keras's ``PyDataset``: subclass it with ``__len__`` (batches per epoch) and
    ``__getitem__(i)`` -> ``(x, y)`` or ``(x, y, sample_weight)``; ``on_epoch_end()`` runs
    after every epoch (e.g. to reshuffle)."""

    def __init__(self, workers=1, use_multiprocessing=False, max_queue_size=10):
        pass

    def __len__(self):
        raise NotImplementedError

    def __getitem__(self, index):
        raise NotImplementedError

    def on_epoch_end(self):
        pass

    @property
    def num_batches(self):
        return len(self)


PyDataset = Sequence
