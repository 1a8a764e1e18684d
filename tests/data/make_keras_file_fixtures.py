"""Writes the Keras 3 ``.keras`` file fixtures ``tests/data/keras_file_<name>.keras`` (what
``model.save`` writes: a zip of config.json and model.weights.h5) and
``tests/data/keras_file_<name>.npz`` (the input ``x`` and Keras's ``output`` for it), for
``fastlstm.from_keras(path)`` (committed; the test suite reads these files and never imports
keras). Run:

    pip install keras jax
    KERAS_BACKEND=jax python3 tests/data/make_keras_file_fixtures.py

The models are float32 (Keras's default), small, and their weights are redrawn from a normal
distribution so that they are away from the initializers' tidy values:

- ``lstm``: Sequential LSTM(return_sequences=True);
- ``embed_bigru``: Embedding(mask_zero=True) -> Bidirectional(GRU) -> Dense(softmax), token
  input with zero padding at the end of some rows;
- ``stack``: LSTM(return_sequences) -> Dropout -> LSTM(return_sequences) -> Dropout -> GRU ->
  Dense (two layers of one class: groups ``lstm`` and ``lstm_1`` in the weights file).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
L = keras.layers


def save(name, model, x, rng):
    for w in model.weights:
        w.assign(rng.normal(0, 0.5, w.shape).astype("float32"))
    output = model.predict(x, verbose=0)
    model.save(os.path.join(HERE, f"keras_file_{name}.keras"))
    np.savez(os.path.join(HERE, f"keras_file_{name}.npz"), x=x, output=output)
    print(name, output.shape, os.path.getsize(os.path.join(HERE, f"keras_file_{name}.keras")))


def main():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(13)
    T, F = 5, 3
    model = keras.Sequential([keras.Input((T, F)), L.LSTM(4, return_sequences=True)])
    save("lstm", model, rng.normal(size=(3, T, F)).astype("float32"), rng)

    model = keras.Sequential([keras.Input((T,), dtype="int64"),
                              L.Embedding(11, 3, mask_zero=True),
                              L.Bidirectional(L.GRU(4)), L.Dense(2, activation="softmax")])
    tokens = rng.integers(1, 11, size=(4, T))
    tokens[1, 3:] = 0
    tokens[3, 1:] = 0
    save("embed_bigru", model, tokens.astype("int64"), rng)

    model = keras.Sequential([keras.Input((T, F)), L.LSTM(4, return_sequences=True),
                              L.Dropout(0.3), L.LSTM(3, return_sequences=True), L.Dropout(0.2),
                              L.GRU(2), L.Dense(3)])
    save("stack", model, rng.normal(size=(3, T, F)).astype("float32"), rng)


if __name__ == "__main__":
    main()
