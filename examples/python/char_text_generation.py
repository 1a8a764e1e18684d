"""Character-level text generation with a stacked LSTM, trained on a text that ships with
Python: the Zen of Python (the ``this`` module, decoded from its ROT13 source).

Training: every window of ``seq_len`` characters, the model predicts the next character at
each step (Embedding -> LSTM -> LSTM -> Dense(softmax), all steps supervised). Generation:
a stateful copy of the network with the trained weights reads one character at a time (state
carried between calls, no re-reading of the prefix) and samples the next from the softmax
with a temperature. Samples are printed while training.

Run:  python examples/python/char_text_generation.py [--epochs 25] [--temperature 0.5]
"""

from __future__ import annotations

import argparse
import codecs
import time

import numpy as np
from fastlstm import Sequential, set_seed
from fastlstm.callbacks import LambdaCallback
from fastlstm.layers import LSTM, Dense, Embedding
from fastlstm.optim import Adam


def zen_text():
    """The Zen of Python without importing ``this`` (which prints it)."""
    import importlib.util

    spec = importlib.util.find_spec("this")
    src = spec.loader.get_source("this")
    start = src.index('s = """') + len('s = """')
    return codecs.decode(src[start : src.index('"""', start)], "rot13")


class CharModel:
    def __init__(self, text, seq_len=40, units=128, embed=32, seed=0):
        set_seed(seed)
        self.text = text
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}
        self.ids = np.array([self.index[c] for c in text], dtype=np.int64)
        self.seq_len = seq_len
        self.units, self.embed = units, embed
        V = len(self.chars)
        self.model = self._network(stateful=False)
        self.model.compile(optimizer=Adam(0.005, clipnorm=1.0),
                           loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        self._rng = np.random.default_rng(seed)
        self.vocab = V

    def _network(self, stateful):
        V = len(self.chars)
        return Sequential([
            Embedding(V, self.embed),
            LSTM(self.units, return_sequences=True, stateful=stateful),
            LSTM(self.units, return_sequences=True, stateful=stateful),
            Dense(V, activation="softmax"),
        ])

    def dataset(self):
        """Every window: x = ids[i : i+T], y = ids[i+1 : i+T+1]."""
        T = self.seq_len
        idx = np.arange(T)[None, :] + np.arange(len(self.ids) - T)[:, None]
        return self.ids[idx], self.ids[idx + 1]

    def sample(self, prefix, n=200, temperature=0.5):
        gen = self._network(stateful=True)
        gen.set_weights(self.model.get_weights())
        gen.reset_states()
        out = list(prefix)
        probs = gen(np.array([[self.index[c] for c in prefix]]))[0, -1]
        for _ in range(n):
            logp = np.log(np.maximum(probs.astype(np.float64), 1e-12)) / temperature
            p = np.exp(logp - logp.max())
            nxt = int(self._rng.choice(len(p), p=p / p.sum()))
            out.append(self.chars[nxt])
            probs = gen(np.array([[nxt]]))[0, -1]
        return "".join(out)

    def fit(self, epochs, batch_size=32, sample_every=0, prefix="Beautiful is ", verbose=2,
            temperature=0.5):
        x, y = self.dataset()

        def show(epoch, logs):
            if sample_every and (epoch + 1) % sample_every == 0:
                print(f"--- sample after epoch {epoch + 1} (temperature {temperature}):")
                print(self.sample(prefix, 160, temperature))
                print("---")

        return self.model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=verbose,
                              callbacks=[LambdaCallback(on_epoch_end=show)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--sample-every", type=int, default=5)
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)
    text = zen_text()
    print(f"text: the Zen of Python, {len(text)} characters, {len(set(text))} distinct")
    t0 = time.perf_counter()
    cm = CharModel(text, units=args.units)
    h = cm.fit(args.epochs, sample_every=args.sample_every, verbose=args.verbose,
               temperature=args.temperature)
    print(f"final loss {h.history['loss'][-1]:.4f}, next-character accuracy "
          f"{h.history['accuracy'][-1]:.4f}, {time.perf_counter() - t0:.1f}s")
    print("final sample:")
    print(cm.sample("Beautiful is ", 300, args.temperature))
    return cm, h


if __name__ == "__main__":
    main()
