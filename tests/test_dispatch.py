"""Runtime CPU dispatch: fastlstm.cpu_info(), FASTLSTM_CPU, and the same bits at every level.

Each kernel level this machine runs is exercised in a subprocess (FASTLSTM_CPU is read once,
when the extension is imported)."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastlstm

ALL_LEVELS = ["generic", "avx2", "avx512", "avx512_bf16", "amx"]
INFO = fastlstm.cpu_info()
LEVELS = INFO["levels"]
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def run_python(code, level, check=True, extra_env=None):
    env = dict(os.environ, FASTLSTM_CPU=level, **(extra_env or {}))
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                       capture_output=True, text=True, timeout=600)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_cpu_info_shape():
    assert set(INFO) >= {"features", "levels", "level", "vendor", "model"}
    assert INFO["level"] in LEVELS
    assert LEVELS == [lv for lv in ALL_LEVELS if lv in LEVELS]  # lowest first
    assert LEVELS[0] == "generic"
    # a level is listed only when the CPU (and OS) has what it needs
    feats = set(INFO["features"])
    if "avx2" in LEVELS:
        assert {"avx2", "fma"} <= feats
    if "avx512" in LEVELS:
        assert {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= feats
    if "avx512_bf16" in LEVELS:
        assert {"avx512_bf16", "avx512_vnni"} <= feats
    if "amx" in LEVELS:
        assert {"amx_tile", "amx_bf16", "amx_int8"} <= feats


def test_default_level_is_the_best():
    r = run_python("import fastlstm, json; print(json.dumps(fastlstm.cpu_info()))", "")
    info = json.loads(r.stdout)
    assert info["level"] == info["levels"][-1] == LEVELS[-1]


@pytest.mark.parametrize("level", LEVELS)
def test_cap_selects_level(level):
    r = run_python("import fastlstm; print(fastlstm.cpu_info()['level'])", level)
    assert r.stdout.strip() == level


def test_unknown_level_is_an_import_error():
    r = run_python("import fastlstm", "pentium4", check=False)
    assert r.returncode != 0
    assert "ImportError" in r.stderr
    assert "FASTLSTM_CPU=pentium4" in r.stderr and "generic, avx2" in r.stderr


@pytest.mark.parametrize("hide, level", [("avx2", "avx2"), ("avx512f", "avx512"),
                                         ("avx512_vnni", "avx512_bf16"), ("amx_tile", "amx")])
def test_missing_level_is_an_import_error(hide, level):
    """A level the CPU lacks (here: made to lack with FASTLSTM_CPU_HIDE, so every machine runs
    this) is a clear ImportError at import, never an illegal instruction later."""
    r = run_python("import fastlstm", level, check=False, extra_env={"FASTLSTM_CPU_HIDE": hide})
    assert r.returncode != 0
    assert "ImportError" in r.stderr and "cannot run" in r.stderr and level in r.stderr


def test_hidden_features_lower_the_best_level():
    r = run_python("import fastlstm, json; print(json.dumps(fastlstm.cpu_info()))", "",
                   extra_env={"FASTLSTM_CPU_HIDE": "avx512f"})
    info = json.loads(r.stdout)
    assert "avx512f" not in info["features"]
    assert info["level"] == "avx2" and info["levels"] == ["generic", "avx2"]


def test_unknown_hidden_feature_is_an_import_error():
    r = run_python("import fastlstm", "", check=False, extra_env={"FASTLSTM_CPU_HIDE": "sse9"})
    assert r.returncode != 0
    assert "ImportError" in r.stderr and "FASTLSTM_CPU_HIDE" in r.stderr and "sse9" in r.stderr


def test_cli_info_shows_level():
    from fastlstm.cli import main

    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["info", "--json"]) == 0
    info = json.loads(buf.getvalue())
    assert info["cpu"]["level"] == INFO["level"]


# every cell, option and call kind, forward and backward, float32 and float64: a digest of
# every output bit
BITS = """
import hashlib, numpy as np, fastlstm
h = hashlib.sha256()
rng = np.random.default_rng(1)
for dt in ["float32", "float64"]:
    for kw in [dict(num_layers=2, bidirectional=True), dict(proj_size=7), dict(peephole=True),
               dict(batch_first=True)]:
        m = fastlstm.LSTM(13, 37, dtype=dt, seed=3, **kw)
        x = rng.standard_normal((6, 9, 13) if kw.get("batch_first") else (9, 6, 13))
        out, (hn, cn) = m.forward(x, lengths=np.array([9, 3, 5, 9, 1, 2]), train=True)
        dx, _ = m.backward(np.ones_like(out))
        for a in (out, hn, cn, dx, m.flat_grads):
            h.update(np.ascontiguousarray(a).tobytes())
    g = fastlstm.GRU(13, 70, num_layers=2, dtype=dt, seed=3)
    out, hn = g.forward(rng.standard_normal((40, 9, 13)), train=True)
    dx, _ = g.backward(out)
    for a in (out, hn, dx, g.flat_grads):
        h.update(a.tobytes())
    # recurrent dropout masks: per-gate products forward, per gate and panel backward
    for cell, ng in ((fastlstm.LSTM, 4), (fastlstm.GRU, 3)):
        m = cell(13, 37, num_layers=2, bidirectional=True, dtype=dt, seed=6)
        rm = (rng.random((4, 6, ng * 37)) < 0.7) / 0.7
        out, st = m.forward(rng.standard_normal((9, 6, 13)), lengths=np.array([9, 3, 5, 9, 1, 2]),
                            train=True, recurrent_mask=rm)
        dx, _ = m.backward(np.ones_like(out))
        for a in (out, dx, m.flat_grads):
            h.update(np.ascontiguousarray(a).tobytes())
    s = fastlstm.LSTM(20, 100, num_layers=2, dtype=dt, seed=4).stream(2)
    for t in range(5):
        h.update(s.step(rng.standard_normal((2, 20))).tobytes())
    # the small-size stream kernels (compile-time state sizes), gates saturated by inputs
    # up to +-Inf (their activations replace out-of-range lanes instead of clamping first)
    # (LSTM 32 on 256-bit registers: its two blocks one after the other, h stepped in place)
    for cls, H, kw in ((fastlstm.LSTM, 1, {}), (fastlstm.GRU, 8, {}), (fastlstm.LSTM, 16, {}),
                       (fastlstm.GRU, 32, {}), (fastlstm.LSTM, 5, dict(peephole=True)),
                       (fastlstm.LSTM, 32, {}), (fastlstm.LSTM, 32, dict(peephole=True))):
        s = cls(1, H, dtype=dt, seed=6, **kw).stream(1)
        for t in range(6):
            x = 300 * rng.standard_normal((1, 1))
            if t == 3:
                x[:] = np.inf
            h.update(s.step(x).tobytes())
    # the register-tile paths of the float32 products: K past the K block (270, 280 > 256),
    # row counts split in unequal tiles, a partial unit tile (280 = 8 * 32 + 24), weight
    # gradients over 600 rows (row blocks and grains differ per level), 128-row chunks (prefetch)
    m = fastlstm.LSTM(270, 280, dtype=dt, seed=5)
    for B in (37, 1, 2, 23):
        out, _ = m.forward(rng.standard_normal((6, B, 270)), train=True)
        dx, _ = m.backward(rng.standard_normal(out.shape))
        for a in (out, dx, m.flat_grads):
            h.update(np.ascontiguousarray(a).tobytes())
    # A's rows a multiple of 1024 floats apart (the batch-first output, T * S = 4 * 256; d_rec,
    # 4 * H), which the float32 products copy to padded rows first, in chunks of 128 rows
    m = fastlstm.LSTM(64, 256, dtype=dt, seed=7, batch_first=True)
    for B in (5, 130):
        out, _ = m.forward(rng.standard_normal((B, 4, 64)), train=True)
        dx, _ = m.backward(rng.standard_normal(out.shape))
        for a in (out, dx, m.flat_grads):
            h.update(np.ascontiguousarray(a).tobytes())
print(h.hexdigest())
"""


def test_float_bits_identical_at_every_level():
    digests = {lv: run_python(BITS, lv).stdout.strip() for lv in LEVELS}
    assert len(set(digests.values())) == 1, digests


@pytest.mark.parametrize("level", [lv for lv in LEVELS if lv != LEVELS[-1]])
def test_parity_and_determinism_suites_at_level(level):
    """The engine-parity and determinism tests (which run at the default level in the main
    session) at every other level this CPU runs."""
    env = dict(os.environ, FASTLSTM_CPU=level)
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         os.path.join(TESTS_DIR, "test_engine_parity.py"),
         os.path.join(TESTS_DIR, "test_determinism.py")],
        env=env, capture_output=True, text=True, timeout=900, cwd=TESTS_DIR)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert " passed" in r.stdout and "failed" not in r.stdout
