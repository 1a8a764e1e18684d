"""The C++ embedding story end to end: models trained and saved in Python run in a C++ app.

examples/cpp/ (``fastlstm_predict``) is built with CMake against the *installed* package
(``find_package(fastlstm)`` through ``fastlstm.cmake_prefix_path``), models of every layer type
and option are trained or made in Python and saved with ``fastlstm.io``, and the app's
predictions (read back from its stdout) are compared with Python's. Needs CMake and Ninja (the
test extra); no Python runs inside the app.
"""

import os
import subprocess

import numpy as np
import pytest

import fastlstm
from fastlstm import io as fio
from fastlstm import layers as L
from fastlstm.models import Sequential

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "cpp")


def _package_dirs():
    """(config dir, include dir, static library) of the installed package."""
    prefix = fastlstm.cmake_prefix_path
    base = os.path.dirname(os.path.dirname(prefix))  # <pkg>/lib/cmake -> <pkg>
    lib = [os.path.join(base, "lib", n) for n in ("libfastlstm.a", "fastlstm.lib")]
    lib = next((p for p in lib if os.path.exists(p)), lib[0])
    return os.path.join(prefix, "fastlstm"), os.path.join(base, "include"), lib


def test_installed_package_ships_the_cpp_library():
    config, include, lib = _package_dirs()
    assert os.path.isfile(os.path.join(config, "fastlstmConfig.cmake")), (
        f"fastlstm.cmake_prefix_path = {fastlstm.cmake_prefix_path!r} holds no "
        "fastlstm/fastlstmConfig.cmake")
    for header in ("fastlstm.hpp", "rnn.hpp", "model.hpp"):
        assert os.path.isfile(os.path.join(include, "fastlstm", header)), (
            f"{header} is not installed in {include} (reinstall the package after C++ changes)")
    assert os.path.isfile(lib), f"the static library is not installed at {lib}"
    print(f"installed static library: {lib}, {os.path.getsize(lib)} bytes")
    # the public headers are free of Eigen and other third-party includes
    for name in os.listdir(os.path.join(include, "fastlstm")):
        with open(os.path.join(include, "fastlstm", name)) as f:
            text = f.read()
        assert "Eigen" not in text and "pybind11" not in text, name


@pytest.fixture(scope="module")
def app(tmp_path_factory, tool):
    """The example built against the installed package: path of the executable."""
    build = tmp_path_factory.mktemp("example-build")
    cmake = tool("cmake")
    cfg = [cmake, "-S", EXAMPLE, "-B", str(build), "-G", "Ninja",
           f"-DCMAKE_MAKE_PROGRAM={tool('ninja')}",
           f"-DCMAKE_PREFIX_PATH={fastlstm.cmake_prefix_path}"]
    r = subprocess.run(cfg, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    r = subprocess.run([cmake, "--build", str(build)], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    exe = os.path.join(str(build), "fastlstm_predict")
    assert os.path.isfile(exe)
    return exe


def _run(app, model_path, text, *args):
    """Runs the app; returns its output lines as float64 arrays."""
    r = subprocess.run([app, str(model_path), *args], input=text, capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr}"
    return [np.array(line.split(), dtype=np.float64) for line in r.stdout.splitlines()]


def _feature_lines(x, lengths):
    """One line per sequence: its valid steps' features, step after step."""
    return "".join(" ".join(repr(float(v)) for v in x[b, :n].ravel()) + "\n"
                   for b, n in enumerate(lengths))


def _token_lines(tok, lengths):
    return "".join(" ".join(str(int(v)) for v in tok[b, :n]) + "\n"
                   for b, n in enumerate(lengths))


def _compare(rows, y, lengths, sequences, tol):
    """rows: the app's lines; y: Python's output [B, T, U] or [B, U]."""
    assert len(rows) == len(y)
    for b, row in enumerate(rows):
        want = y[b, :lengths[b]].ravel() if sequences else y[b].ravel()
        assert row.shape == want.shape, (b, row.shape, want.shape)
        err = np.max(np.abs(row - want))
        assert err <= tol * (1 + np.max(np.abs(want))), (b, err)
    # the outputs are not trivially equal to each other (the comparison can fail)
    assert np.ptp(np.concatenate([r.ravel() for r in rows])) > 1e-3


def _tol(dtype):
    # the app computes in float32; float64 models meet it at float32 precision
    return 1e-5 if np.dtype(dtype) == np.float32 else 1e-4


# ------------------------------------------------------------------------------ bare modules
def _train_module(module, x, lengths, steps=5, lr=0.05):
    """A few SGD steps on a toy target, so the saved weights are trained ones."""
    target = np.tanh(np.cumsum(x, axis=1 if module.batch_first else 0))[..., :1]
    for _ in range(steps):
        out = module.forward(x, lengths=lengths)[0]
        d_out = np.zeros_like(out)
        d_out[..., :1] = out[..., :1] - target
        module.backward(d_out)
        module.flat_params -= lr * module.flat_grads
    return module


BARE = [
    # (name, class, kwargs)
    ("lstm_stacked_bidir_proj", fastlstm.LSTM,
     dict(input_size=5, hidden_size=9, num_layers=2, bidirectional=True, proj_size=4,
          batch_first=True)),
    ("lstm_time_major", fastlstm.LSTM, dict(input_size=3, hidden_size=7, batch_first=False)),
    ("lstm_peephole_nobias_f64", fastlstm.LSTM,
     dict(input_size=4, hidden_size=6, peephole=True, bias=False, batch_first=True,
          dtype="float64")),
    ("gru_stacked_bidir", fastlstm.GRU,
     dict(input_size=6, hidden_size=5, num_layers=3, bidirectional=True, batch_first=True)),
]


@pytest.mark.parametrize("name,cls,kwargs", BARE, ids=[b[0] for b in BARE])
def test_bare_module_in_cpp_matches_python(app, tmp_path, name, cls, kwargs):
    rng = np.random.default_rng(len(name))
    module = cls(**kwargs, seed=3)
    B, T, I = 4, 9, kwargs["input_size"]
    lengths = np.array([9, 4, 1, 7])
    x_bf = rng.standard_normal((B, T, I)).astype(module.dtype)  # [B, T, I]
    x = x_bf if module.batch_first else x_bf.transpose(1, 0, 2).copy()
    _train_module(module, x, lengths)
    path = tmp_path / f"{name}.safetensors"
    fio.save(module, path, example_input=x, example_lengths=lengths)

    y = module(x, lengths=lengths)[0]
    if not module.batch_first:
        y = y.transpose(1, 0, 2)
    rows = _run(app, path, _feature_lines(x_bf, lengths), "--verify")
    _compare(rows, y, lengths, True, _tol(module.dtype))


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_app_quantizes_on_load(app, tmp_path, precision):
    """--precision quantizes a float file's recurrent layers on load (C++ LoadOptions): the
    app gives what Python's module.quantize gives, and not the float model's output."""
    rng = np.random.default_rng(7)
    module = fastlstm.LSTM(5, 24, num_layers=2, proj_size=7, batch_first=True, seed=2)
    x = rng.standard_normal((3, 8, 5)).astype(np.float32)
    lengths = np.array([8, 5, 2])
    path = tmp_path / "lstm.safetensors"
    fio.save(module, path, example_input=x, example_lengths=lengths)
    rows = _run(app, path, _feature_lines(x, lengths), "--verify", "--precision", precision)
    q = module.quantize(precision)
    _compare(rows, q(x, lengths=lengths)[0], lengths, True, 1e-4)
    y_float = module(x, lengths=lengths)[0]
    assert max(np.max(np.abs(r - y_float[b, :lengths[b]].ravel()))
               for b, r in enumerate(rows)) > 1e-5


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_app_runs_quantized_files(app, tmp_path, precision):
    """Files saved quantized in Python (weights stored as BF16 / I8 + scales) run in the app at
    their own precision, self-check included: a bare module gives Python's outputs exactly (the
    same kernels, the same dispatch; the app prints 9 significant digits, which round-trip a
    float32), a Sequential to the float files' tolerance; asking the app for another precision
    is refused."""
    rng = np.random.default_rng(11)
    module = fastlstm.LSTM(5, 24, num_layers=2, proj_size=7, batch_first=True, seed=2)
    q = module.quantize(precision)
    x = rng.standard_normal((3, 8, 5)).astype(np.float32)
    lengths = np.array([8, 5, 2])
    path = tmp_path / "lstm_q.safetensors"
    fio.save(q, path, example_input=x, example_lengths=lengths)
    rows = _run(app, path, _feature_lines(x, lengths), "--verify")
    want = q(x, lengths=lengths)[0]
    for b, row in enumerate(rows):
        assert np.array_equal(row.astype(np.float32), want[b, :lengths[b]].ravel()), b
    assert np.ptp(np.concatenate(rows)) > 1e-3

    model = _seq_embedding()
    tok = rng.integers(1, 12, size=(6, 7)).astype(np.int64)
    tok[2, 4:] = 0
    tok_lengths = np.array([7, 7, 4, 7, 7, 7])
    model.predict(tok[:1], verbose=0)  # builds it
    model.quantize(precision)
    path = tmp_path / "seq_q.safetensors"
    model.save(path, example_input=tok[:3])
    rows = _run(app, path, _token_lines(tok, tok_lengths), "--verify")
    # the Dense/softmax head and the masking are the two runners' own (float models: the same
    # tolerance); the recurrent layers run the same quantized kernels
    _compare(rows, model.predict(tok, verbose=0), tok_lengths, False, 1e-5)

    other = "int8" if precision == "bf16" else "bf16"
    r = subprocess.run([app, str(path), "--precision", other], input="1 2\n",
                       capture_output=True, text=True, check=False)
    assert r.returncode == 1
    assert f"is quantized to {precision}" in r.stderr and "seq_q.safetensors" in r.stderr


def test_trained_lstm_same_lengths(app, tmp_path):
    """All sequences of the same length: the app passes no lengths at all."""
    rng = np.random.default_rng(0)
    module = fastlstm.LSTM(3, 11, num_layers=2, batch_first=True, seed=1)
    x = rng.standard_normal((3, 6, 3)).astype(np.float32)
    _train_module(module, x, None)
    path = tmp_path / "lstm.safetensors"
    fio.save(module, path)
    rows = _run(app, path, _feature_lines(x, [6, 6, 6]))
    _compare(rows, module(x)[0], [6, 6, 6], True, 1e-5)


# ------------------------------------------------------------------------------ Sequential
def _seq_embedding():
    return Sequential([
        L.Embedding(12, 6, mask_zero=True),
        L.LSTM(9, return_sequences=True),
        L.Dropout(0.3),
        L.Bidirectional(L.GRU(5), merge_mode="concat"),
        L.Dense(3, activation="softmax"),
    ])


SEQUENTIAL = [
    # (name, factory, F (None: tokens), loss, dtype)
    ("embedding_mask_bidir_gru_softmax", _seq_embedding, None, "sparse_categorical_crossentropy",
     "float32"),
    ("backwards_peephole_bidir_sum_timedistributed", lambda: Sequential([
        L.LSTM(6, return_sequences=True, go_backwards=True, peephole=True),
        L.Bidirectional(L.LSTM(5, return_sequences=True), merge_mode="sum"),
        L.TimeDistributed(L.Dense(4, activation="relu")),
    ]), 3, "mse", "float32"),
    ("gru_backwards_last_dense_tanh_sigmoid", lambda: Sequential([
        L.GRU(7, go_backwards=True),
        L.Dense(5, activation="tanh"),
        L.Dense(2, activation="sigmoid", use_bias=False),
    ]), 4, "mse", "float32"),
    ("bidir_mul_ave", lambda: Sequential([
        L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode="mul"),
        L.Bidirectional(L.GRU(3), merge_mode="ave"),
        L.Dense(1),
    ]), 5, "mse", "float32"),
    ("dense_first_stack_float64", lambda: Sequential([
        L.Dense(6, activation="tanh"),
        L.LSTM(8, return_sequences=True),
        L.Dropout(0.2),
        L.GRU(5),
        L.Dense(3),
    ], dtype="float64"), 4, "mse", "float64"),
]


@pytest.mark.parametrize("name,factory,F,loss,dtype", SEQUENTIAL, ids=[s[0] for s in SEQUENTIAL])
def test_sequential_in_cpp_matches_python(app, tmp_path, name, factory, F, loss, dtype):
    rng = np.random.default_rng(len(name))
    model = factory()
    N, T = 16, 7
    lengths = rng.integers(1, T + 1, size=N)
    lengths[0] = T
    if F is None:
        x = rng.integers(1, 12, size=(N, T)).astype(np.int64)
        for b, n in enumerate(lengths):
            x[b, n:] = 0  # right padding: the Embedding's mask
        x[3, 2] = 0  # a zero inside a sequence is an ordinary token
    else:
        x = rng.standard_normal((N, T, F)).astype(dtype)
    y_out = model.predict(x[:1], lengths=lengths[:1])  # builds the model
    if loss == "sparse_categorical_crossentropy":
        target = rng.integers(0, y_out.shape[-1], size=(N,) + y_out.shape[1:-1])
    else:
        target = rng.standard_normal((N,) + y_out.shape[1:]).astype(dtype)
    model.compile(optimizer="adam", loss=loss)
    model.fit(x, target, epochs=2, batch_size=8, verbose=0, lengths=lengths)

    path = tmp_path / f"{name}.safetensors"
    fio.save_model(model, path, example_input=x[:5], example_lengths=lengths[:5])
    y = model.predict(x, lengths=lengths)
    lines = _token_lines(x, lengths) if F is None else _feature_lines(x, lengths)
    rows = _run(app, path, lines, "--verify")
    _compare(rows, y, lengths, y.ndim == 3, _tol(dtype))


# ------------------------------------------------------------------------------ errors
def test_app_reports_broken_files(app, tmp_path):
    module = fastlstm.GRU(2, 3, batch_first=True, seed=0)
    path = tmp_path / "gru.safetensors"
    fio.save(module, path)
    data = path.read_bytes()
    cases = {
        "truncated.safetensors": (data[: len(data) - 5], "truncated"),
        "garbage.safetensors": (b"\x10" + b"\x00" * 7 + b"{not json}" + b" " * 6, "not valid JSON"),
    }
    for fname, (content, needle) in cases.items():
        p = tmp_path / fname
        p.write_bytes(content)
        r = subprocess.run([app, str(p)], input="1 2\n", capture_output=True, text=True,
                           check=False)
        assert r.returncode == 1
        assert needle in r.stderr and fname in r.stderr, r.stderr
    r = subprocess.run([app, str(tmp_path / "missing.safetensors")], input="1 2\n",
                       capture_output=True, text=True, check=False)
    assert r.returncode == 1 and "missing.safetensors" in r.stderr
    # an input whose numbers do not fill whole steps
    r = subprocess.run([app, str(path)], input="1 2 3\n", capture_output=True, text=True,
                       check=False)
    assert r.returncode == 1 and "2 features per step" in r.stderr


def test_left_padding_and_gaps_in_cpp_follow_keras_masks(app, tmp_path):
    """Token 0 is padding wherever it is (Keras): the C++ runner packs each row's real tokens
    and gives Python's values; for a per-step output, whose steps would not line up, it
    refuses instead."""
    fastlstm.models.set_seed(3)
    model = Sequential([L.Embedding(12, 4, mask_zero=True), L.LSTM(5), L.Dense(2)])
    tok = np.array([[0, 0, 5, 7, 9], [5, 0, 7, 9, 0], [5, 7, 9, 0, 0], [3, 1, 4, 1, 5]])
    want = model.predict(tok, verbose=0)
    np.testing.assert_allclose(want[0], want[2], rtol=1e-6)  # left padding = right padding
    np.testing.assert_allclose(want[1], want[2], rtol=1e-6)  # a gap is masked too
    path = tmp_path / "masked.safetensors"
    fio.save_model(model, path)
    rows = _run(app, path, _token_lines(tok, [5, 5, 5, 5]))
    np.testing.assert_allclose(np.stack(rows), want, rtol=1e-5, atol=1e-6)

    seq = Sequential([L.Embedding(12, 4, mask_zero=True), L.LSTM(5, return_sequences=True)])
    seq.predict(tok, verbose=0)
    path = tmp_path / "masked_seq.safetensors"
    fio.save_model(seq, path)
    r = subprocess.run([app, str(path)], input="0 0 5 7 9\n", capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 1 and "left padding" in r.stderr, r.stderr
