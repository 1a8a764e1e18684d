"""Functional models and the compile state in model files: ``model.save`` and
``fastlstm.load_model`` round-trip graphs bitwise (seq2seq with states, attention, several
inputs and outputs, nested models, shared layers), a loaded model resumes training exactly
where the saved one stopped (every optimizer, Sequential and functional), and bad graphs or
compile states are refused with errors that name the problem."""

import json

import numpy as np
import pytest

import fastlstm
from fastlstm import Input, Model, Sequential, io as fio, losses, optim, set_seed
from fastlstm.layers import (
    GRU,
    LSTM,
    Add,
    AdditiveAttention,
    Attention,
    Bidirectional,
    Concatenate,
    Dense,
    Embedding,
    TimeDistributed,
)


def _rewrite(path, change_tensors=None, change_meta=None):
    tensors, meta = fio.load_safetensors(path)
    if change_tensors:
        change_tensors(tensors)
    if change_meta:
        change_meta(meta)
    fio.save_safetensors(path, tensors, meta)


def _edit_json(key, fn):
    def change(meta):
        info = json.loads(meta[key])
        fn(info)
        meta[key] = json.dumps(info)
    return change


def _assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for p, q in zip(a, b):
            np.testing.assert_array_equal(p, q)
    else:
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------ the graphs
def seq2seq(dtype="float32"):
    """Keras's encoder-decoder: the encoder's states start the decoder (teacher forcing)."""
    enc_in = Input((None, 5), dtype=dtype, name="encoder_inputs")
    dec_in = Input((None, 4), dtype=dtype, name="decoder_inputs")
    _, h, c = LSTM(6, return_state=True, name="encoder")(enc_in)
    dec = LSTM(6, return_sequences=True, return_state=True, name="decoder")
    seq, _, _ = dec(dec_in, initial_state=[h, c])
    out = Dense(4, activation="softmax", name="probs")(seq)
    x = [np.random.default_rng(0).normal(size=(3, 7, 5)),
         np.random.default_rng(1).normal(size=(3, 4, 4))]
    return Model([enc_in, dec_in], out), x


def attention(dtype="float32"):
    """Luong and Bahdanau attention over a masked token encoder, dict outputs."""
    toks, dec_in = Input((None,), dtype="int64", name="tokens"), Input((None, 3), dtype=dtype)
    e = Embedding(11, 4, mask_zero=True, dtype=dtype)(toks)
    seq, h, c = LSTM(5, return_sequences=True, return_state=True)(e)
    d = GRU(5, return_sequences=True)(dec_in, initial_state=[h])
    luong = Attention(use_scale=True)([d, seq])
    bahdanau, w = AdditiveAttention()([d, seq], return_attention_scores=True)
    z = Concatenate()([d, luong, bahdanau])
    out = TimeDistributed(Dense(3, activation="softmax"))(z)
    x = [np.array([[0, 0, 3, 4, 5], [1, 2, 9, 0, 0], [7, 0, 8, 0, 6]]),
         np.random.default_rng(2).normal(size=(3, 4, 3))]
    return Model([toks, dec_in], {"probs": out, "scores": w}), x


def two_in_two_out(dtype="float32"):
    a, b = Input((6, 3), dtype=dtype, name="a"), Input((6, 3), dtype=dtype, name="b")
    shared = LSTM(4, return_sequences=True)
    s = Add()([shared(a), shared(b)])
    out1 = Dense(2, activation="softmax", name="cls")(Bidirectional(GRU(3))(s))
    out2 = Dense(1, name="reg")(LSTM(2)(s))
    rng = np.random.default_rng(3)
    return Model([a, b], [out1, out2]), [rng.normal(size=(4, 6, 3)), rng.normal(size=(4, 6, 3))]


def nested(dtype="float32"):
    inner_in = Input((5, 3), dtype=dtype)
    inner = Model(inner_in, LSTM(4, return_sequences=True)(inner_in), name="inner")
    seq_block = Sequential([Input((5, 4)), GRU(3, return_sequences=True)], dtype=dtype,
                           name="block")
    outer_in = Input((5, 3), dtype=dtype)
    out = Dense(2)(LSTM(3)(seq_block(inner(outer_in))))
    return Model(outer_in, out), np.random.default_rng(4).normal(size=(2, 5, 3))


def shared_along_a_path(dtype="float32"):
    """One Dense applied before and after an LSTM: its second call reads a later layer."""
    inp = Input((5, 4), dtype=dtype)
    proj = Dense(4, activation="tanh", name="proj")
    z = proj(LSTM(4, return_sequences=True)(proj(inp)))
    return Model(inp, Dense(1)(GRU(2)(z))), np.random.default_rng(5).normal(size=(3, 5, 4))


GRAPHS = {"seq2seq": seq2seq, "attention": attention, "two_in_two_out": two_in_two_out,
          "nested": nested, "shared_along_a_path": shared_along_a_path}


def _cast(x, dtype):
    if isinstance(x, list):
        return [_cast(v, dtype) for v in x]
    return x if x.dtype.kind in "iu" else x.astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_functional_models_round_trip_bitwise(tmp_path, name, dtype):
    set_seed(20)
    model, x = GRAPHS[name](dtype)
    x = _cast(x, dtype)
    path = tmp_path / "m.safetensors"
    model.save(path)
    info = fio.read_model_info(path)
    assert info["format_version"] == 2 and info["model"]["class"] == "Model"
    back = fastlstm.load_model(path)
    assert isinstance(back, Model) and not back.compiled
    assert [l.name for l in back.layers] == [l.name for l in model.layers]
    assert back.input_names == model.input_names and back.output_names == model.output_names
    want = model.predict(x, verbose=0)
    assert np.abs(want if not isinstance(want, (list, dict)) else
                  next(iter(want.values())) if isinstance(want, dict) else want[0]).max() > 0
    _assert_same(back.predict(x, verbose=0), want)
    _assert_same(back.get_weights(), model.get_weights())


def test_shared_layers_in_an_inference_model_after_loading(tmp_path):
    """The saved training model's decoder layers, reused in a step-by-step inference model
    after loading, give the training model's outputs."""
    set_seed(21)
    model, (xe, xd) = seq2seq()
    xe, xd = xe.astype(np.float32), xd.astype(np.float32)
    model.save(tmp_path / "s2s.safetensors")
    back = fastlstm.load_model(tmp_path / "s2s.safetensors")
    enc, dec, probs = back.get_layer("encoder"), back.get_layer("decoder"), back.get_layer("probs")
    e_in = Input((None, 5))
    _, h, c = enc(e_in)
    encoder = Model(e_in, [h, c])
    d_in, h_in, c_in = Input((None, 4)), Input((6,)), Input((6,))
    seq, h2, c2 = dec(d_in, initial_state=[h_in, c_in])
    decoder = Model([d_in, h_in, c_in], [probs(seq), h2, c2])
    h, c = encoder.predict(xe, verbose=0)
    steps = []
    for t in range(xd.shape[1]):
        p, h, c = decoder.predict([xd[:, t:t + 1], h, c], verbose=0)
        steps.append(p)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), model.predict([xe, xd], verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_the_cpp_runner_refuses_a_functional_model_file(tmp_path):
    """fastlstm.load (the bare-module loader) and the C++ runner do not misread a graph; the
    C++ message is tested in tests/cpp/test_model.cpp."""
    model, _ = seq2seq()
    model.save(tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="holds a 'Model' model, not an LSTM or GRU"):
        fastlstm.load(tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="self-check is stored for Sequential models only"):
        model.save(tmp_path / "n.safetensors", example_input=np.zeros((1, 2, 5)))
    assert not (tmp_path / "n.safetensors").exists()


# ------------------------------------------------------------------------------ resuming
def _seq_model(dtype):
    return Sequential([Input((6, 3)), LSTM(5, return_sequences=True), GRU(4), Dense(2)],
                      dtype=dtype)


OPTIMIZERS = {
    "sgd": lambda: optim.SGD(0.05),
    "sgd_nesterov": lambda: optim.SGD(0.05, momentum=0.9, nesterov=True, clipnorm=1.0),
    "adam": lambda: "adam",
    "adam_amsgrad_schedule": lambda: optim.Adam(optim.ExponentialDecay(0.01, 3, 0.5),
                                                amsgrad=True),
    "adamw": lambda: optim.AdamW(0.01, global_clipnorm=2.0),
    "rmsprop_centered": lambda: optim.RMSprop(0.01, momentum=0.5, centered=True),
    "adagrad": lambda: optim.Adagrad(0.1, clipvalue=0.5),
}


def _fit_data(rng, n=24):
    return rng.normal(size=(n, 6, 3)), rng.normal(size=(n, 2))


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_training_resumes_bitwise_after_loading_a_sequential(tmp_path, opt):
    set_seed(30)
    rng = np.random.default_rng(30)
    x, y = _fit_data(rng)
    model = _seq_model("float64")
    model.compile(OPTIMIZERS[opt](), "mse", metrics=["mae"], loss_weights=0.5)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    path = tmp_path / "m.safetensors"
    model.save(path)
    back = fastlstm.load_model(path)
    assert back.compiled and type(back.optimizer) is type(model.optimizer)
    assert back.optimizer.iterations == model.optimizer.iterations == 6
    assert back.optimizer.get_config() == model.optimizer.get_config()
    logs = []
    for m in (model, back):
        set_seed(31)  # the same shuffling for both
        logs.append(m.fit(x, y, epochs=2, batch_size=8, verbose=0).history)
    assert logs[0] == logs[1] and "mae" in logs[0]
    _assert_same(back.get_weights(), model.get_weights())
    # the optimizer's slots mattered: a fresh optimizer from the same weights differs
    fresh = fastlstm.load_model(path)
    fresh.compile(OPTIMIZERS[opt](), "mse", metrics=["mae"], loss_weights=0.5)
    set_seed(31)
    fresh.fit(x, y, epochs=2, batch_size=8, verbose=0)
    if opt != "sgd":  # plain SGD keeps no state
        assert any(not np.array_equal(a, b) for a, b in
                   zip(fresh.get_weights(), model.get_weights()))


def test_an_interrupted_run_ends_as_an_uninterrupted_one(tmp_path):
    """The issue's wording: fit 2 epochs, save, load, fit 1 more gives the losses and weights
    of 3 epochs in one go (no shuffling, so the batches are the same)."""
    rng = np.random.default_rng(38)
    x, y = _fit_data(rng)
    runs = []
    for interrupted in (False, True):
        set_seed(38)
        model = _seq_model("float32")
        model.compile(optim.Adam(0.01), "mse")
        if not interrupted:
            runs.append((model.fit(x, y, epochs=3, batch_size=8, shuffle=False,
                                   verbose=0).history["loss"], model.get_weights()))
            continue
        first = model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
        model.save(tmp_path / "m.safetensors")
        back = fastlstm.load_model(tmp_path / "m.safetensors")
        last = back.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
        runs.append((first.history["loss"] + last.history["loss"], back.get_weights()))
    assert runs[0][0] == runs[1][0]
    _assert_same(runs[0][1], runs[1][1])


def test_training_resumes_bitwise_after_loading_a_functional_model(tmp_path):
    set_seed(32)
    model, x = two_in_two_out()
    x = _cast(x, "float32")
    rng = np.random.default_rng(32)
    y = {"cls": rng.integers(0, 2, 4), "reg": rng.normal(size=(4, 1))}
    model.compile(optim.Adam(0.01), {"cls": "sparse_categorical_crossentropy", "reg": "mse"},
                  metrics={"cls": ["accuracy"]}, loss_weights={"cls": 0.7, "reg": 1.3})
    model.fit(x, y, epochs=2, batch_size=2, verbose=0)
    model.save(tmp_path / "m.safetensors")
    back = fastlstm.load_model(tmp_path / "m.safetensors")
    logs = []
    for m in (model, back):
        set_seed(33)
        logs.append(m.fit(x, y, epochs=1, batch_size=2, verbose=0).history)
    assert logs[0] == logs[1] and "cls_accuracy" in logs[0]
    _assert_same(back.get_weights(), model.get_weights())


def test_frozen_layers_and_regularizers_come_back_for_training(tmp_path):
    """Architecture files keep no regularizers or trainable flags; the compile state does, so
    training resumes as it would have gone on."""
    set_seed(36)
    x, y = _fit_data(np.random.default_rng(36), 16)
    frozen = LSTM(5, return_sequences=True)
    model = Sequential([Input((6, 3)), frozen,
                        GRU(4, kernel_regularizer=fastlstm.regularizers.l2(0.05)),
                        Dense(2, kernel_regularizer=fastlstm.regularizers.l1_l2(0.01, 0.02))],
                       dtype="float64")
    frozen.trainable = False
    model.compile("adam", "mse")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "m.safetensors")
    back = fastlstm.load_model(tmp_path / "m.safetensors")
    assert not back.layers[0].trainable and back.layers[2].regularizers["kernel"].l1 == 0.01
    before = back.get_weights()
    for m in (model, back):
        set_seed(37)
        m.fit(x, y, epochs=2, batch_size=8, verbose=0)
    _assert_same(back.get_weights(), model.get_weights())
    np.testing.assert_array_equal(back.get_weights()[0], before[0])  # still frozen
    # without the compile state the flags are not restored
    assert fastlstm.load_model(tmp_path / "m.safetensors", compile=False).layers[0].trainable


def test_compile_false_include_optimizer_false_and_unfitted_models(tmp_path):
    set_seed(34)
    x, y = _fit_data(np.random.default_rng(34), 8)
    model = _seq_model("float32")
    model.compile(optim.RMSprop(0.01), "mse")
    model.save(tmp_path / "compiled.safetensors")  # compiled, no step yet: zero slots
    back = fastlstm.load_model(tmp_path / "compiled.safetensors")
    assert back.compiled and back.optimizer.iterations == 0 and back.optimizer.rho == 0.9
    assert not fastlstm.load_model(tmp_path / "compiled.safetensors", compile=False).compiled
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "noopt.safetensors", include_optimizer=False)
    tensors, meta = fio.load_safetensors(tmp_path / "noopt.safetensors")
    assert not any(k.startswith("optimizer.") for k in tensors)
    back = fastlstm.load_model(tmp_path / "noopt.safetensors")
    assert back.compiled and back.optimizer.iterations == 0
    # a file without a compile state is the format_version 1 file older readers read
    plain = _seq_model("float32")
    plain.save(tmp_path / "plain.safetensors")
    assert fio.read_model_info(tmp_path / "plain.safetensors")["format_version"] == 1
    assert not fastlstm.load_model(tmp_path / "plain.safetensors").compiled


def _my_loss(y_true, y_pred):
    return ((y_pred - y_true) ** 4).mean(axis=-1)


_my_loss.gradient = lambda y_true, y_pred: 4 * (y_pred - y_true) ** 3 / y_pred.shape[-1]


def _my_metric(y_true, y_pred):
    return np.abs(y_pred - y_true).max(axis=-1)


def test_custom_losses_and_metrics_come_back_through_custom_objects(tmp_path):
    set_seed(35)
    x, y = _fit_data(np.random.default_rng(35), 8)
    model = _seq_model("float64")
    model.compile("adam", _my_loss, metrics=[_my_metric, "mae",
                                              fastlstm.metrics.BinaryAccuracy(threshold=0.2)])
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "m.safetensors"
    model.save(path)
    with pytest.raises(ValueError, match=r"'_my_loss'.*custom_objects.*compile=False"):
        fastlstm.load_model(path)
    assert not fastlstm.load_model(path, compile=False).compiled
    with pytest.raises(ValueError, match="'_my_metric'"):
        fastlstm.load_model(path, custom_objects={"_my_loss": _my_loss})
    back = fastlstm.load_model(path, custom_objects={"_my_loss": _my_loss,
                                                     "_my_metric": _my_metric})
    a = model.evaluate(x, y, verbose=0, return_dict=True)
    b = back.evaluate(x, y, verbose=0, return_dict=True)
    assert a == b and set(a) == {"loss", "_my_metric", "mae", "binary_accuracy"}
    # a Loss subclass of one's own is found by its class name
    class Quartic(losses.Loss):
        name = "quartic"

        def call(self, y_true, y_pred):
            return _my_loss(y_true, y_pred)

        def gradient(self, y_true, y_pred):
            return _my_loss.gradient(y_true, y_pred)

    model.compile("sgd", Quartic())
    model.save(path)
    assert isinstance(fastlstm.load_model(path, custom_objects={"Quartic": Quartic()}).loss,
                      Quartic)


def test_optimizer_state_round_trip_and_checks():
    opt = optim.Adam(0.01, amsgrad=True)
    opt.build(10, "float64")
    p, g = np.zeros(10), np.arange(10.0)
    opt.apply(p, g.copy())
    state = opt.get_state()
    assert sorted(state["slots"]) == ["m", "v", "vhat"] and state["iterations"] == 1
    other = optim.Adam(0.01, amsgrad=True)
    other.build(10, "float64")
    other.set_state(state)
    q = p.copy()
    opt.apply(p, g.copy())
    other.apply(q, g.copy())
    np.testing.assert_array_equal(p, q)
    with pytest.raises(ValueError, match="keeps slots"):
        other.set_state({"iterations": 1, "slots": {"m": state["slots"]["m"]}})
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        other.set_state({"iterations": 1, "slots": {k: np.zeros(3) for k in state["slots"]}})
    with pytest.raises(ValueError, match="iterations"):
        other.set_state({"iterations": -1, "slots": state["slots"]})
    bad = dict(state["slots"], v=np.full(10, np.nan))
    with pytest.raises(ValueError, match="finite"):
        other.set_state({"iterations": 1, "slots": bad})
    np.testing.assert_array_equal(q, p)  # nothing written by the refused calls


# ------------------------------------------------------------------------------ hostile files
def _saved_compiled(tmp_path):
    set_seed(40)
    model, x = seq2seq()
    rng = np.random.default_rng(40)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(_cast(x, "float32"), rng.integers(0, 4, (3, 4)), epochs=1, verbose=0)
    path = tmp_path / "m.safetensors"
    model.save(path)
    return path


def _graph(fn):
    def change(info):
        fn(info["model"])
    return _edit_json("fastlstm", change)


BAD_FILES = {
    "unknown_optimizer": (_edit_json("fastlstm_compile", lambda c: c["optimizer"].update(
        {"class": "Lion"})), None, "unknown optimizer class 'Lion'"),
    "optimizer_class_not_a_name": (_edit_json("fastlstm_compile", lambda c: c["optimizer"]
                                          .update({"class": ["Adam"]})), None,
                                   "optimizer's class must be a name"),
    "loss_class_not_a_name": (_edit_json("fastlstm_compile", lambda c: c.update(
        loss={"class": {}, "config": {}})), None, "compile state loss must be a loss name"),
    "bad_optimizer_config": (_edit_json("fastlstm_compile", lambda c: c["optimizer"]["config"]
                                        .update(beta_1=2.0)), None, "beta_1 must be in"),
    "fractional_step_count": (_edit_json("fastlstm_compile", lambda c: c.update(
        iterations=1.5)), None, "iterations must be an integer"),
    "negative_step_count": (_edit_json("fastlstm_compile", lambda c: c.update(
        iterations=-3)), None, "iterations must be an integer"),
    "huge_step_count": (_edit_json("fastlstm_compile", lambda c: c.update(
        iterations=10**30)), None, "iterations must be an integer"),
    "missing_slot_list": (_edit_json("fastlstm_compile", lambda c: c.pop("slots")), None,
                          "iterations and slots come together"),
    "unknown_compile_key": (_edit_json("fastlstm_compile", lambda c: c.update(run_eagerly=1)),
                            None, "compile state must have the keys"),
    "unknown_loss": (_edit_json("fastlstm_compile", lambda c: c.update(loss="hinge")), None,
                     "unknown loss 'hinge'"),
    "non_finite_slot": (None, lambda t: t["optimizer.v.layers.0.weight_ih_l0"].fill(np.inf),
                        "slot 'v' must hold finite floats"),
    "slot_shape": (None, lambda t: t.update({"optimizer.m.layers.2.kernel": np.zeros(
        (4, 6), np.float32)}), "optimizer slot \"optimizer.m.layers.2.kernel\" has shape"),
    "slot_for_no_weight": (None, lambda t: t.update({"optimizer.m.layers.7.kernel": np.zeros(
        2, np.float32)}), "names no weight of the model"),
    "missing_slot": (None, lambda t: t.pop("optimizer.m.layers.2.bias"),
                     r"slot tensors missing \['optimizer.m.layers.2.bias'\]"),
    "missing_layer": (_graph(lambda m: m["layers"][1]["calls"][0]["inputs"][1].__setitem__(
        0, "nowhere")), None, "refers to layer 'nowhere', which is not in the model"),
    "missing_call": (_graph(lambda m: m["outputs"][0].__setitem__(1, 5)), None,
                     "refers to call 5"),
    "cycle": (_graph(lambda m: m["layers"][0]["calls"][0]["inputs"].__setitem__(
        0, ["decoder", 0, 1])), None, "has a cycle"),
    "absurd_units": (_graph(lambda m: m["layers"][0]["config"].update(units=2**40)), None,
                     "beyond the limit"),
    "units_the_file_cannot_back": (_graph(lambda m: m["layers"][0]["config"].update(
        units=200_000)), None, "more than the"),
    "absurd_input_shape": (_graph(lambda m: m["inputs"][0].update(shape=[None, 2**30])), None,
                           r"inputs\[0\].shape must be a list"),
    "unknown_model_key": (_graph(lambda m: m.update(optimizer="adam")), None, "unknown key"),
    "duplicate_layer_name": (_graph(lambda m: m["layers"][1].update(name="encoder")), None,
                             "names two layers"),
    "layer_state_for_no_layer": (_edit_json("fastlstm_compile", lambda c: c.update(
        layers={"layers.9": {"trainable": False}})), None, "names no layer with weights"),
    "bad_regularizer": (_edit_json("fastlstm_compile", lambda c: c.update(
        layers={"layers.0": {"regularizers": {"kernel": {"l1": -1, "l2": 0}}}})), None,
        r"regularizers\['kernel'\]"),
    "unknown_layer_class": (_graph(lambda m: m["layers"][0].update({"class": "Conv1D"})),
                            None, "unknown layer class 'Conv1D'"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_graphs_and_compile_states_are_refused(tmp_path, name):
    path = _saved_compiled(tmp_path)
    change_meta, change_tensors, words = BAD_FILES[name]
    _rewrite(path, change_tensors, change_meta)
    with pytest.raises(ValueError, match=words) as info:
        fastlstm.load_model(path)
    assert str(path) in str(info.value)


def test_a_compile_state_needs_format_version_2(tmp_path):
    path = _saved_compiled(tmp_path)
    _rewrite(path, change_meta=_edit_json("fastlstm", lambda i: i.update(format_version=1)))
    with pytest.raises(ValueError, match="needs format_version 2"):
        fastlstm.load_model(path)
