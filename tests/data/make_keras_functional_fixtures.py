"""Writes the Keras 3 parity fixtures of the functional API, ``tests/data/keras_fn_*.npz``
(committed; the test suite reads only the .npz files and never imports keras). Run:

    pip install keras jax
    KERAS_BACKEND=jax python3 tests/data/make_keras_functional_fixtures.py

float64 (``keras.config.set_floatx``) so the comparisons can be tight. Each ``.npz`` holds the
inputs, the Keras-layout initial weights (``weight.<k>``, ``model.get_weights()`` order), the
outputs Keras computed and the losses of three ``train_on_batch`` steps (Adam, lr 0.05):

- ``keras_fn_seq2seq``: an encoder LSTM(return_state) whose states start a decoder
  LSTM(return_sequences, return_state, initial_state=[h, c]) -> Dense(softmax); the
  prediction model outputs the decoder's sequence and its final states; the training model is
  the sequence output with sparse categorical cross-entropy;
- ``keras_fn_masked``: Embedding(mask_zero) -> LSTM -> Dense(sigmoid) on left-padded tokens
  (``pad_sequences``' default) with a gap and a row of padding only; binary cross-entropy;
  the outputs also for the same rows unpadded (``unpadded.<i>``);
- ``keras_fn_attention`` / ``keras_fn_additive``: ``Attention(use_scale=True)`` /
  ``AdditiveAttention()`` on [query, value], both masked by ``Masking`` (query steps and value
  steps of zeros), with ``return_attention_scores``; the training model is
  Flatten -> Dense(1) on the attention output, mean squared error.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_ENABLE_X64", "1")  # else JAX computes float64 models in float32

import keras  # noqa: E402
import numpy as np  # noqa: E402

keras.config.set_floatx("float64")
HERE = os.path.dirname(os.path.abspath(__file__))


def save(name, **arrays):
    path = os.path.join(HERE, f"{name}.npz")
    np.savez(path, **arrays)
    print(path, sorted(arrays))


def weights_dict(model):
    return {f"weight.{k}": w for k, w in enumerate(model.get_weights())}


def seq2seq():
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(7)
    enc_in = keras.Input((None, 3))
    dec_in = keras.Input((None, 2))
    _, h, c = keras.layers.LSTM(5, return_state=True)(enc_in)
    seq, h2, c2 = keras.layers.LSTM(5, return_sequences=True, return_state=True)(
        dec_in, initial_state=[h, c])
    probs = keras.layers.Dense(4, activation="softmax")(seq)
    pred_model = keras.Model([enc_in, dec_in], [probs, h2, c2])
    train_model = keras.Model([enc_in, dec_in], probs)
    for w in train_model.weights:  # away from the initializers' tidy values
        w.assign(rng.normal(0, 0.4, w.shape))
    x_enc = rng.normal(size=(4, 6, 3))
    x_dec = rng.normal(size=(4, 5, 2))
    y = rng.integers(0, 4, (4, 5))
    init = weights_dict(train_model)
    probs_v, h_v, c_v = pred_model.predict([x_enc, x_dec], verbose=0)
    train_model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    losses = [float(train_model.train_on_batch([x_enc, x_dec], y)) for _ in range(3)]
    save("keras_fn_seq2seq", x_enc=x_enc, x_dec=x_dec, y=y, probs=probs_v, h=h_v, c=c_v,
         losses=np.array(losses), num_weights=len(init), **init)


def masked():
    keras.utils.set_random_seed(2)
    rng = np.random.default_rng(8)
    rows = [[5, 7, 9], [3, 0, 4, 8, 2], [], [1, 2, 3, 4, 5, 6], [9]]
    tok = keras.utils.pad_sequences(rows, maxlen=6)  # Keras's default: padding at the front
    tok[1] = [0, 3, 0, 4, 8, 2]  # a gap inside the sequence too
    inp = keras.Input((None,), dtype="int32")
    z = keras.layers.Embedding(10, 4, mask_zero=True)(inp)
    z = keras.layers.LSTM(3)(z)
    out = keras.layers.Dense(1, activation="sigmoid")(z)
    model = keras.Model(inp, out)
    for w in model.weights:
        w.assign(rng.normal(0, 0.5, w.shape))
    y = np.array([1, 0, 1, 0, 1], dtype=np.float64)
    init = weights_dict(model)
    pred = model.predict(tok, verbose=0)
    unpadded = {f"unpadded.{i}": model.predict(np.array([r], dtype=np.int32), verbose=0)
                for i, r in enumerate(rows) if r}
    model.compile(keras.optimizers.Adam(0.05), "binary_crossentropy")
    losses = [float(model.train_on_batch(tok, y)) for _ in range(3)]
    save("keras_fn_masked", tok=tok, y=y, output=pred, losses=np.array(losses),
         num_weights=len(init), **init, **unpadded)


def attention(name, layer_cls, **kw):
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(9)
    q_in, v_in = keras.Input((4, 3)), keras.Input((5, 3))
    q = keras.layers.Masking(0.0)(q_in)
    v = keras.layers.Masking(0.0)(v_in)
    att, scores = layer_cls(**kw)([q, v], return_attention_scores=True)
    out = keras.layers.Dense(1)(keras.layers.Flatten()(att))
    pred_model = keras.Model([q_in, v_in], [att, scores])
    model = keras.Model([q_in, v_in], out)
    for w in model.weights:
        w.assign(rng.normal(0, 0.5, w.shape))
    xq, xv = rng.normal(size=(3, 4, 3)), rng.normal(size=(3, 5, 3))
    xq[0, 3] = 0.0  # a masked query step
    xv[1, :2] = 0.0  # masked value steps (left padding)
    xv[2, 4] = 0.0
    y = rng.normal(size=(3, 1))
    init = weights_dict(model)
    att_v, scores_v = pred_model.predict([xq, xv], verbose=0)
    model.compile(keras.optimizers.Adam(0.05), "mse")
    losses = [float(model.train_on_batch([xq, xv], y)) for _ in range(3)]
    save(name, xq=xq, xv=xv, y=y, output=att_v, scores=scores_v, losses=np.array(losses),
         num_weights=len(init), **init)


if __name__ == "__main__":
    seq2seq()
    masked()
    attention("keras_fn_attention", keras.layers.Attention, use_scale=True)
    attention("keras_fn_additive", keras.layers.AdditiveAttention)
