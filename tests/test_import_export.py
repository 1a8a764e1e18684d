"""Import from PyTorch, Keras and ONNX against committed fixtures (tests/data/import_*, made by
tests/data/make_import_fixtures.py, and the PyTorch fixtures tests/data/torch_*), refusals of
what cannot be mapped, and export (to_torch_state_dict, to_onnx) round trips; parity with
onnxruntime. torch and keras are never imported; from_onnx/to_onnx use the onnx package."""

import glob
import json
import os
import sys

import numpy as np
import pytest

import fastlstm
from fastlstm import io as fio

DATA = os.path.join(os.path.dirname(__file__), "data")
I, H, T, B = 5, 7, 9, 4


def npz(name):
    with np.load(os.path.join(DATA, name + ".npz")) as z:
        return {k: z[k] for k in z.files}


def close(got, expected, dtype):
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    tol = 1e-10 if np.dtype(dtype) == np.float64 else 1e-5
    err = np.max(np.abs(got - expected)) if got.size else 0.0
    assert err <= tol * (1 + np.max(np.abs(expected))), err


# ------------------------------------------------------------------------------ PyTorch
TORCH = sorted(os.path.basename(f)[len("torch_"):-4]
               for f in glob.glob(os.path.join(DATA, "torch_*.npz")))


def test_torch_fixtures_are_present():
    assert len(TORCH) >= 10


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", TORCH)
def test_from_torch_state_dict_matches_torch(name, dtype):
    data = npz("torch_" + name)
    cfg = json.loads(str(data["config"]))
    sd = {k[len("param."):]: v for k, v in data.items() if k.startswith("param.")}
    m = fio.from_torch_state_dict(sd, cfg["cell"], batch_first=cfg["batch_first"], dtype=dtype)
    assert (m.num_layers, m.bidirectional, m.bias, m.proj_size, m.input_size, m.hidden_size) == (
        cfg["num_layers"], cfg["bidirectional"], cfg["bias"], cfg["proj_size"],
        cfg["input_size"], cfg["hidden_size"])
    lengths = data.get("lengths")
    if cfg["cell"] == "lstm":
        hx = (data["h0"], data["c0"]) if cfg["has_h0"] else None
        out, (h_n, c_n) = m(data["x"], hx, lengths=lengths)
        close(c_n, data["c_n"], dtype)
    else:
        out, h_n = m(data["x"], data["h0"] if cfg["has_h0"] else None, lengths=lengths)
    close(out, data["output"], dtype)
    close(h_n, data["h_n"], dtype)


def test_from_torch_dtype_follows_the_weights():
    data = npz("torch_lstm_single")
    sd = {k[len("param."):]: v for k, v in data.items() if k.startswith("param.")}
    assert fio.from_torch_state_dict(sd).dtype == np.float64
    sd32 = {k: v.astype(np.float32) for k, v in sd.items()}
    assert fio.from_torch_state_dict(sd32).dtype == np.float32


class FakeTorchLSTM:
    """Duck-typed stand-in for torch.nn.LSTM (attributes + state_dict())."""

    def __init__(self, sd, **attrs):
        self._sd = sd
        self.__dict__.update(attrs)

    def state_dict(self):
        return dict(self._sd)


FakeTorchLSTM.__name__ = "LSTM"


def test_from_torch_module_duck_typed():
    data = npz("torch_lstm_proj_bidir")
    cfg = json.loads(str(data["config"]))
    sd = {k[len("param."):]: v for k, v in data.items() if k.startswith("param.")}
    fake = FakeTorchLSTM(sd, input_size=I, hidden_size=H, num_layers=2, bias=True,
                         batch_first=False, dropout=0.0, bidirectional=True, proj_size=3)
    m = fio.from_torch(fake, dtype="float64")
    assert m.proj_size == 3 and m.num_layers == 2 and m.bidirectional
    out, _ = m(data["x"], (data["h0"], data["c0"]))
    close(out, data["output"], "float64")
    assert cfg["proj_size"] == 3
    fake.num_layers = 3  # the module's attributes are checked against its state_dict
    with pytest.raises(ValueError, match="num_layers=3 was given but the state_dict holds "
                                         "num_layers=2"):
        fio.from_torch(fake)


def _sd(name="torch_lstm_bidir2"):
    data = npz(name)
    return {k[len("param."):]: v for k, v in data.items() if k.startswith("param.")}


@pytest.mark.parametrize("edit, words", [
    (lambda sd: sd.pop("bias_hh_l1_reverse"), "missing \\['bias_hh_l1_reverse'\\]"),
    (lambda sd: sd.update(weight_hh_l1=np.zeros((28, 8))),
     "'weight_hh_l1' has shape \\(28, 8\\), expected \\(28, 7\\)"),
    (lambda sd: sd.update(weight_ih_l1=np.zeros((28, 13))), "'weight_ih_l1' has shape"),
    (lambda sd: sd.update(foo=np.zeros(3)), "key 'foo' is not an LSTM/GRU parameter"),
    (lambda sd: sd.update(weight_ih_l0=np.zeros((27, 5))), "27 rows"),
    (lambda sd: sd.update(weight_ih_l0=np.zeros(28)), "must be 2-D"),
    (lambda sd: sd.pop("weight_ih_l0"), "no weight_ih_l0"),
    (lambda sd: sd.update(weight_ih_l3=np.zeros((28, 14))), "missing"),
    (lambda sd: sd.update(bias_ih_l0=np.array(["a"] * 28)), "real numbers"),
])
def test_from_torch_state_dict_refuses_what_it_cannot_map(edit, words):
    sd = _sd()
    edit(sd)
    with pytest.raises(ValueError, match=words):
        fio.from_torch_state_dict(sd, "lstm")


def test_from_torch_state_dict_prefix_and_config_checks():
    sd = {"rnn." + k: v for k, v in _sd().items()}
    sd["head.weight"] = np.zeros((3, 14))
    with pytest.raises(ValueError, match="prefix='rnn.'"):
        fio.from_torch_state_dict(sd, "lstm")
    m = fio.from_torch_state_dict(sd, "lstm", prefix="rnn.", num_layers=2, bidirectional=True)
    assert m.num_layers == 2
    with pytest.raises(ValueError, match="hidden_size=8 was given"):
        fio.from_torch_state_dict(sd, "lstm", prefix="rnn.", hidden_size=8)
    with pytest.raises(TypeError, match="unexpected argument 'units'"):
        fio.from_torch_state_dict(sd, "lstm", prefix="rnn.", units=7)
    with pytest.raises(ValueError, match="cell must be"):
        fio.from_torch_state_dict(sd, "rnn", prefix="rnn.")
    gru = _sd("torch_gru_single")
    gru["weight_hr_l0"] = np.zeros((3, H))
    with pytest.raises(ValueError, match="weight_hr_l0 has no place in a GRU"):
        fio.from_torch_state_dict(gru, "gru")


MODULES = [
    (fastlstm.LSTM, dict()),
    (fastlstm.LSTM, dict(num_layers=3, bidirectional=True, batch_first=True)),
    (fastlstm.LSTM, dict(num_layers=2, proj_size=3, bidirectional=True)),
    (fastlstm.LSTM, dict(num_layers=2, peephole=True, bidirectional=True)),
    (fastlstm.LSTM, dict(bias=False, num_layers=2)),
    (fastlstm.GRU, dict(num_layers=2, bidirectional=True)),
    (fastlstm.GRU, dict(bias=False, batch_first=True)),
]
IDS = [f"{c.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}"
       for c, kw in MODULES]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cls, kw", MODULES, ids=IDS)
def test_to_torch_state_dict_round_trip(cls, kw, dtype):
    m = cls(I, H, dtype=dtype, seed=11, **kw)
    sd = fio.to_torch_state_dict(m)
    assert set(sd) == set(m.params)
    m.params["weight_ih_l0"][0, 0] += 1.0  # copies, not views
    assert sd["weight_ih_l0"][0, 0] != m.params["weight_ih_l0"][0, 0]
    m.params["weight_ih_l0"][0, 0] -= 1.0
    back = fio.from_torch_state_dict(sd, cls.__name__.lower(),
                                     batch_first=kw.get("batch_first", False))
    assert repr(back) == repr(m)
    for k in m.params:
        assert back.params[k].dtype == m.params[k].dtype
        assert np.array_equal(back.params[k], m.params[k]), k


# ------------------------------------------------------------------------------ Keras
KERAS_LAYERS = {"lstm": ("lstm", False), "gru": ("gru", False), "lstm_nobias": ("lstm", False),
                "bidir_lstm": ("lstm", True), "bidir_gru": ("gru", True)}


def layer_weights(data, prefix="layer_weight."):
    n = sum(1 for k in data if k.startswith(prefix))
    return [data[f"{prefix}{k}"] for k in range(n)]


@pytest.mark.parametrize("name", sorted(KERAS_LAYERS))
def test_from_keras_weight_list_matches_keras(name):
    cell, bidir = KERAS_LAYERS[name]
    data = npz("import_keras_" + name)
    m = fio.from_keras(layer_weights(data), cell=cell, bidirectional=bidir)
    assert m.batch_first and m.bidirectional == bidir and m.dtype == np.float64
    assert m.bias == (name != "lstm_nobias")
    out = m(data["x"])[0]
    close(out, data["output"], "float64")
    out32 = fio.from_keras(layer_weights(data), cell=cell, bidirectional=bidir,
                           dtype="float32")(data["x"])[0]
    close(out32, data["output"], "float32")


def test_from_keras_refuses_reset_after_false():
    data = npz("import_keras_gru_reset_before")
    with pytest.raises(ValueError, match="reset_after=False"):
        fio.from_keras(layer_weights(data, "weight."), cell="gru")


@pytest.mark.parametrize("edit, words", [
    (lambda w: w.__setitem__(0, np.zeros((5, 27))), "kernel must be \\[input_dim, 4\\*units\\]"),
    (lambda w: w.__setitem__(1, np.zeros((7, 27))), "recurrent_kernel must have shape \\(7, 28\\)"),
    (lambda w: w.__setitem__(2, np.zeros(27)), "bias must have shape \\(28,\\)"),
    (lambda w: w.append(np.zeros(3)), "holds 6 arrays \\(4 without bias\\), got 7"),
    (lambda w: w.__setitem__(3, np.zeros((6, 28))), "differ"),
])
def test_from_keras_weight_list_refusals(edit, words):
    data = npz("import_keras_bidir_lstm")
    w = layer_weights(data)
    edit(w)
    with pytest.raises(ValueError, match=words):
        fio.from_keras(w, cell="lstm", bidirectional=True)


def test_from_keras_needs_a_cell_for_a_weight_list():
    data = npz("import_keras_lstm")
    with pytest.raises(ValueError, match="cell must be 'lstm' or 'gru'"):
        fio.from_keras(layer_weights(data))


# ------------------------------------------------------------------------------ ONNX import
def onnx_path(name):
    return os.path.join(DATA, name + ".onnx")


@pytest.mark.parametrize("name", ["torch_lstm_bidir2", "torch_gru2", "torch_lstm_batch_first"])
def test_from_onnx_torch_exports(name):
    data = npz("import_onnx_" + name)
    m = fio.from_onnx(onnx_path("import_onnx_" + name))
    assert m.dtype == np.float32
    assert m.batch_first == name.endswith("batch_first")
    hx = None
    if "h0" in data:
        hx = (data["h0"], data["c0"]) if "c0" in data else data["h0"]
    res = m(data["x"], hx)
    if isinstance(m, fastlstm.LSTM):
        out, (h_n, c_n) = res
        close(c_n, data["c_n"], "float32")
    else:
        out, h_n = res
    close(out, data["output"], "float32")
    close(h_n, data["h_n"], "float32")


def test_from_onnx_torch_export_structure():
    m = fio.from_onnx(onnx_path("import_onnx_torch_lstm_bidir2"))
    assert (m.num_layers, m.bidirectional, m.input_size, m.hidden_size, m.bias, m.peephole) == (
        2, True, I, H, True, False)
    g = fio.from_onnx(onnx_path("import_onnx_torch_gru2"))
    assert isinstance(g, fastlstm.GRU) and g.num_layers == 2 and not g.bidirectional


def _merge_y(Y):  # ONNX Y [T, D, B, H] -> [T, B, D*H]
    return Y.transpose(0, 2, 1, 3).reshape(Y.shape[0], Y.shape[2], -1)


def test_from_onnx_lstm_with_peepholes_lengths_and_states():
    data = npz("import_onnx_lstm_peephole_lens")
    m = fio.from_onnx(onnx_path("import_onnx_lstm_peephole_lens"))
    assert m.peephole and m.bidirectional and m.bias and not m.batch_first
    out, (h_n, c_n) = m(data["X"], (data["h0"], data["c0"]), lengths=data["lens"])
    close(out, _merge_y(data["Y"]), "float32")
    close(h_n, data["Y_h"], "float32")
    close(c_n, data["Y_c"], "float32")
    # float64 import of the same weights agrees too
    m64 = fio.from_onnx(onnx_path("import_onnx_lstm_peephole_lens"), dtype="float64")
    out64 = m64(data["X"], (data["h0"], data["c0"]), lengths=data["lens"])[0]
    close(out64, _merge_y(data["Y"]), "float32")


def test_from_onnx_layout1():
    data = npz("import_onnx_lstm_layout1")
    m = fio.from_onnx(onnx_path("import_onnx_lstm_layout1"))
    assert m.batch_first and m.peephole and not m.bias
    out, (h_n, c_n) = m(data["X"])
    close(out, data["Y"][:, :, 0], "float32")  # [B, T, 1, H]
    close(h_n, data["Y_h"].transpose(1, 0, 2), "float32")  # [B, 1, H]
    close(c_n, data["Y_c"].transpose(1, 0, 2), "float32")
    assert not fio.from_onnx(onnx_path("import_onnx_lstm_layout1"), batch_first=False).batch_first


def test_from_onnx_gru_linear_before_reset():
    data = npz("import_onnx_gru_lbr_lens")
    m = fio.from_onnx(onnx_path("import_onnx_gru_lbr_lens"))
    assert isinstance(m, fastlstm.GRU) and m.bidirectional
    out, h_n = m(data["X"], data["h0"], lengths=data["lens"])
    close(out, _merge_y(data["Y"]), "float32")
    close(h_n, data["Y_h"], "float32")


@pytest.mark.parametrize("name, words", [
    ("gru_lbr0", "node 'gru_lbr0' \\(GRU\\): linear_before_reset=0"),
    ("reverse", "node 'lstm_rev' \\(LSTM\\): direction='reverse'"),
    ("clip", "node 'lstm_clip' \\(LSTM\\): clip=3.0"),
    ("activations", "node 'lstm_relu' \\(LSTM\\): activations"),
    ("const_h0", "initial_h \\('h0c'\\) is a non-zero constant"),
    ("matmul_head", "node 'head' \\(MatMul\\) is neither"),
])
def test_from_onnx_refusals(name, words):
    with pytest.raises(ValueError, match=words):
        fio.from_onnx(onnx_path("import_onnx_bad_" + name))


def test_from_onnx_missing_and_garbage_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        fio.from_onnx(tmp_path / "nope.onnx")
    (tmp_path / "x.onnx").write_bytes(b"\x0a\xff\xff\xff\xff\x0f")
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        fio.from_onnx(tmp_path / "x.onnx")
    (tmp_path / "y.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match="no graph"):
        fio.from_onnx(tmp_path / "y.onnx")


def test_onnx_without_the_onnx_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` fail
    with pytest.raises(ImportError, match=r"pip install 'fastlstm\[onnx\]'"):
        fio.from_onnx(onnx_path("import_onnx_torch_gru2"))
    with pytest.raises(ImportError, match=r"fastlstm\[onnx\]"):
        fio.to_onnx(fastlstm.GRU(I, H), tmp_path / "m.onnx")
    assert not os.listdir(tmp_path)


def test_from_onnx_refuses_external_data(tmp_path):
    """A tensor whose data lives in another file is refused, not read from the disk."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(onnx_path("import_onnx_torch_gru2"))
    t = model.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", "/etc/passwd"
    path = tmp_path / "ext.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ValueError, match="external file"):
        fio.from_onnx(path)


def test_from_onnx_fuzz(tmp_path):
    """Random corruptions and truncations of an ONNX file: a clean ValueError or a module."""
    rng = np.random.default_rng(12)
    with open(onnx_path("import_onnx_torch_lstm_bidir2"), "rb") as f:
        data = f.read()
    path = tmp_path / "f.onnx"
    seen = {"ok": 0, "ValueError": 0}
    for it in range(200):
        buf = bytearray(data)
        if it % 2:
            buf = buf[:int(rng.integers(0, len(buf)))]
        else:
            for _ in range(int(rng.integers(1, 6))):
                buf[int(rng.integers(0, len(buf)))] = int(rng.integers(0, 256))
        path.write_bytes(bytes(buf))
        try:
            fio.from_onnx(path)
            seen["ok"] += 1
        except ValueError:
            seen["ValueError"] += 1
    assert seen["ValueError"] > 50 and seen["ok"] > 0, seen


# ------------------------------------------------------------------------------ ONNX export
EXPORTABLE = [(c, kw) for c, kw in MODULES if not kw.get("proj_size")]
EXPORT_IDS = [i for i, (c, kw) in zip(IDS, MODULES) if not kw.get("proj_size")]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cls, kw", EXPORTABLE, ids=EXPORT_IDS)
def test_to_onnx_from_onnx_round_trip(tmp_path, cls, kw, dtype):
    m = cls(I, H, dtype=dtype, seed=13, **kw)
    path = tmp_path / "m.onnx"
    fio.to_onnx(m, path, with_lengths=True, with_state=True)
    back = fio.from_onnx(path)
    assert repr(back) == repr(m)
    for k in m.params:
        assert back.params[k].dtype == m.params[k].dtype
        assert np.array_equal(back.params[k], m.params[k]), k
    assert os.listdir(tmp_path) == ["m.onnx"]


def test_to_onnx_refusals(tmp_path):
    with pytest.raises(ValueError, match="no projection"):
        fio.to_onnx(fastlstm.LSTM(I, H, proj_size=3), tmp_path / "p.onnx")
    with pytest.raises(TypeError, match="fastlstm.LSTM or fastlstm.GRU"):
        fio.to_onnx({}, tmp_path / "p.onnx")
    with pytest.raises(ValueError, match="opset must be >= 14"):
        fio.to_onnx(fastlstm.LSTM(I, H), tmp_path / "p.onnx", opset=13)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("opset", [14, 17, 20])
def test_to_onnx_opsets_run_in_onnxruntime(tmp_path, opset):
    ort = pytest.importorskip("onnxruntime")  # optional extra; runs where installed
    m = fastlstm.GRU(I, H, num_layers=2, bidirectional=True, seed=16)
    fio.to_onnx(m, tmp_path / "m.onnx", opset=opset)
    x = np.random.default_rng(17).standard_normal((T, B, I)).astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    close(sess.run(["output"], {"input": x})[0], m(x)[0], "float32")


def _feeds(m, rng, with_lengths, with_state):
    x = rng.standard_normal((B, T, I) if m.batch_first else (T, B, I)).astype(m.dtype)
    feeds = {"input": x}
    call = {"lengths": None, "hx": None}
    if with_lengths:
        feeds["lengths"] = np.array([T, 4, 1, 7], dtype=np.int32)
        call["lengths"] = feeds["lengths"]
    if with_state:
        LD = m.num_layers * m.num_directions
        feeds["h0"] = rng.standard_normal((LD, B, H)).astype(m.dtype)
        if isinstance(m, fastlstm.LSTM):
            feeds["c0"] = rng.standard_normal((LD, B, H)).astype(m.dtype)
            call["hx"] = (feeds["h0"], feeds["c0"])
        else:
            call["hx"] = feeds["h0"]
    res = m(x, call["hx"], lengths=call["lengths"])
    expected = [res[0]] + (list(res[1]) if isinstance(m, fastlstm.LSTM) else [res[1]])
    return feeds, expected


@pytest.mark.parametrize("with_lengths, with_state", [(False, False), (True, True)])
@pytest.mark.parametrize("cls, kw", EXPORTABLE, ids=EXPORT_IDS)
def test_to_onnx_parity_with_onnxruntime(tmp_path, cls, kw, with_lengths, with_state):
    ort = pytest.importorskip("onnxruntime")  # optional extra; runs where installed
    rng = np.random.default_rng(14)
    m = cls(I, H, dtype="float32", seed=15, **kw)  # onnxruntime's LSTM is float32 only
    path = tmp_path / "m.onnx"
    fio.to_onnx(m, path, with_lengths=with_lengths, with_state=with_state)
    feeds, expected = _feeds(m, rng, with_lengths, with_state)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == (
        ["output", "h_n", "c_n"] if cls is fastlstm.LSTM else ["output", "h_n"])
    for got, exp in zip(sess.run(None, feeds), expected):
        close(got, exp, "float32")


# ------------------------------------------------------------------------------ Keras models
KERAS_MODELS = ["lstm", "gru", "lstm_nobias", "bidir_lstm", "bidir_gru", "stack", "embed"]
# Keras rounds through float32 somewhere in its softmax and masking paths even with
# floatx=float64 (a float64 NumPy softmax of the same logits agrees with fastlstm exactly and
# with Keras to ~8e-9), so the two multi-layer fixtures get a looser, still far-from-a-bug bound
KERAS_TOL = {"stack": 1e-7, "embed": 1e-7}


def keras_weights(data):
    return [data[f"weight.{k}"] for k in range(int(data["num_weights"]))]


def keras_close(got, expected, name):
    tol = KERAS_TOL.get(name, 1e-10)
    err = np.max(np.abs(np.asarray(got, np.float64) - expected))
    assert got.shape == expected.shape and err <= tol * (1 + np.max(np.abs(expected))), err


@pytest.mark.parametrize("name", KERAS_MODELS)
def test_from_keras_model_config_matches_keras(name, tmp_path):
    data = npz("import_keras_" + name)
    model = fio.from_keras(str(data["config"]), keras_weights(data))
    assert model.dtype == np.float64
    keras_close(model(data["x"]), data["output"], name)
    # float32 import of the same model
    m32 = fio.from_keras(str(data["config"]), keras_weights(data), dtype="float32")
    close(m32(data["x"]), data["output"], "float32")
    # and the imported model survives a model file
    fio.save_model(model, tmp_path / "k", example_input=data["x"])
    keras_close(fio.load_model(tmp_path / "k", verify=True)(data["x"]), data["output"], name)


def test_from_keras_model_structure():
    data = npz("import_keras_embed")
    cfg = fio.from_keras(str(data["config"]), keras_weights(data)).get_config()
    kinds = [(layer["class"], layer["config"].get("merge_mode")) for layer in cfg["layers"]]
    assert kinds == [("Embedding", None), ("Bidirectional", "sum"), ("LSTM", None),
                     ("Dense", None)]
    assert cfg["layers"][0]["config"] == {"input_dim": 20, "output_dim": 6, "mask_zero": True}
    data = npz("import_keras_stack")
    cfg = fio.from_keras(str(data["config"]), keras_weights(data)).get_config()
    assert [layer["class"] for layer in cfg["layers"]] == ["LSTM", "Dropout", "GRU", "Dense"]
    assert cfg["layers"][2]["config"]["go_backwards"] is True
    assert cfg["layers"][3]["config"]["activation"] == "softmax"


def test_from_keras_keeps_dropout_rates():
    """dropout / recurrent_dropout of a Keras LSTM come over (for a later fit); predict is the
    same as without them (no dropout at inference)."""
    import json

    data = npz("import_keras_stack")
    cfg = json.loads(str(data["config"]))
    layers = cfg["config"]["layers"] if "config" in cfg else cfg["layers"]
    lstm = next(layer for layer in layers if layer["class_name"] == "LSTM")
    lstm["config"].update(dropout=0.25, recurrent_dropout=0.5)
    model = fio.from_keras(json.dumps(cfg), keras_weights(data))
    got = model.get_config()["layers"][0]["config"]
    assert got["dropout"] == 0.25 and got["recurrent_dropout"] == 0.5
    keras_close(model(data["x"]), data["output"], "stack")


class FakeKeras:
    """Duck-typed stand-in for a Keras object: class name, get_config(), get_weights()."""

    def __init__(self, cls, config, weights):
        self._config, self._weights = config, weights
        self.__class__ = type(cls, (FakeKeras,), {})

    def get_config(self):
        return self._config

    def get_weights(self):
        return list(self._weights)


def test_from_keras_objects_duck_typed():
    data = npz("import_keras_stack")
    cfg = json.loads(str(data["config"]))
    model = fio.from_keras(FakeKeras("Sequential", cfg["config"], keras_weights(data)))
    keras_close(model(data["x"]), data["output"], "stack")
    # a single layer object: the Bidirectional layer of a one-layer model
    data = npz("import_keras_bidir_gru")
    layer_cfg = json.loads(str(data["config"]))["config"]["layers"][-1]
    layer = FakeKeras(layer_cfg["class_name"], layer_cfg["config"], layer_weights(data))
    keras_close(fio.from_keras(layer)(data["x"]), data["output"], "bidir_gru")
    # the same as a serialized layer dict
    keras_close(fio.from_keras(layer_cfg, layer_weights(data))(data["x"]), data["output"],
                "bidir_gru")


def _stack_cfg():
    data = npz("import_keras_stack")
    return json.loads(str(data["config"])), keras_weights(data)


def _layer(cfg, cls):
    return next(x for x in cfg["config"]["layers"] if x["class_name"] == cls)


KERAS_REFUSALS = {
    "functional": (lambda c, w: c.update(class_name="Functional"), "only Keras Sequential"),
    "conv": (lambda c, w: _layer(c, "Dropout").update(class_name="Conv1D"),
             "class 'Conv1D' cannot be imported"),
    "relu_lstm": (lambda c, w: _layer(c, "LSTM")["config"].update(activation="relu"),
                  "activation='relu'"),
    "hard_sigmoid": (lambda c, w: _layer(c, "GRU")["config"].update(
        recurrent_activation="hard_sigmoid"), "recurrent_activation='hard_sigmoid'"),
    "return_state": (lambda c, w: _layer(c, "GRU")["config"].update(return_state=True),
                     "return_state=True"),
    "stateful": (lambda c, w: _layer(c, "LSTM")["config"].update(stateful=True),
                 "stateful=True"),
    "reset_after": (lambda c, w: _layer(c, "GRU")["config"].update(reset_after=False),
                    "reset_after=False"),
    "dense_activation": (lambda c, w: _layer(c, "Dense")["config"].update(activation="elu"),
                         "activation 'elu'"),
    "extra_weight": (lambda c, w: w.append(np.zeros(3)), "has 9 arrays but the layers use 8"),
    "missing_weight": (lambda c, w: w.pop(), "needs 2 weight arrays but only 1"),
    "feature_mismatch": (lambda c, w: w.__setitem__(3, np.zeros((5, 18))),
                         "expects 5 input features but the previous layer gives 7"),
    "bad_kernel": (lambda c, w: w.__setitem__(1, np.zeros((7, 27))),
                   "Keras layer 'lstm_3' \\(LSTM\\): recurrent_kernel must have shape \\(7, 28\\)"),
    "units": (lambda c, w: _layer(c, "LSTM")["config"].update(units=8), "units=8"),
}


@pytest.mark.parametrize("name", sorted(KERAS_REFUSALS))
def test_from_keras_refusals(name):
    edit, words = KERAS_REFUSALS[name]
    cfg, weights = _stack_cfg()
    edit(cfg, weights)
    with pytest.raises(ValueError, match=words):
        fio.from_keras(cfg, weights)


def test_from_keras_bidirectional_refusals():
    data = npz("import_keras_bidir_lstm")
    cfg = json.loads(str(data["config"]))
    bid = _layer(cfg, "Bidirectional")["config"]
    bid["merge_mode"] = None
    with pytest.raises(ValueError, match="merge_mode=None"):
        fio.from_keras(cfg, keras_weights(data))
    bid["merge_mode"] = "concat"
    bid["backward_layer"]["config"]["units"] = 6
    with pytest.raises(ValueError, match="backward layer differs from the forward one in units"):
        fio.from_keras(cfg, keras_weights(data))


def test_from_keras_argument_errors():
    data = npz("import_keras_lstm")
    with pytest.raises(ValueError, match="weights .* are required"):
        fio.from_keras(str(data["config"]))
    with pytest.raises(ValueError, match="not valid JSON"):
        fio.from_keras("{nope", keras_weights(data))
    with pytest.raises(ValueError, match="class_name"):
        fio.from_keras({"layers": []}, keras_weights(data))
    with pytest.raises(ValueError, match="cell= is for a bare weight list"):
        fio.from_keras(str(data["config"]), keras_weights(data), cell="lstm")
