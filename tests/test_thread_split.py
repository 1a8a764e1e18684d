"""The thread split chosen by the work of a step (cpu/parallel.hpp): a time step is split over
threads only where each thread gets at least the step threshold's multiply-adds (or reads at
least the step-bytes threshold's weights), a
whole-sequence product only where each gets the region threshold's; below, the call runs on
the calling thread alone. The split never changes the results."""

import numpy as np
import pytest

import fastlstm
from fastlstm import _core

CELLS = ["LSTM", "GRU"]
DTYPES = ["float32", "float64"]
GATES = {"LSTM": 4, "GRU": 3}


@pytest.fixture
def two_threads():
    n = fastlstm.get_num_threads()
    fastlstm.set_num_threads(2)
    yield
    fastlstm.set_num_threads(n)
    _core._set_min_thread_work(-1, -1)


def _train_step(mod, x, d_out):
    out, _ = mod.forward(x, train=True)
    fwd = mod._engine.last_threads
    d_x, _ = mod.backward(d_out)
    return fwd, mod._engine.last_threads, [out, d_x, mod.flat_grads.copy()]


def test_thresholds_are_set_and_restored(two_threads):
    step, region, step_bytes = _core._min_thread_work()
    assert step > 0 and region > 0 and step_bytes > 0
    _core._set_min_thread_work(5, 7, 9)
    assert _core._min_thread_work() == (5, 7, 9)
    _core._set_min_thread_work(-1, -1)
    assert _core._min_thread_work() == (step, region, step_bytes)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_small_training_step_runs_on_one_thread(cell, dtype, two_threads):
    """The issue's small steps (B, T, I, H) = (32, 8, 8, 64), (32, 20, 1, 50) at the step
    threshold of 2^21 multiply-adds per thread (the default but on AMD CPUs, which split from
    2^19 or 2^18, where that was measured to pay): below both thresholds, so neither the forward
    nor the backward wakes a second thread."""
    _core._set_min_thread_work(1 << 21, -1, -1)
    rng = np.random.default_rng(0)
    for B, T, I, H in ((32, 8, 8, 64), (32, 20, 1, 50)):  # noqa: E741
        mod = getattr(fastlstm, cell)(I, H, dtype=dtype, seed=1)
        x = rng.standard_normal((T, B, I))
        fwd, bwd, _ = _train_step(mod, x, np.ones((T, B, H)))
        assert (fwd, bwd) == (1, 1)


def test_default_step_threshold_is_the_cpus():
    """The default step threshold: 2^19 multiply-adds per thread on AMD CPUs with AVX-512,
    2^18 on AMD CPUs without, 2^21 on others; the batch-1 inference byte threshold 32 KB on AMD
    CPUs, else the step-bytes threshold."""
    _core._set_min_thread_work(-1, -1, -1)
    info = fastlstm.cpu_info()
    step, _, step_bytes = _core._min_thread_work()
    amd = info.get("vendor") == "AuthenticAMD"
    if amd:
        assert step == (1 << 19 if "avx512f" in info["features"] else 1 << 18)
        assert _core._min_step_bytes_b1() == 1 << 15
    else:
        assert step == 1 << 21
        assert _core._min_step_bytes_b1() == step_bytes


@pytest.mark.parametrize("cell", CELLS)
def test_step_threshold_is_per_thread_work_of_a_step(cell, two_threads):
    """Without a projection a step's work is B * gates * H * H multiply-adds (the recurrent
    product); the split takes 2 threads exactly when each gets at least the step threshold."""
    B, T, I, H = 4, 3, 5, 64  # 2 tiles of 32 units; the input projection is done before the loop
    work = B * GATES[cell] * H * H
    rng = np.random.default_rng(1)
    mod = getattr(fastlstm, cell)(I, H, seed=2)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    d_out = np.ones((T, B, H), np.float32)
    never = 1 << 60
    _core._set_min_thread_work(work // 2 + 1, never)
    assert _train_step(mod, x, d_out)[:2] == (1, 1)
    _core._set_min_thread_work(work // 2, never)
    assert _train_step(mod, x, d_out)[:2] == (2, 2)


@pytest.mark.parametrize("cell", CELLS)
def test_step_bytes_threshold_splits_batch_one_steps_with_large_weights(cell, two_threads):
    """A batch-1 step of H = 256 has few multiply-adds (below the step threshold) but reads
    G * H * H weights (768 KB-1 MB float32): it is split by the weight-bytes threshold, and not
    once that threshold is out of reach; the bits are the same either way."""
    B, T, I, H = 1, 5, 7, 256  # noqa: E741
    weight_bytes = GATES[cell] * H * H * 4
    step, _, step_bytes = _core._min_thread_work()
    assert B * GATES[cell] * H * H < 2 * step  # the multiply-adds alone would not split it
    assert weight_bytes >= 2 * step_bytes
    rng = np.random.default_rng(3)
    mod = getattr(fastlstm, cell)(I, H, seed=4)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    d_out = np.ones((T, B, H), np.float32)
    fwd, bwd, split = _train_step(mod, x, d_out)
    assert (fwd, bwd) == (2, 2)
    _core._set_min_thread_work(-1, -1, 1 << 60)
    fwd, bwd, alone = _train_step(mod, x, d_out)
    assert (fwd, bwd) == (1, 1)
    for a, b in zip(split, alone):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("cell", CELLS)
def test_batch_one_inference_has_its_own_byte_threshold(cell, two_threads):
    """An inference call at batch 1 reads only weights at each step: it is split from the
    batch-1 byte threshold (at most the step-bytes one; lower on CPUs measured to gain from
    it), training steps from the step-bytes one; setting step_bytes sets both. The bits are
    the same either way."""
    B, T, I, H = 1, 6, 16, 128  # noqa: E741
    # a step reads W_hh, and W_ih too where the input is projected per step
    hh_bytes = GATES[cell] * H * H * 4
    all_bytes = GATES[cell] * H * (I + H) * 4
    step, _, step_bytes = _core._min_thread_work()
    b1 = _core._min_step_bytes_b1()
    assert 0 < b1 <= step_bytes
    assert B * GATES[cell] * H * (I + H) < 2 * step  # the multiply-adds alone: one thread
    rng = np.random.default_rng(8)
    mod = getattr(fastlstm, cell)(I, H, seed=2)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    out_default = mod(x)[0]
    if hh_bytes >= 2 * b1:
        assert mod._engine.last_threads == 2
    elif all_bytes < 2 * b1:
        assert mod._engine.last_threads == 1
    _core._set_min_thread_work(-1, -1, hh_bytes // 2)
    assert _core._min_step_bytes_b1() == hh_bytes // 2
    out_split = mod(x)[0]
    assert mod._engine.last_threads == 2
    _core._set_min_thread_work(-1, -1, all_bytes)
    out_alone = mod(x)[0]
    assert mod._engine.last_threads == 1
    assert np.array_equal(out_split, out_alone) and np.array_equal(out_default, out_alone)
    _core._set_min_thread_work(-1, -1, -1)
    assert _core._min_step_bytes_b1() == b1


@pytest.mark.parametrize("cell", CELLS)
def test_region_threshold_splits_whole_sequence_products(cell, two_threads):
    """A long sequence of a tiny step: the time loop stays on one thread, the whole-sequence
    products (input projection, weight gradients) split once each thread gets enough."""
    rng = np.random.default_rng(2)
    mod = getattr(fastlstm, cell)(64, 32, seed=3)
    x = rng.standard_normal((200, 8, 64)).astype(np.float32)  # 1600 rows: 13 chunks of 128
    d_out = np.ones((200, 8, 32), np.float32)
    never = 1 << 60
    _core._set_min_thread_work(never, never)
    assert _train_step(mod, x, d_out)[:2] == (1, 1)
    _core._set_min_thread_work(never, 0)
    assert _train_step(mod, x, d_out)[:2] == (2, 2)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(32, 8, 8, 64), (3, 5, 7, 70), (64, 6, 40, 256)])
def test_same_bits_on_either_side_of_the_thresholds(cell, dtype, shape, two_threads):
    """One thread, two threads as the thresholds choose, and two threads with every step and
    product split (thresholds 0): the same bits, forward and backward. The last shape is above
    the default step threshold (it splits by itself)."""
    B, T, I, H = shape  # noqa: E741
    step = _core._min_thread_work()[0]
    rng = np.random.default_rng(3)
    mod = getattr(fastlstm, cell)(I, H, dtype=dtype, seed=4, num_layers=2)
    x = rng.standard_normal((T, B, I))
    d_out = rng.standard_normal((T, B, H))
    fastlstm.set_num_threads(1)
    _, _, one = _train_step(mod, x, d_out)
    fastlstm.set_num_threads(2)
    chosen = _train_step(mod, x, d_out)
    _core._set_min_thread_work(0, 0)
    forced = _train_step(mod, x, d_out)
    assert forced[:2] == (2, 2)
    if B * GATES[cell] * H * H >= 2 * step:
        assert chosen[:2] == (2, 2)
    for results in (chosen[2], forced[2]):
        for a, b in zip(one, results):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_quantized_same_bits_when_split(precision, two_threads):
    """A quantized module's forward (its rows quantized once per thread and step): one thread
    and every step split over two give the same bits, with and without lengths; at batch 1
    (the low-precision step kernel, its groups of units split) too."""
    rng = np.random.default_rng(5)
    q = fastlstm.LSTM(24, 96, num_layers=2, seed=6).quantize(precision)
    x = rng.standard_normal((7, 10, 24)).astype(np.float32)
    x1 = rng.standard_normal((9, 1, 24)).astype(np.float32)
    lengths = rng.integers(1, 8, size=10)
    fastlstm.set_num_threads(1)
    one = [q(x)[0], q(x, lengths=lengths)[0], q(x1)[0]]
    fastlstm.set_num_threads(2)
    _core._set_min_thread_work(0, 0)
    split = [q(x)[0]]
    assert q._engine.last_threads == 2
    split.append(q(x, lengths=lengths)[0])
    split.append(q(x1)[0])
    assert q._engine.last_threads == 2
    for a, b in zip(one, split):
        assert np.array_equal(a, b)
