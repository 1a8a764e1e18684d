"""Scoring a Dask array with a fastlstm model, one block per task on a Dask cluster.

::

    import dask.array as da, fastlstm.dask
    x = da.from_zarr(...)            # [samples, time, features], chunked along samples
    y = fastlstm.dask.predict("model.fastlstm", x, batch_size=256)
    y.to_zarr(...)                   # or y.compute()

Needs the optional extra ``fastlstm[dask]`` (``dask[array]``; ``distributed`` for a cluster).
The hyperparameter searches of :mod:`fastlstm.sklearn` run on a cluster through joblib's Dask
backend, with nothing from here::

    from distributed import Client
    import joblib
    client = Client("scheduler:8786")
    with joblib.parallel_backend("dask"):
        GridSearchCV(fastlstm.sklearn.LSTMClassifier(), grid, cv=5).fit(X, y)

(the estimators pickle as their hyperparameters plus, once fitted, the model's configuration and
weights). Dask's workers set ``OMP_NUM_THREADS=1``, which fastlstm's pool follows: one engine
thread per worker thread.
"""

from __future__ import annotations

import os
import threading

import numpy as np

try:
    import dask
    import dask.array as da
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("fastlstm.dask needs Dask: pip install 'fastlstm[dask]'") from e

__all__ = ["predict"]

# models loaded from files, per worker process: {(path, mtime_ns, size): model}
_FILE_MODELS = {}
_FILE_LOCK = threading.Lock()
_FILE_LOADS = [0]  # how many times this process read a model file (tests check "once")


def _load_file(path):
    from . import load_model

    st = os.stat(path)
    key = (os.path.abspath(path), st.st_mtime_ns, st.st_size)
    with _FILE_LOCK:
        model = _FILE_MODELS.get(key)
        if model is None:
            model = load_model(path)
            _FILE_LOADS[0] += 1
            _FILE_MODELS.clear()  # keep one: a newer file replaces the older
            _FILE_MODELS[key] = model
    return model


def _run(model, block, batch_size):
    if isinstance(model, (str, os.PathLike)):
        model = _load_file(os.fspath(model))
    if hasattr(model, "compile") and hasattr(model, "layers"):  # fastlstm's Keras-shaped models
        return model.predict(block, batch_size=batch_size, verbose=0)
    return np.asarray(model.predict(block))  # e.g. fastlstm.sklearn's estimators


def predict(model_or_path, x, batch_size=32):
    """``model.predict`` over a Dask array ``x`` [samples, ...], block by block; returns a lazy
    Dask array chunked like ``x`` along the samples, equal to ``model.predict`` on the whole
    array (fastlstm's results do not depend on how the samples are batched).

    ``model_or_path``: a fastlstm model (Sequential/Model, or an estimator of
    :mod:`fastlstm.sklearn`): it enters the graph once, as one piece of data each worker fetches
    and unpickles once; or the path of a model file (``model.save``): each worker process loads
    it once (on a cluster, a path every worker can read). ``x`` is rechunked to whole rows if
    its other axes are split.
    """
    if not isinstance(x, da.Array):
        raise TypeError(f"x must be a dask.array.Array, got {type(x).__name__} (for NumPy "
                        "arrays use model.predict)")
    if x.ndim < 2:
        raise ValueError(f"x must be [samples, ...] with at least 2 dimensions, got shape "
                         f"{x.shape}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    batch_size = int(batch_size)
    if any(len(c) > 1 for c in x.chunks[1:]):
        x = x.rechunk({i: -1 for i in range(1, x.ndim)})
    if isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        probe_model = _load_file(path)  # here: the output's shape and dtype, and a clear error
        model_arg = path
    else:
        if not hasattr(model_or_path, "predict"):
            raise TypeError("model_or_path must be a fastlstm model (with predict) or the path "
                            f"of a model file, got {type(model_or_path).__name__}")
        probe_model = model_or_path
        model_arg = dask.delayed(model_or_path, pure=True, traverse=False)
    probe = _run(probe_model, np.zeros((1,) + x.shape[1:], dtype=x.dtype), batch_size)
    out_chunks = (x.chunks[0],) + tuple((s,) for s in probe.shape[1:])
    drop = list(range(probe.ndim, x.ndim)) if probe.ndim < x.ndim else []
    new = list(range(x.ndim, probe.ndim)) if probe.ndim > x.ndim else []
    return da.map_blocks(_run, model_arg, x, batch_size, dtype=probe.dtype, chunks=out_chunks,
                         drop_axis=drop, new_axis=new,
                         meta=np.empty((0,) * probe.ndim, dtype=probe.dtype))
