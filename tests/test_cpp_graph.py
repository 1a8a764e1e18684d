"""Functional models in C++: graphs built and saved in Python run in the C++ runner
(``fastlstm::Model::run``) and give Python's outputs.

The examples in examples/cpp/ are built with CMake against the *installed* package:
``fastlstm_run`` (any model on named inputs, read from stdin) for the layer-by-layer checks, and
``fastlstm_seq2seq`` (greedy decoding: the encoder once, the decoder step by step with its
states as inputs and outputs) for the encoder-decoder of Keras's seq2seq recipe. Files the C++
runner cannot run exactly (masks, unknown layers) and hostile graphs are refused at load with a
message naming the layer or field. Needs CMake and Ninja (the test extra).
"""

import json
import os
import subprocess

import numpy as np
import pytest

import fastlstm
from fastlstm import Input, Model
from fastlstm import io as fio
from fastlstm.layers import (GRU, LSTM, Activation, AdditiveAttention, Add, Attention, Average,
                             Bidirectional, Concatenate, Dense, Dropout, Embedding, Flatten,
                             Masking, Multiply, RepeatVector, Reshape, SpatialDropout1D,
                             TimeDistributed)
from fastlstm.models import Sequential

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "cpp")
TOL = dict(rtol=1e-5, atol=1e-5)  # float32, C++ vs NumPy


@pytest.fixture(scope="module")
def apps(tmp_path_factory, tool):
    """The examples built against the installed package: {name: executable}."""
    build = tmp_path_factory.mktemp("graph-example-build")
    cmake = tool("cmake")
    r = subprocess.run([cmake, "-S", EXAMPLE, "-B", str(build), "-G", "Ninja",
                        f"-DCMAKE_MAKE_PROGRAM={tool('ninja')}",
                        f"-DCMAKE_PREFIX_PATH={fastlstm.cmake_prefix_path}"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    r = subprocess.run([cmake, "--build", str(build), "--target", "fastlstm_run",
                        "fastlstm_seq2seq"], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return {n: os.path.join(str(build), n) for n in ("fastlstm_run", "fastlstm_seq2seq")}


def _input_text(xs):
    lines = []
    for x in xs:
        x = np.asarray(x)
        lines.append(" ".join(str(d) for d in x.shape))
        if x.dtype.kind in "iu":
            lines.append(" ".join(str(int(v)) for v in x.ravel()))
        else:
            lines.append(" ".join(repr(float(v)) for v in x.ravel()))
    return "\n".join(lines) + "\n"


def run_cpp(apps, path, xs):
    """[(name, array)] of the model's outputs, computed by fastlstm_run."""
    r = subprocess.run([apps["fastlstm_run"], str(path)], input=_input_text(xs),
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr}"
    lines = r.stdout.splitlines()
    out = []
    for head, values in zip(lines[0::2], lines[1::2]):
        name, *shape = head[2:].split()
        out.append((name, np.array(values.split(), dtype=np.float64).reshape(
            [int(d) for d in shape])))
    return out


def refused(apps, path):
    """The C++ runner's message for a file it refuses (fastlstm_run exits 1)."""
    r = subprocess.run([apps["fastlstm_run"], str(path)], input="", capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    return r.stderr


def _check(apps, tmp_path, model, xs):
    """C++ == Python (predict) for every output, by order and by name."""
    path = tmp_path / "model.safetensors"
    model.save(path)
    want = model.predict(xs if len(xs) > 1 else xs[0], verbose=0)
    if isinstance(want, dict):
        want = [want[n] for n in model.output_names]
    elif not isinstance(want, list):
        want = [want]
    got = run_cpp(apps, path, xs)
    assert [n for n, _ in got] == list(model.output_names)
    assert len(got) == len(want)
    for (name, g), w in zip(got, want):
        assert g.shape == np.shape(w), name
        np.testing.assert_allclose(g, w, **TOL, err_msg=name)
    return got


RNG = np.random.default_rng(13)


def _x(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def _bias_noise(model):
    """Nonzero biases (initializers leave them 0), so that a dropped bias would show."""
    w = model.get_weight_dict()
    rng = np.random.default_rng(1)
    model.set_weight_dict({k: v + (0.3 * rng.normal(size=v.shape)).astype(v.dtype)
                           if "bias" in k else v for k, v in w.items()})


# ------------------------------------------------------------------------------ layers
def recurrent_states():
    """LSTM with return_state, GRU with an initial state and go_backwards."""
    x, h0 = Input((None, 5), name="x"), Input((6,), name="h0")
    y, h, c = LSTM(7, return_sequences=True, return_state=True, peephole=True)(x)
    g, gh = GRU(6, return_sequences=True, return_state=True, go_backwards=True)(
        x, initial_state=[h0])
    last = GRU(4, use_bias=False)(g)
    return Model([x, h0], [y, h, c, g, gh, last]), [_x(3, 7, 5), _x(3, 6)]


def lstm_initial_state():
    x, h0, c0 = Input((None, 3)), Input((5,)), Input((5,))
    y = LSTM(5)(x, initial_state=[h0, c0])
    return Model([x, h0, c0], y), [_x(2, 9, 3), _x(2, 5), _x(2, 5)]


def bidirectional(merge):
    x = Input((None, 4))
    out = Bidirectional(LSTM(3, return_sequences=True, return_state=True),
                        merge_mode=merge)(x)
    last = Bidirectional(GRU(2), merge_mode=merge)(out[0])
    return Model(x, out + [last]), [_x(3, 5, 4)]


def bidirectional_initial_state():
    x, hf, hb = Input((None, 4)), Input((3,)), Input((3,))
    y, f, b = Bidirectional(GRU(3, return_sequences=True, return_state=True))(
        x, initial_state=[hf, hb])
    return Model([x, hf, hb], [y, f, b]), [_x(2, 6, 4), _x(2, 3), _x(2, 3)]


def tokens_dense_any_rank():
    """Embedding, Dense on 3-D, TimeDistributed(Dense) and of Activation, the dropouts."""
    t = Input((None,), dtype="int64", name="tokens")
    e = SpatialDropout1D(0.3)(Embedding(17, 6)(t))
    d = TimeDistributed(Dense(5, activation="relu"), name="td")(Dropout(0.5)(e))
    a = TimeDistributed(Activation("softmax"))(Dense(4, activation="tanh")(d))
    s = Activation("sigmoid")(LSTM(3)(d))
    toks = RNG.integers(0, 17, size=(4, 7))
    return Model(t, [a, s]), [toks]


def merges_and_shapes():
    """RepeatVector, Concatenate on the time and feature axes, Add, Multiply, Average,
    Flatten, Reshape."""
    v, s = Input((4,)), Input((3, 4))
    r = RepeatVector(3)(v)
    cat_t = Concatenate(axis=1)([r, s])  # [6, 4]
    cat_f = Concatenate()([r, s, r])  # [3, 12]
    arith = Average()([Add()([r, s]), Multiply()([r, s]), s])
    flat = Flatten()(cat_f)
    back = Reshape((-1, 6))(flat)
    out = Dense(2)(Concatenate(axis=-2)([back, Reshape((4, 6))(Flatten()(cat_t))]))
    return Model([v, s], [cat_t, arith, flat, out]), [_x(5, 4), _x(5, 3, 4)]


def attention_layers():
    """Luong (with a scale, causal, the scores returned) and Bahdanau (a key) attention."""
    q, v, k = Input((None, 4)), Input((None, 3)), Input((None, 4))
    lq = LSTM(4, return_sequences=True)(q)
    a, w = Attention(use_scale=True)([lq, v, k], return_attention_scores=True,
                                     use_causal_mask=True)
    b = AdditiveAttention()([lq, v, k])
    c = Attention()([lq, lq])
    plain = AdditiveAttention(use_scale=False)([lq, lq])
    return Model([q, v, k], [a, w, b, c, plain]), [_x(2, 5, 4), _x(2, 6, 3), _x(2, 6, 4)]


def shared_and_nested():
    """A Dense called on two inputs and along a path, an LSTM called twice, a nested
    functional model called twice, a nested Sequential, dict outputs."""
    inner_in = Input((None, 3))
    inner = Model(inner_in, GRU(4, return_sequences=True)(inner_in), name="inner")
    block = Sequential([Input((None, 4)), Dense(3, activation="tanh"), LSTM(2)], name="block")
    a, b = Input((None, 3), name="a"), Input((None, 3), name="b")
    proj = Dense(3, activation="tanh", name="proj")
    shared = LSTM(3, return_sequences=True, name="shared")
    pa, pb = proj(a), proj(b)
    z = proj(shared(pa))
    za, zb = inner(z), inner(shared(pb))
    out = Add()([block(za), block(zb)])
    return Model([a, b], {"sum": out, "path": z}), [_x(3, 5, 3), _x(3, 5, 3)]


GRAPHS = {
    "recurrent_states": recurrent_states,
    "lstm_initial_state": lstm_initial_state,
    "bidirectional_concat": lambda: bidirectional("concat"),
    "bidirectional_sum": lambda: bidirectional("sum"),
    "bidirectional_mul": lambda: bidirectional("mul"),
    "bidirectional_ave": lambda: bidirectional("ave"),
    "bidirectional_initial_state": bidirectional_initial_state,
    "tokens_dense_any_rank": tokens_dense_any_rank,
    "merges_and_shapes": merges_and_shapes,
    "attention": attention_layers,
    "shared_and_nested": shared_and_nested,
}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_functional_model_in_cpp_matches_python(apps, tmp_path, name):
    fastlstm.utils.set_random_seed(7)
    model, xs = GRAPHS[name]()
    _bias_noise(model)
    _check(apps, tmp_path, model, xs)


def test_sequential_and_bare_models_run_through_the_same_entry(apps, tmp_path):
    """Model::run on a Sequential: one input "input", one output "output", as predict."""
    model = Sequential([Input((None, 3)), LSTM(4, return_sequences=True), Dense(2)])
    path = tmp_path / "seq.safetensors"
    model.save(path)
    x = _x(2, 5, 3)
    (name, got), = run_cpp(apps, path, [x])
    assert name == "output"
    np.testing.assert_allclose(got, model.predict(x, verbose=0), **TOL)


# ------------------------------------------------------------------------------ seq2seq
def _decoder_pair(units=8, vocab=9, embed=5):
    enc_in = Input((None,), dtype="int32")
    _, h, c = LSTM(units, return_state=True)(Embedding(vocab, embed)(enc_in))
    dec_in = Input((None,), dtype="int32")
    dec_embed = Embedding(vocab, embed)
    dec_lstm = LSTM(units, return_sequences=True, return_state=True)
    dec_dense = Dense(vocab, activation="softmax")
    y, _, _ = dec_lstm(dec_embed(dec_in), initial_state=[h, c])
    train = Model([enc_in, dec_in], dec_dense(y))
    encoder = Model(enc_in, [h, c])
    h_in, c_in = Input((units,)), Input((units,))
    y, h2, c2 = dec_lstm(dec_embed(dec_in), initial_state=[h_in, c_in])
    decoder = Model([dec_in, h_in, c_in], [dec_dense(y), h2, c2])
    return train, encoder, decoder


def test_states_round_trip_step_by_step_equals_the_whole_sequence(apps, tmp_path):
    """The decoder run in C++ one step at a time, its states fed back, gives what it gives on
    the whole sequence at once (and both what Python gives)."""
    fastlstm.utils.set_random_seed(3)
    _, encoder, decoder = _decoder_pair()
    _bias_noise(decoder)
    enc_path, dec_path = tmp_path / "enc.safetensors", tmp_path / "dec.safetensors"
    encoder.save(enc_path)
    decoder.save(dec_path)
    src = RNG.integers(0, 9, size=(2, 6))
    tgt = RNG.integers(0, 9, size=(2, 5))
    (_, h), (_, c) = run_cpp(apps, enc_path, [src])
    ph, pc = encoder.predict(src, verbose=0)
    np.testing.assert_allclose(h, ph, **TOL)
    np.testing.assert_allclose(c, pc, **TOL)
    (_, whole), (_, wh), (_, wc) = run_cpp(apps, dec_path, [tgt, h, c])
    steps = []
    for t in range(tgt.shape[1]):
        (_, p), (_, h), (_, c) = run_cpp(apps, dec_path, [tgt[:, t : t + 1], h, c])
        steps.append(p)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), whole, **TOL)
    np.testing.assert_allclose(h, wh, **TOL)
    np.testing.assert_allclose(c, wc, **TOL)
    pw, _, _ = decoder.predict([tgt, ph, pc], verbose=0)
    np.testing.assert_allclose(whole, pw, **TOL)


START, END, DIGIT0 = 1, 2, 3


def _reversal_data(n, rng, max_len=5):
    enc = np.zeros((n, max_len), dtype=np.int64)
    dec_in = np.zeros((n, max_len + 1), dtype=np.int64)
    dec_out = np.zeros((n, max_len + 1), dtype=np.int64)
    for i in range(n):
        s = rng.integers(0, 6, max_len) + DIGIT0
        enc[i] = s
        dec_in[i, 0] = START
        dec_in[i, 1:] = s[::-1]
        dec_out[i, :max_len] = s[::-1]
        dec_out[i, max_len] = END
    return enc, dec_in, dec_out


def _python_greedy(encoder, decoder, src, max_len):
    h, c = encoder.predict(src[None], verbose=0)
    tok, out, probs = START, [], []
    for _ in range(max_len):
        p, h, c = decoder.predict([np.array([[tok]]), h, c], verbose=0)
        p = np.asarray(p)[0, -1]
        tok = int(p.argmax())
        out.append(tok)
        probs.append(p)
        if tok == END:
            break
    return out, np.concatenate(probs)


def test_cpp_greedy_seq2seq_decoder_matches_python(apps, tmp_path):
    """Keras's seq2seq recipe (no masks): trained briefly on reversing digit strings, saved as
    an encoder and a decoder model; the C++ app's greedy decoding gives Python's tokens and
    probabilities."""
    fastlstm.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    train, encoder, decoder = _decoder_pair(units=16, vocab=DIGIT0 + 6, embed=8)
    train.compile(optimizer=fastlstm.optimizers.Adam(0.01),
                  loss="sparse_categorical_crossentropy")
    enc, dec_in, dec_out = _reversal_data(256, rng)
    hist = train.fit([enc, dec_in], dec_out, batch_size=32, epochs=4, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]  # it trained
    enc_path, dec_path = tmp_path / "encoder.safetensors", tmp_path / "decoder.safetensors"
    encoder.save(enc_path)
    decoder.save(dec_path)
    src = _reversal_data(6, np.random.default_rng(1))[0]
    max_len = 8
    text = "".join(" ".join(str(int(t)) for t in row) + "\n" for row in src)
    r = subprocess.run([apps["fastlstm_seq2seq"], str(enc_path), str(dec_path), "--start",
                        str(START), "--end", str(END), "--max-len", str(max_len), "--probs"],
                       input=text, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2 * len(src)
    for i, row in enumerate(src):
        want_tokens, want_probs = _python_greedy(encoder, decoder, row, max_len)
        assert [int(t) for t in lines[2 * i].split()] == want_tokens
        np.testing.assert_allclose(np.array(lines[2 * i + 1].split(), dtype=np.float64),
                                   want_probs, **TOL)


# ------------------------------------------------------------------------------ refusals
def _masked_embedding():
    t = Input((None,), dtype="int64")
    return Model(t, LSTM(3)(Embedding(9, 4, mask_zero=True)(t))), "mask_zero=true"


def _masking():
    x = Input((None, 3))
    return Model(x, LSTM(3)(Masking(0.0)(x))), "Masking"


@pytest.mark.parametrize("make", [_masked_embedding, _masking], ids=["mask_zero", "masking"])
def test_graphs_with_masks_are_refused_not_run_wrong(apps, tmp_path, make):
    model, words = make()
    path = tmp_path / "m.safetensors"
    model.save(path)
    msg = refused(apps, path)
    assert words in msg and "not supported by the C++ runner" in msg
    assert fastlstm.load_model(path) is not None  # Python still reads it


def _rewrite_graph(path, fn):
    tensors, meta = fio.load_safetensors(path)
    info = json.loads(meta["fastlstm"])
    fn(info["model"], tensors)
    meta["fastlstm"] = json.dumps(info)
    fio.save_safetensors(path, tensors, meta)


def _nest(model, tensors):
    """Wraps the whole graph in 20 levels of nested models."""
    inner = dict(model)
    for _ in range(20):
        inner = {**inner, "name": "m", "calls": [{"inputs": [["__input__", 0, 0]]}]}
        inner = {"class": "Model", "dtype": "float32", "inputs": model["inputs"],
                 "layers": [inner], "outputs": [["m", 0, 0]]}
    model.clear()
    model.update(inner)
    for k in list(tensors):
        tensors["layers.0." * 20 + k] = tensors.pop(k)


HOSTILE = {
    "cycle": (lambda m, t: m["layers"][0]["calls"][0].update(inputs=[["dense", 0, 0]]),
              "cycle"),
    "missing_layer": (lambda m, t: m["outputs"].__setitem__(0, ["nowhere", 0, 0]),
                      "not in the model"),
    "missing_call": (lambda m, t: m["outputs"].__setitem__(0, ["dense", 3, 0]),
                     "called 1 time"),
    "missing_output": (lambda m, t: m["outputs"].__setitem__(0, ["lstm", 0, 5]),
                       "output 5"),
    "missing_input": (lambda m, t: m["layers"][0]["calls"][0].update(
        inputs=[["__input__", 4, 0]]), "model input 4"),
    "unknown_key": (lambda m, t: m["layers"][1]["config"].update(unitz=3), "unitz"),
    "unknown_class": (lambda m, t: m["layers"][1].update({"class": "Conv1D"}),
                      "not supported by the C++ runner"),
    "huge_size": (lambda m, t: m["inputs"][0].update(shape=[None, 1 << 40]), "shape[1]"),
    "too_many_layers": (lambda m, t: m.update(layers=m["layers"] * 1025), "1024"),
    "duplicate_name": (lambda m, t: m["layers"].append(dict(m["layers"][1])),
                       "names two layers"),
    "wrong_weight_shape": (lambda m, t: t.update({"layers.1.kernel": np.zeros((2, 2),
                                                                               np.float32)}),
                           "layers.1.kernel"),
    "extra_weight": (lambda m, t: t.update(extra=np.zeros(2, np.float32)), "not used"),
    "features_do_not_chain": (lambda m, t: m["layers"][1]["config"].update(input_dim=7),
                              "layers.1.kernel"),
    "nesting": (_nest, "16 deep"),
    "call_option": (lambda m, t: m["layers"][1]["calls"][0].update(kwargs={"training": True}),
                    "takes no call options"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_graphs_are_refused_at_load(apps, tmp_path, name):
    x = Input((None, 3))
    model = Model(x, Dense(2, name="dense")(LSTM(4, name="lstm")(x)))
    path = tmp_path / "m.safetensors"
    model.save(path)
    assert run_cpp(apps, path, [_x(1, 2, 3)])  # the intact file runs
    fn, words = HOSTILE[name]
    _rewrite_graph(path, fn)
    msg = refused(apps, path)
    assert words in msg, msg
    assert "m.safetensors" in msg


def test_bad_run_inputs_get_clear_errors(apps, tmp_path):
    x, h = Input((None, 3), name="x"), Input((4,), name="h")
    model = Model([x, h], GRU(4)(x, initial_state=[h]))
    path = tmp_path / "m.safetensors"
    model.save(path)
    for xs, words in [([_x(2, 5, 3), _x(3, 4)], "batch size"),
                      ([_x(2, 5, 2), _x(2, 4)], "input 0 (\"x\") must have shape"),
                      ([_x(2, 5, 3)], "takes 2 input(s)")]:
        text = _input_text(xs)
        r = subprocess.run([apps["fastlstm_run"], str(path)], input=text, capture_output=True,
                           text=True, timeout=60, check=False)
        if len(xs) < 2:
            assert r.returncode == 1 and "input h" in r.stderr  # the app's own message
            continue
        assert r.returncode == 1 and words in r.stderr, r.stderr


def test_cpp_greedy_decoder_on_one_hot_steps_with_a_gru(apps, tmp_path):
    """The app's other form: an encoder on float features and a GRU decoder (one state) whose
    step is a one-hot vector; random weights, Python's greedy decoding as the reference."""
    fastlstm.utils.set_random_seed(5)
    V, H = 6, 7
    src_in = Input((None, 3))
    _, h = GRU(H, return_state=True)(src_in)
    encoder = Model(src_in, h)
    step_in, h_in = Input((None, V)), Input((H,))
    y, h2 = GRU(H, return_sequences=True, return_state=True)(step_in, initial_state=[h_in])
    decoder = Model([step_in, h_in], [Dense(V, activation="softmax")(y), h2])
    _bias_noise(decoder)
    encoder.save(tmp_path / "enc.safetensors")
    decoder.save(tmp_path / "dec.safetensors")
    src = _x(2, 4, 3)
    text = "".join(" ".join(repr(float(v)) for v in row.ravel()) + "\n" for row in src)
    r = subprocess.run([apps["fastlstm_seq2seq"], str(tmp_path / "enc.safetensors"),
                        str(tmp_path / "dec.safetensors"), "--start", "0", "--end", "1",
                        "--max-len", "5", "--probs"],
                       input=text, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for i, row in enumerate(src):
        h = encoder.predict(row[None], verbose=0)
        tok, toks, probs = 0, [], []
        for _ in range(5):
            p, h = decoder.predict([np.eye(V, dtype=np.float32)[tok][None, None], h], verbose=0)
            tok = int(p[0, -1].argmax())
            toks.append(tok)
            probs.append(p[0, -1])
            if tok == 1:
                break
        assert [int(t) for t in lines[2 * i].split()] == toks
        np.testing.assert_allclose(np.array(lines[2 * i + 1].split(), dtype=np.float64),
                                   np.concatenate(probs), **TOL)
