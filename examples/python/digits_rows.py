"""Image rows as a sequence: scikit-learn's bundled 8x8 digits (``load_digits``, no download),
each image read as 8 time steps of 8 pixels, classified by an LSTM.

Needs scikit-learn (``pip install 'fastlstm[sklearn]'``) for the data set and the split.

Run:  python examples/python/digits_rows.py [--epochs 40]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from fastlstm import Sequential, set_seed
from fastlstm.callbacks import ReduceLROnPlateau
from fastlstm.layers import LSTM, Dense, Input
from fastlstm.optim import Adam


def load(seed=0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)  # [N, 8 rows = steps, 8 pixels = features]
    return train_test_split(x, digits.target, test_size=0.25, stratify=digits.target,
                            random_state=seed)


def train(epochs=40, units=64, seed=0, verbose=2):
    set_seed(seed)
    x_train, x_test, y_train, y_test = load(seed)
    model = Sequential([Input((8, 8)), LSTM(units), Dense(10, activation="softmax")])
    model.compile(optimizer=Adam(0.005), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, validation_split=0.1,
              verbose=verbose, callbacks=[ReduceLROnPlateau(factor=0.5, patience=3)])
    loss, acc = model.evaluate(x_test, y_test, verbose=0)
    r = {"test_accuracy": acc, "test_loss": loss, "n_test": len(y_test)}
    # the same trained model with its LSTM quantized for inference (Keras's model.quantize)
    for precision, q in quantized_copies(model):
        r[f"{precision}_accuracy"] = float(np.mean(q.predict(x_test, verbose=0).argmax(1) == y_test))
    return r


def quantized_copies(model, precisions=("bf16", "int8")):
    """(precision, a copy of the trained model quantized in place); the model is untouched."""
    import copy

    for precision in precisions:
        q = copy.deepcopy(model)
        q.quantize(precision)
        yield precision, q


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    r = train(epochs=args.epochs, units=args.units, verbose=args.verbose)
    print(f"test accuracy {r['test_accuracy']:.4f} on {r['n_test']} images, "
          f"{time.perf_counter() - t0:.1f}s; quantized: bf16 {r['bf16_accuracy']:.4f}, "
          f"int8 {r['int8_accuracy']:.4f}")
    return r


if __name__ == "__main__":
    main()
