"""Sequence to sequence with attention: an LSTM encoder-decoder with Luong (dot-product)
attention learns to sort strings of digits.

Written as a Keras user writes it: the decoder LSTM starts from the encoder's final states and
reads the target shifted by one (teacher forcing); ``Attention([decoder_seq, encoder_seq])``
gives each decoder step a context vector over all encoder steps, concatenated with the decoder
output before the softmax. For greedy decoding an encoder model returns its sequence and
states and a decoder model runs one step at a time, reusing the trained layers. Only the
imports differ from Keras: ``--keras`` runs the same code on Keras 3 (if installed).

``--attention additive`` uses Bahdanau's AdditiveAttention instead. Data (generated): strings
of ``--length`` digits (tokens 2..11; 1 is the start token); the target is the sorted string.
The script prints the held-out exact-match accuracy and the seconds per epoch.

Run:  python examples/python/attention_seq2seq.py [--epochs 10] [--units 64] [--keras]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

START, DIGIT0 = 1, 2
VOCAB = DIGIT0 + 10


def make_data(n, length=8, seed=0):
    """(encoder tokens [n, L], decoder inputs [n, L], targets [n, L]): sort the digits."""
    rng = np.random.default_rng(seed)
    enc = rng.integers(0, 10, (n, length)) + DIGIT0
    target = np.sort(enc, axis=1)
    dec_in = np.concatenate([np.full((n, 1), START), target[:, :-1]], axis=1)
    return enc.astype(np.int64), dec_in.astype(np.int64), target.astype(np.int64)


def build(api, units, kind="dot", embed=24):
    Input, Model, L = api["Input"], api["Model"], api["layers"]
    enc_in = Input(shape=(None,), dtype="int32")
    enc_seq, h, c = L.LSTM(units, return_sequences=True, return_state=True)(
        L.Embedding(VOCAB, embed)(enc_in))
    dec_in = Input(shape=(None,), dtype="int32")
    dec_embed = L.Embedding(VOCAB, embed)
    dec_lstm = L.LSTM(units, return_sequences=True, return_state=True)
    attention = L.Attention() if kind == "dot" else L.AdditiveAttention()
    join = L.Concatenate()
    head = L.Dense(VOCAB, activation="softmax")

    def decode(tokens, states, memory):
        seq, h2, c2 = dec_lstm(dec_embed(tokens), initial_state=states)
        context = attention([seq, memory])
        return head(join([seq, context])), h2, c2

    probs, _, _ = decode(dec_in, [h, c], enc_seq)
    model = Model([enc_in, dec_in], probs)
    encoder = Model(enc_in, [enc_seq, h, c])
    mem_in, h_in, c_in = Input(shape=(None, units)), Input(shape=(units,)), Input(shape=(units,))
    p, h2, c2 = decode(dec_in, [h_in, c_in], mem_in)
    decoder = Model([dec_in, mem_in, h_in, c_in], [p, h2, c2])
    return model, encoder, decoder


def greedy_decode(encoder, decoder, enc):
    memory, h, c = encoder.predict(enc, verbose=0)
    tok = np.full((len(enc), 1), START, dtype=np.int64)
    out = np.zeros(enc.shape, dtype=np.int64)
    for t in range(enc.shape[1]):
        p, h, c = decoder.predict([tok, memory, h, c], verbose=0)
        out[:, t] = np.asarray(p)[:, -1].argmax(-1)
        tok = out[:, t : t + 1]
    return out


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


def train(n_train=8000, n_test=1000, length=8, units=64, epochs=10, batch_size=64, lr=3e-3,
          kind="dot", use_keras=False, verbose=2, seed=0):
    api = load_api(use_keras)
    api["seed"](seed)
    enc, dec_in, target = make_data(n_train + n_test, length=length, seed=seed)
    tr, te = slice(0, n_train), slice(n_train, None)
    model, encoder, decoder = build(api, units, kind)
    model.compile(optimizer=api["optimizer"](lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    times = []

    class EpochTimer(api["Callback"]):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)

    t0 = time.perf_counter()
    hist = model.fit([enc[tr], dec_in[tr]], target[tr], batch_size=batch_size, epochs=epochs,
                     verbose=verbose, callbacks=[EpochTimer()])
    seconds = time.perf_counter() - t0
    pred = greedy_decode(encoder, decoder, enc[te])
    acc = float((pred == target[te]).all(axis=1).mean())
    return {"test_exact_match": acc, "seconds_per_epoch": seconds / max(epochs, 1),
            "final_loss": float(hist.history["loss"][-1]), "epoch_seconds": times}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--units", type=int, default=64)
    ap.add_argument("--length", type=int, default=8)
    ap.add_argument("--n-train", type=int, default=8000)
    ap.add_argument("--attention", choices=["dot", "additive"], default="dot")
    ap.add_argument("--keras", action="store_true", help="run the same code on Keras 3")
    ap.add_argument("--verbose", type=int, default=2)
    args = ap.parse_args(argv)
    r = train(n_train=args.n_train, length=args.length, units=args.units, epochs=args.epochs,
              kind=args.attention, use_keras=args.keras, verbose=args.verbose)
    who = "keras" if args.keras else "fastlstm"
    print(f"{who} ({args.attention} attention): held-out exact match "
          f"{r['test_exact_match']:.3f}, {r['seconds_per_epoch']:.2f} s per epoch, final loss "
          f"{r['final_loss']:.4f}")
    return r


if __name__ == "__main__":
    main()
