"""Make the fuzz corpus tests/data/fuzz/: the fuzzer's seed files and the files that once
crashed, hung or were misread by one of the two readers the project used to have (issue 14),
with tests/data/fuzz/expected.json saying what each must give: ``{"outcome": "loads"}`` (loads
and verifies its self-check) or ``{"outcome": "refused", "words": [...]}`` (refused with an
error naming the field and the reason: every word appears in the message).

Run from the repository root: ``python3 tests/data/make_fuzz_corpus.py``. Needs nothing but the
standard library: every file is an edit of a seed file (tests/data/cpp/, made by
make_cpp_fixtures.py) at the byte or metadata level. tests/test_fuzz_corpus.py replays the
corpus through the Python loader and the C++ reader's binding, tests/cpp/test_model_fuzz.cpp
through the C++ API; a new file that crashed, hung or was misread belongs here, with its
expectation.
"""

from __future__ import annotations

import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "cpp")
OUT = os.path.join(HERE, "fuzz")

# the fuzzer's seed files (tests/cpp/test_model_fuzz.cpp)
SEED_NAMES = ["seq_embedding", "seq_backwards", "lstm_stacked_bidir_proj",
              "lstm_peephole_nobias_f64", "seq_merge_modes", "seq_gru_last",
              "lstm_stacked_bidir_proj_int8", "seq_stream_bf16"]


def read(name):
    with open(os.path.join(SEEDS, name + ".safetensors"), "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def write(name, header, body, raw_header=None):
    text = raw_header if raw_header is not None else json.dumps(
        header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(os.path.join(OUT, name + ".safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + body)


def edit_model(seed, fn):
    """The seed's header with fn applied to its parsed __metadata__["fastlstm"]."""
    header, body = read(seed)
    info = json.loads(header["__metadata__"]["fastlstm"])
    fn(info)
    header["__metadata__"]["fastlstm"] = json.dumps(info)
    return header, body


def edit_text(seed, fn):
    """The seed's header with fn applied to the text of __metadata__["fastlstm"]."""
    header, body = read(seed)
    header["__metadata__"]["fastlstm"] = fn(header["__metadata__"]["fastlstm"])
    return header, body


def edit_tensors(seed, fn):
    """The seed rebuilt after fn(tensors, info): tensors maps name -> [dtype, shape, bytes]
    (in file order, editable), info is the parsed __metadata__["fastlstm"]."""
    header, body = read(seed)
    meta = header.pop("__metadata__")
    tensors = {name: [e["dtype"], e["shape"], body[e["data_offsets"][0]:e["data_offsets"][1]]]
               for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"])}
    info = json.loads(meta["fastlstm"])
    fn(tensors, info)
    meta["fastlstm"] = json.dumps(info)
    out, chunks, offset = {"__metadata__": meta}, [], 0
    for name, (dtype, shape, data) in tensors.items():
        out[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    return out, b"".join(chunks)


def set_bytes(name, index, packed):
    """Sets element bytes of tensor `name` (element `index`, `packed` its new bytes)."""
    def fn(tensors, info):
        data = bytearray(tensors[name][2])
        data[index * len(packed):(index + 1) * len(packed)] = packed
        tensors[name][2] = bytes(data)
    return fn


def functional_seed():
    """A functional model (two inputs, a Dense shared by both, an encoder LSTM whose states
    start a decoder LSTM, an Add, a dict output) written from the standard library: the
    fuzzers' functional seed. The C++ runner and Python's load_model load it."""
    model = {
        "class": "Model", "dtype": "float32",
        "inputs": [{"shape": [None, 3], "dtype": "float32", "name": "a"},
                   {"shape": [None, 3], "dtype": "float32", "name": "b"}],
        "layers": [
            {"class": "Dense", "config": {"units": 2, "input_dim": 3, "activation": "linear",
                                          "use_bias": True},
             "name": "proj", "calls": [{"inputs": [["__input__", 1, 0]]},
                                       {"inputs": [["__input__", 0, 0]]}]},
            {"class": "LSTM", "config": {"units": 2, "input_size": 2, "return_sequences": False,
                                         "go_backwards": False, "peephole": False, "bias": True,
                                         "return_state": True},
             "name": "enc", "calls": [{"inputs": [["proj", 1, 0]]}]},
            {"class": "LSTM", "config": {"units": 2, "input_size": 2, "return_sequences": False,
                                         "go_backwards": False, "peephole": False, "bias": True},
             "name": "dec", "calls": [{"inputs": [["proj", 0, 0], ["enc", 0, 1],
                                                  ["enc", 0, 2]]}]},
            {"class": "Add", "config": {}, "name": "add",
             "calls": [{"inputs": [["dec", 0, 0], ["enc", 0, 1]]}]}],
        "outputs": [["add", 0, 0]], "output_names": ["y"]}
    shapes = {"layers.0.kernel": [3, 2], "layers.0.bias": [2]}
    for i in (1, 2):
        shapes.update({f"layers.{i}.weight_ih_l0": [8, 2], f"layers.{i}.weight_hh_l0": [8, 2],
                       f"layers.{i}.bias_ih_l0": [8], f"layers.{i}.bias_hh_l0": [8]})
    return graph_file(model, shapes)


def attention_seed():
    """A functional model of the other layer kinds the C++ runner runs: token and float inputs,
    an Embedding, a Bidirectional GRU, Attention and AdditiveAttention (scales), Concatenate and
    a nested model with a Dense; two outputs."""
    call = lambda *refs: [{"inputs": [list(r) for r in refs]}]  # noqa: E731
    inner = {"class": "Model", "dtype": "float32",
             "inputs": [{"shape": [None, 8], "dtype": "float32", "name": "z"}],
             "layers": [{"class": "Dense", "config": {"units": 2, "input_dim": 8,
                                                      "activation": "softmax", "use_bias": True},
                         "name": "head", "calls": call(("__input__", 0, 0))}],
             "outputs": [["head", 0, 0]]}
    gru = {"units": 2, "input_size": 4, "return_sequences": True, "go_backwards": False,
           "bias": True}
    model = {
        "class": "Model", "dtype": "float32",
        "inputs": [{"shape": [None], "dtype": "int64", "name": "t"},
                   {"shape": [None, 4], "dtype": "float32", "name": "x"}],
        "layers": [
            {"class": "Embedding", "config": {"input_dim": 7, "output_dim": 4,
                                              "mask_zero": False},
             "name": "emb", "calls": call(("__input__", 0, 0))},
            {"class": "Bidirectional", "config": {"merge_mode": "concat",
                                                  "layer": {"class": "GRU", "config": gru}},
             "name": "bi", "calls": call(("__input__", 1, 0))},
            {"class": "Attention", "config": {"use_scale": True}, "name": "luong",
             "calls": [{"inputs": [["emb", 0, 0], ["bi", 0, 0]],
                        "kwargs": {"return_attention_scores": False, "use_causal_mask": True}}]},
            {"class": "AdditiveAttention", "config": {"use_scale": True}, "name": "bahdanau",
             "calls": call(("bi", 0, 0), ("emb", 0, 0))},
            {"class": "Concatenate", "config": {"axis": -1}, "name": "cat",
             "calls": call(("luong", 0, 0), ("bahdanau", 0, 0))},
            dict(inner, name="inner", calls=call(("cat", 0, 0)))],
        "outputs": [["inner", 0, 0], ["bi", 0, 0]], "output_names": ["y", "seq"]}
    shapes = {"layers.0.embeddings": [7, 4], "layers.2.scale": [], "layers.3.scale": [4],
              "layers.5.layers.0.kernel": [8, 2], "layers.5.layers.0.bias": [2]}
    for suffix in ("", "_reverse"):
        shapes.update({f"layers.1.weight_ih_l0{suffix}": [6, 4],
                       f"layers.1.weight_hh_l0{suffix}": [6, 2],
                       f"layers.1.bias_ih_l0{suffix}": [6], f"layers.1.bias_hh_l0{suffix}": [6]})
    return graph_file(model, shapes)


def graph_file(model, shapes):
    """(header, body) of a functional model file: weights of a fixed pattern."""
    header, body, k = {}, b"", 0
    for name, shape in shapes.items():
        n = 1
        for d in shape:
            n *= d
        values = [0.1 * (((k + j) * 7) % 11 - 5) for j in range(n)]
        k += n
        data = struct.pack(f"<{n}f", *values)
        header[name] = {"dtype": "F32", "shape": shape,
                        "data_offsets": [len(body), len(body) + len(data)]}
        body += data
    header["__metadata__"] = {"fastlstm": json.dumps({"format_version": 2, "model": model})}
    return header, body


def compiled_seed(seed="seq_gru_last"):
    """A Sequential seed with a compile state (Adam after 3 steps: its m and v per weight, the
    weight's bytes and their squares' stand-ins), so the fuzzers reach the compile-state
    checks of both readers. Loads in C++ (which ignores the state) and in Python (compiled)."""
    header, body = read(seed)
    info = json.loads(header["__metadata__"]["fastlstm"])
    info["format_version"] = 2
    header["__metadata__"]["fastlstm"] = json.dumps(info)
    weights = [k for k in header if k != "__metadata__" and not k.startswith("selfcheck.")]
    for slot in ("m", "v"):
        for name in weights:
            t = header[name]
            a, b = t["data_offsets"]
            data = body[a:b]
            if slot == "v":  # non-negative
                n = (b - a) // 4
                data = struct.pack(f"<{n}f", *[abs(x) for x in struct.unpack(f"<{n}f", data)])
            header[f"optimizer.{slot}.{name}"] = {
                "dtype": t["dtype"], "shape": t["shape"],
                "data_offsets": [len(body), len(body) + len(data)]}
            body += data
    header["__metadata__"]["fastlstm_compile"] = json.dumps({
        "loss": "binary_crossentropy", "loss_weights": None, "metrics": {"list": ["accuracy"]},
        "optimizer": {"class": "Adam", "config": {"learning_rate": 0.001, "beta_1": 0.9}},
        "iterations": 3, "slots": ["m", "v"]})
    return header, body


def layer_cfg(i):
    return lambda info: info["model"]["layers"][i]["config"]


def set_key(get, key, value):
    def fn(info):
        get(info)[key] = value
    return fn


def rename_key(get, old, new):
    def fn(info):
        cfg = get(info)
        cfg[new] = cfg.pop(old)
    return fn


def bare_cfg(info):
    return info["model"]["config"]


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {}

    for name in SEED_NAMES:
        header, body = read(name)
        write("seed_" + name, header, body)
        expected["seed_" + name] = {"outcome": "loads"}

    # the functional seed: loaded by the C++ runner and by Python (python_outcome: the Python
    # check runs fastlstm.io.load_model), a seed of both fuzzers
    write("seed_functional", *functional_seed())
    expected["seed_functional"] = {"outcome": "loads", "python_outcome": "loads"}
    write("seed_functional_attention", *attention_seed())
    expected["seed_functional_attention"] = {"outcome": "loads", "python_outcome": "loads"}

    # a Sequential with a compile state: loads (and verifies) in both readers
    write("seed_compiled", *compiled_seed())
    expected["seed_compiled"] = {"outcome": "loads"}

    def refused(name, words, header, body, raw_header=None):
        write(name, header, body, raw_header)
        expected[name] = {"outcome": "refused", "words": words}

    # hung the Python reader for a minute and 3.4 GB (it built a table of every claimed layer)
    refused("huge_num_layers", ["model.config.num_layers", "1073741824"],
            *edit_model("lstm_stacked_bidir_proj", set_key(bare_cfg, "num_layers", 2**30)))
    # int64 overflow in the parameter layout (num_params wrapped)
    refused("huge_hidden_size", ["model.config.hidden_size", str(2**62 + 1)],
            *edit_model("lstm_peephole_nobias_f64", set_key(bare_cfg, "hidden_size", 2**62 + 1)))
    # booleans written as strings: Python read "false" as true (112 fuzzed files misread)
    refused("string_mask_zero", ["model.layers[0].config.mask_zero", "true or false"],
            *edit_model("seq_embedding", set_key(layer_cfg(0), "mask_zero", "false")))
    refused("string_bias", ["model.config.bias", "true or false"],
            *edit_model("lstm_peephole_nobias_f64", set_key(bare_cfg, "bias", "false")))
    refused("string_use_bias", ["model.layers[2].config.use_bias", "true or false"],
            *edit_model("seq_gru_last", set_key(layer_cfg(2), "use_bias", "false")))
    refused("string_return_sequences",
            ["model.layers[0].config.return_sequences", "true or false"],
            *edit_model("seq_gru_last", set_key(layer_cfg(0), "return_sequences", "false")))
    refused("string_go_backwards", ["model.layers[0].config.go_backwards", "true or false"],
            *edit_model("seq_backwards", set_key(layer_cfg(0), "go_backwards", "false")))
    refused("string_peephole", ["model.layers[0].config.peephole", "true or false"],
            *edit_model("seq_backwards", set_key(layer_cfg(0), "peephole", "false")))
    refused("int_peephole", ["model.config.peephole", "true or false"],
            *edit_model("lstm_peephole_nobias_f64", set_key(bare_cfg, "peephole", 1)))
    # unknown or misspelled keys: C++ loaded a linear Dense / the default return_sequences
    refused("misspelled_activation", ["model.layers[1].config", "unknown key \"activaton\""],
            *edit_model("seq_gru_last", rename_key(layer_cfg(1), "activation", "activaton")))
    refused("misspelled_return_sequences",
            ["model.layers[0].config", "unknown key \"return_sequence\""],
            *edit_model("seq_gru_last",
                        rename_key(layer_cfg(0), "return_sequences", "return_sequence")))
    refused("unknown_top_level_key", ["__metadata__[\"fastlstm\"]", "unknown key \"comment\""],
            *edit_model("seq_merge_modes", lambda info: info.update(comment="x")))
    # invalid UTF-8 (C++ accepted it): a raw 0xff inside the activation's name
    header, body = read("seq_gru_last")
    raw = json.dumps(header, separators=(",", ":")).encode()
    assert raw.count(b"tanh") == 1
    refused("invalid_utf8", ["invalid UTF-8"], header, body,
            raw_header=raw.replace(b"tanh", b"t\xffnh"))
    # duplicate keys and over-deep nesting (Python accepted them)
    refused("duplicate_key", ["duplicate key \"format_version\""],
            *edit_text("seq_gru_last", lambda t: '{"format_version": 1, ' + t[1:]))
    refused("deep_nesting", ["nested deeper than 64"],
            *edit_text("seq_gru_last", lambda t: t[:-1] + ', "x": ' + "[" * 100 + "]" * 100
                       + "}"))
    # the weights' dtype must be the model's
    refused("dtype_mismatch", ["dtype F64, expected F32"],
            *edit_model("lstm_peephole_nobias_f64",
                        lambda info: info["model"].update(dtype="float32")))

    # quantized files (format_version 2): what the precision asks of the tensors
    q8, qbf = "lstm_stacked_bidir_proj_int8", "seq_stream_bf16"
    refused("q_precision_in_version_1", ["unknown key \"precision\""],
            *edit_model(q8, lambda info: info.update(format_version=1)))
    refused("q_unknown_precision", ["model.precision", "\"fp8\""],
            *edit_model(q8, lambda info: info["model"].update(precision="fp8")))
    refused("q_int8_read_as_bf16", ["weight_ih_l0", "dtype I8, expected BF16"],
            *edit_model(q8, lambda info: info["model"].update(precision="bf16")))
    refused("q_float64_module", ["model.dtype must be \"float32\"", "quantized"],
            *edit_model(q8, lambda info: info["model"].update(dtype="float64")))
    refused("q_scale_missing", ["weight_hh_l1.scale", "missing"],
            *edit_tensors(q8, lambda t, info: t.pop("weight_hh_l1.scale")))
    refused("q_scale_wrong_shape", ["weight_hr_l0.scale", "shape [4]", "expected [5]"],
            *edit_tensors(q8, lambda t, info: t["weight_hr_l0.scale"].__setitem__(
                slice(1, 3), [[4], t["weight_hr_l0.scale"][2][:16]])))
    refused("q_scale_nan", ["weight_ih_l0_reverse.scale", "nan", "row 2"],
            *edit_tensors(q8, set_bytes("weight_ih_l0_reverse.scale", 2,
                                        struct.pack("<f", float("nan")))))
    refused("q_scale_negative", ["weight_hh_l0.scale", "row 0", "finite and > 0"],
            *edit_tensors(q8, set_bytes("weight_hh_l0.scale", 0, struct.pack("<f", -0.01))))
    refused("q_code_minus_128", ["weight_ih_l1", "-128", "row 0"],
            *edit_tensors(q8, set_bytes("weight_ih_l1", 0, struct.pack("<b", -128))))
    refused("q_bf16_infinity", ["layers.1.weight_hh_l0", "NaN or infinity"],
            *edit_tensors(qbf, set_bytes("layers.1.weight_hh_l0", 3, struct.pack("<H", 0x7F80))))

    def widen(tensors, info):  # a bf16 matrix written as F32 (the same values)
        entry = tensors["layers.1.weight_ih_l0"]
        bits = entry[2]
        entry[0], entry[2] = "F32", b"".join(b"\0\0" + bits[k:k + 2]
                                             for k in range(0, len(bits), 2))
    refused("q_bf16_matrix_as_f32", ["layers.1.weight_ih_l0", "dtype F32, expected BF16"],
            *edit_tensors(qbf, widen))

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {len(expected)} files to {OUT}")


if __name__ == "__main__":
    main()
