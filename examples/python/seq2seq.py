"""Sequence to sequence: an LSTM encoder-decoder learns to reverse digit strings.

Written as a Keras user writes it (Keras's lstm_seq2seq recipe): a training model with
teacher forcing (the decoder reads the target shifted by one, starting from the encoder's
final states), then a separate encoder model and a step-by-step decoder model that reuse the
trained layers for greedy decoding. Only the imports differ from Keras: ``--keras`` runs the
same code on Keras 3 (if installed) for comparison.

Data (generated): strings of 3..8 digits; the target is the string reversed. Tokens: 0 padding
(masked: ``mask_zero=True``), 1 start, 2 end, 3..12 the digits. The script prints the held-out
exact-match accuracy (a whole string right) and the seconds per epoch.

Run:  python examples/python/seq2seq.py [--epochs 12] [--units 96] [--keras]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

PAD, START, END, DIGIT0 = 0, 1, 2, 3
VOCAB = DIGIT0 + 10


def make_data(n, min_len=3, max_len=8, seed=0):
    """(encoder tokens [n, max_len], decoder inputs [n, max_len+1], targets [n, max_len+1])."""
    rng = np.random.default_rng(seed)
    enc = np.zeros((n, max_len), dtype=np.int64)
    dec_in = np.zeros((n, max_len + 1), dtype=np.int64)
    dec_out = np.zeros((n, max_len + 1), dtype=np.int64)
    for i in range(n):
        L = rng.integers(min_len, max_len + 1)
        s = rng.integers(0, 10, L) + DIGIT0
        r = s[::-1]
        enc[i, :L] = s
        dec_in[i, 0] = START
        dec_in[i, 1 : L + 1] = r
        dec_out[i, :L] = r
        dec_out[i, L] = END
    return enc, dec_in, dec_out


def build(api, units, embed=32):
    """The training model and the two inference models, Keras's functional API."""
    Input, Model, L = api["Input"], api["Model"], api["layers"]
    enc_in = Input(shape=(None,), dtype="int32")
    x = L.Embedding(VOCAB, embed, mask_zero=True)(enc_in)
    _, h, c = L.LSTM(units, return_state=True)(x)
    dec_in = Input(shape=(None,), dtype="int32")
    dec_embed = L.Embedding(VOCAB, embed, mask_zero=True)
    dec_lstm = L.LSTM(units, return_sequences=True, return_state=True)
    dec_dense = L.Dense(VOCAB, activation="softmax")
    y, _, _ = dec_lstm(dec_embed(dec_in), initial_state=[h, c])
    model = Model([enc_in, dec_in], dec_dense(y))

    encoder = Model(enc_in, [h, c])
    h_in, c_in = Input(shape=(units,)), Input(shape=(units,))
    y, h2, c2 = dec_lstm(dec_embed(dec_in), initial_state=[h_in, c_in])
    decoder = Model([dec_in, h_in, c_in], [dec_dense(y), h2, c2])
    return model, encoder, decoder


def greedy_decode(encoder, decoder, enc, max_len):
    """Greedy decoding of a whole batch: one decoder step per output token."""
    h, c = encoder.predict(enc, verbose=0)
    tok = np.full((len(enc), 1), START, dtype=np.int64)
    out = np.zeros((len(enc), max_len + 1), dtype=np.int64)
    done = np.zeros(len(enc), bool)
    for t in range(max_len + 1):
        p, h, c = decoder.predict([tok, h, c], verbose=0)
        nxt = np.asarray(p)[:, -1].argmax(-1)
        nxt[done] = PAD
        out[:, t] = nxt
        done |= nxt == END
        tok = np.where(done, END, nxt)[:, None].astype(np.int64)
        if done.all():
            break
    return out


def exact_match(pred, target):
    """A string is right when every token up to and including END is."""
    ok = []
    for p, t in zip(pred, target):
        n = int(np.argmax(t == END)) + 1
        ok.append(np.array_equal(p[:n], t[:n]))
    return float(np.mean(ok))


def load_api(use_keras):
    if use_keras:
        import keras

        return {"Input": keras.Input, "Model": keras.Model, "layers": keras.layers,
                "optimizer": lambda lr: keras.optimizers.Adam(lr), "seed": keras.utils.set_random_seed,
                "Callback": keras.callbacks.Callback}
    import fastlstm
    from fastlstm import callbacks, layers, optimizers, utils

    return {"Input": fastlstm.Input, "Model": fastlstm.Model, "layers": layers,
            "optimizer": lambda lr: optimizers.Adam(lr), "seed": utils.set_random_seed,
            "Callback": callbacks.Callback}


def train(n_train=8000, n_test=1000, units=96, epochs=12, batch_size=64, lr=3e-3, max_len=8,
          use_keras=False, verbose=2, seed=0):
    api = load_api(use_keras)
    api["seed"](seed)
    enc, dec_in, dec_out = make_data(n_train + n_test, max_len=max_len, seed=seed)
    tr, te = slice(0, n_train), slice(n_train, None)
    model, encoder, decoder = build(api, units)
    model.compile(optimizer=api["optimizer"](lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    times = []

    class EpochTimer(api["Callback"]):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)

    t0 = time.perf_counter()
    hist = model.fit([enc[tr], dec_in[tr]], dec_out[tr], batch_size=batch_size, epochs=epochs,
                     verbose=verbose, callbacks=[EpochTimer()])
    seconds = time.perf_counter() - t0
    pred = greedy_decode(encoder, decoder, enc[te], max_len)
    acc = exact_match(pred, dec_out[te])
    return {"test_exact_match": acc, "seconds_per_epoch": seconds / max(epochs, 1),
            "final_loss": float(hist.history["loss"][-1]), "epoch_seconds": times}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--units", type=int, default=96)
    ap.add_argument("--n-train", type=int, default=8000)
    ap.add_argument("--keras", action="store_true", help="run the same code on Keras 3")
    ap.add_argument("--verbose", type=int, default=2)
    args = ap.parse_args(argv)
    r = train(n_train=args.n_train, units=args.units, epochs=args.epochs,
              use_keras=args.keras, verbose=args.verbose)
    who = "keras" if args.keras else "fastlstm"
    print(f"{who}: held-out exact match {r['test_exact_match']:.3f}, "
          f"{r['seconds_per_epoch']:.2f} s per epoch, final loss {r['final_loss']:.4f}")
    return r


if __name__ == "__main__":
    main()
