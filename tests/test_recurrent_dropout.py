"""Keras's ``recurrent_dropout`` on the LSTM/GRU layers: the masks (keep rate, one per sequence
and gate, fixed over the steps of a call, new for every batch, reproducible under
``set_seed``), the layer's training forward and gradients against the NumPy oracle given the
same masks, no dropout at inference, configs, and parity with Keras 3 from injected masks
(fixtures from tests/data/make_keras_recurrent_dropout_fixtures.py; keras is not needed here).
The engine's own checks (against the oracle, finite differences, every kernel level, any thread
count) are in test_engine_parity.py, test_dispatch.py and test_determinism.py."""

import pathlib

import numpy as np
import pytest
from fastlstm import Input, Model, Sequential, load_model, optimizers
from fastlstm import reference as R
from fastlstm.initializers import set_seed
from fastlstm.layers import (GRU, LSTM, Bidirectional, Concatenate, Dense, Flatten,
                             layer_from_config)

from gradcheck import numerical_gradient

DATA = pathlib.Path(__file__).resolve().parent / "data"
RTOL = 1e-7  # Keras on JAX against exact float64 (see test_keras_functional.py)


def _built(cls, H, F, **kw):
    layer = cls(H, **kw)
    layer.build((None, F), "float64")
    return layer


# ------------------------------------------------------------------------------------ the masks
@pytest.mark.parametrize("cls,ng", [(LSTM, 4), (GRU, 3)])
def test_masks_keep_rate_values_and_one_per_gate(cls, ng):
    rate, B, H = 0.3, 500, 8
    layer = _built(cls, H, 2, recurrent_dropout=rate, return_sequences=True)
    layer.forward(np.zeros((B, 3, 2)), training=True)
    m = layer._rdrop
    assert m.shape == (1, B, ng * H)
    kept = m != 0
    np.testing.assert_allclose(m[kept], 1.0 / (1.0 - rate), rtol=1e-15)
    n = kept.size
    sigma = np.sqrt(rate * (1 - rate) / n)
    assert abs(kept.mean() - (1 - rate)) < 5 * sigma  # binomial: 5 standard deviations
    # one mask per gate, drawn independently (not one shared by the gates): two gates'
    # masks differ where exactly one keeps the unit, probability 2 r (1 - r)
    per_gate = kept.reshape(B, ng, H)
    differ = (per_gate[:, 0] != per_gate[:, 1]).mean()
    assert abs(differ - 2 * rate * (1 - rate)) < 5 * np.sqrt(0.25 / (B * H))


def test_masks_are_new_for_every_batch_and_reproducible_under_set_seed():
    def run():
        set_seed(5)
        layer = _built(LSTM, 4, 3, recurrent_dropout=0.5, stateful=True)
        x = np.random.default_rng(0).normal(size=(6, 5, 3))
        outs, masks = [], []
        for _ in range(2):  # a stateful layer: two batches, masks redrawn per batch
            outs.append(layer.forward(x, training=True))
            masks.append(layer._rdrop.copy())
        return outs, masks

    outs, masks = run()
    assert not np.array_equal(masks[0], masks[1])
    outs2, masks2 = run()
    for a, b in zip(outs + masks, outs2 + masks2):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------- the layer against the oracle
def _oracle(layer, x, masks, d_y, h0=None, c0=None):
    """The oracle's output, d_x and grads for a one-layer LSTM/GRU layer with masks [D, B, G]."""
    D = layer._directions
    params = {k: v.astype(np.float64) for k, v in layer.params.items()}
    kw = dict(bidirectional=D == 2, batch_first=True, recurrent_masks=masks)
    if isinstance(layer, LSTM):
        out, h_n, c_n, cache = R.lstm_forward(params, x, h0, c0, **kw)
    else:
        out, h_n, cache = R.gru_forward(params, x, h0, **kw)
    d_out = np.zeros_like(out)
    d_out[:] = d_y
    if isinstance(layer, LSTM):
        d_x, _, _, grads = R.lstm_backward(cache, d_out)
    else:
        d_x, _, grads = R.gru_backward(cache, d_out)
    return out, d_x, grads


@pytest.mark.parametrize("cls", [LSTM, GRU])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_layer_training_matches_oracle_with_its_masks(cls, bidirectional):
    """The layer's training forward uses one mask per sequence and gate at every step (the
    oracle's masks have no time axis), the same in backward; Bidirectional draws one set per
    direction."""
    rng = np.random.default_rng(3)
    B, T, F, H = 5, 7, 3, 9
    if bidirectional:
        layer = Bidirectional(cls(H, recurrent_dropout=0.4, return_sequences=True),
                              merge_mode="concat")
        layer.build((T, F), "float64")
        inner = layer.layer
    else:
        layer = inner = _built(cls, H, F, recurrent_dropout=0.4, return_sequences=True)
    x = rng.normal(size=(B, T, F))
    y = layer.forward(x, training=True)
    masks = inner._rdrop
    D = 2 if bidirectional else 1
    assert masks.shape[0] == D
    if bidirectional:
        assert not np.array_equal(masks[0], masks[1])
    d_y = rng.normal(size=y.shape)
    d_x = layer.backward(d_y)
    out, r_dx, r_grads = _oracle(inner, x, masks, d_y)
    np.testing.assert_allclose(y, out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(d_x, r_dx, rtol=1e-10, atol=1e-12)
    for name, g in inner.grads.items():
        np.testing.assert_allclose(g, r_grads[name], rtol=1e-10, atol=1e-12, err_msg=name)
    # and the masks matter: without them the output differs
    plain = R.lstm_forward if cls is LSTM else R.gru_forward
    p = {k: v for k, v in inner.params.items()}
    assert not np.allclose(plain(p, x, bidirectional=bidirectional, batch_first=True)[0], y)


def test_layer_gradient_with_fixed_masks_matches_finite_differences():
    """Through the layer (left-padded mask, initial state, GRU): with its masks held fixed the
    training loss is smooth, and backward gives its central differences, d_x and the initial
    state included."""
    rng = np.random.default_rng(4)
    B, T, F, H = 3, 5, 2, 4
    layer = _built(GRU, H, F, recurrent_dropout=0.5, return_sequences=True)
    x = rng.normal(size=(B, T, F))
    mask = np.ones((B, T), bool)
    mask[1, :2] = False  # left padding: the gathered path
    h0 = [rng.normal(size=(B, H))]
    w = rng.normal(size=(B, T, H))
    layer.forward(x, training=True, mask=mask, initial_state=h0)
    fixed = layer._rdrop.copy()

    def loss():
        return np.sum(w * layer.forward(x, training=True, mask=mask, initial_state=h0,
                                        _rdrop=fixed))

    loss()
    d_x, (d_h0,) = layer.backward(w, d_states=[None])
    grads = {k: v.copy() for k, v in layer.grads.items()}
    np.testing.assert_allclose(d_x, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(d_h0, numerical_gradient(loss, h0[0]), rtol=1e-6, atol=1e-8)
    for name, p in layer.params.items():
        np.testing.assert_allclose(grads[name], numerical_gradient(loss, p), rtol=1e-6,
                                   atol=1e-8, err_msg=name)


# ------------------------------------------------------------------------------- inference
@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_no_dropout_at_inference(cls):
    set_seed(1)
    x = np.random.default_rng(5).normal(size=(16, 6, 3)).astype(np.float32)
    y = np.random.default_rng(6).normal(size=(16, 1)).astype(np.float32)
    model = Sequential([Input((6, 3)), cls(5, recurrent_dropout=0.5), Dense(1)])
    plain = Sequential([Input((6, 3)), cls(5), Dense(1)])
    model.compile("adam", "mse")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    plain.set_weights(model.get_weights())
    np.testing.assert_array_equal(model.predict(x, verbose=0), plain.predict(x, verbose=0))
    np.testing.assert_array_equal(model.layers[0](x), plain.layers[0](x))
    train_out = model.layers[0].forward(x, training=True)
    assert not np.allclose(train_out, plain.layers[0](x))


def test_fit_is_reproducible_under_set_seed_and_differs_from_no_dropout():
    x = np.random.default_rng(7).normal(size=(24, 5, 2))
    y = np.random.default_rng(8).normal(size=(24, 1))

    def fit(rate):
        set_seed(9)
        m = Sequential([Input((5, 2), dtype="float64"), LSTM(4, recurrent_dropout=rate),
                        Dense(1)])
        m.compile(optimizers.SGD(0.1), "mse")
        h = m.fit(x, y, epochs=2, batch_size=8, verbose=0)
        return h.history["loss"], m.get_weights()

    a, b, c = fit(0.3), fit(0.3), fit(0.0)
    assert a[0] == b[0]
    for wa, wb in zip(a[1], b[1]):
        np.testing.assert_array_equal(wa, wb)
    assert a[0] != c[0]


# --------------------------------------------------------------------------------- configs
def test_config_and_model_file_keep_recurrent_dropout(tmp_path):
    for cls in (LSTM, GRU):
        layer = cls(3, recurrent_dropout=0.25)
        assert layer.get_config()["config"]["recurrent_dropout"] == 0.25
        assert layer_from_config(layer.get_config()).recurrent_dropout == 0.25
        assert "recurrent_dropout" not in cls(3).get_config()["config"]
    m = Sequential([Input((4, 2)), LSTM(3, recurrent_dropout=0.25), Dense(1)])
    m.save(tmp_path / "m.safetensors")
    back = load_model(tmp_path / "m.safetensors")
    assert back.layers[0].recurrent_dropout == 0.25
    x = np.ones((2, 4, 2), np.float32)
    np.testing.assert_array_equal(back.predict(x, verbose=0), m.predict(x, verbose=0))


def test_bad_rate_is_refused():
    with pytest.raises(ValueError, match=r"recurrent_dropout must be in \[0, 1\)"):
        LSTM(3, recurrent_dropout=1.0)
    with pytest.raises(TypeError, match="recurrent_dropout must be a number"):
        GRU(3, recurrent_dropout="x")


# ----------------------------------------------------------------------- Keras 3 parity
def _keras_to_layer(kind, w, H):
    if kind == "lstm":
        K, Rk, b = w
        return [K.T, Rk.T, b, np.zeros_like(b)]
    K, Rk, b = w
    perm = np.r_[H:2 * H, 0:H, 2 * H:3 * H]  # Keras blocks z, r, h -> engine r, z, n
    return [K[:, perm].T, Rk[:, perm].T, b[0, perm], b[1, perm]]


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_matches_keras_with_the_same_masks(kind):
    """Keras 3's LSTM/GRU(recurrent_dropout) with masks injected into its cell: the training
    output, the inference output and three SGD steps (losses and weights after them)."""
    d = np.load(DATA / f"keras_recurrent_dropout_{kind}.npz")
    n = int(d["num_weights"])
    w = [d[f"weight.{k}"] for k in range(n)]
    x, y, rate = d["x"], d["y"], float(d["rate"])
    B, T, F = x.shape
    H = w[1].shape[0]
    ng = 4 if kind == "lstm" else 3
    keras_masks = [d[f"mask.{g}"] for g in range(ng)]
    order = [0, 1, 2, 3] if kind == "lstm" else [1, 0, 2]  # to the engine's gate order
    masks = np.concatenate([keras_masks[g] for g in order], axis=1)[None]  # [1, B, ng*H]
    cls = LSTM if kind == "lstm" else GRU
    inp = Input((T, F), dtype="float64")
    rnn = cls(H, recurrent_dropout=rate, return_sequences=True)
    seq = rnn(inp)
    model = Model(inp, Dense(1)(Flatten()(seq)))
    seq_model = Model(inp, seq)
    model.set_weights(_keras_to_layer(kind, w[:3], H) + w[3:])
    rnn._recurrent_masks = lambda batch: masks  # Keras's masks instead of drawn ones
    np.testing.assert_allclose(rnn.forward(x, training=True), d["train_output"], rtol=RTOL,
                               atol=RTOL)
    np.testing.assert_allclose(seq_model.predict(x, verbose=0), d["output"], rtol=RTOL,
                               atol=RTOL)
    model.compile(optimizers.SGD(0.1), "mse")
    got = [model.train_on_batch(x, y) for _ in range(3)]
    np.testing.assert_allclose(got, d["losses"], rtol=RTOL, atol=RTOL)
    trained = [d[f"trained.{k}"] for k in range(n)]
    want = _keras_to_layer(kind, trained[:3], H) + trained[3:]
    for k, (a, b) in enumerate(zip(model.get_weights(), want)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, err_msg=f"weight {k}")


def test_shared_layer_in_a_graph_keeps_each_calls_masks_for_backward():
    """A layer called twice in a functional model draws masks per call; backward re-runs each
    call with its own masks, so the gradient equals central differences of the loss with the
    same per-call masks."""
    rng = np.random.default_rng(12)
    B, T, F, H = 3, 4, 2, 3
    a_in, b_in = Input((T, F), dtype="float64"), Input((T, F), dtype="float64")
    shared = LSTM(H, recurrent_dropout=0.5)
    model = Model([a_in, b_in], Dense(1)(Concatenate()([shared(a_in), shared(b_in)])))
    model.compile(optimizers.SGD(0.1), "mse")
    xs = [rng.normal(size=(B, T, F)), rng.normal(size=(B, T, F))]
    y = rng.normal(size=(B, 1))
    fixed = [(rng.random((1, B, 4 * H)) >= 0.5) * 2.0 for _ in range(2)]
    calls = []

    def masks(batch):
        calls.append(None)
        return fixed[(len(calls) - 1) % 2]  # the first call gets fixed[0], the second fixed[1]

    shared._recurrent_masks = masks

    def loss():
        calls.clear()
        return model.compute_loss_and_gradients(xs, y)[0]

    loss()
    assert len(calls) == 2
    grad = shared.grads["weight_hh_l0"].copy()
    numeric = numerical_gradient(loss, shared.params["weight_hh_l0"])
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)
    fixed[1] = fixed[0]  # the same masks for both calls change the gradient
    loss()
    assert not np.allclose(shared.grads["weight_hh_l0"], grad)
