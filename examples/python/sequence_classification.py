"""Sequence classification with Embedding + LSTM + Dense(sigmoid), Keras style.

A synthetic task that only a model with memory solves: variable-length integer sequences
(lengths 10..max_len, right-padded with 0), tokens 1..vocab-1 at random, and the label is
whether the FIRST token is a "marker" (one of tokens 1..4). The deciding token sits up to
max_len-1 steps before the end, behind random distractors; a model that only looks at the
last steps scores ~50% (the classes are balanced). ``Embedding(mask_zero=True)`` turns the
padding into sequence lengths for the engine.

Run:  python examples/python/sequence_classification.py [--epochs 8] [--max-len 40]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from fastlstm import Sequential, set_seed
from fastlstm.layers import LSTM, Dense, Embedding

VOCAB = 20
MARKERS = (1, 2, 3, 4)


def make_data(n, max_len=40, min_len=10, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, max_len + 1, n)
    x = rng.integers(len(MARKERS) + 1, VOCAB, (n, max_len))  # distractors: never markers
    x[np.arange(max_len)[None, :] >= lengths[:, None]] = 0  # right padding
    y = rng.integers(0, 2, n)
    x[:, 0] = np.where(y == 1, rng.choice(MARKERS, n), rng.integers(len(MARKERS) + 1, VOCAB, n))
    return x, y.astype(np.float32)


def train(n_train=4000, n_test=1000, max_len=40, epochs=8, units=32, seed=0, verbose=1):
    set_seed(seed)
    x_train, y_train = make_data(n_train, max_len, seed=seed + 1)
    x_test, y_test = make_data(n_test, max_len, seed=seed + 2)

    model = Sequential()
    model.add(Embedding(input_dim=VOCAB, output_dim=16, mask_zero=True))
    model.add(LSTM(units))
    model.add(Dense(1, activation="sigmoid"))
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, validation_split=0.1,
              verbose=verbose)
    loss, acc = model.evaluate(x_test, y_test, verbose=0)
    preds = model.predict(x_test[:5], verbose=0)
    return {"test_accuracy": acc, "test_loss": loss, "model": model, "preds": preds,
            "labels": y_test[:5]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=40)
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--verbose", type=int, default=1)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    r = train(n_train=args.train, max_len=args.max_len, epochs=args.epochs, verbose=args.verbose)
    r["model"].summary()
    print("first test predictions:", np.round(r["preds"][:, 0], 3), "labels:", r["labels"])
    print(f"test accuracy {r['test_accuracy']:.4f} (chance 0.5), loss {r['test_loss']:.4f}, "
          f"{time.perf_counter() - t0:.1f}s")
    return r


if __name__ == "__main__":
    main()
