"""fastlstm.models.Sequential: whole-model gradients by finite differences (float64), the
flat buffers, fit/evaluate/predict semantics, masks, reproducibility, weights and configs,
pickling, and every bad-input error."""

import pickle

import numpy as np
import pytest
from fastlstm import losses, optim
from fastlstm.callbacks import LambdaCallback
from fastlstm.layers import GRU, LSTM, Bidirectional, Dense, Dropout, Embedding, Input
from fastlstm.models import NonFiniteLossError, Sequential, set_seed


def _fd_check(model, x, y, lengths=None, eps=1e-6):
    """Central differences over every parameter against the model's backward pass."""
    v, g = model.compute_loss_and_gradients(x, y, lengths)
    p = model.flat_params
    num = np.zeros_like(g)
    for i in range(p.size):
        old = p[i]
        p[i] = old + eps
        vp, _ = model.compute_loss_and_gradients(x, y, lengths)
        p[i] = old - eps
        vm, _ = model.compute_loss_and_gradients(x, y, lengths)
        p[i] = old
        num[i] = (vp - vm) / (2 * eps)
    assert np.isfinite(v) and np.abs(num).max() > 1e-3
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8 * np.abs(num).max())


def _tokens(rng, B, T, V, lengths):
    tok = rng.integers(1, V, (B, T))
    for b, L in enumerate(lengths):
        tok[b, L:] = 0
    return tok


# ------------------------------------------------------------------------------------ gradients
def test_gradients_embedding_lstm_dense_bce_with_mask_and_empty_row():
    set_seed(11)
    rng = np.random.default_rng(0)
    tok = _tokens(rng, 5, 7, 11, [7, 3, 5, 0, 6])
    m = Sequential([Embedding(11, 4, mask_zero=True), LSTM(3), Dense(1, activation="sigmoid")],
                   dtype="float64")
    m.compile("sgd", "binary_crossentropy")
    _fd_check(m, tok, rng.integers(0, 2, 5))


def test_gradients_bidirectional_stack_sparse_softmax():
    set_seed(12)
    rng = np.random.default_rng(1)
    tok = _tokens(rng, 5, 6, 9, [6, 2, 4, 1, 5])
    m = Sequential([Embedding(9, 3, mask_zero=True),
                    Bidirectional(LSTM(3, return_sequences=True), merge_mode="mul"),
                    GRU(2, go_backwards=True), Dense(3, activation="softmax")], dtype="float64")
    m.compile("adam", "sparse_categorical_crossentropy")
    _fd_check(m, tok, rng.integers(0, 3, 5))


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "ave"])
def test_gradients_bidirectional_gru_merges_with_lengths(merge_mode):
    set_seed(13)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 5, 3))
    m = Sequential([Input((5, 3)), Bidirectional(GRU(3), merge_mode=merge_mode),
                    Dense(2, activation="tanh")], dtype="float64")
    m.compile("sgd", "mse")
    _fd_check(m, x, rng.normal(size=(4, 2)), lengths=np.array([5, 2, 4, 1]))


def test_gradients_sequence_output_masked_cce_peephole_go_backwards():
    set_seed(14)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 6, 3))
    m = Sequential([Input((6, 3)), LSTM(4, return_sequences=True, go_backwards=True, peephole=True),
                    Dense(3, activation="relu"), LSTM(2, return_sequences=True),
                    Dense(2, activation="softmax")], dtype="float64")
    m.compile("sgd", "categorical_crossentropy")
    _fd_check(m, x, np.eye(2)[rng.integers(0, 2, (4, 6))], lengths=np.array([6, 3, 1, 5]))


@pytest.mark.parametrize("loss", ["mse", "mae", "huber", losses.BinaryCrossentropy(from_logits=True)])
def test_gradients_regression_losses_with_regularizers(loss):
    set_seed(15)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, 5, 3))
    y = rng.random((4, 5)) if isinstance(loss, losses.Loss) else rng.normal(size=(4, 5))
    m = Sequential([Input((5, 3)),
                    LSTM(3, return_sequences=True, kernel_regularizer=optim.l1_l2(0.01, 0.02),
                         recurrent_regularizer="l2"),
                    Dense(1, kernel_regularizer=optim.L2(0.1), bias_regularizer="l1")],
                   dtype="float64")
    m.compile("sgd", loss)
    _fd_check(m, x, y, lengths=np.array([5, 1, 3, 4]))


def test_gradients_unfused_probability_losses():
    set_seed(16)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 5, 2))
    m = Sequential([Input((5, 2)), LSTM(3), Dropout(0.0), Dense(3, activation="softmax")],
                   dtype="float64")
    # a Dropout after the softmax Dense keeps the loss on probabilities (Keras's clipped forms)
    m2 = Sequential([Input((5, 2)), LSTM(3), Dense(3, activation="softmax"), Dropout(0.0)],
                    dtype="float64")
    y = np.eye(3)[rng.integers(0, 3, 4)]
    for model in (m, m2):
        model.compile("sgd", "categorical_crossentropy")
        _fd_check(model, x, y)
    m2.compile("sgd", "sparse_categorical_crossentropy")
    _fd_check(m2, x, rng.integers(0, 3, 4))
    m3 = Sequential([Input((5, 2)), LSTM(3), Dense(2, activation="sigmoid"), Dropout(0.0)],
                    dtype="float64")
    m3.compile("sgd", "binary_crossentropy")
    _fd_check(m3, x, rng.integers(0, 2, (4, 2)))


def test_fused_and_unfused_cross_entropy_agree():
    set_seed(17)
    rng = np.random.default_rng(6)
    x = rng.normal(size=(6, 4, 2))
    y = rng.integers(0, 3, 6)
    fused = Sequential([Input((4, 2)), LSTM(3), Dense(3, activation="softmax")], dtype="float64")
    unfused = Sequential([Input((4, 2)), LSTM(3), Dense(3, activation="softmax"), Dropout(0.0)],
                         dtype="float64")
    unfused.set_weights(fused.get_weights())
    for m in (fused, unfused):
        m.compile("sgd", "sparse_categorical_crossentropy")
    (v1, g1), (v2, g2) = (m.compute_loss_and_gradients(x, y) for m in (fused, unfused))
    assert fused._fused and not unfused._fused
    assert v1 == pytest.approx(v2, rel=1e-12)
    np.testing.assert_allclose(g1, g2, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------ buffers
def test_all_weights_and_gradients_live_in_one_flat_buffer_each():
    m = Sequential([Embedding(20, 4), Bidirectional(LSTM(3, return_sequences=True)),
                    GRU(5), Dense(2)])
    for layer in m.layers:
        for name in layer.params:
            assert np.shares_memory(layer.params[name], m.flat_params)
            assert np.shares_memory(layer.grads[name], m.flat_grads)
    assert m.count_params() == 20 * 4 + 2 * (4 * 3 * (4 + 3) + 8 * 3) + (3 * 5 * (6 + 5) + 6 * 5) + 5 * 2 + 2
    m.compile("sgd", "mse")
    tok = np.random.default_rng(0).integers(0, 20, (3, 4))
    before = m.flat_params.copy()
    _, g = m.compute_loss_and_gradients(tok, np.zeros((3, 2)))
    m.train_on_batch(tok, np.zeros((3, 2)))
    # SGD: the whole model moved by -lr * gradient in one step, except the LSTMs' second bias
    # (bias_hh: Keras has one bias, so it stays where it is)
    want = before - 0.01 * g
    fixed = np.zeros(want.size, bool)
    base = m.flat_params.ctypes.data // m.flat_params.itemsize
    for layer in m.layers:
        for name in layer.fixed_weights:
            v = layer.params[name]
            start = v.ctypes.data // v.itemsize - base
            fixed[start : start + v.size] = True
    assert fixed.sum() == 2 * 4 * 3  # Bidirectional LSTM(3): bias_hh_l0 and _reverse
    want[fixed] = before[fixed]
    np.testing.assert_allclose(m.flat_params, want, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------------ Keras snippet
def test_keras_snippet_runs_with_top_level_import():
    from fastlstm import Sequential as TopSequential  # re-exported by fastlstm/__init__.py

    rng = np.random.default_rng(0)
    X_train = rng.integers(1, 10000, (64, 12))
    y_train = rng.integers(0, 2, 64)
    X_val, y_val = X_train[:16], y_train[:16]
    model = TopSequential()
    model.add(Embedding(input_dim=10000, output_dim=16))
    model.add(LSTM(16))
    model.add(Dense(1, activation="sigmoid"))
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    h = model.fit(X_train, y_train, epochs=2, batch_size=32, validation_data=(X_val, y_val),
                  verbose=0)
    preds = model.predict(X_val, verbose=0)
    assert preds.shape == (16, 1) and ((preds > 0) & (preds < 1)).all()
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}


# ------------------------------------------------------------------------------------ fit semantics
def _memory_task(rng, n, T=10):
    """Label = whether the first token is > 4; right padding; the model must carry memory."""
    lengths = rng.integers(4, T + 1, n)
    tok = _tokens(rng, n, T, 9, lengths)
    return tok, (tok[:, 0] > 4).astype(np.float32)


def test_fit_learns_and_history_and_evaluate_agree():
    set_seed(0)
    rng = np.random.default_rng(1)
    x, y = _memory_task(rng, 384)
    m = Sequential([Embedding(9, 8, mask_zero=True), LSTM(16), Dense(1, activation="sigmoid")])
    m.compile(optimizer=optim.Adam(0.01), loss="binary_crossentropy", metrics=["accuracy"])
    h = m.fit(x, y, epochs=6, batch_size=32, validation_split=0.25, verbose=0)
    assert h.epoch == list(range(6))
    assert h.history["loss"][-1] < 0.5 * h.history["loss"][0]
    assert h.history["val_accuracy"][-1] >= 0.9
    # validation_split is the last 25% before shuffling: evaluating it gives the last val logs
    loss, acc = m.evaluate(x[288:], y[288:], verbose=0)
    assert loss == pytest.approx(h.history["val_loss"][-1], rel=1e-6)
    assert acc == pytest.approx(h.history["val_accuracy"][-1])
    # evaluate agrees with the loss and accuracy computed from predict by hand
    p = m.predict(x[288:], verbose=0).astype(np.float64)[:, 0]
    t = y[288:]
    bce = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    assert loss == pytest.approx(bce, rel=1e-4)
    assert acc == pytest.approx(np.mean((p > 0.5) == (t > 0.5)))


def test_sequence_loss_is_the_mean_over_valid_steps():
    set_seed(1)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 6, 2))
    lengths = np.array([6, 1, 3, 0, 4])
    y = rng.normal(size=(5, 6, 1))
    m = Sequential([Input((6, 2)), LSTM(3, return_sequences=True), Dense(1)], dtype="float64")
    m.compile("sgd", "mse", metrics=["mae"])
    loss, mae = m.evaluate(x, y, lengths=lengths, verbose=0, batch_size=2)
    p = m.predict(x, lengths=lengths, verbose=0)
    valid = np.arange(6)[None, :] < lengths[:, None]
    assert loss == pytest.approx(np.mean(((p - y)[valid]) ** 2), rel=1e-10)
    assert mae == pytest.approx(np.mean(np.abs(p - y)[valid]), rel=1e-10)


def test_explicit_lengths_equal_running_each_truncated_sequence():
    set_seed(2)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 7, 3))
    lengths = np.array([7, 2, 5, 1])
    m = Sequential([Input((None, 3)), Bidirectional(LSTM(4, return_sequences=True)), GRU(3),
                    Dense(2)], dtype="float64")
    got = m.predict(x, lengths=lengths, verbose=0)
    for i, L in enumerate(lengths):
        np.testing.assert_allclose(got[i], m.predict(x[i : i + 1, :L], verbose=0)[0],
                                   rtol=1e-10, atol=1e-12)


def test_set_seed_makes_a_fit_bitwise_reproducible():
    def run(seed):
        set_seed(seed)
        rng = np.random.default_rng(4)
        x, y = _memory_task(rng, 96)
        m = Sequential([Embedding(9, 6, mask_zero=True), LSTM(8, dropout=0.2, return_sequences=True),
                        Dropout(0.3), GRU(5), Dense(1, activation="sigmoid")])
        m.compile("adam", "binary_crossentropy")
        h = m.fit(x, y, epochs=2, batch_size=16, verbose=0)
        return m.flat_params.copy(), h.history["loss"]

    (p1, l1), (p2, l2), (p3, _) = run(5), run(5), run(6)
    np.testing.assert_array_equal(p1, p2)
    assert l1 == l2
    assert not np.array_equal(p1, p3)


def test_fit_s_lazy_streams_are_the_generators_they_stand_for():
    """fit gives each layer a fresh stream made at its first use: the global stream advances as
    if it were made at once, it draws the numbers of that generator, and copies and pickles of
    it are generators in its state."""
    import copy

    from fastlstm import initializers

    set_seed(11)
    lazy = initializers.spawn_rng(lazy=True)
    after_lazy = initializers.spawn_seed()
    set_seed(11)
    eager = initializers.spawn_rng()
    assert initializers.spawn_seed() == after_lazy
    assert lazy._generator is None  # nothing made yet
    np.testing.assert_array_equal(lazy.random(5), eager.random(5))
    assert lazy.integers(0, 1000, 3).tolist() == eager.integers(0, 1000, 3).tolist()
    for c in (copy.deepcopy(lazy), pickle.loads(pickle.dumps(lazy))):
        assert isinstance(c, np.random.Generator)
        assert c.bit_generator.state == eager.bit_generator.state
    lazy.bit_generator.state = eager.bit_generator.state  # what the distributed shuffle does
    np.testing.assert_array_equal(lazy.permutation(9), eager.permutation(9))


def test_stateful_fit_carries_state_and_needs_fixed_batches():
    set_seed(3)
    series = np.sin(np.arange(400) * 0.3)[None, :, None] * np.ones((4, 1, 1))
    m = Sequential([Input((None, 1)), LSTM(6, stateful=True, return_sequences=True), Dense(1)],
                   dtype="float64")
    m.compile("adam", "mse")
    # the state carried out of a training batch is its final state under the weights that ran it
    ref = LSTM(6, return_sequences=True, return_state=True)
    ref.build((None, 1), "float64")
    ref.set_weights(m.layers[0].get_weights())
    _, h, c = ref(series[:, :40])
    m.train_on_batch(series[:, :40], series[:, 1:41])
    np.testing.assert_allclose(m.layers[0].states[0], h, rtol=1e-12)
    np.testing.assert_allclose(m.layers[0].states[1], c, rtol=1e-12)
    # truncated BPTT over 10 chunks of 40 steps, state carried between chunks
    for _ in range(2):
        m.reset_states()
        for k in range(10):
            chunk = series[:, 40 * k : 40 * k + 40]
            nxt = series[:, 40 * k + 1 : 40 * k + 41]
            if nxt.shape[1] == 40:
                m.train_on_batch(chunk, nxt)
    m.reset_states()
    whole = m.predict(series[:, :200], verbose=0, batch_size=4)
    m.reset_states()
    halves = np.concatenate([m.predict(series[:, :120], verbose=0, batch_size=4),
                             m.predict(series[:, 120:200], verbose=0, batch_size=4)], axis=1)
    np.testing.assert_allclose(halves, whole, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="not divisible by batch_size=3"):
        m.fit(series[:, :40], series[:, 1:41], batch_size=3, verbose=0)
    with pytest.raises(ValueError, match="same batch size"):
        m.predict(series[:2, :10], verbose=0)


def test_trainable_false_freezes_a_layer():
    set_seed(4)
    rng = np.random.default_rng(6)
    emb = Embedding(9, 4, trainable=False)
    m = Sequential([emb, LSTM(4), Dense(1)])
    m.compile("adam", "mse")
    before = emb.params["embeddings"].copy()
    lstm_before = m.layers[1].params["weight_ih_l0"].copy()
    m.fit(rng.integers(0, 9, (32, 5)), rng.normal(size=32), epochs=2, verbose=0)
    np.testing.assert_array_equal(emb.params["embeddings"], before)
    assert not np.array_equal(m.layers[1].params["weight_ih_l0"], lstm_before)
    lines = []
    m.summary(print_fn=lines.append)
    # the embeddings (9 * 4) and the LSTM's bias_hh (4 * 4), which Keras does not have
    assert any("Non-trainable params: 52" in line for line in lines)


def test_regularization_is_part_of_the_reported_loss():
    set_seed(5)
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(8, 4, 3)), rng.normal(size=(8, 1))
    reg = Sequential([Input((4, 3)), LSTM(3, kernel_regularizer=optim.L2(0.5)),
                      Dense(1, kernel_regularizer=optim.L1(0.25))], dtype="float64")
    plain = Sequential([Input((4, 3)), LSTM(3), Dense(1)], dtype="float64")
    plain.set_weights(reg.get_weights())
    for m in (reg, plain):
        m.compile("sgd", "mse")
    W = reg.layers[0].params["weight_ih_l0"]
    K = reg.layers[1].params["kernel"]
    penalty = 0.5 * np.sum(W * W) + 0.25 * np.sum(np.abs(K))
    assert reg.evaluate(x, y, verbose=0) == pytest.approx(plain.evaluate(x, y, verbose=0) + penalty,
                                                          rel=1e-10)


# ------------------------------------------------------------------------------------ weights/config
def _mixed_model():
    return Sequential([Embedding(13, 4, mask_zero=True),
                       Bidirectional(LSTM(3, return_sequences=True, peephole=True), merge_mode="sum"),
                       Dropout(0.1), GRU(5, go_backwards=True), Dense(2, activation="softmax")])


def test_weights_round_trip_and_names():
    set_seed(6)
    a, b = _mixed_model(), _mixed_model()
    tok = np.random.default_rng(8).integers(0, 13, (4, 6))
    assert not np.allclose(a.predict(tok, verbose=0), b.predict(tok, verbose=0))
    b.set_weights(a.get_weights())
    np.testing.assert_array_equal(a.predict(tok, verbose=0), b.predict(tok, verbose=0))
    d = a.get_weight_dict()
    assert "layers.0.embeddings" in d and "layers.1.weight_hh_l0_reverse" in d
    assert "layers.3.bias_hh_l0" in d and "layers.4.kernel" in d
    c = _mixed_model()
    c.set_weight_dict(d)
    np.testing.assert_array_equal(a.predict(tok, verbose=0), c.predict(tok, verbose=0))
    with pytest.raises(ValueError, match="weight 0 .*shape"):
        b.set_weights([np.zeros((2, 2))] + a.get_weights()[1:])
    with pytest.raises(KeyError, match="missing weights"):
        c.set_weight_dict({"layers.0.embeddings": d["layers.0.embeddings"]})
    with pytest.raises(KeyError, match="unexpected weight 'layers.9.kernel'"):
        c.set_weight_dict(dict(d, **{"layers.9.kernel": np.zeros(1)}))


def test_config_round_trip_and_pickle_reproduce_predictions():
    set_seed(7)
    a = _mixed_model()
    a.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    tok = np.random.default_rng(9).integers(0, 13, (4, 6))
    cfg = a.get_config()
    assert cfg["class"] == "Sequential" and cfg["dtype"] == "float32" and len(cfg["layers"]) == 5
    b = Sequential.from_config(cfg)
    assert b.get_config() == cfg
    b.set_weight_dict(a.get_weight_dict())
    np.testing.assert_array_equal(a.predict(tok, verbose=0), b.predict(tok, verbose=0))
    c = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(a.predict(tok, verbose=0), c.predict(tok, verbose=0))
    assert c.evaluate(tok, [0, 1, 1, 0], verbose=0) == a.evaluate(tok, [0, 1, 1, 0], verbose=0)


def test_save_goes_through_the_model_file(tmp_path):
    io = pytest.importorskip("fastlstm.io")  # the model-file module of the same package
    set_seed(8)
    a = _mixed_model()
    tok = np.random.default_rng(10).integers(0, 13, (3, 5))
    a.save(tmp_path / "m.fastlstm")
    b = io.load_model(tmp_path / "m.fastlstm")
    np.testing.assert_array_equal(a.predict(tok, verbose=0), b.predict(tok, verbose=0))
    a.save_weights(tmp_path / "w.npz")
    c = _mixed_model()
    c.load_weights(tmp_path / "w.npz")
    np.testing.assert_array_equal(a.predict(tok, verbose=0), c.predict(tok, verbose=0))


def test_summary_table():
    m = Sequential([Input((10, 3)), LSTM(8, return_sequences=True), Dense(2)])
    lines = []
    m.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "lstm (LSTM)" in text and "(None, 10, 8)" in text and "(None, 10, 2)" in text
    n_lstm = 4 * 8 * (3 + 8) + 2 * 4 * 8
    assert f"{n_lstm:,}" in text and f"Total params: {n_lstm + 8 * 2 + 2:,}" in text
    with pytest.raises(ValueError, match="not been built"):
        Sequential([LSTM(3)]).summary()


def test_build_again_with_a_concrete_time_axis():
    m = Sequential([Embedding(9, 3), LSTM(4), Dense(1)])
    assert m.built  # an Embedding-first model builds at once (its input is token ids)
    w = m.get_weights()
    m.build((None, 12))
    np.testing.assert_array_equal(m.get_weights()[1], w[1])
    f = Sequential([Input((None, 3)), LSTM(4)])
    f.build((None, 10, 3))
    with pytest.raises(ValueError, match=r"built for input \(None, None, 3\), got \(None, 10, 4\)"):
        f.build((None, 10, 4))


# ------------------------------------------------------------------------------------ bad input
def _small():
    m = Sequential([Input((None, 3)), LSTM(4), Dense(2, activation="softmax")])
    return m


def test_fit_before_compile():
    with pytest.raises(RuntimeError, match="compiled before fit"):
        _small().fit(np.zeros((4, 5, 3)), np.zeros(4))


def test_mismatched_sample_counts():
    m = _small()
    m.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="same number of samples, got 4 and 5"):
        m.fit(np.zeros((4, 5, 3)), np.zeros(5), verbose=0)
    with pytest.raises(ValueError, match="x_val and y_val must have the same number"):
        m.fit(np.zeros((4, 5, 3)), np.zeros(4), validation_data=(np.zeros((2, 5, 3)), [0]), verbose=0)
    with pytest.raises(ValueError, match=r"lengths must have shape \(4,\)"):
        m.fit(np.zeros((4, 5, 3)), np.zeros(4), lengths=[1, 2], verbose=0)
    with pytest.raises(ValueError, match=r"in \[0, T=5\]"):
        m.fit(np.zeros((4, 5, 3)), np.zeros(4), lengths=[1, 2, 6, 1], verbose=0)


def test_labels_out_of_range_for_the_loss():
    m = _small()
    m.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"integers in \[0, 2\).*max 2"):
        m.fit(np.zeros((3, 5, 3)), [0, 1, 2], verbose=0)
    m.compile("adam", "categorical_crossentropy")
    with pytest.raises(ValueError, match="sparse_categorical_crossentropy"):
        m.fit(np.zeros((3, 5, 3)), [0, 1, 1], verbose=0)
    b = Sequential([Input((None, 3)), LSTM(4), Dense(1, activation="sigmoid")])
    b.compile("adam", "binary_crossentropy")
    with pytest.raises(ValueError, match=r"in \[0, 1\], got min 0.0 and max 3.0"):
        b.fit(np.zeros((3, 5, 3)), [0, 1, 3], verbose=0)
    with pytest.raises(ValueError, match="NaN"):
        b.fit(np.zeros((3, 5, 3)), [0, 1, np.nan], verbose=0)


def test_wrong_input_rank_and_features():
    m = _small()
    m.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"3-D input.*x\[\.\.\., None\]"):
        m.fit(np.zeros((4, 5)), np.zeros(4), verbose=0)
    with pytest.raises(ValueError, match="3 features"):
        m.predict(np.zeros((4, 5, 2)), verbose=0)
    with pytest.raises(ValueError, match="NaN or infinity"):
        m.predict(np.full((1, 2, 3), np.nan), verbose=0)
    e = Sequential([Embedding(5, 2), LSTM(3), Dense(1)])
    with pytest.raises(ValueError, match="2-D"):
        e.predict(np.zeros((2, 3, 1)), verbose=0)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, input_dim=5\)"):
        e.predict(np.array([[1, 7]]), verbose=0)
    with pytest.raises(ValueError, match="layer 1 .*3-D input"):
        Sequential([Input((5, 3)), LSTM(4), LSTM(4)])


def test_unknown_names():
    m = _small()
    with pytest.raises(ValueError, match="unknown optimizer 'adamx'"):
        m.compile("adamx", "mse")
    with pytest.raises(ValueError, match="unknown loss 'msee'"):
        m.compile("adam", "msee")
    with pytest.raises(ValueError, match="unknown metric 'acuracy'"):
        m.compile("adam", "mse", metrics=["acuracy"])
    with pytest.raises(ValueError, match="needs a loss"):
        m.compile("adam")
    with pytest.raises(ValueError, match="return_state"):
        Sequential([LSTM(3, return_state=True)])


def test_nan_loss_stops_with_epoch_and_batch_and_keeps_last_good_weights():
    set_seed(9)
    rng = np.random.default_rng(11)
    x = rng.normal(size=(48, 4, 3)).astype(np.float32)
    y = rng.normal(size=(48, 1)).astype(np.float32)
    y[37] = 1e30  # batch 3 (samples 32..47) of each epoch: its square overflows float32
    m = Sequential([Input((4, 3)), LSTM(4), Dense(1)])
    m.compile("adam", "mse")
    m.fit(x[:32], y[:32], epochs=1, batch_size=16, verbose=0, shuffle=False)
    snap = {}
    cb = LambdaCallback(on_train_batch_end=lambda b, logs: snap.update({b: m.flat_params.copy()}))
    with pytest.raises(NonFiniteLossError, match="epoch 1, batch 3 of 3") as err:
        m.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=False, callbacks=[cb])
    assert (err.value.epoch, err.value.batch) == (1, 3)
    np.testing.assert_array_equal(m.flat_params, snap[1])
    assert m.history.history == {}  # no epoch finished
    assert np.isfinite(m.predict(x, verbose=0)).all()


def test_bad_fit_arguments():
    m = _small()
    m.compile("adam", "sparse_categorical_crossentropy")
    x, y = np.zeros((4, 5, 3)), np.zeros(4)
    with pytest.raises(ValueError, match="validation_split must be in"):
        m.fit(x, y, validation_split=1.5, verbose=0)
    with pytest.raises(ValueError, match="leaves no training samples out of 4"):
        m.fit(x, y, validation_split=0.9, verbose=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        m.fit(x, y, batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="verbose must be"):
        m.fit(x, y, verbose=3)
    with pytest.raises(ValueError, match="validation_data must be"):
        m.fit(x, y, validation_data=(x,), verbose=0)


# ------------------------------------------------------------------------------------ Keras parity
# Three training steps of two small models, run by Keras 3 (torch backend) from the same
# initial weights: the losses and some final weights are copied below. Regenerate with
# `python tests/test_models.py` where keras is installed (the suite itself never needs it).
def _keras_cases():
    """Tokens, targets and Keras-layout initial weights of the two reference trainings."""
    rng = np.random.default_rng(2024)
    tok_a = np.array([[3, 1, 4, 1, 5], [2, 5, 0, 0, 0], [5, 3, 5, 2, 0], [0, 0, 0, 0, 0],
                      [4, 0, 0, 0, 0]])
    y_a = np.array([0, 1, 1, 0, 1], dtype=np.float32)
    w_a = [rng.normal(0, 0.5, s).astype(np.float32)
           for s in [(6, 3), (3, 16), (4, 16), (16,), (4, 1), (1,)]]
    tok_b = np.array([[1, 2, 3, 4, 5, 6], [6, 5, 4, 0, 0, 0], [2, 2, 0, 0, 0, 0],
                      [3, 1, 4, 1, 5, 0]])
    y_b = rng.integers(0, 2, (4, 6))
    w_b = [rng.normal(0, 0.5, s).astype(np.float32)
           for s in [(7, 2), (2, 9), (3, 9), (2, 9), (2, 9), (3, 9), (2, 9), (3, 2), (2,)]]
    return (tok_a, y_a, w_a), (tok_b, y_b, w_b)


KERAS_A_LOSSES = [0.8352987170219421, 0.7860281467437744, 0.7352452874183655]
KERAS_A_DENSE = [0.10123444348573685, -0.020498350262641907, 0.5633557438850403,
                 0.6712208986282349, -0.46480944752693176]
KERAS_B_LOSSES = [0.6685376167297363, 0.6255608201026917, 0.4731318950653076]
KERAS_B_DENSE = [0.6074248552322388, -0.08025910705327988, -0.3690735697746277,
                 0.32911255955696106, -1.0520126819610596, 0.5711836814880371]


def _gru_from_keras(K, R, b, H):
    perm = np.r_[H:2 * H, 0:H, 2 * H:3 * H]  # Keras blocks z, r, h -> engine r, z, n
    return [K[:, perm].T, R[:, perm].T, b[0, perm], b[1, perm]]


def test_training_steps_match_keras_lstm_adam_with_masks_and_an_empty_row():
    (tok, y, w), _ = _keras_cases()
    m = Sequential([Embedding(6, 3, mask_zero=True), LSTM(4), Dense(1, activation="sigmoid")])
    m.set_weights([w[0], w[1].T, w[2].T, w[3], np.zeros(16), w[4], w[5]])
    m.compile(optim.Adam(0.1), "binary_crossentropy")
    got = [m.train_on_batch(tok, y) for _ in range(3)]
    np.testing.assert_allclose(got, KERAS_A_LOSSES, rtol=1e-5)
    dense = np.concatenate([m.layers[2].params["kernel"].ravel(), m.layers[2].params["bias"]])
    np.testing.assert_allclose(dense, KERAS_A_DENSE, rtol=1e-4, atol=1e-5)
    assert not m.layers[1].params["bias_hh_l0"].any()  # Keras's one bias is bias_ih


def test_training_steps_match_keras_bidirectional_gru_rmsprop_sequence_loss():
    _, (tok, y, w) = _keras_cases()
    m = Sequential([Embedding(7, 2, mask_zero=True),
                    Bidirectional(GRU(3, return_sequences=True), merge_mode="sum"),
                    Dense(2, activation="softmax")])
    m.set_weights([w[0]] + _gru_from_keras(w[1], w[2], w[3], 3)
                  + _gru_from_keras(w[4], w[5], w[6], 3) + [w[7], w[8]])
    m.compile(optim.RMSprop(0.05, momentum=0.5), "sparse_categorical_crossentropy")
    got = [m.train_on_batch(tok, y) for _ in range(3)]
    np.testing.assert_allclose(got, KERAS_B_LOSSES, rtol=1e-5)
    np.testing.assert_allclose(m.layers[2].params["kernel"].ravel(), KERAS_B_DENSE,
                               rtol=1e-4, atol=1e-5)


if __name__ == "__main__":  # regenerate the KERAS_* values (needs keras; torch backend)
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    (tok_a, y_a, w_a), (tok_b, y_b, w_b) = _keras_cases()
    a = keras.Sequential([keras.Input((5,)), keras.layers.Embedding(6, 3, mask_zero=True),
                          keras.layers.LSTM(4), keras.layers.Dense(1, activation="sigmoid")])
    a.set_weights(w_a)
    a.compile(keras.optimizers.Adam(0.1), "binary_crossentropy")
    print("KERAS_A_LOSSES =", [float(a.train_on_batch(tok_a, y_a)) for _ in range(3)])
    print("KERAS_A_DENSE =", a.get_weights()[4].ravel().tolist() + a.get_weights()[5].tolist())
    b = keras.Sequential([
        keras.Input((6,)), keras.layers.Embedding(7, 2, mask_zero=True),
        keras.layers.Bidirectional(keras.layers.GRU(3, return_sequences=True), merge_mode="sum"),
        keras.layers.Dense(2, activation="softmax")])
    b.set_weights(w_b)
    b.compile(keras.optimizers.RMSprop(0.05, momentum=0.5), "sparse_categorical_crossentropy")
    print("KERAS_B_LOSSES =", [float(b.train_on_batch(tok_b, y_b)) for _ in range(3)])
    print("KERAS_B_DENSE =", b.get_weights()[7].ravel().tolist())


def test_trainable_flag_changed_between_fits_is_honored():
    # the frozen weight ranges are cached per step; flipping trainable must change them
    set_seed(12)
    rng = np.random.default_rng(13)
    x = rng.normal(size=(16, 5, 3)).astype(np.float32)
    y = rng.normal(size=(16, 1)).astype(np.float32)
    lstm, head = LSTM(4), Dense(1)
    m = Sequential([Input((5, 3)), lstm, head])
    m.compile("adam", "mse")
    m.fit(x, y, epochs=1, batch_size=8, verbose=0)
    for frozen, moving in ((lstm, head), (head, lstm)):
        frozen.trainable, moving.trainable = False, True
        a = {k: v.copy() for k, v in frozen.params.items()}
        b = {k: v.copy() for k, v in moving.params.items()}
        m.fit(x, y, epochs=1, batch_size=8, verbose=0)
        for k in a:
            np.testing.assert_array_equal(frozen.params[k], a[k])
        assert any(not np.array_equal(moving.params[k], b[k]) for k in b
                   if not k.startswith("bias_hh"))
    np.testing.assert_array_equal(lstm.params["bias_hh_l0"], 0)  # Keras's one bias


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gradient_check_before_a_step_finds_every_nan_and_infinity(dtype):
    from fastlstm.models.parallel import ONE_PROCESS, grads_finite

    rng = np.random.default_rng(14)
    for n in (1, 7, 1023, 1024, 1025, 5000):
        g = rng.normal(size=n).astype(dtype)
        g[0] = np.finfo(dtype).max  # large but finite: no overflowing sum
        assert grads_finite(g)
        for bad in (np.nan, np.inf, -np.inf):
            for i in {0, n // 2, n - 1}:
                h = g.copy()
                h[i] = bad
                assert not grads_finite(h)
                assert not grads_finite(h[::-1])  # strided: the NumPy check
    set_seed(15)
    m = Sequential([Input((4, 3)), LSTM(3), Dense(1)], dtype=dtype)
    m.compile("adam", "mse")
    before = m.flat_params.copy()
    m.flat_grads[...] = 0
    m.flat_grads[-1] = np.inf
    assert ONE_PROCESS.apply_step(m, 1.0) == "the gradients contain NaN or infinity"
    np.testing.assert_array_equal(m.flat_params, before)
