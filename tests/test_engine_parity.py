"""The engine (fastlstm.LSTM / fastlstm.GRU) against the NumPy oracle (fastlstm.reference).

Outputs, h_n, c_n and every gradient (d_x, d_h0, d_c0, each entry of ``module.grads``) with
random upstream gradients, in float64 to 1e-10 and in float32 to 1e-5 (the float32 run's
weights and inputs, rounded to float32, are what the float64 oracle sees). Then streaming
against the full sequence, and dropout (reproducible, train-only, gradients by finite
differences since its mask lives inside the engine).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastlstm
from fastlstm import reference as R
from gradcheck import numerical_gradient

TOL = {"float64": 1e-10, "float32": 1e-5}


def assert_close(actual, expected, tol, what=""):
    """max|actual - expected| <= tol * (1 + max|expected|)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    err = np.max(np.abs(actual.astype(np.float64) - expected), initial=0.0)
    scale = 1.0 + np.max(np.abs(expected), initial=0.0)
    assert err <= tol * scale, f"{what}: max error {err:.3e} > {tol:g} * {scale:.3g}"


def make_module(cell, I, H, dtype, seed=0, **opts):
    cls = fastlstm.LSTM if cell == "lstm" else fastlstm.GRU
    return cls(I, H, dtype=dtype, seed=seed, **opts)


def check_parity(cell, I, H, T, B, dtype, *, with_state=True, lengths=None, seed=0,
                 recurrent_dropout=0.0, **opts):
    """Runs one configuration through the engine and the oracle and compares everything
    (``recurrent_dropout``: with random recurrent masks of that rate given to both)."""
    rng = np.random.default_rng(seed)
    m = make_module(cell, I, H, dtype, seed=seed, **opts)
    dt = m.dtype
    L, D, S = m.num_layers, m.num_directions, m.state_size
    bf = m.batch_first
    x = rng.standard_normal((B, T, I) if bf else (T, B, I)).astype(dt)
    h0 = (0.5 * rng.standard_normal((L * D, B, S))).astype(dt) if with_state else None
    c0 = (0.5 * rng.standard_normal((L * D, B, H))).astype(dt) if with_state else None
    if lengths is not None:
        lengths = np.asarray(lengths, dtype=np.int64)
    # d_output stays non-zero past the lengths: both sides must ignore it there
    d_out = rng.standard_normal((B, T, D * S) if bf else (T, B, D * S)).astype(dt)
    d_h_n = rng.standard_normal((L * D, B, S)).astype(dt)
    d_c_n = rng.standard_normal((L * D, B, H)).astype(dt)
    rmask = None
    if recurrent_dropout:
        ng = 4 if cell == "lstm" else 3
        keep = 1.0 - recurrent_dropout
        rmask = ((rng.random((L * D, B, ng * S)) < keep) / keep).astype(dt)

    # the engine
    if cell == "lstm":
        hx = (h0, c0) if with_state else None
        out, (h_n, c_n) = m.forward(x, hx, lengths=lengths, recurrent_mask=rmask)
        d_x, (d_h0, d_c0) = m.backward(d_out, d_h_n, d_c_n)
        inf_out, (inf_h, inf_c) = m.forward(x, hx, lengths=lengths, train=False,
                                            recurrent_mask=rmask)
    else:
        out, h_n = m.forward(x, h0, lengths=lengths, recurrent_mask=rmask)
        d_x, d_h0 = m.backward(d_out, d_h_n)
        inf_out, inf_h = m.forward(x, h0, lengths=lengths, train=False, recurrent_mask=rmask)
    for a in (out, h_n, d_x, d_h0):
        assert a.dtype == dt

    # the oracle, on the very same (rounded) numbers in float64
    f64 = lambda a: None if a is None else a.astype(np.float64)  # noqa: E731
    params = {k: f64(v) for k, v in m.params.items()}
    kw = dict(num_layers=L, bidirectional=m.bidirectional, lengths=lengths, batch_first=bf,
              recurrent_masks=f64(rmask))
    if cell == "lstm":
        r_out, r_h, r_c, cache = R.lstm_forward(params, f64(x), f64(h0), f64(c0),
                                                proj_size=m.proj_size, peephole=m.peephole,
                                                **kw)
        r_dx, r_dh0, r_dc0, r_grads = R.lstm_backward(cache, f64(d_out), f64(d_h_n),
                                                      f64(d_c_n))
    else:
        r_out, r_h, cache = R.gru_forward(params, f64(x), f64(h0), **kw)
        r_dx, r_dh0, r_grads = R.gru_backward(cache, f64(d_out), f64(d_h_n))

    tol = TOL[dt.name]
    assert_close(out, r_out, tol, "output")
    assert_close(h_n, r_h, tol, "h_n")
    assert_close(inf_out, r_out, tol, "inference output")
    assert_close(inf_h, r_h, tol, "inference h_n")
    if cell == "lstm":
        assert_close(c_n, r_c, tol, "c_n")
        assert_close(inf_c, r_c, tol, "inference c_n")
        assert_close(d_c0, r_dc0, tol, "d_c0")
    assert_close(d_x, r_dx, tol, "d_x")
    assert_close(d_h0, r_dh0, tol, "d_h0")
    assert sorted(m.grads) == sorted(r_grads)
    for name, g in m.grads.items():
        assert_close(g, r_grads[name], tol, f"grads[{name!r}]")
    if lengths is not None:
        t = np.arange(T)[:, None]
        pad = (t >= lengths[None, :])  # [T, B]
        assert np.all((out.transpose(1, 0, 2) if bf else out)[pad] == 0)


# --------------------------------------------------------------------------- the size sweep
HS, IS, BS, TS = (1, 3, 7, 8, 9, 16, 17, 33), (1, 5, 16), (1, 2, 5), (1, 2, 17)


def _sweep():
    """24 combinations in which every H meets every I, and every value of every axis (B, T,
    with/without initial state, both layouts) occurs several times; not the cartesian product."""
    combos = []
    for k in range(24):
        combos.append(dict(H=HS[k % 8], I=IS[k % 3], B=BS[(k // 3) % 3], T=TS[(k // 8) % 3],
                           with_state=bool((k // 3) % 2), batch_first=bool((k % 5) % 2)))
    for axis, values in (("H", HS), ("I", IS), ("B", BS), ("T", TS),
                         ("with_state", (False, True)), ("batch_first", (False, True))):
        assert {c[axis] for c in combos} == set(values), axis
    return combos


SWEEP = _sweep()


def _sweep_id(c):
    return (f"H{c['H']}-I{c['I']}-B{c['B']}-T{c['T']}" + ("-h0" if c["with_state"] else "")
            + ("-bf" if c["batch_first"] else ""))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("c", SWEEP, ids=[_sweep_id(c) for c in SWEEP])
def test_size_sweep(c, cell, dtype):
    check_parity(cell, c["I"], c["H"], c["T"], c["B"], dtype, with_state=c["with_state"],
                 batch_first=c["batch_first"], seed=c["H"] * 1000 + c["I"] * 10 + c["B"])


# ------------------------------------------------------------------------------- variants
# name -> (cell, I, H, T, B, options); lengths are unsorted with one == T and one == 1
VARIANTS = {
    "stacked3": ("lstm", 5, 7, 9, 4, dict(num_layers=3)),
    "bidirectional": ("lstm", 5, 9, 9, 3, dict(bidirectional=True)),
    "stacked_bidirectional": ("lstm", 5, 7, 6, 3, dict(num_layers=3, bidirectional=True)),
    "lengths": ("lstm", 5, 7, 9, 4, dict(lengths=[6, 9, 1, 4])),
    "lengths_bidirectional": ("lstm", 3, 8, 9, 5,
                              dict(bidirectional=True, lengths=[2, 1, 9, 5, 9])),
    "lengths_all_full": ("lstm", 3, 7, 5, 3, dict(bidirectional=True, lengths=[5, 5, 5])),
    "lengths_single_step": ("lstm", 3, 7, 17, 1, dict(bidirectional=True, lengths=[1])),
    "lengths_no_state": ("lstm", 4, 9, 7, 4,
                         dict(num_layers=2, bidirectional=True, lengths=[3, 7, 1, 6],
                              with_state=False)),
    "projection": ("lstm", 5, 9, 7, 3, dict(proj_size=4)),
    "projection_size1": ("lstm", 3, 7, 5, 2, dict(proj_size=1)),
    "projection_stacked_bidirectional": ("lstm", 5, 9, 6, 3,
                                         dict(num_layers=2, bidirectional=True, proj_size=5)),
    "peephole": ("lstm", 5, 7, 9, 3, dict(peephole=True)),
    "peephole_stacked_bidirectional": ("lstm", 5, 7, 6, 3,
                                       dict(num_layers=2, bidirectional=True, peephole=True)),
    "peephole_projection": ("lstm", 5, 9, 7, 2, dict(peephole=True, proj_size=3)),
    "no_bias": ("lstm", 5, 7, 6, 3, dict(num_layers=2, bias=False)),
    "no_bias_peephole_projection": ("lstm", 5, 7, 6, 3,
                                    dict(bias=False, peephole=True, proj_size=3,
                                         bidirectional=True)),
    "batch_first_stacked_bidirectional": ("lstm", 5, 7, 6, 3,
                                          dict(num_layers=2, bidirectional=True,
                                               batch_first=True, lengths=[6, 1, 4])),
    "all_together": ("lstm", 5, 9, 9, 4,
                     dict(num_layers=3, bidirectional=True, proj_size=4, peephole=True,
                          lengths=[6, 9, 1, 4])),
    "all_together_batch_first": ("lstm", 3, 17, 11, 5,
                                 dict(num_layers=3, bidirectional=True, proj_size=7,
                                      peephole=True, batch_first=True,
                                      lengths=[11, 3, 1, 8, 11])),
    "all_together_no_state": ("lstm", 4, 8, 7, 3,
                              dict(num_layers=2, bidirectional=True, proj_size=3,
                                   peephole=True, lengths=[1, 7, 5], with_state=False)),
    "gru_stacked3": ("gru", 5, 7, 9, 4, dict(num_layers=3)),
    "gru_bidirectional": ("gru", 5, 9, 9, 3, dict(bidirectional=True)),
    "gru_lengths": ("gru", 5, 7, 9, 4, dict(lengths=[6, 9, 1, 4])),
    "gru_all_together": ("gru", 5, 9, 9, 4,
                         dict(num_layers=3, bidirectional=True, lengths=[6, 9, 1, 4],
                              batch_first=True)),
    "gru_no_bias": ("gru", 5, 7, 6, 3, dict(num_layers=2, bidirectional=True, bias=False)),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant(name, dtype):
    cell, I, H, T, B, opts = VARIANTS[name]
    opts = dict(opts)
    check_parity(cell, I, H, T, B, dtype, seed=sorted(VARIANTS).index(name), **opts)


# recurrent dropout (Keras's recurrent_dropout): masks given to the engine and to the oracle
RECURRENT_DROPOUT = {
    "lstm": ("lstm", 5, 7, 6, 3, dict()),
    "lstm_two_tiles_lengths": ("lstm", 3, 33, 5, 4, dict(lengths=[5, 2, 5, 1])),
    "lstm_threaded": ("lstm", 9, 40, 4, 9, dict(batch_first=True)),
    "lstm_all_together": ("lstm", 4, 9, 7, 4,
                          dict(num_layers=2, bidirectional=True, proj_size=5, peephole=True,
                               lengths=[7, 1, 4, 6], batch_first=True)),
    "lstm_no_state": ("lstm", 3, 17, 5, 2, dict(with_state=False, bias=False)),
    "gru": ("gru", 5, 7, 6, 3, dict()),
    "gru_threaded_bidirectional": ("gru", 6, 47, 5, 9,
                                   dict(bidirectional=True, lengths=[5, 4, 1, 5, 2, 3, 5, 5, 4])),
    "gru_stacked": ("gru", 3, 9, 5, 2, dict(num_layers=2, bias=False, batch_first=True)),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(RECURRENT_DROPOUT))
def test_recurrent_dropout_matches_reference(name, dtype):
    """Outputs, states and every gradient with per-gate recurrent masks (rate 0.4), training
    and inference forward, against the oracle given the same masks."""
    cell, I, H, T, B, opts = RECURRENT_DROPOUT[name]
    check_parity(cell, I, H, T, B, dtype, seed=100 + sorted(RECURRENT_DROPOUT).index(name),
                 recurrent_dropout=0.4, **opts)


def test_backward_overwrites_grads():
    """Two backward passes give the same grads (they are written, not accumulated)."""
    rng = np.random.default_rng(1)
    m = fastlstm.LSTM(3, 5, num_layers=2, dtype="float64", seed=1)
    x = rng.standard_normal((4, 2, 3))
    out, _ = m.forward(x)
    d_out = rng.standard_normal(out.shape)
    m.backward(d_out)
    first = m.flat_grads.copy()
    m.backward(d_out)
    np.testing.assert_array_equal(m.flat_grads, first)
    assert np.any(first != 0)


# ------------------------------------------------------------------------------ streaming
STREAMS = {
    "lstm": ("lstm", dict()),
    "peephole": ("lstm", dict(peephole=True)),
    "projection": ("lstm", dict(proj_size=3)),
    "stacked": ("lstm", dict(num_layers=3)),
    "all_unidirectional": ("lstm", dict(num_layers=2, proj_size=4, peephole=True)),
    "gru": ("gru", dict()),
    "gru_stacked": ("gru", dict(num_layers=3)),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(STREAMS))
def test_stream_equals_full_sequence(name, dtype):
    cell, opts = STREAMS[name]
    T, B, I, H = 9, 3, 5, 7
    rng = np.random.default_rng(sorted(STREAMS).index(name))
    m = make_module(cell, I, H, dtype, seed=3, **opts)
    dt, L, S = m.dtype, m.num_layers, m.state_size
    tol = TOL[dtype]
    x = rng.standard_normal((T, B, I)).astype(dt)
    h0 = (0.5 * rng.standard_normal((L, B, S))).astype(dt)
    c0 = (0.5 * rng.standard_normal((L, B, H))).astype(dt)

    if cell == "lstm":
        full, (h_n, c_n) = m(x)
        full_h0, (h_n0, c_n0) = m(x, (h0, c0))
    else:
        full, h_n = m(x)
        full_h0, h_n0 = m(x, h0)

    stream = m.stream(batch=B)
    steps = np.stack([stream.step(x[t]) for t in range(T)])  # [T, B, S]
    assert steps.dtype == dt
    assert_close(steps, full, tol, "stream outputs")
    # the stream's step computes every element with the sequence engine's arithmetic: the same
    # bits, not just close
    np.testing.assert_array_equal(steps, full)
    h, c = stream.state
    np.testing.assert_array_equal(h, h_n)
    if cell == "lstm":
        np.testing.assert_array_equal(c, c_n)

    # reset: back to the zero state, the same outputs again
    stream.reset()
    again = np.stack([stream.step(x[t]) for t in range(T)])
    np.testing.assert_array_equal(again, steps)

    # an initial state through set_state
    stream.set_state(h0, c0 if cell == "lstm" else None)
    with_state = np.stack([stream.step(x[t]) for t in range(T)])
    assert_close(with_state, full_h0, tol, "stream outputs from set_state")
    np.testing.assert_array_equal(with_state, full_h0)
    h, c = stream.state
    assert_close(h, h_n0, tol, "stream h from set_state")
    if cell == "lstm":
        assert_close(c, c_n0, tol, "stream c from set_state")
    # the first step really depended on the state
    assert not np.allclose(with_state[0], steps[0])


# -------------------------------------------------------------------------------- dropout
def _lstm3(dropout, seed=11, dtype="float64", **opts):
    return fastlstm.LSTM(4, 5, num_layers=3, dropout=dropout, dtype=dtype, seed=seed, **opts)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_identical_modules_give_bitwise_identical_results(cell, dtype):
    """Same parameters, same input: the same bits, whichever instance computes them (a run
    must not depend on where the allocator happened to put the engine's workspaces)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 4)).astype(dtype)
    modules = [make_module(cell, 4, 5, dtype, seed=11, num_layers=2) for _ in range(8)]
    first_out = modules[0].forward(x)[0]
    d_out = rng.standard_normal(first_out.shape).astype(dtype)
    first_dx = modules[0].backward(d_out)[0]
    first_grads = modules[0].flat_grads.copy()
    for k, m in enumerate(modules[1:], start=1):
        np.testing.assert_array_equal(m.flat_params, modules[0].flat_params)
        out = m.forward(x)[0]
        np.testing.assert_array_equal(out, first_out, err_msg=f"output of instance {k}")
        np.testing.assert_array_equal(m.backward(d_out)[0], first_dx,
                                      err_msg=f"d_x of instance {k}")
        np.testing.assert_array_equal(m.flat_grads, first_grads, err_msg=f"grads of {k}")
        np.testing.assert_array_equal(m(x)[0], first_out, err_msg=f"inference of {k}")
    # the same instance after its workspaces were regrown by a larger call
    m = modules[0]
    m(rng.standard_normal((9, 40, 4)).astype(dtype))
    np.testing.assert_array_equal(m(x)[0], first_out, err_msg="inference after regrowth")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_in_place_parameter_changes_are_seen_by_the_next_call(cell):
    """The engine keeps its packed weights across calls and repacks only when a parameter
    changed: a write through `params`, `flat_params` or an optimizer's in-place update, even of
    one element, must reach the next forward and backward."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 3, 4))
    m = make_module(cell, 4, 5, "float64", seed=1, num_layers=2)
    fresh = lambda: make_module(cell, 4, 5, "float64", seed=2, num_layers=2)  # noqa: E731
    out0 = m(x)[0]
    d_out = rng.standard_normal(out0.shape)
    m.forward(x)
    m.backward(d_out)
    for change in (lambda: m.params["weight_hh_l1"].__setitem__((2, 3), 0.75),
                   lambda: m.params["weight_ih_l0"].__setitem__((0, 0), -0.5),
                   lambda: m.flat_params.__imul__(0.9)):
        change()
        ref = fresh()
        ref.load_state_dict(m.state_dict())
        np.testing.assert_array_equal(m(x)[0], ref(x)[0])
        m.forward(x)
        ref.forward(x)
        np.testing.assert_array_equal(m.backward(d_out)[0], ref.backward(d_out)[0])
        np.testing.assert_array_equal(m.flat_grads, ref.flat_grads)
    assert not np.array_equal(m(x)[0], out0)


def test_dropout_train_forward_is_reproducible_with_a_seed():
    x = np.random.default_rng(0).standard_normal((6, 3, 4))
    # the same module with its RNG re-seeded: the very same mask, the very same bits
    a = _lstm3(0.5)
    a._rng = np.random.default_rng(5)
    out_1, (h_1, c_1) = a.forward(x)
    a._rng = np.random.default_rng(5)
    out_2, (h_2, c_2) = a.forward(x)
    np.testing.assert_array_equal(out_1, out_2)
    np.testing.assert_array_equal(h_1, h_2)
    np.testing.assert_array_equal(c_1, c_2)
    # two modules built with the same seed: the same parameters and the same masks (a
    # different mask would move outputs by O(0.1); bitwise identity across instances is
    # test_identical_modules_give_bitwise_identical_results)
    a, b = _lstm3(0.5), _lstm3(0.5)
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
    out_a, (h_a, c_a) = a.forward(x)
    out_b, (h_b, c_b) = b.forward(x)
    np.testing.assert_allclose(out_a, out_b, rtol=0, atol=1e-14)
    np.testing.assert_allclose(h_a, h_b, rtol=0, atol=1e-14)
    np.testing.assert_allclose(c_a, c_b, rtol=0, atol=1e-14)
    # and a module's next train forward draws a fresh mask
    out_a2, _ = a.forward(x)
    assert np.max(np.abs(out_a2 - out_a)) > 1e-3


def test_dropout_changes_train_forward_only():
    x = np.random.default_rng(0).standard_normal((6, 3, 4))
    drop, plain = _lstm3(0.5), _lstm3(0.0)
    np.testing.assert_array_equal(drop.flat_params, plain.flat_params)
    ref_out, (ref_h, ref_c) = plain.forward(x)
    train_out, (train_h, _) = drop.forward(x)
    assert not np.allclose(train_out, ref_out)
    # layer 0 sees no dropout (it acts between layers): its state is untouched
    np.testing.assert_allclose(train_h[0], ref_h[0], rtol=0, atol=1e-14)
    assert not np.allclose(train_h[1:], ref_h[1:])
    # inference ignores dropout
    inf_out, (inf_h, inf_c) = drop(x)
    np.testing.assert_allclose(inf_out, ref_out, rtol=0, atol=1e-14)
    np.testing.assert_allclose(inf_h, ref_h, rtol=0, atol=1e-14)
    np.testing.assert_allclose(inf_c, ref_c, rtol=0, atol=1e-14)


def _backward_matches_finite_differences(m, cell, loss, x, h0, c0, d_out, d_h_n, d_c_n):
    """m.backward after the last training forward against central differences of ``loss``
    (the forward that gave it, weighted by d_out, d_h_n, d_c_n): x, h0, c0 and every param."""
    if cell == "lstm":
        d_x, (d_h0, d_c0) = m.backward(d_out, d_h_n, d_c_n)
        inputs = {"x": (x, d_x), "h0": (h0, d_h0), "c0": (c0, d_c0)}
    else:
        d_x, d_h0 = m.backward(d_out, d_h_n)
        inputs = {"x": (x, d_x), "h0": (h0, d_h0)}
    grads = {name: g.copy() for name, g in m.grads.items()}
    for name, (arr, analytic) in inputs.items():
        assert_close(analytic, numerical_gradient(loss, arr), 1e-6, f"d_{name}")
    for name, p in m.params.items():
        assert_close(grads[name], numerical_gradient(loss, p), 1e-6, f"grads[{name!r}]")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_dropout_gradients_match_finite_differences(cell):
    """With the module's RNG re-seeded before every forward the mask is fixed, so the loss is
    a smooth function and the engine's backward must match its central differences."""
    rng = np.random.default_rng(2)
    T, B, I, H, L = 5, 3, 3, 4, 3
    opts = dict(num_layers=L, dropout=0.4, bidirectional=True)
    if cell == "lstm":
        opts.update(proj_size=3, peephole=True)
    m = make_module(cell, I, H, "float64", seed=5, **opts)
    D, S = m.num_directions, m.state_size
    x = rng.standard_normal((T, B, I))
    lengths = np.array([5, 1, 3])
    h0 = 0.5 * rng.standard_normal((L * D, B, S))
    c0 = 0.5 * rng.standard_normal((L * D, B, H))
    d_out = rng.standard_normal((T, B, D * S))
    d_h_n = rng.standard_normal((L * D, B, S))
    d_c_n = rng.standard_normal((L * D, B, H))

    def forward():
        m._rng = np.random.default_rng(123)  # the same dropout seed every time
        if cell == "lstm":
            out, (h_n, c_n) = m.forward(x, (h0, c0), lengths=lengths)
            return out, h_n, c_n
        out, h_n = m.forward(x, h0, lengths=lengths)
        return out, h_n, None

    def loss():
        out, h_n, c_n = forward()
        total = np.sum(out * d_out) + np.sum(h_n * d_h_n)
        return total + (np.sum(c_n * d_c_n) if c_n is not None else 0.0)

    out, _, _ = forward()
    plain = make_module(cell, I, H, "float64", seed=5, **{**opts, "dropout": 0.0})
    plain_out = plain.forward(x, (h0, c0) if cell == "lstm" else h0, lengths=lengths)[0]
    assert not np.allclose(out, plain_out), "the mask must actually drop something"

    _backward_matches_finite_differences(m, cell, loss, x, h0, c0, d_out, d_h_n, d_c_n)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrent_dropout_gradients_match_finite_differences(cell):
    """The engine's backward with fixed recurrent masks against central differences of its own
    forward: every parameter (W_hh gate by gate), x, h0 and c0, on a stacked bidirectional
    network with lengths (and a projection and peepholes for the LSTM)."""
    rng = np.random.default_rng(8)
    T, B, I, H, L = 4, 3, 3, 4, 2
    opts = dict(num_layers=L, bidirectional=True)
    if cell == "lstm":
        opts.update(proj_size=3, peephole=True)
    m = make_module(cell, I, H, "float64", seed=6, **opts)
    D, S, ng = m.num_directions, m.state_size, (4 if cell == "lstm" else 3)
    x = rng.standard_normal((T, B, I))
    lengths = np.array([4, 1, 3])
    h0 = 0.5 * rng.standard_normal((L * D, B, S))
    c0 = 0.5 * rng.standard_normal((L * D, B, H))
    mask = (rng.random((L * D, B, ng * S)) >= 0.5) / 0.5
    d_out = rng.standard_normal((T, B, D * S))
    d_h_n = rng.standard_normal((L * D, B, S))
    d_c_n = rng.standard_normal((L * D, B, H))
    hx = (h0, c0) if cell == "lstm" else h0

    def loss():
        out, st = m.forward(x, hx, lengths=lengths, recurrent_mask=mask)
        if cell == "lstm":
            return np.sum(out * d_out) + np.sum(st[0] * d_h_n) + np.sum(st[1] * d_c_n)
        return np.sum(out * d_out) + np.sum(st * d_h_n)

    plain = m.forward(x, hx, lengths=lengths)[0]
    assert not np.allclose(m.forward(x, hx, lengths=lengths, recurrent_mask=mask)[0], plain)
    _backward_matches_finite_differences(m, cell, loss, x, h0, c0, d_out, d_h_n, d_c_n)


def test_recurrent_mask_bad_input_is_refused():
    m = fastlstm.LSTM(3, 4, num_layers=2, seed=0)
    x = np.zeros((5, 2, 3), np.float32)
    with pytest.raises(ValueError, match=r"recurrent_mask must have shape \(2, 2, 16\)"):
        m.forward(x, recurrent_mask=np.ones((2, 2, 12), np.float32))
    with pytest.raises(TypeError, match="recurrent_mask must hold real numbers"):
        m.forward(x, recurrent_mask=np.full((2, 2, 16), "a"))
    g = fastlstm.GRU(3, 4, seed=0)
    with pytest.raises(ValueError, match=r"recurrent_mask must have shape \(1, 2, 12\)"):
        g.forward(x, recurrent_mask=np.ones((1, 2, 16), np.float32))
    q = fastlstm.LSTM(3, 4, seed=0).quantize("bf16")
    with pytest.raises(ValueError, match="recurrent_mask needs float weights"):
        q.forward(x, train=False, recurrent_mask=np.ones((1, 2, 16), np.float32))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rows_a_multiple_of_4kb_apart_give_the_same_bits(cell):
    """A batch-first output of T * H = 1024 floats per row is the next step's h at that stride:
    the float32 step copies such rows to padded ones (once per step and thread) before its
    products. The results are the time-major call's bits (rows H apart, no copy), and close to
    the float64 reference."""
    rng = np.random.default_rng(11)
    T, B, I, H = 4, 7, 9, 256
    tm = make_module(cell, I, H, "float32", seed=12)
    bf = make_module(cell, I, H, "float32", seed=12, batch_first=True)
    bf.flat_params[:] = tm.flat_params
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    before = fastlstm.get_num_threads()
    for threads in (1, 2):
        fastlstm.set_num_threads(threads)
        try:
            out_t, _ = tm(x)
            out_b, _ = bf(np.ascontiguousarray(x.transpose(1, 0, 2)))
        finally:
            fastlstm.set_num_threads(before)
        np.testing.assert_array_equal(out_b.transpose(1, 0, 2), out_t)
    ref = make_module(cell, I, H, "float64", seed=12)
    ref.flat_params[:] = tm.flat_params.astype(np.float64)
    out64, _ = ref(x.astype(np.float64))
    assert_close(out_t, out64, TOL["float32"], "float32 against float64")


@pytest.mark.parametrize("H", [1, 8, 16, 32, 33, 48])
@pytest.mark.parametrize("cell,opts", [("lstm", {}), ("lstm", dict(peephole=True)),
                                       ("gru", {})])
def test_stream_at_the_register_kernel_sizes_is_the_sequence(cell, opts, H):
    """Batch-1 float32 streams of the sizes that have their own step kernels (compile-time sizes
    up to 32, one group stepped in place; 33 and 48: two groups, the second partial) give the
    sequence call's bits at every step, the state included."""
    rng = np.random.default_rng(H)
    m = make_module(cell, 3, H, "float32", seed=H, **opts)
    x = (2 * rng.standard_normal((12, 1, 3))).astype(np.float32)
    out, st = m(x)
    s = m.stream(batch=1)
    steps = np.stack([s.step(x[t]) for t in range(12)])
    np.testing.assert_array_equal(steps, out)
    h, c = s.state
    np.testing.assert_array_equal(h, st[0] if cell == "lstm" else st)
    if cell == "lstm":
        np.testing.assert_array_equal(c, st[1])


def test_stream_state_read_from_another_thread_is_never_torn():
    """step() runs with the GIL released; state() from another thread takes the stream's mutex
    too, so every state it reads is one that a step boundary had (never layer 0 after a step
    beside layer 1 before it). Without the mutex a reader lands inside steps and sees mixes."""
    import threading

    L, H, steps = 3, 384, 40
    m = fastlstm.LSTM(64, H, num_layers=L, dtype="float64", seed=11)
    xs = np.random.default_rng(12).standard_normal((steps, 1, 64))
    boundaries = []
    replay = m.stream()
    boundaries.append(replay.state)
    for x_t in xs:
        replay.step(x_t)
        boundaries.append(replay.state)

    stream = m.stream()
    done = threading.Event()
    seen = []

    def run():
        for x_t in xs:
            stream.step(x_t)
        done.set()

    worker = threading.Thread(target=run)
    worker.start()
    while not done.is_set():
        seen.append(stream.state)
    worker.join()
    assert seen
    for h, c in seen:
        assert any(np.array_equal(h, bh) and np.array_equal(c, bc) for bh, bc in boundaries)
