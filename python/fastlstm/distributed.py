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
Each rank's loss gradient is weighted by its share of the batch's loss terms (per output: its
rows, or the real steps of a masked sequence; one small Allreduce per step of each output's
term count and loss sum) before the average, so an uneven split (the last, short batch; a batch
size that ``size`` does not divide) gives exactly the gradient of the whole batch, and the
logged losses are the whole batch's; a rank whose part is empty contributes zero.

``fit`` is ``model.fit``'s own loop (``fastlstm.models.training``) run with a
:class:`DataParallel` context: the hooks of ``fastlstm.models.parallel.OneProcess`` that split
each batch, total its losses, gate the callbacks and agree on stopping.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from .models.parallel import OneProcess, grads_finite
from .models.inputs import _is_arrayish
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


def broadcast_parameters(model, root=0, comm=None):
    """Copies ``root``'s weights to every rank (one ``Bcast`` per flat buffer). ``model``: a
    Keras-shaped model, a PyTorch-shaped module (LSTM, GRU, Linear), a list of them, or an
    optimizer given ``params=[...]`` (its one buffer over all its modules). ``comm``: the
    communicator (default: the world's)."""
    c = _comm() if comm is None else comm
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
        if not grads_finite(grads):
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


class DataParallel(OneProcess):
    """``fit``'s hooks over the ranks of ``comm`` (see :func:`fit`): every rank runs the same
    loop on its part of each global batch, so every collective call is made by all ranks."""

    stops_mid_epoch = False  # a stop takes effect on every rank at the epoch's end

    def __init__(self, comm):
        self.comm, self.rank, self.size = comm, comm.Get_rank(), comm.Get_size()

    def begin(self, model, n):
        if any(getattr(l, "stateful", False) for l in model._leaves):
            raise ValueError("distributed.fit: stateful layers carry state from one batch "
                             "to the next on one process; they cannot be split over ranks")
        counts = self.comm.allgather((n, model.flat_params.size))
        if len(set(counts)) != 1:
            raise ValueError("distributed.fit: every rank must pass the same samples and "
                             f"the same model; (samples, parameters) per rank: {counts}")
        broadcast_parameters(model, comm=self.comm)

    def shuffle_rng(self, rng):  # rank 0's shuffle on every rank
        rng.bit_generator.state = self.comm.bcast(rng.bit_generator.state, root=0)
        return rng

    def callbacks(self, cbs):
        return cbs if self.rank == 0 else \
            [c for c in cbs if not isinstance(c, _rank0_only_types())]

    def part(self, rows, n):
        idx = np.arange(n)[rows] if isinstance(rows, slice) else rows
        # sorted: reads in file order (an mmap), the mean gradient is the same
        return np.sort(np.array_split(idx, self.size)[self.rank])

    def batch(self, model, values, counts, rows, d_outs):
        # one Allreduce of a few numbers per batch: each output's loss terms and loss sum on
        # this rank (rows for an output without a mask), whether it has no mask, the rows
        k = len(values)
        local = [float(rows) if c is None else float(c) for c in counts]
        vec = np.array(local + [0.0 if v is None else v * n for v, n in zip(values, local)]
                       + [1.0 if c is None and rows else 0.0 for c in counts] + [rows],
                       dtype=np.float64)
        self.comm.Allreduce(_mpi().IN_PLACE, vec, op=_mpi().SUM)
        n, s, unmasked = vec[:k], vec[k:2 * k], vec[2 * k:3 * k]
        values = [None if L is None else float(s[i] / n[i]) if n[i] else 0.0
                  for i, L in enumerate(model._losses)]
        count = next((float(n[i]) for i in range(k) if not unmasked[i]), float(vec[-1]))
        # a rank's gradient of the mean over its terms, weighted by its share of the batch's
        # terms: the average over the ranks is the whole batch's, however unevenly split
        d_outs = [None if d is None else d * d.dtype.type(self.size * c / t if t else 0.0)
                  for d, c, t in zip(d_outs, local, n)]
        return values, count, d_outs

    def apply_step(self, model, value):
        if not math.isfinite(value):  # every rank sees the NaN after the Allreduce
            model.flat_grads.fill(np.nan)
        try:
            model._apply_step()  # the Allreduce, the finiteness check, the step
        except FloatingPointError:
            return (f"the loss or the gradients of some rank are NaN or infinite (rank "
                    f"{self.rank}: loss {value})")
        return None

    def totals(self, sums, metrics):
        # the loss sums are the global batches' already; the metrics are this rank's rows'
        tot = _combine(self.comm, [x for _, _, m in metrics for x in (m._sum, m._count)])
        for i, (_, _, m) in enumerate(metrics):
            m._sum, m._count = float(tot[2 * i]), float(tot[2 * i + 1])
        return self.comm.bcast(list(sums), root=0)  # rank 0's bits everywhere

    def stop(self, flag):
        return bool(self.comm.allreduce(bool(flag), op=_mpi().LOR))


def _combine(comm, local_sums):
    """Sums a float64 vector over ranks, then rank 0's result is everyone's (bit-identical
    decisions on every rank from the logs, e.g. EarlyStopping)."""
    v = np.asarray(local_sums, dtype=np.float64).copy()
    MPI = _mpi()
    comm.Allreduce(MPI.IN_PLACE, v, op=MPI.SUM)
    comm.Bcast(v, root=0)
    return v


def fit(model, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
        validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0,
        lengths=None, sample_weight=None, class_weight=None, comm=None):
    """``model.fit`` over all ranks: the same arguments, ``batch_size`` the GLOBAL batch.

    Under MPI: rank 0's weights are broadcast first; each step every rank trains on its part of
    the global batch (see the module's notes) and the gradients are averaged with one
    Allreduce (beside one of a few numbers: the batch's loss sums and term counts, so the
    logged losses are the whole batch's); the metrics are summed over ranks (exactly: their
    sums and counts, not their ratios), and the validation batches are split over the ranks
    the same way; progress is printed and ``ModelCheckpoint``/``CSVLogger`` run on rank 0
    only, every other callback runs on every rank with the same epoch logs, so
    ``EarlyStopping`` and the learning-rate callbacks decide the same everywhere. A stop requested during an epoch takes
    effect on all ranks at its end. Without MPI this is ``model.fit``.

    It runs ``model.fit``'s own loop with a data-parallel context (the hooks of
    ``fastlstm.models.parallel.OneProcess``) and the optimizer wrapped in
    :class:`DistributedOptimizer`. ``x``/``y`` must be arrays (the same on every rank).
    Returns the History (the same on every rank). Dropout draws its own masks on each rank.
    """
    kwargs = dict(batch_size=batch_size, epochs=epochs, verbose=verbose, callbacks=callbacks,
                  validation_split=validation_split, validation_data=validation_data,
                  shuffle=shuffle, initial_epoch=initial_epoch, lengths=lengths,
                  sample_weight=sample_weight, class_weight=class_weight)
    if comm is None:
        comm = _comm()
    elif comm.Get_size() == 1:
        comm = None
    if comm is None:
        return model.fit(x, y, **kwargs)
    if not _is_arrayish(x):
        raise TypeError("distributed.fit: x must be arrays (the same on every rank), got "
                        f"{type(x).__name__}; a Sequence or generator cannot be split here")
    model._check_compiled("fit")
    base_opt = model.optimizer
    model.optimizer = base_opt if isinstance(base_opt, DistributedOptimizer) else \
        DistributedOptimizer(base_opt, comm=comm)
    model._parallel = DataParallel(comm)
    try:
        return model.fit(x, y, **kwargs)
    finally:
        del model._parallel
        model.optimizer = base_opt
