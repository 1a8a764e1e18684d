"""Bitwise determinism: any thread count, any batch composition, concurrent callers.

The sizes are small (fast tests), below the work the engine wants per thread before it splits a
step or a product: the thread-count test lowers those thresholds to zero, so that the work
really is split over threads (hidden units in tiles of 32 across threads, the whole-sequence
products in row chunks), and checks that it was."""

import threading

import numpy as np
import pytest

import fastlstm
from fastlstm import _core

CONFIGS = [
    ("LSTM", dict(num_layers=2, bidirectional=True)),
    ("LSTM", dict(proj_size=40, peephole=True)),
    ("GRU", dict(num_layers=2, bidirectional=True)),
]


@pytest.fixture
def restore_threads():
    n = fastlstm.get_num_threads()
    yield
    fastlstm.set_num_threads(n)


@pytest.fixture
def split_everything():
    """Every time step and product split over all threads, whatever its size."""
    _core._set_min_thread_work(0, 0)
    yield
    _core._set_min_thread_work(-1, -1)


def _run(mod, x, lengths, d_out, recurrent_mask=None):
    out, state = mod.forward(x, lengths=lengths, train=True, recurrent_mask=recurrent_mask)
    d_x, _ = mod.backward(d_out)
    return out, (state[0] if isinstance(state, tuple) else state), d_x, mod.flat_grads.copy()


@pytest.mark.parametrize("cell,kw", CONFIGS)
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_low_precision_identical_for_any_thread_count(cell, kw, precision, restore_threads):
    """Quantized modules too, on both schedules of the input projection (T = 6: all steps at
    once; T = 60 with 41 rows: per step, an LSTM's two products in one pass)."""
    rng = np.random.default_rng(2)
    mod = getattr(fastlstm, cell)(19, 70, seed=1, **kw).quantize(precision)
    for T, B in ((6, 9), (60, 41)):
        x = rng.standard_normal((T, B, 19)).astype(np.float32)
        lengths = rng.integers(1, T + 1, size=B)
        results = []
        for n in (1, 2, 3, 4):
            fastlstm.set_num_threads(n)
            out, state = mod(x, lengths=lengths)
            results.append((out, state[0] if isinstance(state, tuple) else state))
        for other in results[1:]:
            for a, b in zip(results[0], other):
                assert np.array_equal(a, b)


@pytest.mark.parametrize("cell,kw", CONFIGS)
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_low_precision_steps_split_over_threads(cell, kw, precision, restore_threads,
                                                split_everything):
    """Without lengths, with every step split over the threads: an LSTM shares one quantized
    x per step between the threads (each quantizes its share of the next step's rows), bf16
    without projection one h too (each thread rounds the h of its own units); the same bits for
    any thread count, and the bits of the same sequences given with lengths (where each thread
    quantizes the whole step)."""
    rng = np.random.default_rng(4)
    mod = getattr(fastlstm, cell)(19, 70, seed=1, **kw).quantize(precision)
    x = rng.standard_normal((60, 41, 19)).astype(np.float32)
    results = []
    for n in (1, 2, 3, 4):
        fastlstm.set_num_threads(n)
        out, state = mod(x)
        assert (mod._engine.last_threads > 1) == (n > 1)
        results.append((out, state[0] if isinstance(state, tuple) else state))
    out, state = mod(x, lengths=np.full(41, 60))
    results.append((out, state[0] if isinstance(state, tuple) else state))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("cell,kw", CONFIGS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bitwise_identical_for_any_thread_count(cell, kw, dtype, restore_threads,
                                                split_everything):
    rng = np.random.default_rng(0)
    mod = getattr(fastlstm, cell)(19, 70, dtype=dtype, seed=1, **kw)
    x = rng.standard_normal((13, 9, 19))
    lengths = rng.integers(1, 14, size=9)
    d_out = rng.standard_normal(mod.forward(x, lengths=lengths)[0].shape)
    results = []
    for n in (1, 2, 3, 4):
        fastlstm.set_num_threads(n)
        results.append(_run(mod, x, lengths, d_out))
        assert (mod._engine.last_threads > 1) == (n > 1)  # the backward's split
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("cell,kw", CONFIGS)
def test_recurrent_dropout_bitwise_identical_for_any_thread_count(cell, kw, restore_threads,
                                                                  split_everything):
    """With recurrent masks (one product per gate forward, per gate and panel backward)"""
    rng = np.random.default_rng(3)
    mod = getattr(fastlstm, cell)(19, 70, seed=1, **kw)
    x = rng.standard_normal((13, 9, 19)).astype(np.float32)
    lengths = rng.integers(1, 14, size=9)
    ng = 4 if cell == "LSTM" else 3
    LD = mod.num_layers * mod.num_directions
    rmask = ((rng.random((LD, 9, ng * mod.state_size)) < 0.6) / 0.6).astype(np.float32)
    d_out = rng.standard_normal(mod.forward(x, lengths=lengths)[0].shape).astype(np.float32)
    results = []
    for n in (1, 2, 3):
        fastlstm.set_num_threads(n)
        results.append(_run(mod, x, lengths, d_out, rmask))
        assert (mod._engine.last_threads > 1) == (n > 1)  # the backward's split
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)
    assert not np.array_equal(results[0][0], _run(mod, x, lengths, d_out)[0])


@pytest.mark.parametrize("cell,kw", CONFIGS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_inference_same_bits_as_training_forward(cell, kw, batch_first, restore_threads,
                                                 split_everything):
    """Inference of equal-length rows writes each step's h straight into the output, where the
    next step reads it, and an LSTM keeps no gates; a training forward keeps its own copies of
    h and the gates. Both are the same arithmetic: the same bits, for any thread count, and h_n
    is the output's last step (first, backward direction)."""
    rng = np.random.default_rng(4)
    mod = getattr(fastlstm, cell)(19, 70, seed=1, batch_first=batch_first, **kw)
    B, T = 9, 13
    x = rng.standard_normal((B, T, 19) if batch_first else (T, B, 19)).astype(np.float32)
    L, D, S = mod.num_layers, mod.num_directions, mod.state_size
    h0 = rng.standard_normal((L * D, B, S)).astype(np.float32)
    hx = (h0, rng.standard_normal((L * D, B, mod.hidden_size)).astype(np.float32)) \
        if cell == "LSTM" else h0
    fastlstm.set_num_threads(1)
    train_out, train_state = mod.forward(x, hx, train=True)
    for n in (1, 2, 3):
        fastlstm.set_num_threads(n)
        out, state = mod.forward(x, hx, train=False)
        assert np.array_equal(out, train_out)
        for a, b in zip(state if cell == "LSTM" else (state,),
                        train_state if cell == "LSTM" else (train_state,)):
            assert np.array_equal(a, b)
    h_n = state[0] if cell == "LSTM" else state
    seq = out if not batch_first else out.transpose(1, 0, 2)  # [T, B, D*S]
    assert np.array_equal(h_n[(L - 1) * D], seq[-1, :, :S])
    if D == 2:
        assert np.array_equal(h_n[(L - 1) * D + 1], seq[0, :, S:])


@pytest.mark.parametrize("cell,kw", CONFIGS)
def test_sequence_result_independent_of_batch_mates(cell, kw):
    """A sequence's output and final state are the same bits alone or in any batch
    (the complaint of pytorch#32023). The largest batch also takes the engine's other schedule
    of the input projection (per step inside the time loop instead of all steps before it)."""
    rng = np.random.default_rng(1)
    mod = getattr(fastlstm, cell)(11, 64, seed=2, **kw)
    T, n = 40, 29
    x = rng.standard_normal((T, 1, 11)).astype(np.float32)
    alone_out, alone_state = mod(x, lengths=[n])
    alone_h = alone_state[0] if isinstance(alone_state, tuple) else alone_state
    for B, pos in ((2, 1), (7, 3), (16, 15), (48, 30)):
        others = rng.standard_normal((T, B, 11)).astype(np.float32)
        others[:, pos] = x[:, 0]
        lengths = rng.integers(1, T + 1, size=B)
        lengths[pos] = n
        out, state = mod(others, lengths=lengths)
        h = state[0] if isinstance(state, tuple) else state
        assert np.array_equal(out[:, pos], alone_out[:, 0])
        assert np.array_equal(h[:, pos], alone_h[:, 0])
    # and without lengths (the per-step schedule reads the rows in place, time-major and
    # batch-first), forward and d_x
    bf = getattr(fastlstm, cell)(11, 64, seed=2, batch_first=True, **kw)
    xs = rng.standard_normal((48, T, 11)).astype(np.float32)
    d_out = rng.standard_normal(bf(xs)[0].shape).astype(np.float32)
    out_all, _ = bf.forward(xs, train=True)
    dx_all, _ = bf.backward(d_out)
    for b in (0, 47):
        out_one, _ = bf.forward(xs[b:b + 1], train=True)
        dx_one, _ = bf.backward(d_out[b:b + 1])
        assert np.array_equal(out_all[b], out_one[0])
        assert np.array_equal(dx_all[b], dx_one[0])
    out_tm, _ = mod(np.ascontiguousarray(xs.transpose(1, 0, 2)))
    assert np.array_equal(out_tm.transpose(1, 0, 2), out_all)


def test_set_num_threads_checks_argument(restore_threads):
    with pytest.raises(ValueError, match="n must be >= 1"):
        fastlstm.set_num_threads(0)
    with pytest.raises(TypeError, match="n must be an int"):
        fastlstm.set_num_threads(1.5)
    fastlstm.set_num_threads(3)
    assert fastlstm.get_num_threads() == 3


def test_concurrent_python_threads_match_serial(restore_threads):
    """Several Python threads calling the engine at once (the GIL is released): each gets the
    serial answer, whether it got the pool or ran alone."""
    fastlstm.set_num_threads(2)
    rng = np.random.default_rng(3)
    mods = [fastlstm.LSTM(17, 96, num_layers=2, seed=s) for s in range(4)]
    xs = [rng.standard_normal((20, 5, 17)).astype(np.float32) for _ in mods]
    serial = [m(x)[0] for m, x in zip(mods, xs)]
    got = [None] * len(mods)
    errors = []

    def work(i):
        try:
            for _ in range(5):
                out = mods[i](xs[i])[0]
                if not np.array_equal(out, serial[i]):
                    raise AssertionError(f"thread {i} got a different answer")
            got[i] = out
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(mods))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for g, s in zip(got, serial):
        assert np.array_equal(g, s)


def test_shared_module_from_threads_is_serialized():
    """One module called from two threads at once: calls are serialized, never corrupted."""
    rng = np.random.default_rng(4)
    m = fastlstm.GRU(9, 80, seed=0)
    x = rng.standard_normal((15, 3, 9)).astype(np.float32)
    ref = m(x)[0]
    bad = []

    def work():
        for _ in range(10):
            if not np.array_equal(m(x)[0], ref):
                bad.append(1)

    ts = [threading.Thread(target=work) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad


def test_blocked_products_same_bits_and_reference():
    """Sizes where the float32 products take every path of the register-tile kernels: K above
    the K block (hidden 280 and input 270 > 256), row counts split in tiles of unequal sizes
    (1, 5, 23 and 37 rows: 37 = 13 + 12 + 12), a partial last unit tile (280 = 8 * 32 + 24), and
    a batch large enough for the software prefetch (>= 96 rows in the d_x chunks). A sequence's
    results are the same bits alone or in any batch, for any thread count, and match the float64
    NumPy reference."""
    from fastlstm import reference as R

    rng = np.random.default_rng(5)
    T, I, H = 6, 270, 280
    mod = fastlstm.LSTM(I, H, seed=3)
    x = rng.standard_normal((T, 37, I)).astype(np.float32)
    d_out = rng.standard_normal((T, 37, H)).astype(np.float32)
    out_all, _ = mod.forward(x, train=True)
    dx_all, _ = mod.backward(d_out)
    grads_all = mod.flat_grads.copy()
    for B in (1, 5, 23):
        out, _ = mod.forward(x[:, :B], train=True)
        dx, _ = mod.backward(d_out[:, :B])
        assert np.array_equal(out, out_all[:, :B])
        assert np.array_equal(dx, dx_all[:, :B])
    n = fastlstm.get_num_threads()
    try:
        for threads in (1, 2, 3):
            fastlstm.set_num_threads(threads)
            out, _ = mod.forward(x, train=True)
            dx, _ = mod.backward(d_out)
            assert np.array_equal(out, out_all)
            assert np.array_equal(dx, dx_all)
            assert np.array_equal(mod.flat_grads, grads_all)
    finally:
        fastlstm.set_num_threads(n)
    params = {k: v.astype(np.float64) for k, v in mod.params.items()}
    r_out, _, _, cache = R.lstm_forward(params, x.astype(np.float64))
    r_dx, _, _, r_grads = R.lstm_backward(cache, d_out.astype(np.float64))
    np.testing.assert_allclose(out_all, r_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx_all, r_dx, rtol=1e-4, atol=1e-4)
    for name, g in mod.grads.items():
        np.testing.assert_allclose(g, r_grads[name], rtol=1e-4, atol=2e-4, err_msg=name)
