"""Keras's weight initializers and the one random source of the Keras-shaped layer.

Every random number of :mod:`fastlstm.layers` / :mod:`fastlstm.models` (initial weights,
shuffling, dropout masks) comes from generators spawned off one global generator, so
:func:`set_seed` makes a whole build + fit reproducible bit for bit (same machine, same thread
count).

Initializers take ``(shape, rng, dtype)`` and return a new array. Fans follow Keras's
``compute_fans``: for a 2-D ``(fan_in, fan_out)`` kernel the obvious ones; a 1-D shape uses
its length for both.
"""

from __future__ import annotations

import contextlib
import math
import random as _pyrandom

import numpy as np

__all__ = [
    "set_seed",
    "get",
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "lecun_uniform",
    "lecun_normal",
    "orthogonal",
    "random_uniform",
    "random_normal",
    "zeros",
    "ones",
]

_STATE = {"rng": np.random.default_rng()}


def set_seed(seed):
    """Seeds every random number generator the Keras-shaped layer uses.

    Also seeds Python's ``random`` and NumPy's legacy global generator (as
    ``keras.utils.set_random_seed`` does), so user code that draws from them is covered too.
    """
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}") from None
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    _STATE["rng"] = np.random.default_rng(seed)
    _pyrandom.seed(seed)
    np.random.seed(seed % 2**32)


@contextlib.contextmanager
def seed_scope(seed):
    """Within the block, the layer's random numbers come from ``seed`` (None: unchanged);
    the global stream and Python's/NumPy's global generators are left as they were."""
    if seed is None:
        yield
        return
    saved = _STATE["rng"]
    _STATE["rng"] = np.random.default_rng(seed)
    try:
        yield
    finally:
        _STATE["rng"] = saved


def spawn_rng(lazy=False):
    """A new generator drawn from the global one (each consumer gets its own stream).

    ``lazy=True``: the seed is drawn now (the global stream advances as it would), the
    generator itself is made at its first use (:class:`LazyGenerator`): ``fit`` gives every
    layer a fresh stream per call, and making a generator costs ~40 µs that layers without
    dropout never need."""
    seed = int(_STATE["rng"].integers(0, 2**63))
    return LazyGenerator(seed) if lazy else np.random.default_rng(seed)


class LazyGenerator:
    """``np.random.default_rng(seed)``, made at the first attribute access and then used for
    everything (the same numbers as the generator made at once)."""

    __slots__ = ("_seed", "_generator")

    def __init__(self, seed):
        self._seed = seed
        self._generator = None

    def __getattr__(self, name):  # only for names that are not slots: the generator's
        g = self._generator
        if g is None:
            g = self._generator = np.random.default_rng(self._seed)
        return getattr(g, name)

    def __reduce__(self):  # copies and pickles are of the generator itself
        g = self._generator
        if g is None:
            g = self._generator = np.random.default_rng(self._seed)
        return g.__reduce__()


def spawn_seed():
    """A 63-bit seed drawn from the global generator (for the engine's own generators)."""
    return int(_STATE["rng"].integers(0, 2**63))


# ------------------------------------------------------------------------ building from a file
# While a model file is being built (weights_from_file), every weight a layer creates is counted
# against what the file holds, BEFORE it is allocated: a hostile description claiming huge
# layers is refused instead of allocating (and initializing) what it claims. The initial values
# are zeros then (the file's weights overwrite them), which also skips the QR of 'orthogonal'.
_FILE_BUDGET = []


@contextlib.contextmanager
def weights_from_file(elements, where="the model file"):
    """Within the block, layers may create at most ``elements`` weight values in all (the
    number the file holds), else :func:`reserve` raises ValueError; initializers give zeros."""
    _FILE_BUDGET.append([int(elements), where])
    try:
        yield
    finally:
        _FILE_BUDGET.pop()


def reserve(count, what):
    """Counts ``count`` new weight values against the file budget (no-op outside one)."""
    if not _FILE_BUDGET:
        return
    budget = _FILE_BUDGET[-1]
    count = int(count)
    if count > budget[0]:
        raise ValueError(f"{budget[1]}: {what} would have {count:,} weight values, more than "
                         f"the {budget[0]:,} the file has left for it (a wrong or hostile "
                         "architecture)")
    budget[0] -= count


def _budgeted(fn):
    """An initializer that, while building from a file, reserves its shape and gives zeros."""
    def init(shape, rng=None, dtype="float32", **kwargs):
        if _FILE_BUDGET:
            reserve(math.prod(shape), f"a weight of shape {tuple(shape)}")
            return np.zeros(shape, dtype=dtype)
        return fn(shape, rng, dtype, **kwargs)

    init.__name__ = fn.__name__
    init.__doc__ = fn.__doc__
    return init


def _fans(shape):
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def _variance_scaling(scale, mode, distribution):
    def init(shape, rng, dtype="float32"):
        fan_in, fan_out = _fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
        var = scale / max(1.0, n)
        if distribution == "uniform":
            limit = math.sqrt(3.0 * var)
            out = rng.uniform(-limit, limit, size=shape)
        else:
            # Keras's truncated normal: resample beyond 2 std; stddev corrected for the cut
            std = math.sqrt(var) / 0.87962566103423978
            out = rng.normal(0.0, std, size=shape)
            bad = np.abs(out) > 2 * std
            while bad.any():
                out[bad] = rng.normal(0.0, std, size=int(bad.sum()))
                bad = np.abs(out) > 2 * std
        return out.astype(dtype)

    return _budgeted(init)


glorot_uniform = _variance_scaling(1.0, "fan_avg", "uniform")
glorot_normal = _variance_scaling(1.0, "fan_avg", "normal")
he_uniform = _variance_scaling(2.0, "fan_in", "uniform")
he_normal = _variance_scaling(2.0, "fan_in", "normal")
lecun_uniform = _variance_scaling(1.0, "fan_in", "uniform")
lecun_normal = _variance_scaling(1.0, "fan_in", "normal")


@_budgeted
def orthogonal(shape, rng, dtype="float32", gain=1.0):
    """Keras's Orthogonal: QR of a normal matrix, signs fixed by diag(R); a (rows, cols)
    kernel with rows < cols gets orthonormal rows."""
    if len(shape) < 2:
        raise ValueError(f"orthogonal needs a shape of rank >= 2, got {shape}")
    rows = math.prod(shape[:-1])
    cols = shape[-1]
    a = rng.normal(0.0, 1.0, size=(max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return (gain * q.reshape(shape)).astype(dtype)


@_budgeted
def random_uniform(shape, rng, dtype="float32", minval=-0.05, maxval=0.05):
    """Keras's RandomUniform default (the Embedding initializer 'uniform')."""
    return rng.uniform(minval, maxval, size=shape).astype(dtype)


@_budgeted
def random_normal(shape, rng, dtype="float32", mean=0.0, stddev=0.05):
    return rng.normal(mean, stddev, size=shape).astype(dtype)


@_budgeted
def zeros(shape, rng=None, dtype="float32"):
    return np.zeros(shape, dtype=dtype)


@_budgeted
def ones(shape, rng=None, dtype="float32"):
    return np.ones(shape, dtype=dtype)


_BY_NAME = {
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "he_uniform": he_uniform,
    "he_normal": he_normal,
    "lecun_uniform": lecun_uniform,
    "lecun_normal": lecun_normal,
    "orthogonal": orthogonal,
    "uniform": random_uniform,
    "random_uniform": random_uniform,
    "normal": random_normal,
    "random_normal": random_normal,
    "zeros": zeros,
    "zero": zeros,
    "ones": ones,
}


def get(identifier, argument="initializer"):
    """An initializer from its Keras name or a callable ``f(shape, rng, dtype)``."""
    if callable(identifier):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key in _BY_NAME:
            return _BY_NAME[key]
    raise ValueError(
        f"unknown {argument} {identifier!r}; expected one of {sorted(_BY_NAME)} or a callable "
        "f(shape, rng, dtype)"
    )


def name_of(init):
    for name, fn in _BY_NAME.items():
        if fn is init:
            return name
    return getattr(init, "__name__", repr(init))
