"""Writes the Keras 3 parity fixtures of ``recurrent_dropout``,
``tests/data/keras_recurrent_dropout_{lstm,gru}.npz`` (committed; the test suite reads only the
.npz files and never imports keras). Run:

    pip install keras jax
    KERAS_BACKEND=jax python3 tests/data/make_keras_recurrent_dropout_fixtures.py

Keras draws its recurrent dropout masks from its own generator, so exact parity needs the same
masks on both sides: this script draws them with NumPy and injects them into the cell before
each training call (``cell._recurrent_dropout_mask``, the cache that Keras's
``DropoutRNNCell.get_recurrent_dropout_mask`` fills once per call and reuses at every step;
the layer clears it after the call). The masks are one per gate (Keras's order: LSTM i, f, c,
o; GRU z, r, h), each [batch, units], 0 or 1/(1-rate). float64 (``keras.config.set_floatx``).
Each ``.npz`` holds the inputs, the Keras-layout initial weights (``weight.<k>``), the masks
(``mask.<g>``), the training-mode output with those masks (``train_output``), the inference
output (``output``: no dropout) and the losses of three ``train_on_batch`` steps (SGD, lr 0.1,
mean squared error, eager, the same masks injected before each step, after one throwaway step
that builds the model) with the weights after them (``trained.<k>``).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_ENABLE_X64", "1")  # else JAX computes float64 models in float32

import keras  # noqa: E402
import numpy as np  # noqa: E402

keras.config.set_floatx("float64")
HERE = os.path.dirname(os.path.abspath(__file__))
RATE = 0.4


def make(name, layer_cls, gates, seed):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    B, T, F, H = 6, 5, 3, 4
    inp = keras.Input((T, F))
    rnn = layer_cls(H, recurrent_dropout=RATE, return_sequences=True)
    out = keras.layers.Dense(1)(keras.layers.Flatten()(rnn(inp)))
    seq_model = keras.Model(inp, rnn.output)
    model = keras.Model(inp, out)
    for w in model.weights:  # away from the initializers' tidy values
        w.assign(rng.normal(0, 0.5, w.shape))
    x = rng.normal(size=(B, T, F))
    y = rng.normal(size=(B, 1))
    masks = [(rng.random((B, H)) >= RATE) / (1.0 - RATE) for _ in range(gates)]
    init = {f"weight.{k}": w for k, w in enumerate(model.get_weights())}

    def inject():
        rnn.cell._recurrent_dropout_mask = [keras.ops.convert_to_tensor(m) for m in masks]

    inject()
    train_output = np.asarray(seq_model(x, training=True))
    output = seq_model.predict(x, verbose=0)
    model.compile(keras.optimizers.SGD(0.1), "mse", run_eagerly=True)
    # the first train_on_batch also builds the model symbolically, which runs the layer once
    # more (consuming an injected mask): one throwaway step, then the initial weights again
    # (plain SGD keeps no state that the step changed)
    inject()
    model.train_on_batch(x, y)
    model.set_weights(list(init.values()))
    losses = []
    for _ in range(3):
        inject()
        losses.append(float(model.train_on_batch(x, y)))
    trained = {f"trained.{k}": w for k, w in enumerate(model.get_weights())}
    path = os.path.join(HERE, f"{name}.npz")
    np.savez(path, x=x, y=y, rate=RATE, train_output=train_output, output=output,
             losses=np.array(losses), num_weights=len(init), **init, **trained,
             **{f"mask.{g}": m for g, m in enumerate(masks)})
    print(path, losses)


if __name__ == "__main__":
    make("keras_recurrent_dropout_lstm", keras.layers.LSTM, 4, 11)
    make("keras_recurrent_dropout_gru", keras.layers.GRU, 3, 12)
