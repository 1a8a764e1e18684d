"""The functional API: Input, Model(inputs, outputs) with several inputs and outputs, shared
and nested layers, states in graphs, the layers around an RNN, and Keras's mask semantics.
Gradients are checked by finite differences (float64)."""

import numpy as np
import pytest
from fastlstm import Input, Model, Sequential, optim, set_seed
from fastlstm.layers import (
    GRU,
    AdditiveAttention,
    Attention,
    LSTM,
    Activation,
    Add,
    Average,
    Bidirectional,
    Concatenate,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    Masking,
    Multiply,
    RepeatVector,
    Reshape,
    SpatialDropout1D,
    TimeDistributed,
)

from gradcheck import numerical_gradient


def _fd_check(model, x, y, **kw):
    """Every parameter's gradient against central differences of the model's loss."""
    v, g = model.compute_loss_and_gradients(x, y, **kw)
    num = numerical_gradient(lambda: model.compute_loss_and_gradients(x, y, **kw)[0],
                             model.flat_params)
    assert np.isfinite(v) and np.abs(num).max() > 1e-3
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8 * np.abs(num).max())


# ------------------------------------------------------------------------------------ graphs
def test_two_inputs_two_outputs_shared_layer_and_merges_gradients():
    set_seed(1)
    rng = np.random.default_rng(0)
    a, b = Input((5, 3), dtype="float64"), Input((5, 3), dtype="float64")
    shared = LSTM(4, return_sequences=True)  # used on both inputs: its gradients add up
    ha, hb = shared(a), shared(b)
    s = Add()([ha, hb])
    m = Multiply()([ha, hb])
    av = Average()([s, m])
    cat = Concatenate()([av, hb])
    last = GRU(3)(cat)
    out1 = Dense(2, activation="softmax", name="cls")(last)
    out2 = Dense(1, name="reg")(Flatten()(Dense(2, activation="tanh")(cat)))
    model = Model([a, b], [out1, out2])
    assert model.output_names == ["cls", "reg"]
    model.compile("sgd", loss={"cls": "sparse_categorical_crossentropy", "reg": "mse"},
                  loss_weights={"cls": 0.7, "reg": 1.3})
    xa, xb = rng.normal(size=(4, 5, 3)), rng.normal(size=(4, 5, 3))
    y = [rng.integers(0, 2, 4), rng.normal(size=(4, 1))]
    _fd_check(model, [xa, xb], y)
    # the loss is the weighted sum of the outputs' losses
    logs = model.evaluate([xa, xb], y, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss"], 0.7 * logs["cls_loss"] + 1.3 * logs["reg_loss"],
                               rtol=1e-12)
    # dict inputs by name work as lists do
    named = Model({"p": a, "q": b}, out1)
    np.testing.assert_array_equal(named.predict({"p": xa, "q": xb}, verbose=0),
                                  model.predict([xa, xb], verbose=0)[0])


def test_encoder_decoder_states_gradients_flow_into_the_initial_state():
    set_seed(2)
    rng = np.random.default_rng(1)
    enc_in, dec_in = Input((None, 3), dtype="float64"), Input((None, 2), dtype="float64")
    _, h, c = LSTM(4, return_state=True)(enc_in)
    seq, h2 = GRU(4, return_sequences=True, return_state=True)(dec_in, initial_state=[h])
    out = TimeDistributed(Dense(3, activation="softmax"))(seq)
    model = Model([enc_in, dec_in], [out, Add()([h2, c])])
    model.compile("sgd", ["sparse_categorical_crossentropy", "mse"])
    x = [rng.normal(size=(3, 6, 3)), rng.normal(size=(3, 4, 2))]
    y = [rng.integers(0, 3, (3, 4)), rng.normal(size=(3, 4))]
    _fd_check(model, x, y)
    # the encoder's weights get a gradient only through the states: it is nonzero
    _, g = model.compute_loss_and_gradients(x, y)
    enc = model.layers[0]
    lo = (enc.flat_params.ctypes.data - model.flat_params.ctypes.data) // 8
    assert np.abs(g[lo : lo + enc.count_params()]).max() > 1e-4


def test_bidirectional_states_and_initial_state_gradients():
    set_seed(3)
    rng = np.random.default_rng(2)
    x_in = Input((5, 3), dtype="float64")
    s_in = [Input((4,), dtype="float64") for _ in range(4)]
    y, hf, cf, hb, cb = Bidirectional(LSTM(4, return_sequences=True, return_state=True))(
        x_in, initial_state=s_in)
    out = Dense(1)(Concatenate()([Flatten()(y), hf, cf, hb, cb]))
    model = Model([x_in] + s_in, out)
    model.compile("sgd", "mse")
    xs = [rng.normal(size=(2, 5, 3))] + [rng.normal(size=(2, 4)) for _ in range(4)]
    _fd_check(model, xs, rng.normal(size=(2, 1)))


def test_layers_around_an_rnn_gradients():
    set_seed(4)
    rng = np.random.default_rng(3)
    inp = Input((6, 4), dtype="float64")
    z = Masking(0.0)(inp)
    z = SpatialDropout1D(0.0)(z)
    z = LSTM(5)(z)
    z = RepeatVector(3)(z)
    z = Dense(4, activation="relu")(z)
    z = Reshape((3, 2, 2))(z)
    z = Dense(2, activation="sigmoid")(z)  # Dense on a 4-D input: the last axis
    z = Activation("tanh")(Flatten()(z))
    z = Dropout(0.0)(z)
    model = Model(inp, Dense(1)(z))
    model.compile("sgd", "mse")
    x = rng.normal(size=(3, 6, 4))
    x[1, :2] = 0.0  # masked (left padding) by Masking
    _fd_check(model, x, rng.normal(size=(3, 1)))


def test_time_distributed_of_a_recurrent_layer():
    set_seed(5)
    rng = np.random.default_rng(4)
    inp = Input((3, 4, 2), dtype="float64")  # 3 sub-sequences of 4 steps
    z = TimeDistributed(GRU(3))(inp)
    model = Model(inp, Dense(1)(LSTM(2)(z)))
    model.compile("sgd", "mse")
    x = rng.normal(size=(2, 3, 4, 2))
    _fd_check(model, x, rng.normal(size=(2, 1)))
    # the same as running the GRU on each sub-sequence
    td = model.layers[0]
    got = td.forward(x)
    for t in range(3):
        np.testing.assert_allclose(got[:, t], td.layer(x[:, t]), rtol=1e-12)


def test_nested_model_is_a_layer():
    set_seed(6)
    rng = np.random.default_rng(5)
    inner_in = Input((4, 3), dtype="float64")
    inner = Model(inner_in, LSTM(3, return_sequences=True)(inner_in), name="inner")
    outer_in = Input((4, 3), dtype="float64")
    out = Dense(2)(GRU(2)(inner(outer_in)))
    model = Model(outer_in, out)
    model.compile("sgd", "mse")
    x = rng.normal(size=(3, 4, 3))
    _fd_check(model, x, rng.normal(size=(3, 2)))
    assert model.count_params() == inner.count_params() + model.layers[1].count_params() + \
        model.layers[2].count_params()


def test_sequential_is_the_linear_graph():
    set_seed(7)
    rng = np.random.default_rng(6)
    seq = Sequential([Input((5, 3)), LSTM(4, return_sequences=True), GRU(3), Dense(2)])
    inp = Input((5, 3))
    z = inp
    for layer in seq.layers:
        z = layer(z)
    func = Model(inp, z)
    x = rng.normal(size=(4, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(seq.predict(x, verbose=0), func.predict(x, verbose=0))
    assert isinstance(seq, Model)


def test_shared_layers_between_training_and_inference_models():
    set_seed(8)
    rng = np.random.default_rng(7)
    inp = Input((None, 2))
    lstm, dense = LSTM(5, return_sequences=True), Dense(1)
    train = Model(inp, dense(lstm(inp)))
    train.compile(optim.Adam(0.05), "mse")
    x, y = rng.normal(size=(16, 6, 2)), rng.normal(size=(16, 6, 1))
    train.fit(x, y, epochs=2, verbose=0)
    inf_in = Input((None, 2))
    infer = Model(inf_in, dense(lstm(inf_in)))  # takes the trained weights
    np.testing.assert_array_equal(infer.predict(x, verbose=0), train.predict(x, verbose=0))
    before = train.evaluate(x, y, verbose=0)
    train.fit(x, y, epochs=3, verbose=0)  # training goes on in the first model's buffer
    assert train.evaluate(x, y, verbose=0) < before
    np.testing.assert_array_equal(infer.predict(x, verbose=0), train.predict(x, verbose=0))


# ------------------------------------------------------------------------------------ masks
def test_left_padded_tokens_predict_as_unpadded():
    """The issue's case: a left-padded row gives the prediction of the unpadded row."""
    set_seed(9)
    m = Sequential([Embedding(50, 8, mask_zero=True), LSTM(4), Dense(1)])
    a = m.predict(np.array([[0, 0, 0, 5, 7, 9]]), verbose=0)
    b = m.predict(np.array([[5, 7, 9]]), verbose=0)
    c = m.predict(np.array([[5, 0, 7, 0, 9, 0]]), verbose=0)  # gaps and right padding
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(c, b, rtol=1e-6)
    assert np.abs(b).max() > 1e-4


@pytest.mark.parametrize("bidirectional", [False, True])
def test_masked_sequences_follow_keras(bidirectional):
    """Masked steps carry the state; a one-direction layer repeats its last output there (the
    initial state before the first real step), a bidirectional one outputs zeros."""
    set_seed(10)
    rng = np.random.default_rng(8)
    layer = LSTM(3, return_sequences=True)
    if bidirectional:
        layer = Bidirectional(layer)
    x = rng.normal(size=(3, 6, 2))
    mask = np.array([[0, 0, 1, 1, 1, 1], [1, 0, 1, 0, 1, 1], [1, 1, 1, 1, 0, 0]], bool)
    y = layer(x, mask=mask)
    for b in range(3):
        real = np.flatnonzero(mask[b])
        alone = layer(x[b : b + 1, real])[0]  # the real steps only, unpadded
        np.testing.assert_allclose(y[b, real], alone, rtol=1e-5, atol=1e-6)
        for t in np.flatnonzero(~mask[b]):
            prev = real[real < t]
            if bidirectional or prev.size == 0:
                assert not y[b, t].any()
            else:
                np.testing.assert_array_equal(y[b, t], y[b, prev[-1]])


def test_masked_gradients_left_padding_and_gaps():
    set_seed(11)
    rng = np.random.default_rng(9)
    tok = np.array([[0, 0, 3, 4, 5], [2, 0, 0, 6, 1], [7, 8, 9, 0, 0], [0, 0, 0, 0, 0]])
    model64_in = Input((5,), dtype="int64")
    e = Embedding(10, 3, mask_zero=True, dtype="float64")(model64_in)
    z = LSTM(3, return_sequences=True)(e)
    z = Bidirectional(GRU(2, return_sequences=True))(z)
    seq_out = TimeDistributed(Dense(2, activation="softmax"))(z)
    m64 = Model(model64_in, [Dense(2, activation="softmax")(LSTM(2)(z)), seq_out])
    m64.compile("sgd", "sparse_categorical_crossentropy")
    _fd_check(m64, tok, [rng.integers(0, 2, 4), rng.integers(0, 2, (4, 5))])


def test_go_backwards_sequences_refuse_left_padding():
    layer = LSTM(2, go_backwards=True, return_sequences=True)
    x = np.ones((1, 3, 2))
    with pytest.raises(NotImplementedError, match="right-padded"):
        layer(x, mask=np.array([[False, True, True]]))


# ------------------------------------------------------------------------------------ errors
def test_graph_errors_name_the_problem():
    a, b = Input((3, 2)), Input((3, 2))
    out = Dense(1)(LSTM(2)(b))
    with pytest.raises(ValueError, match="not among the model's inputs"):
        Model(a, out)
    with pytest.raises(TypeError, match="symbolic tensor"):
        Model(np.zeros(3), out)
    with pytest.raises(ValueError, match="initial_state"):
        LSTM(2)(a, initial_state=[Input((2,))])
    with pytest.raises(ValueError, match=r"initial_state\[0\].*\(None, 2\)"):
        LSTM(2)(a, initial_state=[Input((3,)), Input((2,))])
    with pytest.raises(ValueError, match="one shape"):
        Add()([a, Input((3, 4))])
    m = Model([a, b], out)
    with pytest.raises(ValueError, match="list of 2 arrays"):
        m.predict([np.zeros((1, 3, 2))], verbose=0)
    with pytest.raises(ValueError, match="must be a list or a dict"):
        m.predict(np.zeros((1, 3, 2)), verbose=0)


@pytest.mark.parametrize("kind", ["dot", "dot_key_causal", "additive", "additive_noscale"])
def test_attention_gradients_with_masks(kind):
    set_seed(12)
    rng = np.random.default_rng(10)
    q_in, v_in = Input((4, 3), dtype="float64"), Input((5, 3), dtype="float64")
    k_in = Input((5, 3), dtype="float64")
    q, v = Masking(0.0)(q_in), Masking(0.0)(v_in)
    if kind.startswith("dot"):
        layer = Attention(use_scale=True)
    else:
        layer = AdditiveAttention(use_scale=kind == "additive")
    args = [q, v, k_in] if kind == "dot_key_causal" else [q, v]
    att, w = layer(args, return_attention_scores=True, use_causal_mask=kind == "dot_key_causal")
    model = Model([q_in, v_in, k_in], [Dense(1)(Flatten()(att)), w])
    model.compile("sgd", ["mse", "mse"])
    xq, xv, xk = rng.normal(size=(3, 4, 3)), rng.normal(size=(3, 5, 3)), rng.normal(size=(3, 5, 3))
    xq[0, 3] = 0.0
    # masked value steps (with the causal mask, late ones: a query row whose keys are all
    # masked gets Keras's uniform weights over scores shifted by -1e9, no useful gradient)
    gone = slice(3, 5) if kind == "dot_key_causal" else slice(0, 2)
    xv[1, gone] = 0.0
    y = [rng.normal(size=(3, 1)), rng.uniform(size=(3, 4, 5))]
    _fd_check(model, [xq, xv, xk], y)
    _, weights = model.predict([xq, xv, xk], verbose=0)
    assert weights[1, :, gone].max() < 1e-12  # masked value steps get no weight
    if kind == "dot_key_causal":
        assert np.triu(weights[0], k=1).max() < 1e-12  # nor future steps


def test_config_round_trip_and_pickle_of_a_graph():
    import pickle

    set_seed(13)
    rng = np.random.default_rng(11)
    enc_in, dec_in = Input((None,), dtype="int64"), Input((None, 2))
    e = Embedding(9, 3, mask_zero=True)(enc_in)
    seq, h, c = LSTM(4, return_sequences=True, return_state=True)(e)
    d, _, _ = LSTM(4, return_sequences=True, return_state=True)(dec_in, initial_state=[h, c])
    ctx, w = AdditiveAttention()([d, seq], return_attention_scores=True)
    z = Concatenate()([d, ctx])
    out = TimeDistributed(Dense(3, activation="softmax"))(z)
    model = Model([enc_in, dec_in], {"probs": out, "weights": w})
    x = [np.array([[0, 3, 4, 5], [1, 2, 0, 0]]), rng.normal(size=(2, 3, 2)).astype(np.float32)]
    want = model.predict(x, verbose=0)
    clone = Model.from_config(model.get_config())
    assert [l.name for l in clone.layers] == [l.name for l in model.layers]
    clone.set_weight_dict(model.get_weight_dict())
    got = clone.predict(x, verbose=0)
    for k in ("probs", "weights"):
        np.testing.assert_array_equal(got[k], want[k])
    model.compile("adam", {"probs": "sparse_categorical_crossentropy", "weights": None})
    y = {"probs": rng.integers(0, 3, (2, 3))}
    model.fit(x, y, epochs=1, verbose=0)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict(x, verbose=0)["probs"],
                                  model.predict(x, verbose=0)["probs"])
    assert again.compiled


def test_summary_lists_the_graph(capsys):
    a = Input((4, 2), name="a")
    z = LSTM(3, name="enc")(a)
    Model(a, Dense(1, name="out")(z), name="tiny").summary()
    out = capsys.readouterr().out
    assert 'Model: "tiny"' in out and "enc (LSTM)" in out and "(None, 3)" in out
    # LSTM: 4 gates x 3 units x (2 inputs + 3 recurrent) + two biases of 12; Dense: 3 + 1
    assert "Total params: 88" in out


def test_weights_of_a_functional_model_round_trip_through_npz(tmp_path):
    a = Input((3, 2))
    m = Model(a, Dense(1)(LSTM(2)(a)))
    m.save_weights(tmp_path / "w.npz")  # the weights alone round-trip (model files: see
    # tests/test_model_files.py)
    b = Model(a, Dense(1)(LSTM(2)(a)))
    b.load_weights(tmp_path / "w.npz")
    x = np.ones((1, 3, 2), np.float32)
    np.testing.assert_array_equal(b.predict(x, verbose=0), m.predict(x, verbose=0))


@pytest.mark.parametrize("padding", ["right", "left"])
def test_gradients_through_the_outputs_at_masked_steps(padding):
    """Flatten drops the mask, so the repeated outputs at masked steps reach the loss: their
    gradient goes to the last real step, or to the initial state (before the first real step,
    and for an empty row); the initial state comes from Dense layers, whose weights' gradients
    are checked with the rest."""
    set_seed(14)
    rng = np.random.default_rng(12)
    x_in, s_in = Input((5, 3), dtype="float64"), Input((2,), dtype="float64")
    h0, c0 = Dense(3, activation="tanh")(s_in), Dense(3)(s_in)
    seq = LSTM(3, return_sequences=True)(Masking(0.0)(x_in), initial_state=[h0, c0])
    model = Model([x_in, s_in], Dense(1)(Flatten()(seq)))
    model.compile("sgd", "mse")
    x = rng.normal(size=(4, 5, 3))
    for b, n in enumerate([5, 2, 0, 3]):
        if padding == "right":
            x[b, n:] = 0.0
        else:
            x[b, : 5 - n] = 0.0
    _fd_check(model, [x, rng.normal(size=(4, 2))], rng.normal(size=(4, 1)))


def test_a_keras_file_gets_an_error_that_says_what_to_do(tmp_path):
    import zipfile

    from fastlstm import load_model

    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as z:  # a .keras file is a zip (config.json, weights)
        z.writestr("config.json", "{}")
    with pytest.raises(ValueError, match="from_keras"):
        load_model(path)
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match="is a Keras file"):
        load_model(renamed)
