"""Make the model files the C++ tests load (tests/data/cpp/*.safetensors).

Run from the repository root: ``python3 tests/data/make_cpp_fixtures.py``. Needs NumPy and
fastlstm.reference (the pure-NumPy float64 oracle; it does not import the engine).

Each file is a fastlstm model file (docs/model-format.md: safetensors, architecture in
``__metadata__["fastlstm"]``)
that carries a self-check: an input, optional lengths, and the expected output computed here
in float64 from the stored weights, by an implementation of the Sequential semantics written
independently of the C++ loader. The C++ tests load each file, predict, and compare.

The file writer is a dozen lines of NumPy on purpose (the C++ side must read what any correct
safetensors writer produces, not only fastlstm.io's).
"""

from __future__ import annotations

import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
from fastlstm import reference

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpp")
DTYPES = {np.dtype("float32"): "F32", np.dtype("float64"): "F64", np.dtype("int64"): "I64",
          np.dtype("int8"): "I8", np.dtype("uint16"): "BF16"}  # uint16: bf16 bits


def write_safetensors(path, tensors, metadata):
    """tensors: {name: ndarray}; metadata: {str: str}. Tensors in sorted name order."""
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        b = a.tobytes()
        header[name] = {"dtype": DTYPES[a.dtype.newbyteorder("=")], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(b)]}
        chunks.append(b)
        offset += len(b)
    header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in chunks:
            f.write(b)


# ---------------------------------------------------------------------------- weights
rng = np.random.default_rng(20261123)


def uniform(shape, scale=0.5, dtype=np.float32):
    return rng.uniform(-scale, scale, size=shape).astype(dtype)


def rnn_params(cell, input_size, hidden, num_layers=1, bidirectional=False, proj_size=0,
               peephole=False, bias=True, dtype=np.float32):
    """PyTorch-named parameters, in the order of the C++ param_layout."""
    G = (4 if cell == "LSTM" else 3) * hidden
    S = proj_size or hidden
    D = 2 if bidirectional else 1
    p = {}
    for k in range(num_layers):
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            p["weight_ih" + sfx] = uniform((G, input_size if k == 0 else D * S), dtype=dtype)
            p["weight_hh" + sfx] = uniform((G, S), dtype=dtype)
            if bias:
                p["bias_ih" + sfx] = uniform((G,), dtype=dtype)
                p["bias_hh" + sfx] = uniform((G,), dtype=dtype)
            if proj_size:
                p["weight_hr" + sfx] = uniform((proj_size, hidden), dtype=dtype)
            if peephole:
                for w in ("weight_ci", "weight_cf", "weight_co"):
                    p[w + sfx] = uniform((hidden,), dtype=dtype)
    return p


def run_rnn(cell, params, x, lengths, **kw):
    """x [B, T, I] float64 -> (output [B, T, D*S], h_n [L*D, B, S]) by the reference."""
    params = {k: v.astype(np.float64) for k, v in params.items()}
    if cell == "LSTM":
        out, h_n, _, _ = reference.lstm_forward(params, x, lengths=lengths, batch_first=True,
                                                **kw)
    else:
        kw.pop("proj_size", None)
        kw.pop("peephole", None)
        out, h_n, _ = reference.gru_forward(params, x, lengths=lengths, batch_first=True, **kw)
    return out, h_n


# ---------------------------------------------------------------------------- Sequential
class Seq:
    """Builds a Sequential model's JSON and tensors and runs it in float64 (the oracle)."""

    def __init__(self):
        self.layers, self.tensors, self.fns = [], {}, []

    def _add(self, cls, config, weights, fn):
        i = len(self.layers)
        self.layers.append({"class": cls, "config": config})
        for k, v in weights.items():
            self.tensors[f"layers.{i}.{k}"] = v
        self.fns.append(fn)

    def embedding(self, vocab, dim, mask_zero):
        table = uniform((vocab, dim), 1.0)

        def fn(state):
            tok = state["x"]
            state["x"] = table.astype(np.float64)[tok]
            if mask_zero and state["lengths"] is None:
                # Keras's mask: every 0 is padding; masked steps carry the state, so each
                # row's real steps packed to the left give the same final state
                nz = tok != 0
                order = np.argsort(~nz, axis=1, kind="stable")
                state["x"] = np.take_along_axis(state["x"], order[:, :, None], axis=1)
                state["lengths"] = nz.sum(axis=1).astype(np.int64)
        self._add("Embedding", {"input_dim": vocab, "output_dim": dim, "mask_zero": mask_zero},
                  {"embeddings": table}, fn)

    @staticmethod
    def _rnn_config(cell, units, input_size, return_sequences, go_backwards, peephole):
        c = {"units": units, "input_size": input_size, "return_sequences": return_sequences,
             "go_backwards": go_backwards, "bias": True}
        if cell == "LSTM":
            c["peephole"] = peephole
        return c

    def recurrent(self, cell, units, input_size, return_sequences, go_backwards=False,
                  peephole=False):
        params = rnn_params(cell, input_size, units, peephole=peephole)

        def fn(state):
            x, lengths = state["x"], state["lengths"]
            B, T, _ = x.shape
            n = lengths if lengths is not None else np.full(B, T)
            if go_backwards:  # each sequence's valid steps reversed, zeros after
                xr = np.zeros_like(x)
                for b in range(B):
                    xr[b, :n[b]] = x[b, :n[b]][::-1]
                x = xr
            out, h_n = run_rnn(cell, params, x, lengths, peephole=peephole)
            state["x"] = out if return_sequences else h_n[-1]
        self._add(cell, self._rnn_config(cell, units, input_size, return_sequences, go_backwards,
                                         peephole), params, fn)

    def bidirectional(self, cell, units, input_size, return_sequences, merge_mode,
                      peephole=False):
        params = rnn_params(cell, input_size, units, bidirectional=True, peephole=peephole)
        merge = {"concat": lambda a, b: np.concatenate([a, b], axis=-1),
                 "sum": lambda a, b: a + b, "mul": lambda a, b: a * b,
                 "ave": lambda a, b: (a + b) / 2}[merge_mode]

        def fn(state):
            out, h_n = run_rnn(cell, params, state["x"], state["lengths"], bidirectional=True,
                               peephole=peephole)
            if return_sequences:
                state["x"] = merge(out[..., :units], out[..., units:])
            else:
                state["x"] = merge(h_n[-2], h_n[-1])
        inner = {"class": cell, "config": self._rnn_config(cell, units, input_size,
                                                            return_sequences, False, peephole)}
        self._add("Bidirectional", {"merge_mode": merge_mode, "layer": inner}, params, fn)

    def dense(self, units, input_dim, activation, use_bias=True):
        kernel = uniform((input_dim, units), 0.8)
        bias = uniform((units,), 0.5)
        acts = {"linear": lambda a: a, "relu": lambda a: np.maximum(a, 0), "tanh": np.tanh,
                "sigmoid": lambda a: 1 / (1 + np.exp(-a)),
                "softmax": lambda a: np.exp(a - a.max(-1, keepdims=True)) /
                np.exp(a - a.max(-1, keepdims=True)).sum(-1, keepdims=True)}

        def fn(state):
            y = state["x"] @ kernel.astype(np.float64)
            if use_bias:
                y = y + bias
            state["x"] = acts[activation](y)
        w = {"kernel": kernel}
        if use_bias:
            w["bias"] = bias
        self._add("Dense", {"units": units, "input_dim": input_dim, "activation": activation,
                            "use_bias": use_bias}, w, fn)

    def dropout(self, rate):
        self._add("Dropout", {"rate": rate}, {}, lambda state: None)

    def predict(self, x, lengths):
        state = {"x": x if x.dtype == np.int64 else x.astype(np.float64), "lengths": lengths}
        for fn in self.fns:
            fn(state)
        return state["x"]

    def model(self):
        return {"class": "Sequential", "dtype": "float32", "layers": self.layers}


def save(name, model, tensors, x, lengths, y, out_dtype=np.float32):
    tensors = dict(tensors)
    tensors["selfcheck.input"] = x
    tensors["selfcheck.output"] = y.astype(out_dtype)
    check = {"input": "selfcheck.input", "output": "selfcheck.output", "lengths": None}
    if lengths is not None:
        tensors["selfcheck.lengths"] = np.asarray(lengths, dtype=np.int64)
        check["lengths"] = "selfcheck.lengths"
    meta = {"fastlstm": json.dumps({"format_version": 1, "model": model}),
            "fastlstm_selfcheck": json.dumps(check)}
    path = os.path.join(OUT, name + ".safetensors")
    write_safetensors(path, tensors, meta)
    print(f"{path}: {os.path.getsize(path)} bytes, output {y.shape}")


def bare(name, cell, I, H, B, T, lengths=None, dtype=np.float32, **kw):
    config = {"input_size": I, "hidden_size": H, "num_layers": kw.get("num_layers", 1),
              "bias": kw.get("bias", True), "batch_first": True,
              "bidirectional": kw.get("bidirectional", False),
              "proj_size": kw.get("proj_size", 0), "peephole": kw.get("peephole", False)}
    params = rnn_params(cell, I, H, dtype=dtype, **kw)
    x = uniform((B, T, I), 1.0, dtype)
    run_kw = {k: v for k, v in kw.items() if k != "bias"}
    out, _ = run_rnn(cell, params, x.astype(np.float64), lengths, **run_kw)
    model = {"class": cell, "config": config,
             "dtype": "float64" if dtype == np.float64 else "float32"}
    save(name, model, params, x, lengths, out, dtype)
    return model, params


# ---------------------------------------------------------------------------- quantized files
def quantize_matrix(w, precision):
    """The format's quantization of a float32 matrix (docs/model-format.md), written here from
    the description: bf16 rounds each float32 to nearest even in its upper 16 bits; int8 keeps
    per row scale = max|w| / 127 and codes round(w * (127 / max|w|)) in [-127, 127]."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    if precision == "bf16":
        bits = w.view(np.uint32).astype(np.uint64)
        lsb = (bits >> 16) & 1
        return {"": ((bits + 0x7FFF + lsb) >> 16).astype(np.uint16)}
    mx = np.max(np.abs(w), axis=1)
    scale = (mx / np.float32(127)).astype(np.float32)
    inv = (np.float32(127) / mx).astype(np.float32)
    codes = np.clip(np.rint(w * inv[:, None]), -127, 127).astype(np.int8)
    return {"": codes, ".scale": scale}


def save_quantized(name, model, tensors, precision):
    """The model with its recurrent matrices quantized, no self-check (its output is not the
    float reference's): the C++ tests compare it with the float file quantized on load."""
    out = {}
    for k, v in tensors.items():
        if k.rsplit(".", 1)[-1].startswith(("weight_ih", "weight_hh", "weight_hr")):
            for suffix, arr in quantize_matrix(v, precision).items():
                out[k + suffix] = arr
        else:
            out[k] = v
    model = dict(model, precision=precision)
    path = os.path.join(OUT, f"{name}_{precision}.safetensors")
    write_safetensors(path, out, {"fastlstm": json.dumps({"format_version": 2, "model": model})})
    print(f"{path}: {os.path.getsize(path)} bytes")


def main():
    os.makedirs(OUT, exist_ok=True)
    # bare modules
    quantized = []  # (name, model, tensors): written quantized at the end
    quantized.append(("lstm_stacked_bidir_proj",) + bare(
        "lstm_stacked_bidir_proj", "LSTM", 7, 9, B=3, T=7, lengths=[5, 3, 7], num_layers=2,
        bidirectional=True, proj_size=5))
    bare("lstm_peephole_nobias_f64", "LSTM", 5, 6, B=2, T=4, dtype=np.float64, peephole=True,
         bias=False)
    bare("gru_stacked_bidir", "GRU", 4, 7, B=4, T=6, lengths=[2, 6, 4, 1], num_layers=3,
         bidirectional=True)
    bare("lstm_stream", "LSTM", 3, 5, B=2, T=6, num_layers=2, proj_size=3)

    # Sequential: tokens, mask_zero (row 1 has an inner 0, which is masked as in Keras), dropout,
    # a bidirectional GRU that returns its final states, softmax
    s = Seq()
    s.embedding(11, 6, mask_zero=True)
    s.recurrent("LSTM", 9, 6, return_sequences=True)
    s.dropout(0.3)
    s.bidirectional("GRU", 5, 9, return_sequences=False, merge_mode="concat")
    s.dense(3, 10, "softmax")
    tok = np.array([[3, 1, 4, 1, 5, 0, 0, 0], [9, 0, 2, 6, 5, 3, 5, 8], [7, 0, 0, 0, 0, 0, 0, 0]],
                   dtype=np.int64)
    save("seq_embedding", s.model(), s.tensors, tok, None, s.predict(tok, None))

    # go_backwards with sequences, peephole, bidirectional sum, relu per step, lengths
    s = Seq()
    s.recurrent("LSTM", 6, 3, return_sequences=True, go_backwards=True, peephole=True)
    s.bidirectional("LSTM", 5, 6, return_sequences=True, merge_mode="sum")
    s.dense(4, 5, "relu")
    x, lengths = uniform((3, 7, 3), 1.0), np.array([4, 7, 2])
    save("seq_backwards", s.model(), s.tensors, x, lengths, s.predict(x, lengths))

    # go_backwards without sequences, two Dense (tanh, sigmoid without bias)
    s = Seq()
    s.recurrent("GRU", 7, 4, return_sequences=False, go_backwards=True)
    s.dense(5, 7, "tanh")
    s.dense(2, 5, "sigmoid", use_bias=False)
    x = uniform((3, 5, 4), 1.0)
    save("seq_gru_last", s.model(), s.tensors, x, None, s.predict(x, None))

    # merge modes mul and ave
    s = Seq()
    s.bidirectional("LSTM", 4, 5, return_sequences=True, merge_mode="mul")
    s.bidirectional("GRU", 3, 4, return_sequences=False, merge_mode="ave")
    s.dense(1, 3, "linear")
    x, lengths = uniform((4, 6, 5), 1.0), np.array([6, 1, 3, 5])
    save("seq_merge_modes", s.model(), s.tensors, x, lengths, s.predict(x, lengths))

    # streamable: Dense first, LSTM (sequences), GRU (final state), Dense
    s = Seq()
    s.dense(6, 4, "tanh")
    s.recurrent("LSTM", 8, 6, return_sequences=True)
    s.recurrent("GRU", 5, 8, return_sequences=False)
    s.dense(3, 5, "linear")
    x = uniform((2, 5, 4), 1.0)
    save("seq_stream", s.model(), s.tensors, x, None, s.predict(x, None))
    quantized.append(("seq_stream", s.model(), s.tensors))

    # streamable with tokens
    s = Seq()
    s.embedding(13, 4, mask_zero=False)
    s.recurrent("GRU", 6, 4, return_sequences=True)
    s.dense(2, 6, "sigmoid")
    tok = rng.integers(0, 13, size=(3, 5)).astype(np.int64)
    save("seq_embedding_stream", s.model(), s.tensors, tok, None, s.predict(tok, None))

    # quantized files (format_version 2) of two of the models above
    for name, model, tensors in quantized:
        for precision in ("bf16", "int8"):
            save_quantized(name, model, tensors, precision)


if __name__ == "__main__":
    main()
