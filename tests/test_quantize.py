"""Low-precision inference: module.quantize("bf16" | "int8").

Accuracy against the float64 engine (itself checked against fastlstm.reference by the parity
tests), the quantization scheme against a NumPy emulation of it, every module option, streams,
and the refusals."""

import os
import subprocess
import sys

import numpy as np
import pytest

import fastlstm
from fastlstm.rnn import quantize_rows

PRECISIONS = ["bf16", "int8"]


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def float64_copy(m):
    opts = m._options()
    ref = type(m)(**dict(opts, dtype="float64"))
    ref.flat_params[...] = m.flat_params
    return ref


# --------------------------------------------------------------------------- accuracy (issue)
# the bounds, on the bench shapes with PyTorch's default initialization
# (U(-1/sqrt(H), 1/sqrt(H)), fastlstm's reset_parameters) and standard normal inputs, over all T
# outputs, against float64
BOUNDS = {"bf16": (0.003, None), "int8": (0.015, 0.002)}
SHAPES = {  # B, T, I, H, L
    "stream_b1": (1, 1000, 64, 256, 1),
    "batch_inf": (64, 100, 128, 512, 2),
}


def errors(name, precision, seed=0):
    B, T, I, H, L = SHAPES[name]
    m = fastlstm.LSTM(I, H, num_layers=L, seed=seed)
    x = np.random.default_rng(seed).standard_normal((T, B, I)).astype(np.float32)
    y64, _ = float64_copy(m)(x.astype(np.float64))
    yq, (hq, cq) = m.quantize(precision)(x)
    assert yq.dtype == np.float32 and hq.dtype == np.float32
    err = np.abs(yq - y64)
    return err.max(), err.mean()


@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("precision", PRECISIONS)
def test_accuracy_bounds(name, precision):
    mx, mean = errors(name, precision)
    max_bound, mean_bound = BOUNDS[precision]
    assert mx <= max_bound, (mx, mean)
    if mean_bound is not None:
        assert mean <= mean_bound, (mx, mean)
    # and it is low precision: farther from float64 than float32 is
    assert mx > 1e-5


# --------------------------------------------------------------------------- the scheme itself
def emulate_lstm(m, x, precision):
    """One-layer LSTM with the products computed as the scheme says, in float64."""
    p = {k: v.astype(np.float64) for k, v in m.params.items()}  # already quantized values
    T, B, _ = x.shape
    H = m.hidden_size
    h = np.zeros((B, H))
    c = np.zeros((B, H))

    def q_rows(a):
        if precision == "bf16":
            return quantize_rows(a.astype(np.float32), "bf16")[0].astype(np.float64)
        return quantize_rows(a.astype(np.float32), "int8")[0].astype(np.float64)

    out = []
    for t in range(T):
        g = (q_rows(x[t]) @ p["weight_ih_l0"].T + p["bias_ih_l0"] +
             q_rows(h) @ p["weight_hh_l0"].T + p["bias_hh_l0"])
        i, f, gg, o = np.split(g, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(gg)
        h = sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.stack(out)


# (T, B): a short sequence (the input projected for all steps at once) and one long enough
# that the engine projects the input per step, where an LSTM's two products of a step run as
# one (kernels' gemm_lowp_q2), with a row count that is not a multiple of the AMX tile's 16;
# batch 1: every step through the low-precision step kernel (lowp_step.hpp)
@pytest.mark.parametrize("T, B", [(7, 3), (30, 41), (40, 1)])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_scheme_matches_emulation(precision, T, B):
    m = fastlstm.LSTM(19, 40, seed=5)
    x = np.random.default_rng(5).standard_normal((T, B, 19)).astype(np.float32)
    q = m.quantize(precision)
    y, _ = q(x)
    emu = emulate_lstm(q, x, precision)
    # the float path is farther: the difference is the quantization of the activations
    y64, _ = float64_copy(q)(x.astype(np.float64))
    assert np.abs(y64 - emu).max() > 4 * np.abs(y - emu).max()
    # bf16: over a longer sequence of many rows, float32 sums a last bit apart (the emulation
    # adds in float64) now and then round an element of h to the neighbouring bf16 value
    bf16_bound = 2e-5 if T * B < 100 else 1e-4
    assert np.abs(y - emu).max() < (bf16_bound if precision == "bf16" else 1e-3)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_weights_are_quantized(precision):
    m = fastlstm.LSTM(10, 33, proj_size=5, seed=1)
    q = m.quantize(precision)
    for name, w in q.params.items():
        src = m.params[name]
        if name.startswith(("weight_ih", "weight_hh", "weight_hr")):
            if precision == "bf16":
                assert np.all(w.view(np.uint32) & 0xFFFF == 0)
                assert np.abs(w - src).max() <= np.abs(src).max() * 2.0**-8
            else:
                scale = np.abs(src).max(axis=1) / 127
                levels = w / scale[:, None]
                assert np.allclose(levels, np.rint(levels), atol=1e-3)
                assert np.abs(levels).max() <= 127.001
        else:  # biases and peepholes stay float32
            np.testing.assert_array_equal(w, src)


# --------------------------------------------------------------------------- every option
OPTIONS = [
    (fastlstm.LSTM, dict(num_layers=2, bidirectional=True)),
    (fastlstm.LSTM, dict(proj_size=11)),
    (fastlstm.LSTM, dict(peephole=True, bias=False)),
    (fastlstm.LSTM, dict(batch_first=True, num_layers=3)),
    (fastlstm.GRU, dict(num_layers=2, bidirectional=True)),
    (fastlstm.GRU, dict(bias=False)),
]


@pytest.mark.parametrize("cls,opts", OPTIONS)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_option_with_lengths_and_state(cls, opts, precision):
    m = cls(17, 45, seed=2, **opts)
    before = m.flat_params.copy()
    q = m.quantize(precision)
    assert type(q) is cls and q.precision == precision and q.quantized
    assert q.batch_first == m.batch_first and q.num_layers == m.num_layers
    np.testing.assert_array_equal(m.flat_params, before)  # the float module is untouched
    rng = np.random.default_rng(3)
    B, T = 5, 12
    x = rng.standard_normal((B, T, 17) if m.batch_first else (T, B, 17)).astype(np.float32)
    lengths = np.array([12, 3, 7, 12, 1])
    LD = m.num_layers * m.num_directions
    h0 = rng.standard_normal((LD, B, m.state_size)).astype(np.float32) * 0.5
    if cls is fastlstm.LSTM:
        hx = (h0, rng.standard_normal((LD, B, m.hidden_size)).astype(np.float32) * 0.5)
    else:
        hx = h0
    y, hn = q(x, hx, lengths=lengths)
    y_ref, hn_ref = float64_copy(m)(x.astype(np.float64), hx, lengths=lengths)
    assert y.dtype == np.float32
    tol = 0.01 if precision == "bf16" else 0.03
    np.testing.assert_allclose(y, y_ref, atol=tol)
    states = hn if isinstance(hn, tuple) else (hn,)
    states_ref = hn_ref if isinstance(hn_ref, tuple) else (hn_ref,)
    for a, b in zip(states, states_ref):
        np.testing.assert_allclose(a, b, atol=tol)
    # past each length: zeros
    for b, n in enumerate(lengths):
        tail = y[b, n:] if m.batch_first else y[n:, b]
        assert not tail.any()


@pytest.mark.parametrize("cls", [fastlstm.LSTM, fastlstm.GRU])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_stream_matches_sequence(cls, precision):
    m = cls(16, 70, num_layers=2, seed=4)
    q = m.quantize(precision)
    x = np.random.default_rng(4).standard_normal((30, 2, 16)).astype(np.float32)
    y, _ = q(x)
    s = q.stream(2)
    ys = np.stack([s.step(x[t]) for t in range(30)])
    assert ys.dtype == np.float32
    # the same products (per-row quantization: a row's result does not depend on the others)
    np.testing.assert_allclose(ys, y, atol=1e-5)


def test_float64_module_quantizes():
    m = fastlstm.LSTM(8, 20, dtype="float64", seed=0)
    q = m.quantize("int8")
    assert q.dtype == np.float32 and q.precision == "int8"
    x = np.random.default_rng(0).standard_normal((6, 2, 8))
    y, _ = q(x)
    y64, _ = m(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, y64, atol=0.02)


def test_refusals():
    m = fastlstm.LSTM(4, 8)
    q = m.quantize("bf16")
    x = np.zeros((3, 1, 4), np.float32)
    with pytest.raises(RuntimeError, match="inference only"):
        q.forward(x, train=True)
    with pytest.raises(RuntimeError, match="inference only"):
        q.backward(np.zeros((3, 1, 8), np.float32))
    with pytest.raises(ValueError, match="'bf16' or 'int8'"):
        m.quantize("fp16")
    with pytest.raises(ValueError, match="already quantized"):
        q.quantize("int8")
    m.params["weight_hh_l0"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        m.quantize("int8")
    assert "precision='bf16'" in repr(q)


def test_zero_rows_and_inputs():
    # an all-zero weight row and all-zero inputs quantize with scale 0: no NaN
    m = fastlstm.GRU(5, 9, seed=0)
    m.params["weight_ih_l0"][3] = 0
    q = m.quantize("int8")
    y, h = q(np.zeros((4, 2, 5), np.float32))
    y_ref, _ = float64_copy(m)(np.zeros((4, 2, 5)))
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, y_ref, atol=0.01)


INT8_BITS = """
import hashlib, numpy as np, fastlstm
h = hashlib.sha256()
rng = np.random.default_rng(0)
# the batch-1, small-batch and (amx) tile paths; T = 9: the input projected for all steps at
# once, T = 120: per step (an LSTM's two products in one pass)
for T, B in ((9, 1), (9, 3), (9, 40), (120, 9), (120, 40)):
    m = fastlstm.LSTM(70, 96, num_layers=2, proj_size=40, seed=1).quantize("int8")
    y, (hn, cn) = m(rng.standard_normal((T, B, 70)).astype(np.float32))
    h.update(y.tobytes())
    g = fastlstm.GRU(70, 96, seed=1).quantize("int8")
    h.update(g(rng.standard_normal((T, B, 70)).astype(np.float32))[0].tobytes())
print(h.hexdigest())
"""

BF16_ERR = """
import numpy as np, fastlstm
m = fastlstm.LSTM(64, 256, num_layers=2, seed=0)
x = np.random.default_rng(0).standard_normal((50, 24, 64)).astype(np.float32)
m64 = fastlstm.LSTM(64, 256, num_layers=2, dtype="float64")
m64.flat_params[...] = m.flat_params
y64, _ = m64(x.astype(np.float64))
for p in ("bf16", "int8"):
    y, _ = m.quantize(p)(x)
    print(p, float(np.abs(y - y64).max()))
"""


def _levels():
    return fastlstm.cpu_info()["levels"]


def _run(code, level):
    env = dict(os.environ, FASTLSTM_CPU=level)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_int8_bits_identical_at_every_level():
    """int32 accumulation is exact: every level (VNNI, AMX tiles or plain loops) gives the
    same bits."""
    digests = {lv: _run(INT8_BITS, lv).strip() for lv in _levels()}
    assert len(set(digests.values())) == 1, digests


BF16_BITS = INT8_BITS.replace('quantize("int8")', 'quantize("bf16")')


def test_bf16_bits_identical_at_the_levels_without_bf16_instructions():
    """The levels without AVX512_BF16 run one arithmetic: the plain loops (generic) and their
    AVX2 vectors (avx2, avx512: a pair split by a shift and a mask, two FMAs in the plain loops'
    order) give the same bits, batch 1, small batches and per-step products alike."""
    plain = [lv for lv in _levels() if lv in ("generic", "avx2", "avx512")]
    assert "generic" in plain
    digests = {lv: _run(BF16_BITS, lv).strip() for lv in plain}
    assert len(set(digests.values())) == 1, digests


STREAM_BITS = """
import hashlib, numpy as np, fastlstm
h = hashlib.sha256()
rng = np.random.default_rng(3)
nets = [fastlstm.LSTM(19, 70, num_layers=2, seed=2),
        fastlstm.LSTM(5, 33, proj_size=7, peephole=True, seed=2),
        fastlstm.GRU(67, 40, seed=2), fastlstm.GRU(3, 9, bias=False, seed=2),
        fastlstm.LSTM(120, 100, seed=2)]  # groups too large to pair, an odd count of them
for p in ("bf16", "int8"):
    for m in nets:
        q = m.quantize(p)
        x = rng.standard_normal((25, 1, m.input_size)).astype(np.float32)
        y, _ = q(x)
        s = q.stream(1)
        ys = np.stack([s.step(x[t]) for t in range(25)])
        assert np.array_equal(ys, y), (p, repr(m), float(np.abs(ys - y).max()))
        # odd steps visit the groups last to first: the call split after step 1 runs every
        # later step in the other order, with the same bits
        y1, hx = q(x[:1])
        y2, _ = q(x[1:], hx)
        assert np.array_equal(np.concatenate([y1, y2]), y), (p, repr(m))
        if p == "int8":
            h.update(y.tobytes())
print(h.hexdigest())
"""


def test_batch1_stream_is_the_sequence_at_every_level():
    """At batch 1 the sequence call and the stream run the one low-precision step kernel: a
    stream's outputs are the sequence's bits, at every level; int8 the same bits at every level
    (exact int32 sums)."""
    digests = {lv: _run(STREAM_BITS, lv).strip() for lv in _levels()}
    assert len(set(digests.values())) == 1, digests


def test_accuracy_at_every_level():
    for lv in _levels():
        for line in _run(BF16_ERR, lv).split("\n"):
            if line:
                p, err = line.split()
                assert float(err) <= BOUNDS[p][0], (lv, p, err)


# --------------------------------------------------------------------------- Keras-shaped models
@pytest.mark.parametrize("precision", PRECISIONS)
def test_model_quantize_in_place(precision, tmp_path, capsys):
    from fastlstm import Sequential
    from fastlstm.layers import GRU, LSTM, Bidirectional, Dense, Input

    model = Sequential([Input((7, 5)), LSTM(16, return_sequences=True),
                        Bidirectional(GRU(8)), Dense(3)])
    model.compile(loss="mse")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 7, 5)).astype(np.float32)
    y = rng.standard_normal((20, 3)).astype(np.float32)
    p_float = model.predict(x, verbose=0)
    loss_float = model.evaluate(x, y, verbose=0)
    model.summary()
    bytes_float = int(capsys.readouterr().out.split("Weights: ")[1].split()[0].replace(",", ""))
    assert model.precision == "float32"
    model.quantize(precision)
    assert model.precision == precision
    assert [getattr(l, "precision", None) for l in model.layers[:2]] == [precision] * 2
    p_q = model.predict(x, verbose=0)
    diff = np.abs(p_q - p_float).max()
    assert 1e-6 < diff < 0.02
    assert abs(model.evaluate(x, y, verbose=0) - loss_float) < 0.02
    model.summary()
    out = capsys.readouterr().out
    assert f"(LSTM, {precision})" in out and f"(Bidirectional, {precision})" in out
    bytes_q = int(out.split("Weights: ")[1].split()[0].replace(",", ""))
    assert bytes_q < 0.7 * bytes_float
    with pytest.raises(RuntimeError, match="inference only"):
        model.fit(x, y, verbose=0)
    with pytest.raises(RuntimeError, match="inference only"):
        model.train_on_batch(x, y)
    with pytest.raises(ValueError, match="already quantized"):
        model.quantize("int8")
    # saving and loading: tests/test_quantized_files.py
    model.save(str(tmp_path / "q.safetensors"))
    assert fastlstm.load_model(str(tmp_path / "q.safetensors")).precision == precision


def test_model_quantize_refusals():
    from fastlstm import Sequential
    from fastlstm.layers import Dense, Input

    dense_only = Sequential([Input((4,)), Dense(2)])
    with pytest.raises(ValueError, match="no recurrent layer"):
        dense_only.quantize("int8")
    with pytest.raises(ValueError, match="not been built"):
        Sequential().quantize("int8")
