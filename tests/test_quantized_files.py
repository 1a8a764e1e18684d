"""Quantized model files (format_version 2, docs/model-format.md): a bf16 or int8 module or
Sequential saves with its recurrent matrices stored quantized (BF16; I8 plus an F32 scale per
row) and loads back bitwise the same model; the reader (C++, through fastlstm._core) refuses
hostile quantized files. The C++ side of the same files: tests/cpp/test_model.cpp
(quantized_files) and tests/test_cpp_embedding.py (the example app)."""

import json
import os

import numpy as np
import pytest

import fastlstm
from fastlstm import io as fio
from fastlstm import layers as L
from fastlstm.models import Sequential
from fastlstm.rnn import dequantize_rows, quantize_rows

PRECISIONS = ["bf16", "int8"]

MODULES = {  # name: (class, options)
    "lstm_stacked_bidir_proj": (fastlstm.LSTM, dict(input_size=5, hidden_size=11, num_layers=2,
                                                    bidirectional=True, proj_size=4,
                                                    batch_first=True)),
    "lstm_peephole_nobias": (fastlstm.LSTM, dict(input_size=3, hidden_size=7, peephole=True,
                                                 bias=False)),
    "gru_stacked_bidir": (fastlstm.GRU, dict(input_size=6, hidden_size=5, num_layers=3,
                                             bidirectional=True, batch_first=True)),
    "lstm_float64": (fastlstm.LSTM, dict(input_size=4, hidden_size=9, num_layers=2,
                                         dtype="float64")),
}


def _header(path):
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n])


def _input(module, rng, B=3, T=7):
    x = rng.standard_normal((B, T, module.input_size)).astype(np.float32)
    return x if module.batch_first else x.transpose(1, 0, 2).copy()


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_round_trip_is_bitwise(tmp_path, name, precision):
    cls, opts = MODULES[name]
    rng = np.random.default_rng(len(name))
    m = cls(**opts, seed=5)
    q = m.quantize(precision)
    x = _input(q, rng)
    lengths = np.array([7, 3, 5])
    path = tmp_path / "q.safetensors"
    fastlstm.save(q, path, example_input=x, example_lengths=lengths)
    loaded = fastlstm.load(path, verify=True)

    assert type(loaded) is cls and loaded.precision == precision and loaded.quantized
    assert loaded.dtype == np.float32
    for k in q.params:
        assert np.array_equal(loaded.params[k], q.params[k]), k
    out_q, out_l = q(x, lengths=lengths), loaded(x, lengths=lengths)
    assert np.array_equal(out_q[0], out_l[0])  # bitwise
    if cls is fastlstm.LSTM:
        for a, b in zip(out_q[1], out_l[1]):
            assert np.array_equal(a, b)
    else:
        assert np.array_equal(out_q[1], out_l[1])
    # the quantized model is not the float one (the comparison above could fail)
    assert np.max(np.abs(out_l[0] - m(x.astype(m.dtype), lengths=lengths)[0])) > 1e-6
    if not q.bidirectional:  # streams of the loaded module: the same steps
        sq, sl = q.stream(3), loaded.stream(3)
        for t in range(x.shape[0] if not q.batch_first else x.shape[1]):
            xt = x[t] if not q.batch_first else x[:, t]
            assert np.array_equal(sq.step(xt), sl.step(xt))
    # inference only, as the in-memory quantized module
    with pytest.raises(RuntimeError, match="inference only"):
        loaded.forward(x, train=True)
    with pytest.raises(RuntimeError, match="inference only"):
        loaded.train()
    info = fio.read_model_info(path)
    assert info["format_version"] == 2 and info["model"]["precision"] == precision


@pytest.mark.parametrize("precision", PRECISIONS)
def test_file_stores_the_engine_quantization(tmp_path, precision):
    """The matrices are stored quantized (BF16 bits / I8 codes and F32 row scales), exactly
    quantize_rows of the float module's weights; biases and peepholes stay F32."""
    m = fastlstm.LSTM(4, 6, proj_size=3, peephole=True, seed=1)
    q = m.quantize(precision)
    path = tmp_path / "q.safetensors"
    fastlstm.save(q, path)
    header = _header(path)
    meta = json.loads(header.pop("__metadata__")["fastlstm"])
    assert meta["format_version"] == 2
    assert meta["model"]["precision"] == precision and meta["model"]["dtype"] == "float32"
    tensors, _ = fio.load_safetensors(path)
    for name, w in m.params.items():
        if name.startswith(("weight_ih", "weight_hh", "weight_hr")):
            _, stored, scales = quantize_rows(w, precision)
            want = "BF16" if precision == "bf16" else "I8"
            assert header[name]["dtype"] == want, name
            assert np.array_equal(tensors[name], stored), name
            if precision == "int8":
                assert header[name + ".scale"]["dtype"] == "F32"
                assert np.array_equal(tensors[name + ".scale"], scales)
                assert np.abs(tensors[name]).max() == 127
        else:
            assert header[name]["dtype"] == "F32"
            assert np.array_equal(tensors[name], w)
    expected = set(m.params) | ({n + ".scale" for n in m.params if n.startswith("weight_")
                                 and n[7:9] in ("ih", "hh", "hr")} if precision == "int8"
                                else set())
    assert set(header) == expected


def test_int8_scales_are_fixed_points():
    """The format relies on this: dequantizing a file's int8 rows and quantizing them again
    gives back the same codes and scales (the engine packs exactly what the file stores).
    Every float32 maximum in one binade (and a few in others), each row with a code -127,
    127 and in between."""
    mant = np.arange(0, 2**23, 7, dtype=np.uint32)
    for exponent in (100, 126, 140):
        mx = ((np.uint32(exponent) << 23) | mant).view(np.float32)
        rows = np.stack([mx, -mx, mx * np.float32(0.37), np.zeros_like(mx)], axis=1)
        _, q, s = quantize_rows(rows, "int8")
        values = dequantize_rows(q, s, "int8")
        _, q2, s2 = quantize_rows(values, "int8")
        assert np.array_equal(q, q2) and np.array_equal(s, s2), exponent
        assert np.array_equal(q[:, 0], np.full(len(mx), 127, np.int8))


def test_bf16_dequantize_is_exact():
    w = np.random.default_rng(0).standard_normal((5, 33)).astype(np.float32)
    values, stored, scales = quantize_rows(w, "bf16")
    assert scales is None
    assert np.array_equal(dequantize_rows(stored, None, "bf16"), values)
    assert np.array_equal(quantize_rows(values, "bf16")[1], stored)


def test_file_sizes(tmp_path):
    """bf16 halves the matrices' bytes, int8 quarters them (plus 4 bytes of scale per row);
    the rest of the file is the same."""
    m = fastlstm.LSTM(64, 256, num_layers=2, seed=0)
    sizes = {}
    for precision in ["float32"] + PRECISIONS:
        module = m if precision == "float32" else m.quantize(precision)
        path = tmp_path / f"{precision}.safetensors"
        fastlstm.save(module, path)
        sizes[precision] = os.path.getsize(path)
    matrices = [v for k, v in m.params.items() if k.startswith("weight_")]
    elems = sum(v.size for v in matrices)
    rows = sum(v.shape[0] for v in matrices)
    print(f"LSTM(64, 256, num_layers=2) file bytes: {sizes}")
    # the header differs by a few hundred bytes (dtype names, the scale tensors' entries)
    assert abs((sizes["float32"] - sizes["bf16"]) - 2 * elems) < 1024
    assert abs((sizes["float32"] - sizes["int8"]) - (3 * elems - 4 * rows)) < 2048
    assert sizes["bf16"] < 0.52 * sizes["float32"]
    assert sizes["int8"] < 0.27 * sizes["float32"]


# ------------------------------------------------------------------------------ Sequential
def _seq_tokens():
    return Sequential([L.Embedding(12, 6, mask_zero=True), L.LSTM(9, return_sequences=True),
                       L.Dropout(0.2), L.Bidirectional(L.GRU(5), merge_mode="concat"),
                       L.Dense(3, activation="softmax")])


def _seq_float64():
    return Sequential([L.Dense(6, activation="tanh"), L.LSTM(8, return_sequences=True,
                                                             peephole=True),
                       L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode="sum"),
                       L.Dense(2)], dtype="float64")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("factory", [_seq_tokens, _seq_float64])
def test_sequential_round_trip_is_bitwise(tmp_path, factory, precision):
    rng = np.random.default_rng(3)
    model = factory()
    if factory is _seq_tokens:
        x = rng.integers(1, 12, size=(6, 8)).astype(np.int64)
        x[2, 5:] = 0
        y = rng.integers(0, 3, size=6)
        loss = "sparse_categorical_crossentropy"
    else:
        x = rng.standard_normal((6, 8, 4))
        y = rng.standard_normal((6, 8, 2))
        loss = "mse"
    model.compile(optimizer="adam", loss=loss)
    model.fit(x, y, epochs=2, batch_size=3, verbose=0)
    model.quantize(precision)
    path = tmp_path / "m.safetensors"
    model.save(path, example_input=x[:3])
    loaded = fio.load_model(path, verify=True)

    assert loaded.precision == precision
    assert loaded.get_config() == model.get_config()
    w0, w1 = model.get_weight_dict(), loaded.get_weight_dict()
    assert list(w0) == list(w1)
    for k in w0:
        assert w1[k].dtype == w0[k].dtype and np.array_equal(w1[k], w0[k]), k
    assert np.array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    loaded.compile(optimizer="adam", loss=loss)
    with pytest.raises(RuntimeError, match="inference only"):
        loaded.fit(x, y, verbose=0)
    info = fio.read_model_info(path)
    assert info["model"]["precision"] == precision and info["format_version"] == 2
    header = _header(path)
    rnn = [k for k in header if k.rsplit(".", 1)[-1].startswith(("weight_ih", "weight_hh"))]
    assert rnn and all(header[k]["dtype"] == ("BF16" if precision == "bf16" else "I8")
                       for k in rnn)
    dense = [k for k in header if k.endswith((".kernel", ".embeddings"))]
    assert dense and all(header[k]["dtype"] == ("F64" if factory is _seq_float64 else "F32")
                         for k in dense)


def test_float_files_stay_version_1(tmp_path):
    m = fastlstm.GRU(3, 4, seed=0)
    path = tmp_path / "f.safetensors"
    fastlstm.save(m, path)
    meta = json.loads(_header(path)["__metadata__"]["fastlstm"])
    assert meta["format_version"] == 1 and "precision" not in meta["model"]
    info = fio.read_model_info(path)
    assert info["format_version"] == 1 and info["model"]["precision"] == "float32"
    assert fastlstm.load(path).precision == "float32"


# ------------------------------------------------------------------------------ hostile files
def _saved(tmp_path, precision, cls=fastlstm.LSTM):
    q = cls(4, 6, num_layers=2, seed=2).quantize(precision)
    path = tmp_path / f"{precision}.safetensors"
    fastlstm.save(q, path)
    return path


def _rewrite(path, tensors_fn=None, model_fn=None):
    tensors, meta = fio.load_safetensors(path)
    if tensors_fn:
        tensors_fn(tensors)
    if model_fn:
        info = json.loads(meta["fastlstm"])
        model_fn(info)
        meta["fastlstm"] = json.dumps(info)
    fio.save_safetensors(path, tensors, meta)


def _set(name, index, value):
    def fn(t):
        t[name] = t[name].copy()
        t[name][index] = value
    return fn


HOSTILE = {
    # name: (precision, tensors_fn, model_fn, words in the error)
    "int8_matrix_as_f32": ("int8", lambda t: t.update(weight_hh_l0=t["weight_hh_l0"].astype(
        np.float32)), None, ['"weight_hh_l0"', "dtype F32, expected I8"]),
    "bf16_matrix_as_i8": ("bf16", lambda t: t.update(weight_ih_l1=t["weight_ih_l1"].astype(
        np.int8)), None, ['"weight_ih_l1"', "dtype I8, expected BF16"]),
    "bias_as_bf16": ("bf16", lambda t: t.update(bias_ih_l0=quantize_rows(
        t["bias_ih_l0"][None], "bf16")[1][0]), None, ['"bias_ih_l0"', "dtype BF16, expected F32"]),
    "scale_missing": ("int8", lambda t: t.pop("weight_ih_l1.scale"), None,
                      ['"weight_ih_l1.scale"', "missing"]),
    "scale_wrong_shape": ("int8", lambda t: t.update({"weight_hh_l1.scale": t[
        "weight_hh_l1.scale"][:-1]}), None, ['"weight_hh_l1.scale"', "shape [23]",
                                             "expected [24]"]),
    "scale_as_f64": ("int8", lambda t: t.update({"weight_hh_l1.scale": t[
        "weight_hh_l1.scale"].astype(np.float64)}), None, ["dtype F64, expected F32"]),
    "scale_nan": ("int8", _set("weight_ih_l0.scale", 3, np.nan), None,
                  ['"weight_ih_l0.scale"', "nan in row 3"]),
    "scale_infinite": ("int8", _set("weight_ih_l0.scale", 0, np.inf), None,
                       ['"weight_ih_l0.scale"', "inf in row 0"]),
    "scale_overflows": ("int8", _set("weight_ih_l0.scale", 1, 3e38), None,
                        ['"weight_ih_l0.scale"', "row 1", "127 x scale finite"]),
    "scale_negative": ("int8", _set("weight_hh_l0.scale", 5, -0.01), None,
                       ['"weight_hh_l0.scale"', "row 5", "finite and > 0"]),
    "scale_zero": ("int8", _set("weight_hh_l0.scale", 2, 0.0), None,
                   ['"weight_hh_l0.scale"', "0 in row 2", "or 0 for a row of zero codes"]),
    "code_minus_128": ("int8", _set("weight_ih_l1", (4, 1), -128), None,
                       ['"weight_ih_l1"', "-128 in row 4"]),
    "code_below_127": ("int8", lambda t: t.update(weight_hh_l1=(t["weight_hh_l1"] // 2).astype(
        np.int8)), None, ['"weight_hh_l1" row 0', "largest code is 63", "expected 127"]),
    "bf16_nan": ("bf16", _set("weight_hh_l1", (0, 2), 0x7FC0), None,
                 ['"weight_hh_l1"', "NaN or infinity"]),
    "float64_module": ("int8", None, lambda i: i["model"].update(dtype="float64"),
                       ['model.dtype must be "float32"', "quantized to int8"]),
    "precision_in_version_1": ("bf16", None, lambda i: i.update(format_version=1),
                               ['unknown key "precision"']),
    "unknown_precision": ("int8", None, lambda i: i["model"].update(precision="int4"),
                          ["model.precision", '"int4"']),
    "precision_not_a_string": ("int8", None, lambda i: i["model"].update(precision=8),
                               ["model.precision must be a string"]),
    "version_3": ("int8", None, lambda i: i.update(format_version=3),
                  ["format_version 3", "reads format_version 1 to 2", "newer"]),
    "size_disagrees": ("int8", None, lambda i: i["model"]["config"].update(hidden_size=7),
                       ['"weight_ih_l0" has shape [24, 4]', "expected [28, 4]"]),
    "huge_claimed_size": ("bf16", None, lambda i: i["model"]["config"].update(
        hidden_size=2**24), ["hidden_size=16777216", "more than 1099511627776 parameters"]),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_quantized_files_are_refused(tmp_path, case):
    precision, tensors_fn, model_fn, words = HOSTILE[case]
    path = _saved(tmp_path, precision)
    fastlstm.load(path)  # the unmodified file loads
    _rewrite(path, tensors_fn, model_fn)
    for load in (fastlstm.load, fio.read_model_info):
        with pytest.raises(ValueError) as info:
            load(path)
        message = str(info.value)
        assert str(path) in message
        for word in words:
            assert word in message, (word, message)


def test_an_all_zero_row_round_trips(tmp_path):
    """A row of zero weights: scale 0 and zero codes (allowed), and outputs bitwise equal."""
    m = fastlstm.GRU(3, 4, seed=1)
    m.params["weight_hh_l0"][2] = 0
    q = m.quantize("int8")
    path = tmp_path / "z.safetensors"
    fastlstm.save(q, path)
    tensors, _ = fio.load_safetensors(path)
    assert tensors["weight_hh_l0.scale"][2] == 0 and not tensors["weight_hh_l0"][2].any()
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    assert np.array_equal(fastlstm.load(path)(x)[0], q(x)[0])
