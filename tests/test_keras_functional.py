"""Parity with Keras 3 from the same weights, functional models: an encoder-decoder with
return_state/initial_state (outputs, states, three training steps' losses) and a masked
left-padded classifier. Fixtures from tests/data/make_keras_functional_fixtures.py (Keras 3,
JAX backend, float64); keras itself is not needed here."""

import pathlib

import numpy as np
import pytest
from fastlstm import Input, Model, optimizers
from fastlstm.layers import LSTM, AdditiveAttention, Attention, Dense, Embedding, Flatten, Masking

DATA = pathlib.Path(__file__).resolve().parent / "data"
# Keras on JAX (XLA's CPU tanh/logistic) lands within ~5e-8 of the exact float64 values; the
# NumPy LSTM equations of test_layers.py agree with fastlstm to 1e-16 on these inputs
RTOL = 1e-7


def _npz(name):
    d = np.load(DATA / f"{name}.npz")
    return d, [d[f"weight.{k}"] for k in range(int(d["num_weights"]))]


def _lstm(K, R, b):
    """Keras LSTM weights (kernel [F, 4H], recurrent [H, 4H], bias) -> the layer's list."""
    return [K.T, R.T, b, np.zeros_like(b)]


def test_encoder_decoder_states_and_training_match_keras():
    d, w = _npz("keras_fn_seq2seq")
    enc_in, dec_in = Input((None, 3), dtype="float64"), Input((None, 2), dtype="float64")
    _, h, c = LSTM(5, return_state=True)(enc_in)
    seq, h2, c2 = LSTM(5, return_sequences=True, return_state=True)(dec_in, initial_state=[h, c])
    probs = Dense(4, activation="softmax")(seq)
    pred_model = Model([enc_in, dec_in], [probs, h2, c2])
    train_model = Model([enc_in, dec_in], probs)
    train_model.set_weights(_lstm(*w[0:3]) + _lstm(*w[3:6]) + w[6:8])
    x = [d["x_enc"], d["x_dec"]]
    p, hv, cv = pred_model.predict(x, verbose=0)
    np.testing.assert_allclose(p, d["probs"], rtol=RTOL, atol=RTOL)
    np.testing.assert_allclose(hv, d["h"], rtol=RTOL, atol=RTOL)
    np.testing.assert_allclose(cv, d["c"], rtol=RTOL, atol=RTOL)
    train_model.compile(optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    got = [train_model.train_on_batch(x, d["y"]) for _ in range(3)]
    np.testing.assert_allclose(got, d["losses"], rtol=RTOL, atol=RTOL)
    assert got[0] > got[2]  # the steps moved the weights


def test_left_padded_masked_classifier_matches_keras():
    d, w = _npz("keras_fn_masked")
    inp = Input((None,), dtype="int32")
    out = Dense(1, activation="sigmoid")(LSTM(3)(Embedding(10, 4, mask_zero=True,
                                                           dtype="float64")(inp)))
    model = Model(inp, out)
    model.set_weights([w[0]] + _lstm(*w[1:4]) + w[4:6])
    tok = d["tok"]
    assert (tok[:, 0] == 0).any() and (tok[1] == 0).sum() == 2  # left padding and a gap
    pred = model.predict(tok, verbose=0)
    np.testing.assert_allclose(pred, d["output"], rtol=RTOL, atol=RTOL)
    for k in d.files:
        if k.startswith("unpadded."):
            i = int(k.split(".")[1])
            row = tok[i][np.argmax(tok[i] != 0):]  # the row without its left padding
            np.testing.assert_allclose(model.predict(row[None], verbose=0), d[k], rtol=RTOL, atol=RTOL)
            np.testing.assert_allclose(pred[i], d[k][0], rtol=RTOL, atol=RTOL)
    model.compile(optimizers.Adam(0.05), "binary_crossentropy")
    got = [model.train_on_batch(tok, d["y"]) for _ in range(3)]
    np.testing.assert_allclose(got, d["losses"], rtol=RTOL, atol=RTOL)


@pytest.mark.parametrize("name,cls", [("keras_fn_attention", Attention),
                                      ("keras_fn_additive", AdditiveAttention)])
def test_attention_with_masks_matches_keras(name, cls):
    d, w = _npz(name)
    q_in, v_in = Input((4, 3), dtype="float64"), Input((5, 3), dtype="float64")
    q, v = Masking(0.0)(q_in), Masking(0.0)(v_in)
    layer = cls(use_scale=True)
    att, scores = layer([q, v], return_attention_scores=True)
    out = Dense(1)(Flatten()(att))
    pred_model = Model([q_in, v_in], [att, scores])
    model = Model([q_in, v_in], out)
    model.set_weights([np.reshape(w[0], layer.params["scale"].shape)] + w[1:])
    x = [d["xq"], d["xv"]]
    a, s = pred_model.predict(x, verbose=0)
    np.testing.assert_allclose(a, d["output"], rtol=RTOL, atol=RTOL)
    np.testing.assert_allclose(s, d["scores"], rtol=RTOL, atol=RTOL)
    assert not a[0, 3].any() and s[1, :, :2].max() < 1e-6  # the masked steps
    model.compile(optimizers.Adam(0.05), "mse")
    got = [model.train_on_batch(x, d["y"]) for _ in range(3)]
    np.testing.assert_allclose(got, d["losses"], rtol=RTOL, atol=RTOL)
