"""Replays the fuzz corpus (tests/data/fuzz/, made by tests/data/make_fuzz_corpus.py): the
fuzzer's seed files and every file that once crashed, hung or was misread. Through the Python
loader here (fastlstm.load / fastlstm.io.load_model: the C++ reader through its binding); the
C++ API replays the same files in tests/cpp/test_model_fuzz.cpp (ctest, tests/test_cpp.py).

Before issue 14 the Python reader read ``"false"`` as true, hung on ``num_layers`` 2^30 and
accepted duplicate keys and deep nesting, and the C++ reader accepted unknown keys and invalid
UTF-8: the two readers disagreed on these files."""

import json
import os

import numpy as np
import pytest

import fastlstm
from fastlstm import io as fio

DIR = os.path.join(os.path.dirname(__file__), "data", "fuzz")
with open(os.path.join(DIR, "expected.json")) as _f:
    EXPECTED = json.load(_f)


def test_the_corpus_is_complete():
    files = {f[:-len(".safetensors")] for f in os.listdir(DIR) if f.endswith(".safetensors")}
    assert files == set(EXPECTED)
    assert sum(e["outcome"] == "refused" for e in EXPECTED.values()) >= 25


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file(name):
    path = os.path.join(DIR, name + ".safetensors")
    want = EXPECTED[name]
    if want.get("python_outcome") == "loads":  # a functional model (C++: test_model_fuzz.cpp)
        model = fio.load_model(path)
        x = [np.zeros((2, 4), np.int64) if t.dtype.startswith("int") else
             np.linspace(-1, 1, 2 * 4 * t.shape[-1]).reshape(2, 4, t.shape[-1])
             for t in model.inputs]
        assert np.isfinite(model.predict(x, verbose=0)["y"]).all()
        assert fio.read_model_info(path)["model"]["class"] == "Model"
        with pytest.raises(ValueError, match="not an LSTM or GRU module"):
            fastlstm.load(path)
        return
    if want["outcome"] == "loads":
        info = fio.read_model_info(path)
        load = fio.load_model if info["model"]["class"] == "Sequential" else fastlstm.load
        # verify the self-check where the file has one (the quantized seeds carry none)
        m = load(path, verify=info["selfcheck"])
        assert m is not None
        return
    for load in (fastlstm.load, fio.load_model, fio.read_model_info):
        with pytest.raises(ValueError) as info:
            load(path)
        message = str(info.value)
        assert name + ".safetensors" in message
        for word in want["words"]:
            assert word in message, (word, message)

