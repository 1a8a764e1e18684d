"""Data-parallel training over MPI: the Horovod pattern on fastlstm's flat buffers.

Every rank holds a full copy of the model. Each step, every rank computes the gradient of its
share of the global batch, one in-place ``Allreduce`` over the model's flat gradient buffer
averages them, and every rank applies the same optimizer step to the same weights, so the
weights stay bit-identical on all ranks without ever being sent again.

::

    import fastlstm, fastlstm.distributed as dist
    rank, size = dist.init()
    model = ...; model.compile("adam", "mse")
    dist.fit(model, x, y, batch_size=64, epochs=3)   # batch_size: the global batch

    mpirun -n 4 python train.py

Needs the optional extra ``fastlstm[mpi]`` (mpi4py and an MPI library) only when launched under
MPI: without a launcher, :func:`init` returns ``(0, 1)`` and everything here behaves as one
process, without importing mpi4py.

Data loading: every rank passes the SAME ``x`` and ``y`` (same samples, same order; e.g.
``np.load(path, mmap_mode="r")`` on a shared file system, so each rank reads only the rows it
uses). Each epoch draws one global shuffle, identical on every rank (rank 0's generator state is
broadcast), each global batch of ``batch_size`` rows is split into ``size`` contiguous parts of
``batch_size // size`` or one more rows (``numpy.array_split``), and rank r trains on part r.
Each rank's gradient is weighted by its share of the batch's rows before the average, so an
uneven split (the last, short batch; a batch size that ``size`` does not divide) gives exactly
the gradient of the whole batch; a rank whose part is empty contributes zero.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from .optim import Optimizer

__all__ = ["init", "rank", "size", "is_distributed", "DistributedOptimizer",
           "broadcast_parameters", "fit"]

# environment variables that MPI launchers (MPICH's Hydra, Open MPI, PMIx, Slurm's srun with
# --mpi=pmi2/pmix) set in the processes they start
_LAUNCHER_VARS = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")

_state = {"comm": None, "initialized": False}


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(
            "fastlstm.distributed was launched under MPI but mpi4py is not installed: "
            "pip install 'fastlstm[mpi]' (mpi4py and mpich), or mpi4py against your MPI"
        ) from e
    return MPI


def _launched_under_mpi():
    return any(os.environ.get(v) for v in _LAUNCHER_VARS)


def init(comm=None, threads="auto"):
    """Joins the MPI job; returns ``(rank, size)``.

    ``comm``: an ``mpi4py`` communicator (default ``MPI.COMM_WORLD`` when launched under MPI,
    else none: ``(0, 1)``). ``threads="auto"``: unless ``FASTLSTM_NUM_THREADS`` or
    ``OMP_NUM_THREADS`` is set, each rank's engine uses its fair share of the node's CPUs
    (the union of the node's ranks' CPUs divided by the ranks on the node), so ``mpirun -n 2``
    on 2 cores runs 2 ranks x 1 thread, not 2 x 2; ``threads=None`` leaves the count alone.
    """
    if comm is None and _launched_under_mpi():
        comm = _mpi().COMM_WORLD
    if comm is not None and comm.Get_size() == 1:
        comm = None
    _state["comm"] = comm
    _state["initialized"] = True
    if comm is not None and threads == "auto" and not (
            os.environ.get("FASTLSTM_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")):
        _share_cpus(comm)
    elif threads not in ("auto", None):
        from . import set_num_threads

        set_num_threads(threads)
    return rank(), size()


def _share_cpus(comm):
    from . import available_cpus, set_num_threads

    MPI = _mpi()
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        mine = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        union = set()
        for cpus in node.allgather(mine):
            union.update(cpus)
        share = max(1, len(union) // node.Get_size()) if union else 1
        set_num_threads(max(1, min(share, available_cpus())))
    finally:
        node.Free()


def _comm():
    if not _state["initialized"]:
        init()
    return _state["comm"]


def rank():
    """This process's rank (0 without MPI)."""
    c = _comm()
    return 0 if c is None else c.Get_rank()


def size():
    """The number of ranks (1 without MPI)."""
    c = _comm()
    return 1 if c is None else c.Get_size()


def is_distributed():
    return size() > 1


def _flat_params(model, name="model"):
    p = getattr(model, "flat_params", None)
    if not isinstance(p, np.ndarray):
        raise TypeError(f"{name} must have a flat parameter buffer (flat_params): a fastlstm "
                        f"Sequential/Model or LSTM/GRU module, got {type(model).__name__}")
    if getattr(model, "built", True) is False:
        raise ValueError(f"{name} is not built yet: build it (or call it once) first")
    return p


def _param_buffers(obj):
    if isinstance(obj, DistributedOptimizer):
        obj = obj.optimizer
    if isinstance(obj, Optimizer):
        flat = getattr(obj, "_flat", None)
        if flat is None:
            raise TypeError("broadcast_parameters: this optimizer was not given modules "
                            "(params=[...]); pass the model or modules instead")
        return [flat[0]]
    if isinstance(obj, (list, tuple)):
        return [b for o in obj for b in _param_buffers(o)]
    return [_flat_params(obj)]


def broadcast_parameters(model, root=0):
    """Copies ``root``'s weights to every rank (one ``Bcast`` per flat buffer). ``model``: a
    Keras-shaped model, a PyTorch-shaped module (LSTM, GRU, Linear), a list of them, or an
    optimizer given ``params=[...]`` (its one buffer over all its modules)."""
    c = _comm()
    buffers = _param_buffers(model)
    if c is not None:
        sizes = [b.size for b in buffers]
        theirs = c.bcast(sizes, root=root)
        if theirs != sizes:
            raise ValueError(f"broadcast_parameters: rank {c.Get_rank()} has buffers of "
                             f"{sizes} parameters, rank {root} has {theirs}")
        for b in buffers:
            c.Bcast(b, root=root)
    return model


class DistributedOptimizer(Optimizer):
    """Wraps an optimizer: :meth:`apply` first averages ``grads`` over the ranks with one
    in-place ``Allreduce`` on the whole flat buffer (no per-tensor calls), then steps.

    For the PyTorch-shaped modules:
    ``opt = DistributedOptimizer(fastlstm.optim.Adam(params=[lstm, head]))``, then per step
    ``opt.zero_grad()``, forward and backward, ``opt.step()`` (or, without ``params``,
    ``opt.apply(module.flat_params, module.flat_grads)``).
    For the Keras-shaped models use :func:`fit` (which wraps the model's optimizer itself and
    also shards the data, averages the logs and keeps the ranks' decisions together; a plain
    ``model.fit`` stops on a local NaN alone and would leave the other ranks waiting). The
    averaged gradients are checked: a NaN or infinity on any rank raises
    ``FloatingPointError`` on every rank before any weight changes.

    ``allreduce_seconds`` / ``allreduce_calls`` accumulate the time spent in the Allreduce
    (which includes waiting for the slowest rank).
    """

    def __init__(self, optimizer, comm=None):  # the state lives in `optimizer`
        from . import optim

        optimizer = optim.get(optimizer)
        if isinstance(optimizer, DistributedOptimizer):
            optimizer = optimizer.optimizer
        object.__setattr__(self, "optimizer", optimizer)
        object.__setattr__(self, "_comm_arg", comm)
        object.__setattr__(self, "allreduce_seconds", 0.0)
        object.__setattr__(self, "allreduce_calls", 0)

    # the wrapped optimizer owns the hyperparameters and the state
    def __getattr__(self, name):
        return getattr(object.__getattribute__(self, "optimizer"), name)

    def __setattr__(self, name, value):
        if name in ("allreduce_seconds", "allreduce_calls"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.optimizer, name, value)

    @property
    def learning_rate(self):
        return self.optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        self.optimizer.learning_rate = value

    lr = learning_rate

    def build(self, size, dtype="float32", segments=None):
        self.optimizer.build(size, dtype, segments)

    def _comm(self):
        c = object.__getattribute__(self, "_comm_arg")
        return _comm() if c is None else c

    def average_gradients(self, grads):
        """``grads`` (a contiguous 1-D buffer) becomes the mean over the ranks, in place."""
        c = self._comm()
        if c is None:
            return grads
        if not (isinstance(grads, np.ndarray) and grads.ndim == 1 and grads.flags.c_contiguous):
            raise ValueError("grads must be a contiguous 1-D array (the flat gradient buffer)")
        MPI = _mpi()
        t0 = time.perf_counter()
        c.Allreduce(MPI.IN_PLACE, grads, op=MPI.SUM)
        object.__setattr__(self, "allreduce_seconds",
                           self.allreduce_seconds + time.perf_counter() - t0)
        object.__setattr__(self, "allreduce_calls", self.allreduce_calls + 1)
        n = c.Get_size()
        if n & (n - 1) == 0:  # a power of two: exact
            grads *= grads.dtype.type(1.0 / n)
        else:
            grads /= grads.dtype.type(n)
        return grads

    def apply(self, params, grads):
        self.average_gradients(grads)
        if not math.isfinite(float(grads.sum(dtype=np.float64))):
            raise FloatingPointError("the gradients averaged over the ranks contain NaN or "
                                     "infinity; the weights were not changed")
        self.optimizer.apply(params, grads)

    def get_config(self):
        return self.optimizer.get_config()

    def __repr__(self):
        return f"DistributedOptimizer({self.optimizer!r})"

    def __reduce__(self):
        return (DistributedOptimizer, (self.optimizer,))


def _rank0_only_types():
    from . import callbacks as cb

    return (cb.ProgbarLogger, cb.ModelCheckpoint, cb.CSVLogger)


def _poison(grads, value):
    """Marks a local non-finite loss in the gradient so that every rank sees it after the
    Allreduce (NaN propagates through the sum) and all stop together."""
    if not math.isfinite(value) and grads.size:
        grads[0] = np.nan


def _combine(comm, local_sums):
    """Sums a float64 vector over ranks, then rank 0's result is everyone's (bit-identical
    decisions on every rank from the logs, e.g. EarlyStopping)."""
    v = np.asarray(local_sums, dtype=np.float64)
    if comm is None:
        return v
    MPI = _mpi()
    comm.Allreduce(MPI.IN_PLACE, v, op=MPI.SUM)
    comm.Bcast(v, root=0)
    return v


def fit(model, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
        validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0,
        lengths=None, comm=None):
    """``model.fit`` over all ranks: the same arguments, ``batch_size`` the GLOBAL batch.

    Under MPI: rank 0's weights are broadcast first; each step every rank trains on its part of
    the global batch (see the module's notes) and the gradients are averaged with one
    Allreduce; the epoch's loss and metrics are summed over ranks (exactly: the metrics' sums
    and counts, not their ratios) and so is the validation (each rank evaluates its contiguous
    part of the validation samples, weighted by its sample count); progress is printed and
    ``ModelCheckpoint``/``CSVLogger`` run on rank 0 only, every other callback runs on every
    rank with the same averaged epoch logs, so ``EarlyStopping`` and the learning-rate
    callbacks decide the same everywhere. A stop requested during an epoch takes effect on all
    ranks at its end. Without MPI this is ``model.fit``.

    Returns the History (the same on every rank). Dropout draws its own masks on each rank.
    """
    from . import callbacks as callbacks_mod
    from . import initializers
    from .models import NonFiniteLossError
    from .rnn import _positive_int as _int_arg

    if comm is None:
        comm = _comm()
    elif comm.Get_size() == 1:
        comm = None
    if comm is None:
        return model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=verbose,
                         callbacks=callbacks, validation_split=validation_split,
                         validation_data=validation_data, shuffle=shuffle,
                         initial_epoch=initial_epoch, lengths=lengths)
    r, p = comm.Get_rank(), comm.Get_size()
    model._check_compiled("fit")
    batch_size = 32 if batch_size is None else _int_arg(batch_size, "batch_size")
    epochs = _int_arg(epochs, "epochs", minimum=0)
    initial_epoch = _int_arg(initial_epoch, "initial_epoch", minimum=0)
    verbose = model._verbose(verbose)
    vs = float(validation_split)
    if not 0.0 <= vs < 1.0:
        raise ValueError(f"validation_split must be in [0, 1), got {validation_split}")
    x, y, lengths = model._prepare_xy(x, y, lengths)
    if any(getattr(layer, "stateful", False) for layer in model.layers):
        raise ValueError("distributed.fit: stateful layers carry state from one batch to the "
                         "next on one process; they cannot be split over ranks")
    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError("validation_data must be (x_val, y_val) or "
                             "(x_val, y_val, lengths_val)")
        vl = validation_data[2] if len(validation_data) == 3 else None
        val = model._prepare_xy(validation_data[0], validation_data[1], vl, "x_val", "y_val")
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
    counts = comm.allgather((n, model.flat_params.size))
    if len(set(counts)) != 1:
        raise ValueError("distributed.fit: every rank must pass the same samples and the same "
                         f"model; (samples, parameters) per rank: {counts}")
    if n == 0:
        raise ValueError("x has no samples")
    broadcast_parameters(model)
    model._update_fused()
    model._first_trainable = next(
        (i for i, l in enumerate(model.layers) if l.count_params() > 0), len(model.layers))
    # the same random streams as model.fit draws; the shuffle's is rank 0's on every rank
    rng = initializers.spawn_rng()
    rng.bit_generator.state = comm.bcast(rng.bit_generator.state, root=0)
    for layer in model.layers:
        if not getattr(layer, "_fixed_rng", False):
            layer._rng = initializers.spawn_rng()
        inner = getattr(layer, "layer", None)
        if inner is not None:
            inner._rng = initializers.spawn_rng()

    base_opt = model.optimizer
    dopt = base_opt if isinstance(base_opt, DistributedOptimizer) else \
        DistributedOptimizer(base_opt, comm=comm)
    steps = -(-n // batch_size)
    history = callbacks_mod.History()
    cbs = list(callbacks or [])
    if verbose:
        cbs.insert(0, callbacks_mod.ProgbarLogger(verbose))
    if r != 0:
        cbs = [c for c in cbs if not isinstance(c, _rank0_only_types())]
    cbs.append(history)
    params = {"verbose": verbose if r == 0 else 0, "epochs": epochs, "steps": steps,
              "batch_size": batch_size, "samples": n, "rank": r, "size": p}
    cb = callbacks_mod.CallbackList(cbs, model=model, params=params)
    history.set_params(params)
    model.history = history
    model.stop_training = False
    train_metrics = model._make_metrics()
    grads = model.flat_grads
    model.optimizer = dopt
    try:
        cb.on_train_begin()
        logs = {}
        for epoch in range(initial_epoch, epochs):
            for m in train_metrics:
                m.reset()
            cb.on_epoch_begin(epoch)
            order = rng.permutation(n) if shuffle else np.arange(n)
            loss_sum, loss_count = 0.0, 0.0
            for b in range(steps):
                rows = np.array_split(order[b * batch_size:(b + 1) * batch_size], p)[r]
                cb.on_train_batch_begin(b)
                value, weights, out = 0.0, None, None
                if len(rows):
                    rows = np.sort(rows)  # reads in file order; the mean gradient is the same
                    xb, yb = x[rows], y[rows]
                    lb = None if lengths is None else lengths[rows]
                    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                        value, out, weights = model._train_step(xb, yb, lb)
                    count = float(len(rows) if weights is None else weights.sum())
                else:
                    grads[...] = 0
                    count = 0.0
                # weight this rank's mean gradient by its share of the batch's loss terms
                if weights is None:
                    total = float(min(batch_size, n - b * batch_size))
                else:
                    total = float(_combine_sum(comm, count))
                share = count * p / total if total else 0.0
                if share != 1.0:
                    grads *= grads.dtype.type(share)
                _poison(grads, value)
                try:
                    model._apply_step()  # the Allreduce, the finiteness check, the step
                except FloatingPointError:
                    raise NonFiniteLossError(
                        f"training stopped at epoch {epoch + 1}, batch {b + 1} of {steps} on "
                        f"rank {r}: the loss or the gradients of some rank are NaN or infinite. "
                        "The weights from before this step are kept. Usual causes: a learning "
                        "rate too high (try clipnorm= or a smaller rate) or bad input values.",
                        epoch + 1, b + 1) from None
                if count:
                    loss_sum += value * count
                    loss_count += count
                    for m in train_metrics:
                        m.update(yb, out, weights)
                blogs = {"loss": loss_sum / loss_count if loss_count else 0.0}
                for m in train_metrics:
                    blogs[m.name] = m.result()
                cb.on_train_batch_end(b, blogs)  # rank-local running values
            sums = [loss_sum, loss_count]
            for m in train_metrics:
                sums += [m._sum, m._count]
            tot = _combine(comm, sums)
            epoch_logs = {"loss": tot[0] / tot[1] if tot[1] else 0.0}
            for i, m in enumerate(train_metrics):
                s, c = tot[2 + 2 * i], tot[3 + 2 * i]
                epoch_logs[m.name] = s / c if c else 0.0
            if val is not None:
                epoch_logs.update(_evaluate_parts(model, comm, val, batch_size))
            cb.on_epoch_end(epoch, epoch_logs)
            logs = epoch_logs
            stop = comm.allreduce(bool(model.stop_training), op=_mpi().LOR)
            model.stop_training = stop
            if stop:
                break
        cb.on_train_end(logs)
    finally:
        model.optimizer = base_opt
    return history


def _combine_sum(comm, value):
    return float(_combine(comm, [value])[0])


def _evaluate_parts(model, comm, val, batch_size):
    """Validation logs over all ranks: rank r evaluates its contiguous part of the samples."""
    xv, yv, lv = val
    r, p = comm.Get_rank(), comm.Get_size()
    idx = np.array_split(np.arange(len(xv)), p)[r]
    names = ["loss"] + [m.name for m in model._make_metrics()]
    local = np.zeros(len(names) + 1)
    if len(idx):
        sl = slice(int(idx[0]), int(idx[-1]) + 1)
        logs = model._evaluate_arrays(xv[sl], yv[sl], None if lv is None else lv[sl],
                                      batch_size=batch_size, cb=None)
        local[:-1] = [logs[k] * len(idx) for k in names]
        local[-1] = len(idx)
    tot = _combine(comm, local)
    return {"val_" + k: float(tot[i] / tot[-1]) for i, k in enumerate(names)}
