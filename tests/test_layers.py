"""fastlstm.layers: Keras semantics (against NumPy transcriptions of Keras's cell equations),
Keras initializers, masks/lengths, go_backwards, Bidirectional merges, stateful carry,
dropout, configs and bad input."""

import numpy as np
import pytest
from fastlstm import reference
from fastlstm.initializers import set_seed
from fastlstm.layers import (
    GRU,
    LSTM,
    Bidirectional,
    Dense,
    Dropout,
    Embedding,
    Input,
    TimeDistributed,
    layer_from_config,
)


def _sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def keras_lstm(x, K, R, b, mask=None, go_backwards=False, return_sequences=False, h0=None,
               c0=None):
    """Keras's LSTM cell and masking rule (a masked step keeps the state, and in the sequence
    repeats the carried h: Keras 3's ``zero_output_for_mask=False``), Keras's weights: kernel [F, 4H], recurrent_kernel [H, 4H], bias [4H] (i,f,c,o)."""
    B, T, _ = x.shape
    H = R.shape[0]
    h = np.zeros((B, H)) if h0 is None else h0
    c = np.zeros((B, H)) if c0 is None else c0
    outs = []
    for t in (range(T - 1, -1, -1) if go_backwards else range(T)):
        z = x[:, t] @ K + h @ R + b
        i, f, g, o = _sig(z[:, :H]), _sig(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), _sig(z[:, 3 * H:])
        c_new = f * c + i * g
        h_new = o * np.tanh(c_new)
        m = np.ones((B, 1), bool) if mask is None else mask[:, t][:, None]
        h, c = np.where(m, h_new, h), np.where(m, c_new, c)
        outs.append(h)
    return (np.stack(outs, 1) if return_sequences else h), h, c


def keras_gru(x, K, R, b_in, b_rec, mask=None, return_sequences=False):
    """Keras's GRU with reset_after=True; gate blocks z, r, h (Keras's order)."""
    B, T, _ = x.shape
    H = R.shape[0]
    h = np.zeros((B, H))
    outs = []
    for t in range(T):
        xz, xr, xh = np.split(x[:, t] @ K + b_in, 3, axis=1)
        rz, rr, rh = np.split(h @ R + b_rec, 3, axis=1)
        z, r = _sig(xz + rz), _sig(xr + rr)
        hh = np.tanh(xh + r * rh)
        h_new = z * h + (1 - z) * hh
        m = np.ones((B, 1), bool) if mask is None else mask[:, t][:, None]
        h = np.where(m, h_new, h)
        outs.append(h)
    return np.stack(outs, 1) if return_sequences else h


def _set_lstm_from_keras(p, K, R, b, suffix=""):
    p["weight_ih_l0" + suffix][...] = K.T
    p["weight_hh_l0" + suffix][...] = R.T
    p["bias_ih_l0" + suffix][...] = b
    p["bias_hh_l0" + suffix][...] = 0.0


def _rand_keras_lstm(rng, F, H):
    return rng.normal(0, 0.5, (F, 4 * H)), rng.normal(0, 0.5, (H, 4 * H)), rng.normal(0, 0.5, 4 * H)


def _padded(rng, B, T, F, lengths):
    x = rng.normal(size=(B, T, F))
    for b, L in enumerate(lengths):
        x[b, L:] = 0.0
    mask = np.arange(T)[None, :] < np.asarray(lengths)[:, None]
    return x, mask


# ------------------------------------------------------------------------------------ Keras semantics
@pytest.mark.parametrize("return_sequences", [False, True])
def test_lstm_matches_keras_equations_with_mask(return_sequences):
    rng = np.random.default_rng(0)
    B, T, F, H = 5, 9, 3, 7
    lengths = np.array([9, 4, 1, 7, 2])
    x, mask = _padded(rng, B, T, F, lengths)
    K, R, b = _rand_keras_lstm(rng, F, H)
    layer = LSTM(H, return_sequences=return_sequences)
    layer.build((T, F), "float64")
    _set_lstm_from_keras(layer.params, K, R, b)
    got = layer(x, lengths=lengths)
    want, _, _ = keras_lstm(x, K, R, b, mask=mask, return_sequences=return_sequences)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_lstm_go_backwards_matches_keras_on_unpadded_input():
    rng = np.random.default_rng(1)
    B, T, F, H = 3, 8, 2, 5
    x = rng.normal(size=(B, T, F))
    K, R, b = _rand_keras_lstm(rng, F, H)
    for rs in (False, True):
        layer = LSTM(H, go_backwards=True, return_sequences=rs)
        layer.build((T, F), "float64")
        _set_lstm_from_keras(layer.params, K, R, b)
        want, _, _ = keras_lstm(x, K, R, b, go_backwards=True, return_sequences=rs)
        np.testing.assert_allclose(layer(x), want, rtol=1e-10, atol=1e-12)


def test_lstm_go_backwards_with_lengths_reverses_each_valid_part():
    rng = np.random.default_rng(2)
    B, T, F, H = 4, 7, 3, 4
    lengths = np.array([7, 3, 5, 1])
    x, _ = _padded(rng, B, T, F, lengths)
    K, R, b = _rand_keras_lstm(rng, F, H)
    layer = LSTM(H, go_backwards=True, return_sequences=True)
    layer.build((T, F), "float64")
    _set_lstm_from_keras(layer.params, K, R, b)
    got = layer(x, lengths=lengths)
    for i, L in enumerate(lengths):
        # sequence i alone, its valid steps reversed: outputs in processing order, zeros after
        want, _, _ = keras_lstm(x[i : i + 1, :L][:, ::-1], K, R, b, return_sequences=True)
        np.testing.assert_allclose(got[i, :L], want[0], rtol=1e-10, atol=1e-12)
        assert not got[i, L:].any()


def test_gru_matches_keras_reset_after_equations():
    rng = np.random.default_rng(3)
    B, T, F, H = 4, 6, 3, 5
    lengths = np.array([6, 2, 5, 1])
    x, mask = _padded(rng, B, T, F, lengths)
    K = rng.normal(0, 0.5, (F, 3 * H))
    R = rng.normal(0, 0.5, (H, 3 * H))
    b_in, b_rec = rng.normal(0, 0.5, 3 * H), rng.normal(0, 0.5, 3 * H)
    layer = GRU(H, return_sequences=True)
    layer.build((T, F), "float64")
    # Keras blocks z, r, h -> the engine's r, z, n
    perm = np.r_[H:2 * H, 0:H, 2 * H:3 * H]
    layer.params["weight_ih_l0"][...] = K[:, perm].T
    layer.params["weight_hh_l0"][...] = R[:, perm].T
    layer.params["bias_ih_l0"][...] = b_in[perm]
    layer.params["bias_hh_l0"][...] = b_rec[perm]
    want = keras_gru(x, K, R, b_in, b_rec, mask=mask, return_sequences=True)
    np.testing.assert_allclose(layer(x, lengths=lengths), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave"])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_bidirectional_merges_forward_and_backward_halves(merge_mode, return_sequences):
    rng = np.random.default_rng(4)
    B, T, F, H = 4, 6, 3, 5
    lengths = np.array([6, 2, 4, 1])
    x, mask = _padded(rng, B, T, F, lengths)
    Kf, Rf, bf = _rand_keras_lstm(rng, F, H)
    Kb, Rb, bb = _rand_keras_lstm(rng, F, H)
    layer = Bidirectional(LSTM(H, return_sequences=return_sequences), merge_mode=merge_mode)
    layer.build((T, F), "float64")
    _set_lstm_from_keras(layer.params, Kf, Rf, bf)
    _set_lstm_from_keras(layer.params, Kb, Rb, bb, "_reverse")
    got = layer(x, lengths=lengths)
    fwd, _, _ = keras_lstm(x, Kf, Rf, bf, mask=mask, return_sequences=return_sequences)
    if return_sequences:
        fwd = fwd * mask[:, :, None]  # Keras's Bidirectional outputs zeros at masked steps
        # the backward half runs over each valid part reversed and is re-aligned in time
        bwd = np.zeros_like(fwd)
        for i, L in enumerate(lengths):
            seq, _, _ = keras_lstm(x[i : i + 1, :L][:, ::-1], Kb, Rb, bb, return_sequences=True)
            bwd[i, :L] = seq[0, ::-1]
    else:
        bwd = np.stack([keras_lstm(x[i : i + 1, :L][:, ::-1], Kb, Rb, bb)[0][0]
                        for i, L in enumerate(lengths)])
    want = {"concat": np.concatenate([fwd, bwd], -1), "sum": fwd + bwd, "mul": fwd * bwd,
            "ave": (fwd + bwd) / 2}[merge_mode]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert layer.output_shape[-1] == (2 * H if merge_mode == "concat" else H)


def test_peephole_lstm_matches_the_reference_oracle():
    rng = np.random.default_rng(5)
    B, T, F, H = 3, 5, 4, 6
    lengths = np.array([5, 2, 4])
    x, _ = _padded(rng, B, T, F, lengths)
    layer = LSTM(H, peephole=True, return_sequences=True)
    layer.build((T, F), "float64")
    for v in layer.params.values():
        v[...] = rng.normal(0, 0.4, v.shape)
    params = {k: v.copy() for k, v in layer.params.items()}
    out = reference.lstm_forward(params, x, peephole=True, lengths=lengths, batch_first=True)[0]
    got = layer(x, lengths=lengths)
    mask = np.arange(T)[None, :] < lengths[:, None]
    np.testing.assert_allclose(got[mask], np.asarray(out)[mask], rtol=1e-10, atol=1e-12)
    for b, L in enumerate(lengths):  # padded steps repeat the last real output (Keras)
        np.testing.assert_array_equal(got[b, L:], np.broadcast_to(got[b, L - 1], got[b, L:].shape))


def test_zero_length_rows_return_the_initial_state():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(3, 4, 2))
    for rs in (False, True):
        layer = LSTM(3, return_sequences=rs)
        got = layer(x, lengths=np.array([4, 0, 2]))
        assert not got[1].any()
        assert got[0].any() and got[2].any()


def test_return_state_gives_output_h_and_c():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 5, 3))
    layer = LSTM(4, return_sequences=True, return_state=True)
    y, h, c = layer(x)
    np.testing.assert_array_equal(y[:, -1], h)
    assert c.shape == (2, 4) and not np.array_equal(c, h)
    bi = Bidirectional(GRU(3, return_state=True))
    out = bi(x)
    assert len(out) == 3 and out[0].shape == (2, 6) and out[1].shape == (2, 3)


# ------------------------------------------------------------------------------------ stateful
def test_stateful_lstm_carries_state_between_calls_until_reset():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2, 10, 3))
    whole = LSTM(5, return_sequences=True)
    whole.build((None, 3), "float64")
    parts = LSTM(5, return_sequences=True, stateful=True)
    parts.build((None, 3), "float64")
    parts.set_weights(whole.get_weights())
    want = whole(x)
    got = np.concatenate([parts(x[:, :4]), parts(x[:, 4:7]), parts(x[:, 7:])], axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    parts.reset_states()
    np.testing.assert_allclose(parts(x[:, :4]), want[:, :4], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="same batch size"):
        parts(x[:1, :4])


# ------------------------------------------------------------------------------------ initializers
def test_lstm_keras_initializers_in_engine_layout():
    set_seed(0)
    F, H = 6, 5
    layer = LSTM(H)
    layer.build((None, F))
    p = layer.params
    limit = np.sqrt(6.0 / (F + 4 * H))
    W = p["weight_ih_l0"]
    assert W.shape == (4 * H, F)
    assert np.abs(W).max() <= limit and np.abs(W).max() > 0.8 * limit
    U = p["weight_hh_l0"].astype(np.float64)  # transposed orthogonal [H, 4H]: orthonormal columns
    np.testing.assert_allclose(U.T @ U, np.eye(H), atol=1e-6)
    want_bias = np.zeros(4 * H)
    want_bias[H:2 * H] = 1.0
    np.testing.assert_array_equal(p["bias_ih_l0"], want_bias)
    np.testing.assert_array_equal(p["bias_hh_l0"], 0.0)
    layer = LSTM(H, unit_forget_bias=False)
    layer.build((None, F))
    np.testing.assert_array_equal(layer.params["bias_ih_l0"], 0.0)


def test_gru_embedding_dense_initializers():
    set_seed(1)
    gru = GRU(4)
    gru.build((None, 3))
    U = gru.params["weight_hh_l0"].astype(np.float64)
    np.testing.assert_allclose(U.T @ U, np.eye(4), atol=1e-6)
    assert not gru.params["bias_ih_l0"].any() and not gru.params["bias_hh_l0"].any()
    emb = Embedding(50, 8)
    emb.build((None,))
    e = emb.params["embeddings"]
    assert np.abs(e).max() <= 0.05 and e.std() > 0.02
    dense = Dense(7)
    dense.build((None, 9))
    k = dense.params["kernel"]
    assert k.shape == (9, 7) and np.abs(k).max() <= np.sqrt(6.0 / 16)
    assert not dense.params["bias"].any()


def test_bidirectional_halves_get_independent_initial_weights():
    layer = Bidirectional(LSTM(4))
    layer.build((None, 3))
    assert not np.array_equal(layer.params["weight_ih_l0"], layer.params["weight_ih_l0_reverse"])


# ------------------------------------------------------------------------------------ Embedding
def test_embedding_lookup_and_mask():
    emb = Embedding(10, 3, mask_zero=True)
    emb.build((None,), "float64")
    tok = np.array([[1, 2, 0, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 7, 8]])
    np.testing.assert_array_equal(emb(tok), emb.params["embeddings"][tok])
    # Keras: every 0 is padding, wherever it is (right, gaps, left)
    np.testing.assert_array_equal(emb.compute_mask(tok, None), tok != 0)
    prior = np.arange(4)[None, :] < np.array([1, 4, 4, 2])[:, None]
    np.testing.assert_array_equal(emb.compute_mask(tok, prior), (tok != 0) & prior)
    assert Embedding(10, 3).compute_mask(tok, None) is None


def test_embedding_rejects_bad_tokens():
    emb = Embedding(10, 3)
    emb.build((None,))
    with pytest.raises(ValueError, match=r"\[0, input_dim=10\).*max 10 \(first bad id 10 at \[1, 0\]\)"):
        emb(np.array([[1, 2], [10, 3]]))
    with pytest.raises(ValueError, match="min -1"):
        emb(np.array([[1, -1]]))
    with pytest.raises(ValueError, match="non-integer"):
        emb(np.array([[1.5, 2.0]]))
    with pytest.raises(ValueError, match="2-D"):
        emb(np.zeros((2, 3, 1), dtype=np.int64))


# ------------------------------------------------------------------------------------ Dense / Dropout
def test_dense_activations_per_time_step():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(3, 4, 5))
    for act in ("linear", "relu", "tanh", "sigmoid", "softmax"):
        layer = Dense(6, activation=None if act == "linear" else act)
        layer.build((None, 5), "float64")
        z = x @ layer.params["kernel"] + layer.params["bias"]
        want = {"linear": z, "relu": np.maximum(z, 0), "tanh": np.tanh(z), "sigmoid": _sig(z),
                "softmax": np.exp(z) / np.exp(z).sum(-1, keepdims=True)}[act]
        np.testing.assert_allclose(layer(x), want, rtol=1e-12, atol=1e-14)
    assert TimeDistributed(layer) is layer


def test_sigmoid_and_softmax_do_not_overflow():
    layer = Dense(2, activation="sigmoid")
    layer.build((None, 1), "float64")
    layer.params["kernel"][...] = [[1000.0, -1000.0]]
    y = layer(np.ones((1, 1, 1)))
    np.testing.assert_array_equal(y[0, 0], [1.0, 0.0])
    layer = Dense(2, activation="softmax")
    layer.build((None, 1), "float64")
    layer.params["kernel"][...] = [[1000.0, -1000.0]]
    assert np.isfinite(layer(np.ones((1, 1, 1)))).all()


def test_dropout_layer_scales_kept_units_and_is_identity_at_inference():
    layer = Dropout(0.25, seed=3)
    x = np.ones((40, 10, 5))
    layer.build(x.shape[1:], "float64")
    np.testing.assert_array_equal(layer(x), x)
    y = layer.forward(x, training=True)
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    assert 0.2 < 1 - kept.mean() < 0.3
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), y)


def test_lstm_input_dropout_uses_one_mask_per_sequence():
    layer = LSTM(3, dropout=0.5, return_sequences=True)
    layer.build((None, 8), "float64")
    x = np.random.default_rng(10).normal(size=(6, 5, 8))
    out = layer.forward(x, training=True)
    d_x = layer.backward(np.ones_like(out))
    dropped = (d_x == 0).all(axis=1)  # [B, F]: a feature dropped at every step or at none
    assert dropped.any() and (~dropped).any()
    assert ((d_x == 0).any(axis=1) == dropped).all()
    plain = LSTM(3, return_sequences=True)
    plain.build((None, 8), "float64")
    plain.set_weights(layer.get_weights())
    np.testing.assert_array_equal(layer(x), plain(x))  # inference: no dropout
    assert not np.allclose(out, plain(x))


# ------------------------------------------------------------------------------------ config & errors
@pytest.mark.parametrize("layer,shape", [
    (Embedding(12, 4, mask_zero=True), (None,)),
    (LSTM(5, return_sequences=True, go_backwards=True, peephole=True), (None, 3)),
    (GRU(4, use_bias=False), (None, 3)),
    (Bidirectional(LSTM(3, return_sequences=True), merge_mode="ave"), (None, 2)),
    (Dense(3, activation="softmax"), (None, 4)),
    (Dropout(0.3), (None, 4)),
])
def test_config_round_trip(layer, shape):
    layer.build(shape)
    cfg = layer.get_config()
    again = layer_from_config(cfg)
    again.build(shape)
    assert again.get_config() == cfg
    assert [w.shape for w in again.get_weights()] == [w.shape for w in layer.get_weights()]
    required = {"Embedding": {"input_dim", "output_dim", "mask_zero"},
                "LSTM": {"units", "input_size", "return_sequences", "go_backwards", "peephole", "bias"},
                "GRU": {"units", "input_size", "return_sequences", "go_backwards", "bias"},
                "Bidirectional": {"merge_mode", "layer"},
                "Dense": {"units", "input_dim", "activation", "use_bias"},
                "Dropout": {"rate"}}[cfg["class"]]
    assert required <= set(cfg["config"])


def test_weight_names_follow_the_model_file():
    layer = Bidirectional(LSTM(3, peephole=True))
    layer.build((None, 2))
    names = set(layer.params)
    for s in ("", "_reverse"):
        assert {f"weight_ih_l0{s}", f"weight_hh_l0{s}", f"bias_ih_l0{s}", f"bias_hh_l0{s}",
                f"weight_ci_l0{s}", f"weight_cf_l0{s}", f"weight_co_l0{s}"} <= names
    d = Dense(2)
    d.build((None, 3))
    assert list(d.params) == ["kernel", "bias"]


def test_bad_layer_arguments():
    with pytest.raises(ValueError, match="unknown activation 'swishy'"):
        Dense(3, activation="swishy")
    with pytest.raises(ValueError, match="dropout must be in"):
        LSTM(3, dropout=1.0)
    with pytest.raises(ValueError, match="units must be >= 1"):
        LSTM(0)
    with pytest.raises(ValueError, match="activation='tanh'"):
        LSTM(3, activation="relu")
    with pytest.raises(ValueError, match="merge_mode"):
        Bidirectional(LSTM(3), merge_mode="max")
    with pytest.raises(ValueError, match="unknown kernel_initializer"):
        Dense(3, kernel_initializer="nope")
    with pytest.raises(TypeError, match="unexpected keyword"):
        LSTM(3, unitz=4)
    with pytest.raises(ValueError, match="unknown layer class 'Conv1D'"):
        layer_from_config({"class": "Conv1D", "config": {}})
    with pytest.raises(ValueError, match="shape"):
        Input()


def test_wrong_input_rank_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expects 3-D input \[batch, time, features\]"):
        LSTM(3).build((5,))
    layer = LSTM(3)
    layer.build((None, 4))
    with pytest.raises(ValueError, match="3-D input"):
        layer(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="built for 4 input features"):
        layer(np.zeros((2, 3, 5)))
