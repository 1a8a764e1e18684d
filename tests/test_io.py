"""Model files: the safetensors container (layout, strict reading), bare-module save/load round
trips for every option, the self-check, corrupted/truncated/wrong-version files (including a
fuzz loop), and atomic saves."""

import glob
import json
import os
import struct

import time

import numpy as np
import pytest

import fastlstm
from fastlstm import io as fio

I, H, T, B = 5, 7, 9, 4


def read_raw(path):
    """The file decoded by hand from the contract (8-byte LE length, JSON, data)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    return n, json.loads(data[8:8 + n].decode("utf-8")), data[8 + n:]


def write_raw(path, header, body=b"", pad=True):
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + body)


# ------------------------------------------------------------------------------ container
def test_safetensors_layout_matches_the_contract(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"a": rng.standard_normal((3, 5)).astype(np.float32),
               "b": rng.standard_normal(7),
               "c": np.arange(4, dtype=np.int64).reshape(2, 2),
               "scalar": np.array(2.5, dtype=np.float32),
               "empty": np.zeros((0, 3), dtype=np.float64)}
    path = tmp_path / "t.safetensors"
    fio.save_safetensors(path, tensors, {"k": "v"})
    n, header, body = read_raw(path)
    assert n % 8 == 0
    assert header.pop("__metadata__") == {"k": "v"}
    assert set(header) == set(tensors)
    names = {np.dtype("float32"): "F32", np.dtype("float64"): "F64", np.dtype("int64"): "I64"}
    ends = []
    for name, arr in tensors.items():
        info = header[name]
        assert info["dtype"] == names[arr.dtype]
        assert info["shape"] == list(arr.shape)
        b, e = info["data_offsets"]
        assert b % arr.dtype.itemsize == 0  # aligned to the element size
        got = np.frombuffer(body[b:e], dtype=arr.dtype.newbyteorder("<")).reshape(arr.shape)
        assert np.array_equal(got, arr)
        ends.append(e)
    assert max(ends) == len(body)
    loaded, meta = fio.load_safetensors(path)
    assert meta == {"k": "v"}
    for name, arr in tensors.items():
        assert loaded[name].dtype == arr.dtype and loaded[name].shape == arr.shape
        assert np.array_equal(loaded[name], arr)


def test_safetensors_reads_a_file_written_by_hand(tmp_path):
    # offsets in header order that differ from data order, no metadata
    a = np.arange(6, dtype=np.float32)
    b = np.array([1.5, -2.0])
    header = {"b": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]},
              "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [16, 40]}}
    write_raw(tmp_path / "x.safetensors", header, b.tobytes() + a.tobytes())
    tensors, meta = fio.load_safetensors(tmp_path / "x.safetensors")
    assert meta == {}
    assert np.array_equal(tensors["a"], a.reshape(2, 3))
    assert np.array_equal(tensors["b"], b)


def test_interoperates_with_the_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy")  # optional: runs where installed
    m = make("lstm_proj", "float64")
    fio.save(m, tmp_path / "ours.safetensors", example_input=example(m, np.random.default_rng(1)))
    theirs = st.load_file(str(tmp_path / "ours.safetensors"))
    for k in m.params:
        assert np.array_equal(theirs[k], m.params[k])
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3)}
    st.save_file(arrays, str(tmp_path / "theirs.safetensors"), metadata={"x": "y"})
    tensors, meta = fio.load_safetensors(tmp_path / "theirs.safetensors")
    assert meta == {"x": "y"}
    assert all(np.array_equal(tensors[k], v) for k, v in arrays.items())


@pytest.mark.parametrize("tensors, metadata, exc, words", [
    ({"x": np.zeros(2, dtype=np.int32)}, None, TypeError, "int32"),
    ({"": np.zeros(2)}, None, ValueError, "non-empty"),
    ({"__metadata__": np.zeros(2)}, None, ValueError, "__metadata__"),
    ({"x": np.zeros(2)}, {"k": 1}, TypeError, "str -> str"),
    ([np.zeros(2)], None, TypeError, "mapping"),
])
def test_save_safetensors_rejects_bad_arguments(tmp_path, tensors, metadata, exc, words):
    with pytest.raises(exc, match=words):
        fio.save_safetensors(tmp_path / "x", tensors, metadata)
    assert not os.listdir(tmp_path)


# ------------------------------------------------------------------------------ malformed files
def _valid_body():
    return np.arange(4, dtype=np.float32).tobytes()


BAD_FILES = {
    "empty": (b"", "truncated"),
    "seven_bytes": (b"\x08\x00\x00\x00\x00\x00\x00", "truncated"),
    "header_past_end": (struct.pack("<Q", 1000) + b"{}", "header length is 1000"),
    "not_utf8": (struct.pack("<Q", 8) + b"{\xff\xfe    }", "UTF-8"),
    "not_json": (struct.pack("<Q", 8) + b"{nope   ", "not valid JSON"),
    "json_array": (struct.pack("<Q", 8) + b"[1, 2]  ", "JSON object"),
    "deep_json": (struct.pack("<Q", 200008) + b'{"a":' + b"[" * 200000 + b"   ", "JSON"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_load_safetensors_rejects_garbage(tmp_path, name):
    data, words = BAD_FILES[name]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=words) as info:
        fio.load_safetensors(path)
    assert "bad.safetensors" in str(info.value)


BAD_HEADERS = {
    "unknown_dtype": ({"x": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 16]}}, "BF16"),
    "shape_vs_offsets": ({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}},
                         "needs 12 bytes"),
    "past_the_end": ({"x": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}},
                     "past the end"),
    "negative_dim": ({"x": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}},
                     "non-negative"),
    "float_dim": ({"x": {"dtype": "F32", "shape": [4.0], "data_offsets": [0, 16]}},
                  "non-negative integers"),
    "reversed_offsets": ({"x": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}},
                         "begin <= end"),
    "missing_field": ({"x": {"dtype": "F32", "shape": [4]}}, "exactly dtype"),
    "extra_field": ({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16], "z": 1}},
                    "exactly dtype"),
    "overlap": ({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
                 "y": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, "overlaps"),
    "hole": ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
              "y": {"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}}, "belong to no"),
    "trailing": ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, "belong to no"),
    "metadata_not_strings": ({"__metadata__": {"a": 1},
                              "x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
                             "__metadata__"),
    "entry_not_object": ({"x": [0, 16]}, "exactly dtype"),
}


@pytest.mark.parametrize("name", sorted(BAD_HEADERS))
def test_load_safetensors_rejects_inconsistent_headers(tmp_path, name):
    header, words = BAD_HEADERS[name]
    path = tmp_path / "bad.safetensors"
    write_raw(path, header, _valid_body())
    with pytest.raises(ValueError, match=words):
        fio.load_safetensors(path)


def test_duplicate_keys_are_refused(tmp_path):
    entry = '{"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}'
    write_raw(tmp_path / "d", f'{{"x": {entry}, "x": {entry}}}'.encode(), _valid_body())
    with pytest.raises(ValueError, match="duplicate key 'x'"):
        fio.load_safetensors(tmp_path / "d")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        fio.load(tmp_path / "nope.safetensors")
    with pytest.raises(ValueError, match="directory"):
        fio.load(tmp_path)


# ------------------------------------------------------------------------------ modules
MODULES = {
    "lstm": (fastlstm.LSTM, dict()),
    "lstm_stacked_bidir": (fastlstm.LSTM, dict(num_layers=3, bidirectional=True)),
    "lstm_proj": (fastlstm.LSTM, dict(num_layers=2, proj_size=3, bidirectional=True)),
    "lstm_peephole_bf": (fastlstm.LSTM, dict(num_layers=2, peephole=True, batch_first=True)),
    "lstm_nobias": (fastlstm.LSTM, dict(bias=False, num_layers=2)),
    "gru": (fastlstm.GRU, dict()),
    "gru_stacked_bidir_bf": (fastlstm.GRU, dict(num_layers=2, bidirectional=True,
                                                 batch_first=True)),
}


def make(name, dtype, seed=1):
    cls, kw = MODULES[name]
    return cls(I, H, dtype=dtype, seed=seed, **kw)


def example(module, rng):
    shape = (B, T, I) if module.batch_first else (T, B, I)
    return rng.standard_normal(shape).astype(module.dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_round_trip_is_bit_exact(tmp_path, name, dtype):
    rng = np.random.default_rng(3)
    m = make(name, dtype)
    path = tmp_path / "m.safetensors"
    x = example(m, rng)
    lengths = np.array([T, 3, 1, 6])
    fio.save(m, path, example_input=x, example_lengths=lengths)
    m2 = fio.load(path, verify=True)
    assert type(m2) is type(m)
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first",
                 "bidirectional", "proj_size", "peephole", "dtype"):
        assert getattr(m2, attr) == getattr(m, attr), attr
    assert set(m2.params) == set(m.params)
    for k in m.params:
        assert m2.params[k].dtype == m.params[k].dtype
        assert np.array_equal(m2.params[k], m.params[k]), k
    a, b = m(x, lengths=lengths), m2(x, lengths=lengths)
    # equal parameters; the outputs agree to rounding (the engine's result may differ in the
    # last bit with the alignment of the parameter buffer)
    tol = 1e-12 if dtype == "float64" else 1e-5
    assert np.max(np.abs(a[0] - b[0])) <= tol
    # the file follows the model contract: metadata, weight names, batch-first self-check
    _, header, _ = read_raw(path)
    meta = header.pop("__metadata__")
    info = json.loads(meta["fastlstm"])
    assert info["format_version"] == 1
    assert info["model"]["class"] == type(m).__name__
    assert info["model"]["dtype"] == dtype
    assert info["model"]["config"] == {
        "input_size": I, "hidden_size": H, "num_layers": m.num_layers, "bias": m.bias,
        "batch_first": m.batch_first, "bidirectional": m.bidirectional,
        "proj_size": m.proj_size, "peephole": m.peephole}
    check = json.loads(meta["fastlstm_selfcheck"])
    assert set(header) == set(m.params) | {check["input"], check["output"], check["lengths"]}
    tensors, _ = fio.load_safetensors(path)
    x_bf = x if m.batch_first else x.transpose(1, 0, 2)
    y_bf = a[0] if m.batch_first else a[0].transpose(1, 0, 2)
    assert np.array_equal(tensors[check["input"]], x_bf)
    assert np.array_equal(tensors[check["output"]], y_bf)
    assert np.array_equal(tensors[check["lengths"]], lengths)


def test_save_without_self_check_and_verify(tmp_path):
    m = make("lstm", "float32")
    fio.save(m, tmp_path / "m")
    _, header, _ = read_raw(tmp_path / "m")
    assert "fastlstm_selfcheck" not in header["__metadata__"]
    assert set(header) - {"__metadata__"} == set(m.params)
    fio.load(tmp_path / "m")
    with pytest.raises(ValueError, match="no self-check"):
        fio.load(tmp_path / "m", verify=True)


def rewrite(path, change_tensors=None, change_meta=None):
    """Rewrites a model file with modified tensors/metadata (through the container API)."""
    tensors, meta = fio.load_safetensors(path)
    if change_tensors:
        change_tensors(tensors)
    if change_meta:
        change_meta(meta)
    fio.save_safetensors(path, tensors, meta)


def test_verify_catches_a_wrong_weight(tmp_path):
    rng = np.random.default_rng(4)
    m = make("lstm_stacked_bidir", "float64")
    path = tmp_path / "m.safetensors"
    fio.save(m, path, example_input=example(m, rng))

    def nudge(t):
        t["weight_hh_l1_reverse"][3, 2] += 1e-3

    rewrite(path, nudge)
    fio.load(path)  # a plausible weight: loads
    with pytest.raises(ValueError, match="self-check failed"):
        fio.load(path, verify=True)


def test_verify_catches_swapped_gates(tmp_path):
    # what a wrong import looks like: i and f blocks exchanged
    rng = np.random.default_rng(5)
    m = make("lstm", "float32")
    path = tmp_path / "m.safetensors"
    fio.save(m, path, example_input=example(m, rng))

    def swap(t):
        w = t["weight_ih_l0"]
        t["weight_ih_l0"] = np.concatenate([w[H:2 * H], w[:H], w[2 * H:]])

    rewrite(path, swap)
    with pytest.raises(ValueError, match="differs from the stored one"):
        fio.load(path, verify=True)


def _set_model(meta, fn):
    info = json.loads(meta["fastlstm"])
    fn(info)
    meta["fastlstm"] = json.dumps(info)


MODEL_ERRORS = {
    "format_version_3": (lambda i: i.update(format_version=3),
                         "format_version 3; this fastlstm reads format_version 1 to 2"),
    "format_version_0": (lambda i: i.update(format_version=0),
                         "format_version 0; this fastlstm reads format_version 1 to 2"),
    "precision_in_version_1": (lambda i: i["model"].update(precision="float32"),
                               'model has an unknown key "precision"'),
    "format_version_str": (lambda i: i.update(format_version="1"), "must be an integer"),
    "no_version": (lambda i: i.pop("format_version"), "format_version"),
    "unknown_class": (lambda i: i["model"].update({"class": "Transformer"}),
                      'model.class must be "LSTM", "GRU", "Sequential" or "Model", got "Transformer"'),
    "sequential": (lambda i: i["model"].update({"class": "Sequential"}),
                   'model has an unknown key "config"'),
    "bad_dtype": (lambda i: i["model"].update(dtype="float16"), "float16"),
    "missing_config_key": (lambda i: i["model"]["config"].pop("hidden_size"),
                           'model.config has no "hidden_size"'),
    "unknown_config_key": (lambda i: i["model"]["config"].update(extra=1),
                           'model.config has an unknown key "extra"'),
    "bool_as_int": (lambda i: i["model"]["config"].update(hidden_size=True),
                    "model.config.hidden_size must be an integer in \\[1, 16777216\\], got a "
                    "boolean"),
    "int_as_bool": (lambda i: i["model"]["config"].update(bias=1),
                    "model.config.bias must be true or false, got a number"),
    "string_as_bool": (lambda i: i["model"]["config"].update(bias="false"),
                       "model.config.bias must be true or false, got a string"),
    "config_vs_weights": (lambda i: i["model"]["config"].update(hidden_size=8),
                          '"weight_ih_l0" has shape \\[28, 5\\], expected \\[32, 5\\]'),
    "invalid_config": (lambda i: i["model"]["config"].update(proj_size=9),
                       "proj_size must be smaller than hidden_size"),
    "gru_with_peephole": (lambda i: i["model"].update({"class": "GRU"}) or
                          i["model"]["config"].update(peephole=True), "peephole"),
    # a layer count the tensors cannot back is refused before a huge layout is built
    "huge_num_layers": (lambda i: i["model"]["config"].update(num_layers=10**9),
                        "model.config.num_layers must be in \\[1, 1024\\], got 1000000000"),
    "size_beyond_int64": (lambda i: i["model"]["config"].update(hidden_size=10**30),
                          "model.config.hidden_size must be an integer in \\[1, 16777216\\], "
                          "got a number \\(1e\\+30\\)"),
}


@pytest.mark.parametrize("name", sorted(MODEL_ERRORS))
def test_bad_model_descriptions_are_refused(tmp_path, name):
    fn, words = MODEL_ERRORS[name]
    path = tmp_path / "m.safetensors"
    fio.save(make("lstm", "float32"), path)
    rewrite(path, change_meta=lambda meta: _set_model(meta, fn))
    with pytest.raises(ValueError, match=words) as info:
        fio.load(path)
    assert "m.safetensors" in str(info.value)


TENSOR_ERRORS = {
    "missing": (lambda t: t.pop("bias_hh_l0"), 'tensor "bias_hh_l0" \\(LSTM\\) is missing'),
    "unexpected": (lambda t: t.update(weight_hr_l0=np.zeros((3, H), np.float32)),
                   'tensor "weight_hr_l0" is not used by the model'),
    "shape": (lambda t: t.update(weight_hh_l0=np.zeros((4 * H, H + 1), np.float32)),
              '"weight_hh_l0" has shape \\[28, 8\\], expected \\[28, 7\\]'),
    "dtype": (lambda t: t.update(weight_hh_l0=t["weight_hh_l0"].astype(np.float64)),
              '"weight_hh_l0" \\(LSTM\\) has dtype F64, expected F32'),
}


@pytest.mark.parametrize("name", sorted(TENSOR_ERRORS))
def test_bad_weights_are_refused(tmp_path, name):
    fn, words = TENSOR_ERRORS[name]
    path = tmp_path / "m.safetensors"
    fio.save(make("lstm", "float32"), path)
    rewrite(path, fn)
    with pytest.raises(ValueError, match=words):
        fio.load(path)


def test_not_a_fastlstm_file(tmp_path):
    fio.save_safetensors(tmp_path / "plain", {"w": np.zeros(3)})
    with pytest.raises(ValueError, match="not a fastlstm model"):
        fio.load(tmp_path / "plain")
    fio.save_safetensors(tmp_path / "j", {"w": np.zeros(3)}, {"fastlstm": "{not json"})
    with pytest.raises(ValueError, match="not valid JSON"):
        fio.load(tmp_path / "j")


def test_bad_self_check_metadata(tmp_path):
    rng = np.random.default_rng(6)
    m = make("lstm", "float32")
    path = tmp_path / "m"
    fio.save(m, path, example_input=example(m, rng))
    rewrite(path, change_meta=lambda meta: meta.update(
        fastlstm_selfcheck=json.dumps({"input": "nope", "output": "selfcheck.output",
                                       "lengths": None})))
    with pytest.raises(ValueError, match='tensor "nope" \\(self-check input\\) is missing'):
        fio.load(path)
    fio.save(m, path, example_input=example(m, rng))
    rewrite(path, lambda t: t.update({"selfcheck.input": t["selfcheck.input"][:, :, :2]}))
    with pytest.raises(ValueError, match="self-check input"):
        fio.load(path)


def test_save_rejects_what_is_not_a_module(tmp_path):
    with pytest.raises(TypeError, match="fastlstm.LSTM or fastlstm.GRU"):
        fio.save(object(), tmp_path / "x")
    with pytest.raises(TypeError, match="example_input must hold real numbers"):
        fio.save(make("gru", "float32"), tmp_path / "x", example_input=np.array([["a"]]))
    assert not os.listdir(tmp_path)


# ------------------------------------------------------------------------------ fuzz
@pytest.mark.parametrize("what", ["module", "sequential"])
def test_fuzz_corrupted_and_truncated_files(tmp_path, what):
    """Random byte flips, truncations and header edits of a valid file: every load either
    succeeds or raises ValueError, never anything else."""
    rng = np.random.default_rng(7)
    good = tmp_path / "good.safetensors"
    if what == "module":
        m = make("lstm_proj", "float32")
        fio.save(m, good, example_input=example(m, rng))
        load = fio.load
    else:
        fio.save_model(_sequential("tokens", "float32"), good,
                       example_input=_sequential_input("tokens", rng)[0])
        load = fio.load_model
    data = good.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    path = tmp_path / "fuzz.safetensors"
    outcomes = {"ok": 0, "ValueError": 0}
    for it in range(400):
        buf = bytearray(data)
        kind = it % 4
        if kind == 0:  # truncate anywhere
            buf = buf[:int(rng.integers(0, len(buf)))]
        elif kind == 1:  # flip bytes in the header (including its length)
            for _ in range(int(rng.integers(1, 4))):
                buf[int(rng.integers(0, 8 + n))] ^= 1 << int(rng.integers(0, 8))
        elif kind == 2:  # overwrite a header character with a JSON-significant one
            pos = int(rng.integers(8, 8 + n))
            buf[pos] = ord(rng.choice(list('{}[]",:0123456789-.e ')))
        else:  # random bytes anywhere, body included
            for _ in range(int(rng.integers(1, 8))):
                buf[int(rng.integers(0, len(buf)))] = int(rng.integers(0, 256))
        path.write_bytes(bytes(buf))
        try:
            load(path, verify=bool(it % 2))
            outcomes["ok"] += 1
        except ValueError:
            outcomes["ValueError"] += 1
    # both outcomes occur: the loop really exercises the checks
    assert outcomes["ValueError"] > 100 and outcomes["ok"] > 0, outcomes


# ------------------------------------------------------------------------------ atomic saves
def _no_temp_files(directory):
    return [f for f in os.listdir(directory) if f.endswith(".tmp")] == []


@pytest.mark.parametrize("failing", ["replace", "fsync", "write"])
def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch, failing):
    old = make("lstm", "float32", seed=1)
    new = make("lstm", "float32", seed=2)
    path = tmp_path / "m.safetensors"
    fio.save(old, path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("simulated failure")

    if failing == "write":
        real_fdopen = os.fdopen

        class HalfWriter:
            def __init__(self, f):
                self.f, self.n = f, 0

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, chunk):
                if self.n:  # the first chunk goes through, then the disk "fills up"
                    raise OSError("No space left on device (simulated)")
                self.n += 1
                return self.f.write(chunk)

        monkeypatch.setattr(os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    else:
        monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError, match="simulated"):
        fio.save(new, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    loaded = fio.load(path)
    assert np.array_equal(loaded.flat_params, old.flat_params)
    assert _no_temp_files(tmp_path)
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_save_removes_stale_temporaries_of_its_target(tmp_path):
    """A killed save leaves its temporary behind; the next save of the same target removes
    those older than the running process, and nothing else."""
    path = tmp_path / "m.safetensors"
    stale = tmp_path / ".m.safetensors.0123456789ab.tmp"
    recent = tmp_path / ".m.safetensors.ba9876543210.tmp"  # could be a live save's
    other = tmp_path / ".other.safetensors.0123456789ab.tmp"  # another target's
    unrelated = tmp_path / "notes.tmp"
    for f in (stale, recent, other, unrelated):
        f.write_bytes(b"partial")
    past = time.time() - 3600
    for f in (stale, other, unrelated):
        os.utime(f, (past, past))
    fio.save(make("lstm", "float32"), path)
    assert not stale.exists()
    assert recent.exists() and other.exists() and unrelated.exists()
    fio.load(path)


def test_save_into_a_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        fio.save(make("gru", "float32"), tmp_path / "no" / "m.safetensors")
    assert os.listdir(tmp_path) == []


def test_saved_file_permissions_follow_the_umask(tmp_path):
    umask = os.umask(0o022)
    try:
        fio.save(make("gru", "float32"), tmp_path / "m")
    finally:
        os.umask(umask)
    assert (os.stat(tmp_path / "m").st_mode & 0o777) == 0o644
    assert _no_temp_files(tmp_path)


def test_save_overwrites(tmp_path):
    path = tmp_path / "m"
    fio.save(make("lstm", "float64", seed=1), path)
    m2 = make("lstm_stacked_bidir", "float32", seed=2)
    fio.save(m2, path)
    assert np.array_equal(fio.load(path).flat_params, m2.flat_params)
    assert os.listdir(tmp_path) == ["m"]


# ------------------------------------------------------------------------------ Sequential
def _sequential(kind, dtype):
    from fastlstm import layers as L
    from fastlstm.models import Sequential

    if kind == "tokens":
        model = Sequential([
            L.Embedding(23, 6, mask_zero=True),
            L.Bidirectional(L.LSTM(H, return_sequences=True), merge_mode="sum"),
            L.GRU(5, go_backwards=True),
            L.Dense(3, activation="softmax"),
        ], dtype=dtype)
        model.build((None, T))
    else:
        model = Sequential([
            L.LSTM(H, return_sequences=True, peephole=True, input_shape=(T, I)),
            L.Dropout(0.25),
            L.Bidirectional(L.GRU(6, return_sequences=True)),
            L.Dense(4, activation="tanh"),
        ], dtype=dtype)
    rng = np.random.default_rng(21)
    # non-default values everywhere (biases start at 0/1)
    model.set_weights([rng.uniform(-0.5, 0.5, np.shape(w)) for w in model.get_weights()])
    return model


def _sequential_input(kind, rng):
    if kind == "tokens":
        tokens = rng.integers(1, 23, size=(B, T))
        for b, n in enumerate([T, 3, 1, 6]):
            tokens[b, n:] = 0
        return tokens, None
    return rng.standard_normal((B, T, I)), np.array([T, 2, 5, 1])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["tokens", "features"])
def test_sequential_round_trip(tmp_path, kind, dtype):
    rng = np.random.default_rng(22)
    model = _sequential(kind, dtype)
    x, lengths = _sequential_input(kind, rng)
    path = tmp_path / "model.safetensors"
    fio.save_model(model, path, example_input=x, example_lengths=lengths)
    loaded = fio.load_model(path, verify=True)
    assert loaded.get_config() == model.get_config()
    w0, w1 = model.get_weight_dict(), loaded.get_weight_dict()
    assert list(w0) == list(w1)
    for k in w0:
        assert w1[k].dtype == w0[k].dtype and np.array_equal(w1[k], w0[k]), k
    tol = 1e-12 if dtype == "float64" else 1e-5
    assert np.max(np.abs(loaded(x, lengths=lengths) - model(x, lengths=lengths))) <= tol
    # the file follows the contract: Sequential MODEL and layers.{i}.{weight} tensors
    _, header, _ = read_raw(path)
    info = json.loads(header["__metadata__"]["fastlstm"])
    assert info == {"format_version": 1, "model": model.get_config()}
    assert info["model"]["class"] == "Sequential" and info["model"]["dtype"] == dtype
    check = json.loads(header["__metadata__"]["fastlstm_selfcheck"])
    tensors, _ = fio.load_safetensors(path)
    assert tensors[check["input"]].dtype == (np.int64 if kind == "tokens" else np.dtype(dtype))
    assert np.array_equal(tensors[check["input"]], x.astype(tensors[check["input"]].dtype))
    assert (check["lengths"] is None) == (lengths is None)
    weights = {k for k in header if k.startswith("layers.")}
    assert weights == set(w0)
    assert set(header) == weights | {"__metadata__"} | {v for v in check.values() if v}


def test_sequential_verify_catches_a_wrong_weight(tmp_path):
    rng = np.random.default_rng(23)
    model = _sequential("tokens", "float64")
    x, _ = _sequential_input("tokens", rng)
    path = tmp_path / "m"
    fio.save_model(model, path, example_input=x)
    fio.load_model(path, verify=True)

    def nudge(t):
        t["layers.1.weight_hh_l0_reverse"][0, 0] += 1e-3

    rewrite(path, nudge)
    fio.load_model(path)
    with pytest.raises(ValueError, match="self-check failed"):
        fio.load_model(path, verify=True)


def test_sequential_and_module_files_are_not_confused(tmp_path):
    model = _sequential("features", "float32")
    fio.save_model(model, tmp_path / "seq")
    fio.save(make("lstm", "float32"), tmp_path / "mod")
    with pytest.raises(ValueError, match="load_model"):
        fio.load(tmp_path / "seq")
    with pytest.raises(ValueError, match="use fastlstm.io.load"):
        fio.load_model(tmp_path / "mod")
    with pytest.raises(TypeError, match="use fastlstm.io.save_model"):
        fio.save(model, tmp_path / "x")
    with pytest.raises(TypeError, match="use fastlstm.io.save"):
        fio.save_model(make("lstm", "float32"), tmp_path / "x")
    assert fio.read_model_info(tmp_path / "seq")["model"]["class"] == "Sequential"


@pytest.mark.parametrize("edit, words", [
    (lambda t: t.pop("layers.3.bias"), 'tensor "layers.3.bias" \\(Dense .*\\) is missing'),
    (lambda t: t.update({"layers.0.kernel": np.zeros((2, 2), np.float32)}),
     'tensor "layers.0.kernel" is not used by the model'),
    (lambda t: t.update({"layers.2.weight_ih_l0": np.zeros((18, 8), np.float32)}),
     '"layers.2.weight_ih_l0" has shape \\[18, 8\\], expected \\[18, 7\\]'),
])
def test_sequential_bad_weights_are_refused(tmp_path, edit, words):
    path = tmp_path / "m"
    fio.save_model(_sequential("features", "float32"), path)
    rewrite(path, edit)
    with pytest.raises(ValueError, match=words):
        fio.load_model(path)


def test_sequential_bad_layer_list_is_refused(tmp_path):
    path = tmp_path / "m"
    fio.save_model(_sequential("features", "float32"), path)
    rewrite(path, change_meta=lambda meta: _set_model(
        meta, lambda i: i["model"]["layers"].__setitem__(0, {"class": "Conv1D", "config": {}})))
    with pytest.raises(ValueError, match='model.layers\\[0\\].class "Conv1D" is not a layer'):
        fio.load_model(path)


def test_huge_sizes_are_refused_before_allocating(tmp_path):
    # a corrupt size must be caught by the shape check, not by the engine allocating terabytes
    path = tmp_path / "m"
    fio.save(make("lstm", "float32"), path)
    rewrite(path, change_meta=lambda meta: _set_model(
        meta, lambda i: i["model"]["config"].update(hidden_size=10**9)))
    with pytest.raises(ValueError, match="model.config.hidden_size must be in "
                                         "\\[1, 16777216\\], got 1000000000"):
        fio.load(path)
    fio.save_model(_sequential("features", "float32"), path)
    rewrite(path, change_meta=lambda meta: _set_model(
        meta, lambda i: i["model"]["layers"][2]["config"]["layer"]["config"].update(
            units=10**9)))
    with pytest.raises(ValueError, match="model.layers\\[2\\].config.layer.config.units must "
                                         "be in \\[1, 16777216\\], got 1000000000"):
        fio.load_model(path)
    fio.save_model(_sequential("features", "float32"), path)
    rewrite(path, change_meta=lambda meta: _set_model(
        meta, lambda i: i["model"]["layers"][3]["config"].update(units=-1)))
    with pytest.raises(ValueError, match="model.layers\\[3\\].config.units must be in \\[1, "):
        fio.load_model(path)


def test_save_weights_is_atomic(tmp_path, monkeypatch):
    """Sequential.save_weights writes through the package's one atomic writer: a failure keeps
    the old file and leaves no temporary file behind."""
    model = _sequential("features", "float32")
    path = tmp_path / "w.npz"
    model.save_weights(path)
    before = path.read_bytes()
    model.set_weight_dict({k: np.asarray(v) + 1 for k, v in model.get_weight_dict().items()})

    def fail(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        model.save_weights(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.npz"]
    model.save_weights(str(path))
    with np.load(path) as z:
        assert all(np.array_equal(z[k], v) for k, v in model.get_weight_dict().items())


# ------------------------------------------------------------------------------ other writers
CPP_FILES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "data", "cpp",
                                          "*.safetensors")))


@pytest.mark.parametrize("path", CPP_FILES, ids=[os.path.basename(p) for p in CPP_FILES])
def test_files_from_the_cpp_fixture_writer_load_and_verify(path):
    """tests/data/cpp/*.safetensors are written by tests/data/make_cpp_fixtures.py with its own
    writer and NumPy-oracle outputs: loading them and passing verify checks this reader and the
    contract against an independent implementation."""
    info = fio.read_model_info(path)
    loader = fio.load_model if info["model"]["class"] == "Sequential" else fio.load
    precision = info["model"]["precision"]
    if precision != "float32":
        # a quantized fixture (no self-check): the float fixture's matrices quantized by the
        # script from the format's description; quantizing the float file here gives the same
        # weights, bit for bit
        loaded = loader(path)
        assert loaded.precision == precision
        base = loader(path[:-len(f"_{precision}.safetensors")] + ".safetensors")
        if info["model"]["class"] == "Sequential":
            base.quantize(precision)
            want, got = base.get_weight_dict(), loaded.get_weight_dict()
        else:
            want, got = base.quantize(precision).params, loaded.params
        assert list(want) == list(got)
        for k in want:
            assert np.array_equal(want[k], got[k]), k
        return
    assert info["selfcheck"]
    loader(path, verify=True)
