"""The NumPy oracle (fastlstm.reference) checked on its own terms, independently of the engine:

- its backward against central finite differences of its forward, for every parameter, x, h0
  and c0, on every variant;
- its semantics against things it does not compute itself: the committed PyTorch fixtures,
  one step written out in scalar math, per-sequence runs without padding for lengths, the
  reverse direction as the forward direction on the flipped sequence, and layouts.
"""

from __future__ import annotations

import glob
import json
import math
import os

import numpy as np
import pytest

from fastlstm import reference as R
from gradcheck import numerical_gradient

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


# ------------------------------------------------------------------------------------ helpers
def make_params(rng, cell, I, H, L=1, D=1, P=0, peephole=False, bias=True):
    """Random parameters under PyTorch's names, shapes written out here (not taken from the
    reference) so that a wrong shape in the reference shows up."""
    G = (4 if cell == "lstm" else 3) * H
    S = P or H
    params = {}
    for k in range(L):
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            params["weight_ih" + sfx] = rng.uniform(-0.6, 0.6, (G, I if k == 0 else D * S))
            params["weight_hh" + sfx] = rng.uniform(-0.6, 0.6, (G, S))
            if bias:
                params["bias_ih" + sfx] = rng.uniform(-0.6, 0.6, G)
                params["bias_hh" + sfx] = rng.uniform(-0.6, 0.6, G)
            if P:
                params["weight_hr" + sfx] = rng.uniform(-0.6, 0.6, (P, H))
            if peephole:
                for name in ("weight_ci", "weight_cf", "weight_co"):
                    params[name + sfx] = rng.uniform(-0.6, 0.6, H)
    return params


def assert_close(actual, expected, tol, what=""):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    err = np.max(np.abs(actual - expected), initial=0.0)
    scale = 1.0 + np.max(np.abs(expected), initial=0.0)
    assert err <= tol * scale, f"{what}: max error {err:.3e} > {tol:g} * {scale:.3g}"


# ------------------------------------------------------------------------ finite differences
# name -> (cell, I, H, T, B, options, with initial state)
FD_CASES = {
    "lstm": ("lstm", 3, 5, 4, 2, dict(), True),
    "lstm_no_state": ("lstm", 3, 5, 4, 2, dict(), False),
    "lstm_no_bias": ("lstm", 3, 5, 3, 2, dict(bias=False), True),
    "peephole": ("lstm", 3, 5, 4, 3, dict(peephole=True), True),
    "projection": ("lstm", 3, 5, 4, 2, dict(proj_size=3), True),
    "stacked_bidirectional": ("lstm", 3, 3, 3, 2, dict(num_layers=2, bidirectional=True), True),
    "lengths_unsorted": ("lstm", 2, 3, 5, 3,
                         dict(bidirectional=True, lengths=[3, 5, 1]), True),
    "batch_first": ("lstm", 3, 3, 4, 2,
                    dict(batch_first=True, bidirectional=True, lengths=[2, 4]), True),
    "dropout_masks": ("lstm", 3, 3, 3, 2, dict(num_layers=3, dropout=0.4), True),
    "all_together": ("lstm", 2, 3, 4, 3,
                     dict(num_layers=2, bidirectional=True, proj_size=2, peephole=True,
                          lengths=[4, 1, 3], dropout=0.3), True),
    "gru": ("gru", 3, 5, 4, 2, dict(), True),
    "gru_stacked_bidirectional_lengths": ("gru", 2, 3, 5, 3,
                                          dict(num_layers=2, bidirectional=True,
                                               lengths=[2, 5, 1]), True),
    "gru_batch_first_dropout": ("gru", 3, 3, 3, 2,
                                dict(batch_first=True, num_layers=2, dropout=0.5), True),
    # recurrent dropout: per-gate masks on h_prev in the recurrent product
    "recurrent_dropout": ("lstm", 3, 4, 4, 3, dict(recurrent_dropout=0.4), True),
    "recurrent_dropout_all_together": ("lstm", 2, 3, 4, 3,
                                       dict(num_layers=2, bidirectional=True, proj_size=2,
                                            peephole=True, lengths=[4, 1, 3],
                                            recurrent_dropout=0.3), True),
    "gru_recurrent_dropout": ("gru", 3, 4, 4, 3,
                              dict(bidirectional=True, lengths=[2, 4, 3],
                                   recurrent_dropout=0.4), True),
}


def _setup(rng, cell, I, H, T, B, opts, with_state):
    """Builds params, inputs, upstream gradients and keyword arguments of one case."""
    opts = dict(opts)
    L = opts.get("num_layers", 1)
    D = 2 if opts.get("bidirectional", False) else 1
    P = opts.get("proj_size", 0)
    S = P or H
    bf = opts.get("batch_first", False)
    params = make_params(rng, cell, I, H, L, D, P, opts.get("peephole", False),
                         opts.pop("bias", True))
    p = opts.pop("dropout", 0.0)
    if p:
        shape = (B, T, D * S) if bf else (T, B, D * S)
        opts["dropout_masks"] = [(rng.random(shape) >= p) / (1 - p) for _ in range(L - 1)]
    r = opts.pop("recurrent_dropout", 0.0)
    if r:
        ng = 4 if cell == "lstm" else 3
        opts["recurrent_masks"] = (rng.random((L * D, B, ng * S)) >= r) / (1 - r)
    if "lengths" in opts:
        opts["lengths"] = np.array(opts["lengths"])
    x = rng.standard_normal((B, T, I) if bf else (T, B, I))
    states = {}
    if with_state:
        states["h0"] = 0.5 * rng.standard_normal((L * D, B, S))
        if cell == "lstm":
            states["c0"] = 0.5 * rng.standard_normal((L * D, B, H))
    d_out = rng.standard_normal((B, T, D * S) if bf else (T, B, D * S))
    d_h_n = rng.standard_normal((L * D, B, S))
    d_c_n = rng.standard_normal((L * D, B, H)) if cell == "lstm" else None
    return params, x, states, opts, d_out, d_h_n, d_c_n


@pytest.mark.parametrize("case", sorted(FD_CASES))
def test_backward_matches_finite_differences(case):
    cell, I, H, T, B, opts, with_state = FD_CASES[case]
    rng = np.random.default_rng(sorted(FD_CASES).index(case))
    params, x, states, opts, d_out, d_h_n, d_c_n = _setup(rng, cell, I, H, T, B, opts,
                                                          with_state)

    def run():
        if cell == "lstm":
            out, h_n, c_n, cache = R.lstm_forward(params, x, states.get("h0"), states.get("c0"),
                                                  **opts)
            return out, (h_n, c_n), cache
        out, h_n, cache = R.gru_forward(params, x, states.get("h0"), **opts)
        return out, (h_n,), cache

    def loss():
        out, st, _ = run()
        total = np.sum(out * d_out) + np.sum(st[0] * d_h_n)
        if cell == "lstm":
            total += np.sum(st[1] * d_c_n)
        return total

    _, _, cache = run()
    if cell == "lstm":
        d_x, d_h0, d_c0, grads = R.lstm_backward(cache, d_out, d_h_n, d_c_n)
        analytic = {"x": d_x, "h0": d_h0, "c0": d_c0}
    else:
        d_x, d_h0, grads = R.gru_backward(cache, d_out, d_h_n)
        analytic = {"x": d_x, "h0": d_h0}
    assert sorted(grads) == sorted(params)

    targets = {"x": x, **states, **params}
    for name, arr in targets.items():
        expected = numerical_gradient(loss, arr)
        got = grads[name] if name in params else analytic[name]
        assert_close(got, expected, 1e-6, f"{case}: d_{name}")
        # every gradient is exercised by the case (a zero one would pass vacuously)
        assert np.any(expected != 0), f"{case}: d_{name} is identically zero"


def test_state_gradients_are_returned_without_initial_state():
    """d_h0/d_c0 are the gradients w.r.t. the zero state: equal to passing zeros explicitly."""
    rng = np.random.default_rng(7)
    params = make_params(rng, "lstm", 3, 5)
    x = rng.standard_normal((4, 2, 3))
    d_out = rng.standard_normal((4, 2, 5))
    _, _, _, cache = R.lstm_forward(params, x)
    implicit = R.lstm_backward(cache, d_out)
    zeros_h, zeros_c = np.zeros((1, 2, 5)), np.zeros((1, 2, 5))
    _, _, _, cache = R.lstm_forward(params, x, zeros_h, zeros_c)
    explicit = R.lstm_backward(cache, d_out)
    for a, b in zip(implicit[:3], explicit[:3]):
        np.testing.assert_array_equal(a, b)
    assert np.any(implicit[1] != 0)


# ------------------------------------------------------------------------- against PyTorch
FIXTURES = sorted(glob.glob(os.path.join(DATA, "torch_*.npz")))


@pytest.mark.parametrize("path", FIXTURES, ids=[os.path.basename(p)[6:-4] for p in FIXTURES])
def test_matches_torch_fixture(path):
    """Forward and every gradient of the committed PyTorch float64 fixtures, to 1e-10."""
    data = np.load(path)
    cfg = json.loads(str(data["config"]))
    params = {k[6:]: data[k] for k in data.files if k.startswith("param.")}
    kw = dict(num_layers=cfg["num_layers"], bidirectional=cfg["bidirectional"],
              lengths=data["lengths"] if "lengths" in data.files else None,
              batch_first=cfg["batch_first"])
    h0 = data["h0"] if "h0" in data.files else None
    if cfg["cell"] == "lstm":
        c0 = data["c0"] if "c0" in data.files else None
        out, h_n, c_n, cache = R.lstm_forward(params, data["x"], h0, c0,
                                              proj_size=cfg["proj_size"], **kw)
        d_x, d_h0, d_c0, grads = R.lstm_backward(cache, data["d_output"], data["d_h_n"],
                                                 data["d_c_n"])
        assert_close(c_n, data["c_n"], 1e-10, "c_n")
        if "d_c0" in data.files:
            assert_close(d_c0, data["d_c0"], 1e-10, "d_c0")
    else:
        out, h_n, cache = R.gru_forward(params, data["x"], h0, **kw)
        d_x, d_h0, grads = R.gru_backward(cache, data["d_output"], data["d_h_n"])
    assert_close(out, data["output"], 1e-10, "output")
    assert_close(h_n, data["h_n"], 1e-10, "h_n")
    assert_close(d_x, data["d_x"], 1e-10, "d_x")
    if "d_h0" in data.files:
        assert_close(d_h0, data["d_h0"], 1e-10, "d_h0")
    assert sorted(grads) == sorted(params)
    for name in params:
        assert_close(grads[name], data["grad." + name], 1e-10, "grad." + name)


# ------------------------------------------------------------------ semantics, independently
def _sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def test_one_lstm_step_in_scalar_math():
    """H=1, I=1, P=1 with peephole: the gate order (i, f, g, o), the peephole terms (i, f on
    c_prev, o on the new c) and the projection, written out by hand."""
    rng = np.random.default_rng(3)
    params = make_params(rng, "lstm", 1, 1, P=1, peephole=True)
    W, U = params["weight_ih_l0"][:, 0], params["weight_hh_l0"][:, 0]
    b = params["bias_ih_l0"] + params["bias_hh_l0"]
    x, h, c = 0.7, -0.4, 0.9
    pre = [W[k] * x + U[k] * h + b[k] for k in range(4)]
    i = _sig(pre[0] + params["weight_ci_l0"][0] * c)
    f = _sig(pre[1] + params["weight_cf_l0"][0] * c)
    g = math.tanh(pre[2])
    c_new = f * c + i * g
    o = _sig(pre[3] + params["weight_co_l0"][0] * c_new)
    h_new = params["weight_hr_l0"][0, 0] * o * math.tanh(c_new)
    out, h_n, c_n, _ = R.lstm_forward(params, [[[x]]], [[[h]]], [[[c]]], proj_size=1,
                                      peephole=True)
    assert out[0, 0, 0] == pytest.approx(h_new, rel=1e-14)
    assert h_n[0, 0, 0] == pytest.approx(h_new, rel=1e-14)
    assert c_n[0, 0, 0] == pytest.approx(c_new, rel=1e-14)


def test_one_gru_step_in_scalar_math():
    """H=1, I=1: gate order (r, z, n) and r applied to (W_hn h + b_hn), written out by hand."""
    rng = np.random.default_rng(4)
    params = make_params(rng, "gru", 1, 1)
    W, U = params["weight_ih_l0"][:, 0], params["weight_hh_l0"][:, 0]
    bi, bh = params["bias_ih_l0"], params["bias_hh_l0"]
    x, h = -0.3, 0.8
    r = _sig(W[0] * x + bi[0] + U[0] * h + bh[0])
    z = _sig(W[1] * x + bi[1] + U[1] * h + bh[1])
    n = math.tanh(W[2] * x + bi[2] + r * (U[2] * h + bh[2]))
    h_new = (1 - z) * n + z * h
    out, h_n, _ = R.gru_forward(params, [[[x]]], [[[h]]])
    assert out[0, 0, 0] == pytest.approx(h_new, rel=1e-14)
    assert h_n[0, 0, 0] == pytest.approx(h_new, rel=1e-14)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_lengths_equal_separate_unpadded_runs(cell):
    """A padded batch with lengths gives, for each sequence, exactly the run of that sequence
    alone and unpadded (both directions, stacked), zeros past its length, and its h_n/c_n."""
    rng = np.random.default_rng(5)
    T, B, I, H, L = 6, 4, 3, 5, 2
    lengths = np.array([4, 6, 1, 3])
    params = make_params(rng, cell, I, H, L=L, D=2)
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((2 * L, B, H))
    c0 = rng.standard_normal((2 * L, B, H))

    def run(x_, h0_, c0_, lengths_=None):
        kw = dict(num_layers=L, bidirectional=True, lengths=lengths_)
        if cell == "lstm":
            out, h_n, c_n, _ = R.lstm_forward(params, x_, h0_, c0_, **kw)
            return out, h_n, c_n
        out, h_n, _ = R.gru_forward(params, x_, h0_, **kw)
        return out, h_n, None

    out, h_n, c_n = run(x, h0, c0, lengths)
    for b, n in enumerate(lengths):
        sl = slice(b, b + 1)
        out_b, h_b, c_b = run(x[:n, sl], h0[:, sl], c0[:, sl])
        np.testing.assert_allclose(out[:n, sl], out_b, rtol=0, atol=1e-14)
        assert np.all(out[n:, b] == 0)
        np.testing.assert_allclose(h_n[:, sl], h_b, rtol=0, atol=1e-14)
        if c_n is not None:
            np.testing.assert_allclose(c_n[:, sl], c_b, rtol=0, atol=1e-14)


def test_reverse_direction_is_forward_on_flipped_sequence():
    rng = np.random.default_rng(6)
    T, B, I, H = 5, 2, 3, 4
    params = make_params(rng, "lstm", I, H, D=2, P=2, peephole=True)
    x = rng.standard_normal((T, B, I))
    out, h_n, c_n, _ = R.lstm_forward(params, x, bidirectional=True, proj_size=2,
                                      peephole=True)
    reverse_as_forward = {k.replace("_reverse", ""): v for k, v in params.items()
                          if k.endswith("_reverse")}
    out_r, h_r, c_r, _ = R.lstm_forward(reverse_as_forward, x[::-1], proj_size=2,
                                        peephole=True)
    np.testing.assert_allclose(out[:, :, 2:], out_r[::-1], rtol=0, atol=1e-14)
    np.testing.assert_allclose(h_n[1], h_r[0], rtol=0, atol=1e-14)
    np.testing.assert_allclose(c_n[1], c_r[0], rtol=0, atol=1e-14)


def test_batch_first_is_a_transpose():
    rng = np.random.default_rng(8)
    params = make_params(rng, "gru", 3, 4, L=2, D=2)
    x = rng.standard_normal((5, 2, 3))
    masks = [(rng.random((5, 2, 8)) > 0.5) * 2.0]
    kw = dict(num_layers=2, bidirectional=True, lengths=np.array([3, 5]))
    out_t, h_t, cache_t = R.gru_forward(params, x, dropout_masks=masks, **kw)
    out_b, h_b, cache_b = R.gru_forward(params, x.transpose(1, 0, 2), batch_first=True,
                                        dropout_masks=[m.transpose(1, 0, 2) for m in masks],
                                        **kw)
    np.testing.assert_array_equal(out_b, out_t.transpose(1, 0, 2))
    np.testing.assert_array_equal(h_b, h_t)
    d_out = rng.standard_normal(out_t.shape)
    d_x_t, _, _ = R.gru_backward(cache_t, d_out)
    d_x_b, _, _ = R.gru_backward(cache_b, d_out.transpose(1, 0, 2))
    np.testing.assert_array_equal(d_x_b, d_x_t.transpose(1, 0, 2))


def test_dropout_mask_multiplies_the_layer_input():
    """Layer 1 with a mask m sees m * (layer 0's output): the same as running layer 1 alone on
    that product."""
    rng = np.random.default_rng(9)
    params = make_params(rng, "lstm", 3, 4, L=2)
    x = rng.standard_normal((5, 2, 3))
    mask = (rng.random((5, 2, 4)) > 0.3) / 0.7
    out, _, _, _ = R.lstm_forward(params, x, num_layers=2, dropout_masks=[mask])
    layer0 = {k: v for k, v in params.items() if k.endswith("_l0")}
    layer1 = {k.replace("_l1", "_l0"): v for k, v in params.items() if k.endswith("_l1")}
    out0, _, _, _ = R.lstm_forward(layer0, x)
    out1, _, _, _ = R.lstm_forward(layer1, out0 * mask)
    np.testing.assert_allclose(out, out1, rtol=0, atol=1e-14)


def test_bad_arguments_raise_clear_errors():
    rng = np.random.default_rng(10)
    params = make_params(rng, "lstm", 3, 4)
    x = rng.standard_normal((5, 2, 3))
    with pytest.raises(ValueError, match="h0"):
        R.lstm_forward(params, x, np.zeros((1, 3, 4)))
    with pytest.raises(KeyError, match="weight_hr_l0"):
        R.lstm_forward(params, x, proj_size=2)
    with pytest.raises(ValueError, match=r"params\['weight_ih_l0'\]"):
        R.lstm_forward(params, rng.standard_normal((5, 2, 4)))
    with pytest.raises(ValueError, match="lengths"):
        R.lstm_forward(params, x, lengths=np.array([0, 5]))
    with pytest.raises(ValueError, match="dropout_masks"):
        R.lstm_forward(params, x, dropout_masks=[np.ones((5, 2, 4))])


def test_recurrent_masks_multiply_each_gates_recurrent_input():
    """One LSTM and one GRU step written out with the masks: gate g's pre-activation is
    x W_ih_g^T + b_ih_g + (h_prev * m_g) W_hh_g^T + b_hh_g; the GRU's z * h_prev and the LSTM's
    cell state use h_prev unmasked. Masks of ones are the unmasked network."""
    rng = np.random.default_rng(31)
    I, H, B = 3, 4, 2
    for cell, ng in (("lstm", 4), ("gru", 3)):
        params = make_params(rng, cell, I, H)
        x = rng.standard_normal((1, B, I))
        h0 = rng.standard_normal((1, B, H))
        c0 = rng.standard_normal((1, B, H))
        m = (rng.random((1, B, ng * H)) >= 0.5) / 0.5
        w_ih, w_hh = params["weight_ih_l0"], params["weight_hh_l0"]
        b = params["bias_ih_l0"] + params["bias_hh_l0"]
        pre = [x[0] @ w_ih[g * H:(g + 1) * H].T + (h0[0] * m[0, :, g * H:(g + 1) * H])
               @ w_hh[g * H:(g + 1) * H].T for g in range(ng)]
        if cell == "lstm":
            i, f, g_, o = (R.sigmoid(pre[0] + b[:H]), R.sigmoid(pre[1] + b[H:2 * H]),
                           np.tanh(pre[2] + b[2 * H:3 * H]), R.sigmoid(pre[3] + b[3 * H:]))
            c = f * c0[0] + i * g_
            want = o * np.tanh(c)
            out, h_n, c_n, _ = R.lstm_forward(params, x, h0, c0, recurrent_masks=m)
            ones = R.lstm_forward(params, x, h0, c0, recurrent_masks=np.ones_like(m))[0]
            plain = R.lstm_forward(params, x, h0, c0)[0]
            assert_close(c_n[0], c, 1e-12, "c")
        else:
            bi, bh = params["bias_ih_l0"], params["bias_hh_l0"]
            r = R.sigmoid(pre[0] + bi[:H] + bh[:H])
            z = R.sigmoid(pre[1] + bi[H:2 * H] + bh[H:2 * H])
            hn = (h0[0] * m[0, :, 2 * H:]) @ w_hh[2 * H:].T + bh[2 * H:]
            n = np.tanh(x[0] @ w_ih[2 * H:].T + bi[2 * H:] + r * hn)
            want = (1 - z) * n + z * h0[0]
            out, h_n, _ = R.gru_forward(params, x, h0, recurrent_masks=m)
            ones = R.gru_forward(params, x, h0, recurrent_masks=np.ones_like(m))[0]
            plain = R.gru_forward(params, x, h0)[0]
        assert_close(out[0], want, 1e-12, f"{cell} h")
        np.testing.assert_array_equal(ones, plain)
        assert not np.allclose(out, plain)
    with pytest.raises(ValueError, match="recurrent_masks must have shape"):
        R.lstm_forward(make_params(rng, "lstm", I, H), x, h0, c0,
                       recurrent_masks=np.ones((1, B, 3 * H)))  # 3 gates' masks for 4
