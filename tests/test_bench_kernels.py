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
    assert peak > 0 and rows == 2


def test_rows_per_case_and_kernel(report):
    got = [(r["case"], r["kernel"]) for r in report["rows"]]
    assert ("stream_b1", "step W_hh") in got
    assert ("stream_b1", "cell pass (LSTM)") in got
    for k in ("step W_hh", "input proj (per step)", "dh", "dW_hh", "dW_ih", "d_x (chunk)"):
        assert ("train_small", k) in got
    # the shapes are train_small's (B 32, T 50, I 128, H 256; gates 4H)
    shapes = {r["kernel"]: (r["M"], r["N"], r["K"]) for r in report["rows"]
              if r["case"] == "train_small"}
    assert shapes["step W_hh"] == (32, 1024, 256)
    assert shapes["dh"] == (32, 256, 1024)
    assert shapes["dW_hh"] == (1024, 256, 1600)
    assert shapes["dW_ih"] == (1024, 128, 1600)


def test_rates_follow_from_times(report):
    peak, l2 = report["fma_peak_gflops"], report["l2_gbytes"]
    for r in report["rows"]:
        assert r["seconds"] > 0
        if r["bound"] == "compute":
            assert r["gflops"] == pytest.approx(2 * r["M"] * r["N"] * r["K"] / r["seconds"] * 1e-9)
            assert r["fraction"] == pytest.approx(r["gflops"] / peak)
            assert r["against"] == "FMA peak"
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
