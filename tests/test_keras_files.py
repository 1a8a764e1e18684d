"""fastlstm.from_keras(path) reads a Keras 3 ``.keras`` file (config.json and model.weights.h5
in a zip) without Keras, against committed fixtures (tests/data/keras_file_*, made by
tests/data/make_keras_file_fixtures.py), and refuses broken or hostile archives."""

import io
import json
import os
import pathlib
import zipfile

import h5py
import numpy as np
import pytest

import fastlstm

DATA = os.path.join(os.path.dirname(__file__), "data")
NAMES = ["lstm", "embed_bigru", "stack"]


def fixture(name):
    with np.load(os.path.join(DATA, f"keras_file_{name}.npz")) as z:
        return os.path.join(DATA, f"keras_file_{name}.keras"), z["x"], z["output"]


def close32(got, expected):
    got = np.asarray(got, np.float64)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    err = np.max(np.abs(got - expected))
    assert err <= 1e-5 * (1 + np.max(np.abs(expected))), err


@pytest.mark.parametrize("name", NAMES)
def test_from_keras_file_predicts_what_keras_predicted(name):
    path, x, expected = fixture(name)
    for p in (path, pathlib.Path(path)):  # str and os.PathLike
        model = fastlstm.from_keras(p)
        assert model.dtype == np.float32
        close32(model(x), expected)
    # float64 import of the same float32 weights agrees too
    close32(fastlstm.from_keras(path, dtype="float64")(x), expected)


def test_from_keras_file_structure_and_same_as_config_path():
    path, x, _ = fixture("stack")
    cfg = fastlstm.from_keras(path).get_config()
    classes = [entry["class"] for entry in cfg["layers"]]
    assert classes == ["LSTM", "Dropout", "LSTM", "Dropout", "GRU", "Dense"]
    assert [cfg["layers"][k]["config"]["rate"] for k in (1, 3)] == [0.3, 0.2]
    emb = fastlstm.from_keras(fixture("embed_bigru")[0]).get_config()["layers"][0]
    assert emb == {"class": "Embedding",
                   "config": {"input_dim": 11, "output_dim": 3, "mask_zero": True}}
    # the archive's config.json + its weights through the config path: the very same model
    with zipfile.ZipFile(path) as z:
        config = z.read("config.json").decode()
        with h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as h5:
            groups = sorted(h5["layers"].keys())
            assert groups == ["dense", "dropout", "dropout_1", "gru", "lstm", "lstm_1"]
            weights = []
            for g in ("lstm", "lstm_1", "gru"):
                weights += [h5[f"layers/{g}/cell/vars/{k}"][()] for k in range(3)]
            weights += [h5[f"layers/dense/vars/{k}"][()] for k in range(2)]
    np.testing.assert_array_equal(fastlstm.from_keras(config, weights)(x),
                                  fastlstm.from_keras(path)(x))


def rewrite(src, dst, config=None, weights=None, drop=()):
    """A copy of the .keras file src with config.json and/or model.weights.h5 replaced (bytes)
    or members dropped."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            data = zin.read(info)
            if info.filename == "config.json" and config is not None:
                data = config
            if info.filename == "model.weights.h5" and weights is not None:
                data = weights
            zout.writestr(info.filename, data)
    return dst


def edited_weights(src, edit):
    """model.weights.h5 of src with edit(h5 file) applied, as bytes."""
    with zipfile.ZipFile(src) as z:
        raw = io.BytesIO(z.read("model.weights.h5"))
    with h5py.File(raw, "r+") as h5:
        edit(h5)
    return raw.getvalue()


def replace(h5, name, data, **kw):
    del h5[name]
    h5.create_dataset(name, data=data, **kw)


@pytest.mark.parametrize("case,words", [
    ("no_config", "has no config.json"),
    ("no_weights", "has no model.weights.h5"),
    ("bad_json", "config.json is not valid JSON"),
    ("functional", "only Keras Sequential"),
    ("weights_not_h5", "not an HDF5 file"),
    ("missing_group", "has no group 'layers/gru/cell/vars'"),
    ("missing_dataset", "must hold the datasets 0..2"),
    ("int_dataset", "must be a 1-d or 2-d float dataset"),
    ("wrong_shape", "recurrent_kernel must have shape"),
    ("units_mismatch", "config units=5 but the kernel holds 4"),
    ("extra_layer", "that config.json does not have"),
    ("huge_dataset", "more than the rest of model.weights.h5 holds"),
])
def test_from_keras_file_refusals(tmp_path, case, words):
    path = fixture("stack")[0]
    with zipfile.ZipFile(path) as z:
        cfg = json.loads(z.read("config.json"))
    dst = tmp_path / "bad.keras"
    if case == "no_config":
        rewrite(path, dst, drop=("config.json",))
    elif case == "no_weights":
        rewrite(path, dst, drop=("model.weights.h5",))
    elif case == "bad_json":
        rewrite(path, dst, config=b"{not json")
    elif case == "functional":
        cfg["class_name"] = "Functional"
        rewrite(path, dst, config=json.dumps(cfg).encode())
    elif case == "weights_not_h5":
        rewrite(path, dst, weights=b"\0" * 4096)
    elif case == "missing_group":
        def edit(h5):
            del h5["layers/gru"]
        rewrite(path, dst, weights=edited_weights(path, edit))
    elif case == "missing_dataset":
        def edit(h5):
            del h5["layers/lstm_1/cell/vars/2"]
        rewrite(path, dst, weights=edited_weights(path, edit))
    elif case == "int_dataset":
        def edit(h5):
            replace(h5, "layers/dense/vars/1", np.arange(3, dtype=np.int32))
        rewrite(path, dst, weights=edited_weights(path, edit))
    elif case == "wrong_shape":
        def edit(h5):
            replace(h5, "layers/lstm/cell/vars/1", np.zeros((4, 12), np.float32))
        rewrite(path, dst, weights=edited_weights(path, edit))
    elif case == "units_mismatch":
        cfg["config"]["layers"][1]["config"]["units"] = 5
        rewrite(path, dst, config=json.dumps(cfg).encode())
    elif case == "extra_layer":
        def edit(h5):
            h5.create_group("layers/conv1d/vars").create_dataset("0", data=np.zeros(3))
        rewrite(path, dst, weights=edited_weights(path, edit))
    elif case == "huge_dataset":
        def edit(h5):  # declares 4 x 2**30 float32 (16 GiB) but stores almost nothing
            del h5["layers/lstm/cell/vars/0"]
            h5["layers/lstm/cell/vars"].create_dataset("0", shape=(4, 1 << 30), dtype="f4",
                                                       chunks=(1, 1 << 16),
                                                       compression="gzip")
        rewrite(path, dst, weights=edited_weights(path, edit))
    with pytest.raises(ValueError, match=words):
        fastlstm.from_keras(dst)


def test_from_keras_file_compressed_members(tmp_path):
    """Keras stores its members uncompressed; a deflated copy reads the same (the weights are
    streamed from the zip, never extracted), and a member that claims to inflate far beyond
    its compressed size is refused before it is read."""
    path, x, expected = fixture("embed_bigru")
    dst = tmp_path / "deflated.keras"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
    close32(fastlstm.from_keras(dst)(x), expected)
    big = tmp_path / "bomb.keras"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "model.weights.h5":  # valid HDF5 padded with 16 MiB of zeros
                data += b"\0" * (16 << 20)
            zout.writestr(info.filename, data)
    with pytest.raises(ValueError, match="refused as a zip bomb"):
        fastlstm.from_keras(big)


def test_from_keras_file_not_a_zip_and_missing(tmp_path):
    bad = tmp_path / "model.keras"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="is not a Keras 3 .keras file"):
        fastlstm.from_keras(bad)
    with pytest.raises(FileNotFoundError, match="no such file"):
        fastlstm.from_keras(str(tmp_path / "absent.keras"))
    with pytest.raises(ValueError, match="cell= is for a bare weight list"):
        fastlstm.from_keras(fixture("lstm")[0], cell="lstm")


def test_from_keras_file_config_size_is_capped(tmp_path, monkeypatch):
    from fastlstm.io import keras as fkeras

    path = fixture("lstm")[0]
    monkeypatch.setattr(fkeras, "_KERAS_CONFIG_MAX", 100)  # the real file's config is larger
    with pytest.raises(ValueError, match="config.json claims"):
        fastlstm.from_keras(path)


def test_from_keras_file_without_h5py_says_which_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_h5py(name, *args, **kwargs):
        if name == "h5py":
            raise ImportError("No module named 'h5py'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_h5py)
    with pytest.raises(ImportError, match=r"fastlstm\[keras\]"):
        fastlstm.from_keras(fixture("lstm")[0])


def test_load_model_points_a_keras_file_to_from_keras():
    with pytest.raises(ValueError, match=r"fastlstm.from_keras\(path\)"):
        fastlstm.load_model(fixture("lstm")[0])
