"""``fastlstm bench --kernels`` (fastlstm.bench.kernels): structure and arithmetic of the report,
argument checks. Speed itself is the benchmark's business, not a test's."""

import json
import os
import subprocess
import sys

import pytest

import fastlstm
from fastlstm import bench
from fastlstm.bench import kernels


@pytest.fixture(scope="module")
def report():
    return kernels.kernel_report(0.002, ["train_small", "stream_b1"])


def test_limits_measured(report):
    assert report["fma_peak_gflops"] > 0
    assert report["l2_gbytes"] > 0 and report["mem_gbytes"] > 0
    assert report["vector_floats"] in (1, 8, 16)
    assert report["cpu_model"]
    assert report["level"] == fastlstm.cpu_info()["level"]


# the floats per vector of each level's float32 products
WIDTH = {"generic": 1, "avx2": 8, "avx512": 16, "avx512_bf16": 16, "amx": 16}


@pytest.mark.parametrize("level", fastlstm.cpu_info()["levels"])
def test_report_measures_the_level_in_use(level):
    """FASTLSTM_CPU picks the kernels measured: the report names that level and its width, and
    its products run (the level's FMA loop and kernels through the kernel table)."""
    code = ("import json; from fastlstm.bench import kernels; "
            "r = kernels.kernel_report(0.001, ['stream_b1']); "
            "print(json.dumps([r['level'], r['vector_floats'], r['fma_peak_gflops'], "
            "len(r['rows'])]))")
    p = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, FASTLSTM_CPU=level),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    got_level, width, peak, rows = json.loads(p.stdout)
    assert (got_level, width) == (level, WIDTH[level])
    assert peak > 0 and rows == 4  # step W_hh (float32, bf16, int8), cell pass


def test_rows_per_case_and_kernel(report):
    got = [(r["case"], r["kernel"]) for r in report["rows"]]
    assert ("stream_b1", "step W_hh") in got
    assert ("stream_b1", "cell pass (LSTM)") in got
    for k in ("step W_hh", "input proj (per step)", "dh", "dW_hh", "dW_ih",
              "dW_hh+dW_ih (shared)", "d_x (chunk)"):
        assert ("train_small", k) in got
    # the shapes are train_small's (B 32, T 50, I 128, H 256; gates 4H)
    shapes = {r["kernel"]: (r["M"], r["N"], r["K"]) for r in report["rows"]
              if r["case"] == "train_small"}
    assert shapes["step W_hh"] == (32, 1024, 256)
    assert shapes["dh"] == (32, 256, 1024)
    assert shapes["dW_hh"] == (1024, 256, 1600)
    assert shapes["dW_ih"] == (1024, 128, 1600)
    assert shapes["dW_hh+dW_ih (shared)"] == (1024, 384, 1600)


def test_low_precision_rows():
    """The inference cases measure the bf16 and int8 step products as the time loop runs them:
    batch 1 the recurrent product (bytes of the quantized W_hh from L2), a batch both products
    of a step (depth I + H) against the low-precision peak of the level's instructions (AMX
    tiles, vdpbf16ps / vpdpbusd, or the AVX2 scheme's FMA / vpmaddwd; none at generic)."""
    rep = kernels.kernel_report(0.002, ["stream_b1", "batch_inf"])
    has_lowp_insns = rep["level"] != "generic"
    assert (rep["bf16_peak_gflops"] > 0) == has_lowp_insns
    assert (rep["int8_peak_gops"] > 0) == has_lowp_insns
    rows = {(r["case"], r["kernel"]): r for r in rep["rows"]}
    for p, nbytes in (("bf16", 2), ("int8", 1)):
        r = rows[("stream_b1", f"step W_hh {p}")]
        assert (r["M"], r["N"], r["K"], r["bound"], r["against"]) == (1, 1024, 256, "memory", "L2")
        # the weights as stored: 1024 x 256 at nbytes (int8: and a scale and a sum per row)
        assert r["gbytes"] * r["seconds"] * 1e9 >= 1024 * 256 * nbytes * (1 - 1e-9)
        r = rows[("batch_inf", f"step x+h {p}")]
        assert (r["M"], r["N"], r["K"], r["bound"]) == (64, 2048, 128 + 512, "compute")
        assert r["against"] == (f"{p} peak" if has_lowp_insns else "FMA peak")
    assert "bf16 peak" in kernels.format_kernel_table(rep).splitlines()[1] or not has_lowp_insns


def test_rates_follow_from_times(report):
    peak, l2 = report["fma_peak_gflops"], report["l2_gbytes"]
    for r in report["rows"]:
        assert r["seconds"] > 0
        if r["bound"] == "compute":
            assert r["gflops"] == pytest.approx(2 * r["M"] * r["N"] * r["K"] / r["seconds"] * 1e-9)
            against = {"FMA peak": peak, "bf16 peak": report["bf16_peak_gflops"],
                       "int8 peak": report["int8_peak_gops"]}
            assert r["fraction"] == pytest.approx(r["gflops"] / against[r["against"]])
            # the low-precision products are measured against their own instructions' peak
            # where the level has them
            if r["kernel"].endswith(("bf16", "int8")) and report["bf16_peak_gflops"] > 0:
                assert r["against"] == r["kernel"][-4:] + " peak"
        else:
            assert r["bound"] == "memory"
            assert r["fraction"] == pytest.approx(r["gbytes"] / l2)
            assert r["against"] == "L2"


def test_table_lists_every_row(report):
    text = kernels.format_kernel_table(report)
    assert f"kernel level {report['level']}" in text.splitlines()[0]
    assert "FMA peak" in text.splitlines()[1]
    body = [line for line in text.splitlines() if line.startswith("| train_small")
            or line.startswith("| stream_b1")]
    assert len(body) == len(report["rows"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="cases"):
        kernels.kernel_report(0.01, ["nope"])
    with pytest.raises(ValueError, match="seconds_per_row"):
        kernels.kernel_report(0, ["train_small"])
    from fastlstm import _core
    with pytest.raises(ValueError, match="unknown case 'x'"):
        _core.kernel_bench(0.01, ["x"])
    with pytest.raises(ValueError, match="seconds_per_row"):
        _core.kernel_bench(-1.0, [])


def test_cli_kernels(tmp_path, capsys):
    path = tmp_path / "k.json"
    code = bench.main(["--kernels", "--quick", "--scale", "0.05", "--cases",
                       "stream_b1,step_py", "--json", str(path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "| stream_b1 | step W_hh |" in out
    assert "step_py" not in out.split("\n", 3)[-1]  # not a kernel case: left out
    doc = json.loads(path.read_text())
    assert doc["schema"] == "fastlstm-bench-kernels/1"
    assert {r["case"] for r in doc["report"]["rows"]} == {"stream_b1"}
    assert bench.main(["--kernels", "--cases", "step_py"]) == 2
    assert sys.stdout is not None
