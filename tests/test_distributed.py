"""fastlstm.distributed: data-parallel training over MPI (mpiexec from the mpich wheel of the
test extra) equals one process, bit-identical on every rank; and without MPI it is plain fit."""

import importlib.util
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import fastlstm
import fastlstm.distributed as dist
from fastlstm import optim

pytest.importorskip("mpi4py")

ROOT = Path(__file__).resolve().parents[1]


def _load_example():
    # the example doubles as the script that mpiexec runs
    path = ROOT / "examples" / "python" / "distributed_train.py"
    spec = importlib.util.spec_from_file_location("example_distributed_train", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


distributed_train = _load_example()


def _mpich():
    """mpiexec and the directory of libmpi from the mpich wheel (mpi4py looks for libmpi in
    its own prefix, which is not the wheel's when the test venv layers on another)."""
    try:
        d = metadata.distribution("mpich")
    except metadata.PackageNotFoundError:
        pytest.skip("the mpich wheel is not installed (pip install 'fastlstm[mpi]')")
    files = {f.name: Path(d.locate_file(f)).resolve() for f in d.files or []}
    if "mpiexec" not in files or "libmpi.so" not in files:
        pytest.skip("the mpich wheel has no mpiexec/libmpi.so")
    return files["mpiexec"], files["libmpi.so"].parent


def _mpirun(n, args, timeout=240):
    mpiexec, libdir = _mpich()
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTLSTM_NUM_THREADS", "OMP_NUM_THREADS")}
    env.setdefault("MPI4PY_LIBMPI", str(libdir))
    proc = subprocess.run([str(mpiexec), "-n", str(n), sys.executable, *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_mpirun_two_ranks_equal_one_process(tmp_path):
    """Global batch 64 over 2 ranks (32 each; the last batch of 45 splits 23/22) for 3 epochs
    gives one process's weights with batch 64 to float32 summation order, the same bits on both
    ranks."""
    args = ["--samples", 301, "--epochs", 3, "--batch-size", 64, "--seed", 3]
    out = _mpirun(2, [ROOT / "examples" / "python" / "distributed_train.py", *args,
                      "--save-weights", tmp_path / "w", "--verbose", 2])
    assert "2 rank(s) x 1 thread(s)" in out  # each rank got its share of the 2-CPU default
    assert out.count("Epoch 3/3") == 1  # the progress of rank 0 only
    w0, w1 = np.load(tmp_path / "w0.npy"), np.load(tmp_path / "w1.npy")
    assert np.array_equal(w0, w1)

    distributed_train.main([str(a) for a in args] + ["--save-weights", str(tmp_path / "one")])
    one = np.load(tmp_path / "one0.npy")
    assert np.abs(one - w0).max() <= 1e-5 * np.abs(one).max()
    fastlstm.set_seed(3)
    start = distributed_train.build(8, 32).flat_params  # untrained: training did move them
    assert np.abs(one - start).max() > 1e-2


def test_mpirun_optimizer_callbacks_and_logs(tmp_path):
    _mpirun(2, [ROOT / "tests" / "mpi_checks.py", tmp_path])
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    single = r0["single"]
    assert (r0["size"], r1["size"], r0["threads"], r1["threads"]) == (2, 2, 1, 1)
    # DistributedOptimizer on a PyTorch-shaped module: one Allreduce per step, one process's
    # result, identical ranks
    assert r0["allreduce_calls"] == r1["allreduce_calls"] == 3
    m0, m1, ms = (np.array(r["module_weights"]) for r in (r0, r1, single))
    assert np.array_equal(m0, m1)
    np.testing.assert_allclose(m0, ms, rtol=1e-5, atol=1e-6)
    # fit: EarlyStopping stopped both ranks after the same epoch as one process; the epoch logs
    # (train and validation, averaged over ranks) are one process's
    assert r0["history"] == r1["history"]
    assert len(r0["history"]["loss"]) == len(single["history"]["loss"]) == 2
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(r0["history"][key], single["history"][key], rtol=1e-5)
    assert r0["fit_weights"] == r1["fit_weights"]
    np.testing.assert_allclose(r0["fit_weights"], single["fit_weights"], rtol=1e-5, atol=1e-6)
    # checkpoints and CSV logs from rank 0 only
    assert (tmp_path / "ckpt_from0.fastlstm").exists() and (tmp_path / "log_from0.csv").exists()
    assert not (tmp_path / "ckpt_from1.fastlstm").exists()
    assert not (tmp_path / "log_from1.csv").exists()
    # a functional model (a masked sequence output and a final one, loss and sample weights, a
    # regularizer, a last batch of one row that rank 1 has no part of): one process's result
    assert r0["functional_weights"] == r1["functional_weights"]
    np.testing.assert_allclose(r0["functional_weights"], single["functional_weights"],
                               rtol=1e-5, atol=1e-6)
    assert r0["functional_history"] == r1["functional_history"]
    assert set(r0["functional_history"]) == set(single["functional_history"])
    assert {"seq_loss", "end_loss", "end_accuracy", "val_loss", "val_end_accuracy"} <= \
        set(single["functional_history"])
    for key, values in single["functional_history"].items():
        np.testing.assert_allclose(r0["functional_history"][key], values, rtol=1e-5,
                                   atol=1e-7, err_msg=key)
    # a loss that is not finite on rank 0's rows only stops both ranks at the same batch,
    # as one process, with the weights from before that step
    assert r0["nonfinite"][0] == r1["nonfinite"][0] == single["nonfinite"][0] == [1, 1]
    assert r0["nonfinite"][1] and r1["nonfinite"][1]
    assert r0["nonfinite"][2] == r1["nonfinite"][2]


# ------------------------------------------------------------------------------ without MPI
@pytest.fixture
def no_launcher(monkeypatch):
    for v in dist._LAUNCHER_VARS:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setitem(dist._state, "initialized", False)
    monkeypatch.setitem(dist._state, "comm", None)


def test_without_mpi_everything_is_one_process(no_launcher):
    assert fastlstm.distributed is dist
    assert dist.init() == (0, 1)
    assert (dist.rank(), dist.size(), dist.is_distributed()) == (0, 1, False)
    x, y = distributed_train.make_data(70, 6, 8, seed=2)
    runs = []
    for use_dist in (True, False):
        fastlstm.set_seed(4)
        model = distributed_train.build(8, 12)
        if use_dist:
            model.compile(dist.DistributedOptimizer(optim.Adam(0.01)), "mse")
            dist.broadcast_parameters(model)
            h = dist.fit(model, x, y, batch_size=16, epochs=2, verbose=0)
        else:
            model.compile(optim.Adam(0.01), "mse")
            h = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
        runs.append((model.flat_params.copy(), h.history["loss"]))
    assert np.array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]


def test_distributed_optimizer_delegates(no_launcher):
    inner = optim.SGD(0.5)
    d = dist.DistributedOptimizer(inner)
    d.learning_rate = 0.25  # what ReduceLROnPlateau does
    assert inner.learning_rate == 0.25 and d.learning_rate == 0.25
    p = np.ones(5, np.float32)
    g = np.full(5, 2.0, np.float32)
    d.apply(p, g)
    np.testing.assert_array_equal(p, np.full(5, 0.5, np.float32))
    assert d.iterations == inner.iterations == 1
    assert d.allreduce_calls == 0  # one process: nothing to reduce
    with pytest.raises(FloatingPointError, match="NaN or infinity"):
        d.apply(p, np.array([1, np.nan, 0, 0, 0], np.float32))
    np.testing.assert_array_equal(p, np.full(5, 0.5, np.float32))  # unchanged


def test_bad_arguments(no_launcher):
    with pytest.raises(TypeError, match="model must have a flat parameter buffer"):
        dist.broadcast_parameters(object())
    with pytest.raises(ValueError, match="unknown optimizer"):
        dist.DistributedOptimizer("nope")


def test_launched_under_mpi_without_mpi4py_names_the_extra(no_launcher, monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match=r"fastlstm\[mpi\]"):
        dist.init()


def test_pytorch_style_step_without_mpi(no_launcher):
    """DistributedOptimizer over an optimizer given modules: zero_grad/step as the plain one."""
    x = np.random.default_rng(0).standard_normal((6, 4, 5)).astype(np.float32)
    results = []
    for wrap in (False, True):
        lstm = fastlstm.LSTM(5, 7, seed=1)
        head = fastlstm.Linear(7, 1, seed=2)
        opt = optim.Adam(params=[lstm, head], learning_rate=0.01)
        if wrap:
            opt = dist.DistributedOptimizer(opt)
            assert dist.broadcast_parameters(opt) is opt
            assert dist.broadcast_parameters([lstm, head]) == [lstm, head]
        for _ in range(3):
            opt.zero_grad()
            h, _ = lstm.forward(x, train=True)
            out = head.forward(h)
            lstm.backward(head.backward(2.0 * out / out.size))
            opt.step()
        results.append(np.concatenate([lstm.flat_params, head.flat_params]))
    assert np.array_equal(results[0], results[1])
    with pytest.raises(TypeError, match="was not given modules"):
        dist.broadcast_parameters(optim.Adam())
