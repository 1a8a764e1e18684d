"""fastlstm against PyTorch golden fixtures (tests/data/torch_*.npz, made by
tests/data/make_torch_fixtures.py): outputs, final states, input/state gradients and every
parameter gradient, float64 tight and float32 loose. torch is not imported here."""

import glob
import json
import os

import numpy as np
import pytest

import fastlstm

DATA = os.path.join(os.path.dirname(__file__), "data")
FILES = sorted(glob.glob(os.path.join(DATA, "torch_*.npz")))
NAMES = [os.path.basename(f)[len("torch_"):-len(".npz")] for f in FILES]

EXPECTED = {
    "lstm_single",
    "lstm_single_h0",
    "lstm_batch_first",
    "lstm_stacked3",
    "lstm_bidir2",
    "lstm_proj_bidir",
    "lstm_nobias",
    "gru_single",
    "gru_stacked_bidir",
    "lstm_packed_bidir2",
    "gru_packed_bidir",
}


def test_every_fixture_is_present():
    assert set(NAMES) == EXPECTED


def load(name):
    with np.load(os.path.join(DATA, f"torch_{name}.npz")) as z:
        data = {k: z[k] for k in z.files}
    return json.loads(str(data.pop("config"))), data


def build(cfg, data, dtype):
    kwargs = dict(num_layers=cfg["num_layers"], bias=cfg["bias"],
                  batch_first=cfg["batch_first"], bidirectional=cfg["bidirectional"],
                  dtype=dtype, seed=0)
    if cfg["cell"] == "lstm":
        module = fastlstm.LSTM(cfg["input_size"], cfg["hidden_size"],
                               proj_size=cfg["proj_size"], **kwargs)
    else:
        module = fastlstm.GRU(cfg["input_size"], cfg["hidden_size"], **kwargs)
    params = {k[len("param."):]: v for k, v in data.items() if k.startswith("param.")}
    assert set(params) == set(module.params), "fixture and module disagree on parameter names"
    module.load_state_dict(params)
    return module


def run(cfg, data, dtype):
    """Forward (train) + backward; returns {key: result} under the fixture's keys."""
    module = build(cfg, data, dtype)
    lstm = cfg["cell"] == "lstm"
    hx = None
    if cfg["has_h0"]:
        hx = (data["h0"], data["c0"]) if lstm else data["h0"]
    lengths = data.get("lengths")
    res = {}
    if lstm:
        out, (h_n, c_n) = module.forward(data["x"], hx, lengths=lengths, train=True)
        d_x, (d_h0, d_c0) = module.backward(data["d_output"], data["d_h_n"], data["d_c_n"])
        res.update(c_n=c_n, d_c0=d_c0)
    else:
        out, h_n = module.forward(data["x"], hx, lengths=lengths, train=True)
        d_x, d_h0 = module.backward(data["d_output"], data["d_h_n"])
    res.update(output=out, h_n=h_n, d_x=d_x, d_h0=d_h0)
    for name, g in module.grads.items():
        res["grad." + name] = g
    for v in res.values():
        assert v.dtype == np.dtype(dtype)
    return res


def compared_keys(cfg, data):
    keys = ["output", "h_n", "d_x"] + [k for k in data if k.startswith("grad.")]
    if cfg["cell"] == "lstm":
        keys.append("c_n")
    if cfg["has_h0"]:
        keys.append("d_h0")
        if cfg["cell"] == "lstm":
            keys.append("d_c0")
    return keys


@pytest.mark.parametrize("name", NAMES)
def test_float64_matches_torch(name):
    cfg, data = load(name)
    res = run(cfg, data, "float64")
    keys = compared_keys(cfg, data)
    for key in keys:
        got, want = res[key], data[key]
        assert got.shape == want.shape, key
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=key)
    # a fixture whose gradients were all zero would compare nothing
    for key in keys:
        if key.startswith("grad."):
            assert np.any(data[key] != 0.0), key
    if cfg["lengths"] is not None:
        lengths = np.array(cfg["lengths"])
        out = res["output"] if not cfg["batch_first"] else res["output"].swapaxes(0, 1)
        for b, n in enumerate(lengths):
            assert np.all(out[n:, b] == 0.0), f"sequence {b} has output past its length {n}"


@pytest.mark.parametrize("name", NAMES)
def test_float32_matches_torch(name):
    cfg, data = load(name)
    res = run(cfg, data, "float32")
    for key in compared_keys(cfg, data):
        got, want = res[key].astype(np.float64), data[key]
        assert got.shape == want.shape, key
        err = np.max(np.abs(got - want))
        tol = 1e-5 * (1.0 + np.max(np.abs(want)))
        assert err <= tol, f"{key}: max error {err:.3g} > {tol:.3g}"


def test_packed_fixtures_have_unsorted_lengths():
    # the point of these fixtures is PyTorch's enforce_sorted=False path
    for name in NAMES:
        cfg, _ = load(name)
        if cfg["lengths"] is not None:
            lengths = cfg["lengths"]
            assert lengths != sorted(lengths, reverse=True)
            assert max(lengths) == 9 and min(lengths) == 1
