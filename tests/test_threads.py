"""The thread pool and the ecosystem's thread controls: the default count (environment,
affinity), set_num_threads' limits and its safety while the engine runs, threadpoolctl, fork."""

import multiprocessing
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastlstm

threadpoolctl = pytest.importorskip("threadpoolctl")


@pytest.fixture
def restore_threads():
    n = fastlstm.get_num_threads()
    yield
    fastlstm.set_num_threads(n)


def _child_threads(env=None, affinity=None):
    """get_num_threads() in a fresh interpreter with the given environment / CPU affinity."""
    code = "import fastlstm; print(fastlstm.get_num_threads(), fastlstm.available_cpus())"
    if affinity is not None:
        code = f"import os; os.sched_setaffinity(0, {set(affinity)!r}); " + code
    full = {k: v for k, v in os.environ.items()
            if k not in ("FASTLSTM_NUM_THREADS", "OMP_NUM_THREADS")}
    full.update(env or {})
    out = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True,
                         timeout=120, check=True)
    return tuple(int(v) for v in out.stdout.split())


def test_default_count_from_environment_then_affinity():
    cpus = len(os.sched_getaffinity(0))
    assert _child_threads({"FASTLSTM_NUM_THREADS": "3", "OMP_NUM_THREADS": "2"})[0] == 3
    assert _child_threads({"OMP_NUM_THREADS": "3"})[0] == 3
    assert _child_threads({"OMP_NUM_THREADS": "3,1"})[0] == 3  # nested OpenMP levels: the first
    # an absurd value is clamped to 4 x the CPUs available, not taken
    assert _child_threads({"FASTLSTM_NUM_THREADS": "100000"})[0] == 4 * _child_threads()[1]
    one = min(os.sched_getaffinity(0))
    assert _child_threads(affinity=[one]) == (1, 1)  # the affinity mask, not the machine's cores
    assert _child_threads()[1] <= cpus


def test_set_num_threads_refuses_absurd_values(restore_threads):
    limit = 4 * fastlstm.available_cpus()
    for bad in (2**31, 2**64, limit + 1):
        with pytest.raises(ValueError, match=rf"n must be at most {limit} \(4 x the"):
            fastlstm.set_num_threads(bad)
    with pytest.raises(ValueError, match="n must be >= 1"):
        fastlstm.set_num_threads(-(2**40))
    fastlstm.set_num_threads(limit)
    assert fastlstm.get_num_threads() == limit


def test_set_num_threads_while_the_engine_runs(restore_threads):
    """Another Python thread changes the count while this one runs forward and backward: every
    call completes (no barrier waits for a thread that never comes) with the serial answer."""
    rng = np.random.default_rng(5)
    mod = fastlstm.LSTM(19, 160, num_layers=2, seed=4)
    x = rng.standard_normal((40, 24, 19)).astype(np.float32)
    d_out = rng.standard_normal((40, 24, 160)).astype(np.float32)
    fastlstm.set_num_threads(1)
    out_ref, _ = mod.forward(x, train=True)
    dx_ref, _ = mod.backward(d_out)
    stop = threading.Event()
    counts = (1, 2, 3, 4)

    def flip():
        i = 0
        while not stop.is_set():
            fastlstm.set_num_threads(counts[i % len(counts)])
            i += 1

    flipper = threading.Thread(target=flip, daemon=True)
    results = []

    def work():
        for _ in range(12):
            out, _ = mod.forward(x, train=True)
            dx, _ = mod.backward(d_out)
            results.append(np.array_equal(out, out_ref) and np.array_equal(dx, dx_ref))

    worker = threading.Thread(target=work, daemon=True)
    flipper.start()
    worker.start()
    worker.join(timeout=120)
    stop.set()
    flipper.join(timeout=10)
    assert not worker.is_alive(), "the engine hung while set_num_threads ran concurrently"
    assert results == [True] * 12


def test_threadpoolctl_sees_and_limits_the_pool(restore_threads):
    fastlstm.set_num_threads(2)
    libs = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "fastlstm"]
    assert len(libs) == 1
    assert libs[0]["num_threads"] == 2
    assert libs[0]["version"] == fastlstm.__version__
    assert os.path.basename(libs[0]["filepath"]).startswith("_core")
    with threadpoolctl.threadpool_limits(1):
        assert fastlstm.get_num_threads() == 1
        assert [i["num_threads"] for i in threadpoolctl.threadpool_info()
                if i["user_api"] == "fastlstm"] == [1]
    assert fastlstm.get_num_threads() == 2
    with threadpoolctl.threadpool_limits(limits={"fastlstm": 1}):
        assert fastlstm.get_num_threads() == 1
    assert fastlstm.get_num_threads() == 2
    # the C entry point clamps instead of raising (threadpoolctl cannot catch C++ exceptions)
    ctl = threadpoolctl.ThreadpoolController().select(user_api="fastlstm")
    ctl.lib_controllers[0].set_num_threads(2**40)
    assert fastlstm.get_num_threads() == 4 * fastlstm.available_cpus()


def _use_after_fork(mod, x, queue):
    queue.put(mod(x)[0])


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_fork_child_uses_the_engine(restore_threads):
    """A fork of a process whose pool has running workers: the child starts its own workers
    (the parent's do not exist there) and gets the parent's answer instead of hanging."""
    fastlstm.set_num_threads(2)
    mod = fastlstm.LSTM(17, 256, num_layers=2, seed=1)
    x = np.random.default_rng(0).standard_normal((30, 16, 17)).astype(np.float32)
    ref = mod(x)[0]  # the pool's workers exist (and spin or sleep) now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_use_after_fork, args=(mod, x, queue))
    child.start()
    try:
        out = queue.get(timeout=90)
        child.join(timeout=30)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
            child.join()
    assert np.array_equal(out, ref)
    assert np.array_equal(mod(x)[0], ref)  # and the parent's pool still works


def _engine_threads():
    import fastlstm as f

    return f.get_num_threads()


def test_joblib_workers_do_not_oversubscribe(monkeypatch):
    """scikit-learn's n_jobs runs in joblib's (loky) worker processes, which set
    OMP_NUM_THREADS to their share of the CPUs; the engine's pool there takes that share."""
    joblib = pytest.importorskip("joblib")
    monkeypatch.delenv("FASTLSTM_NUM_THREADS", raising=False)  # it would take precedence
    cpus = fastlstm.available_cpus()
    with joblib.parallel_backend("loky"):
        got = joblib.Parallel(n_jobs=2)(joblib.delayed(_engine_threads)() for _ in range(4))
    assert set(got) == {max(1, cpus // 2)}


def test_threadpoolctl_ignores_other_core_libraries():
    """Other packages' extensions are called _core* too (scipy's): they are not listed as
    fastlstm's, and listing them does not fail."""
    pytest.importorskip("scipy.optimize")  # loads scipy/optimize/_highspy/_core*.so
    libs = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "fastlstm"]
    ext_dir = os.path.dirname(os.path.dirname(fastlstm.cmake_prefix_path))  # beside _core
    assert [os.path.dirname(i["filepath"]) for i in libs] == [os.path.realpath(ext_dir)]
