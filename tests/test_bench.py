"""The benchmark harness (fastlstm.bench) on tiny cases, fastlstm only: structure, not speed."""

import json
import sys

import numpy as np
import pytest

from fastlstm import bench

TINY = ["--quick", "--scale", "0.05", "--no-peers", "--min-sample", "0.005"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One run of every case (scaled to 5%) with the memory report and the threads scan."""
    path = tmp_path_factory.mktemp("bench") / "out.json"
    argv = TINY + ["--cases", ",".join(bench.CASES), "--memory", "--threads-scan",
                   "--threads", "1", "--json", str(path)]
    capture = pytest.MonkeyPatch()
    out = []
    capture.setattr(sys, "stdout", _Tee(out))
    try:
        code = bench.main(argv)
    finally:
        capture.undo()
    with open(path) as f:
        return code, json.load(f), "".join(out)


class _Tee:
    def __init__(self, sink):
        self.sink = sink

    def write(self, s):
        self.sink.append(s)
        return len(s)

    def flush(self):
        pass


def test_json_structure(tiny_run):
    code, doc, _ = tiny_run
    assert code == 0
    assert doc["schema"] == "fastlstm-bench/1"
    m = doc["machine"]
    for key in ("cpu_model", "threads", "fastlstm", "build_info", "torch", "onnxruntime",
                "numpy", "python"):
        assert key in m
    assert m["threads"] == 1
    assert doc["settings"]["repeats"] == 3
    assert doc["settings"]["cases"] == list(bench.CASES)
    assert doc["skipped"] == []


def test_results_one_per_case_positive_medians(tiny_run):
    _, doc, _ = tiny_run
    results = doc["results"]
    assert [r["case"] for r in results] == list(bench.CASES)
    for r in results:
        case = bench.CASES[r["case"]].scaled(0.05)
        assert r["impl"] == "fastlstm"
        assert (r["B"], r["T"], r["I"], r["H"], r["layers"]) == (
            case.B, case.T, case.I, case.H, case.layers)
        assert r["repeats"] == 3 and len(r["times_ms"]) == 3
        assert all(t > 0 for t in r["times_ms"])
        assert r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["median_ms"] > 0 and r["gflops"] > 0
        assert r["gflops"] == pytest.approx(r["flop"] / (r["median_ms"] * 1e-3) / 1e9)
        assert r["ratio_fastlstm_to_impl"] == 1.0


def test_table_threads_scan_and_memory(tiny_run):
    _, doc, out = tiny_run
    for name in bench.CASES:
        assert name in out
    scan = doc["threads_scan"]
    assert set(scan["cases"]) == set(bench.SCAN_CASES)
    for e in scan["cases"].values():
        assert e["speedup"] > 0 and all(v > 0 for v in e["median_ms"].values())
    mem = doc["memory"]
    assert mem["case"] == bench.MEMORY_CASE
    assert mem["fastlstm_formula"]["kept_bytes"] > 0
    measured = mem["measured"]["fastlstm"]
    assert "error" not in measured, measured
    assert isinstance(measured["rss_delta_bytes"], int) and measured["rss_delta_bytes"] >= 0


def test_flop_formula():
    # bench/README.md: per layer 2*B*T*4H*(I_layer + H), x3 for training
    assert bench.CASES["batch_inf"].flop() == (2 * 64 * 100 * 2048 * (128 + 512)
                                               + 2 * 64 * 100 * 2048 * (512 + 512))
    assert bench.CASES["train_small"].flop() == 3 * 2 * 32 * 50 * 1024 * (128 + 256)
    assert bench.CASES["step_py"].flop() == 2 * 1024 * (64 + 256)


def test_memory_formula_small_case():
    case = bench.Case("x", B=2, T=3, I=5, H=7, layers=2, kind="training", description="")
    # per layer: gates N*4H + h and c over T+1 steps + kept layer input N*I_layer; N = 6
    layer0 = 6 * 28 + 4 * 2 * (7 + 7) + 6 * 5
    layer1 = 6 * 28 + 4 * 2 * (7 + 7) + 6 * 7
    got = bench.engine_memory_bytes(case)
    assert got["kept_bytes"] == 4 * (layer0 + layer1)
    assert got["kept_floats_per_row"] == (28 + 7 + 7 + 5) + (28 + 7 + 7 + 7)


class _Recorder(bench.peers.Runner):
    def __init__(self, name, log):
        super().__init__(lambda: log.append(name))


def test_measure_interleaves_implementations():
    log = []
    runners = {"a": _Recorder("a", log), "b": _Recorder("b", log)}
    times, number, repeats, note = bench.timing.measure("t", runners, repeats=4, warmup=1,
                                                        min_sample_s=0.0, budget_s=None,
                                                        progress=False)
    assert number == {"a": 1, "b": 1} and repeats == 4 and note is None
    # warm-up, then per round each implementation's untimed settle call and its sample
    assert log == ["a", "b"] + ["a", "a", "b", "b"] * 4
    assert len(times["a"]) == len(times["b"]) == 4


def test_measure_budget_drops_rounds(monkeypatch):
    clock = iter(range(10**6))  # every perf_counter() call advances one second
    monkeypatch.setattr(bench.timing.time, "perf_counter", lambda: float(next(clock)))
    runners = {"a": bench.peers.Runner(lambda: None), "b": bench.peers.Runner(lambda: None)}
    times, _, repeats, note = bench.timing.measure("t", runners, repeats=7, warmup=1,
                                                   min_sample_s=0.0, budget_s=2.0,
                                                   progress=False)
    assert repeats == 3 and len(times["a"]) == 3
    assert "3 repeats instead of 7" in note


def _fail_check():
    raise RuntimeError("could not create a primitive descriptor\nsecond line")


def test_failing_peer_is_dropped_and_reported():
    """A peer whose first call raises (PyTorch's bf16 LSTM on a CPU without bf16) is left out
    of the run and listed as skipped with its error; the others are still compared."""
    Runner = bench.peers.Runner
    runners = {"fastlstm": Runner(lambda: None, check=lambda: [np.ones(3)]),
               "torch": Runner(lambda: None, check=lambda: [np.ones(3) * 1.5]),
               "torch bf16": Runner(lambda: None, check=_fail_check)}
    skipped = []
    diffs = bench.timing._check_outputs(runners, "stream_b1", skipped)
    assert list(runners) == ["fastlstm", "torch"]
    assert diffs == {"torch": [0.5]}
    assert skipped == [{"case": "stream_b1", "impl": "torch bf16",
                        "reason": "RuntimeError: could not create a primitive descriptor"}]
    # fastlstm's own rows are never dropped: their failure is the benchmark's
    runners["fastlstm bf16"] = Runner(lambda: None, check=_fail_check)
    with pytest.raises(RuntimeError, match="primitive descriptor"):
        bench.timing._check_outputs(runners, "stream_b1", [])


def test_list_and_bad_arguments(capsys):
    assert bench.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in bench.CASES:
        assert name in out
    with pytest.raises(SystemExit):
        bench.main(["--cases", "stream_b1,nope"])
    assert "--cases must be a comma-separated subset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--threads", "0"])
    assert "--threads" in capsys.readouterr().err


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert bench.main(TINY + ["--cases", "step_py", "--plot", "x.png"]) == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err


def test_fit_overhead_reports_both_timings(tmp_path):
    """--fit-overhead times Sequential.fit and the bare engine on the same shapes (no timing
    assertion: only that both were measured and the ratio is theirs)."""
    import json

    from fastlstm import bench

    out = tmp_path / "fit.json"
    assert bench.main(["--quick", "--scale", "0.05", "--no-peers", "--cases", "train_small",
                       "--fit-overhead", "--json", str(out)]) == 0
    fit = json.loads(out.read_text())["fit_overhead"]
    assert fit["fit_ms_per_batch"] > 0 and fit["engine_ms_per_batch"] > 0
    assert abs(fit["ratio"] - fit["fit_ms_per_batch"] / fit["engine_ms_per_batch"]) < 1e-9


def test_fit_breakdown_parts_add_up():
    """The fit batch's parts (engine forward/backward, loss, optimizer) are measured from the
    calls themselves, the rest is what is left of the epoch's time (no timing assertion)."""
    from fastlstm.bench.timing import fit_breakdown

    r = fit_breakdown(4, 3, 2, 5, batches=3, repeats=2)
    parts = r["parts_ms"]
    assert parts["engine_forward"] > 0 and parts["engine_backward"] > 0
    assert parts["loss"] > 0 and parts["optimizer"] > 0
    assert sum(parts.values()) == pytest.approx(r["total_ms"])
    assert parts["rest"] > 0  # the graph walk and the layers' Python are not in the parts


def test_readme_case_table_is_the_package_s(repo_root):
    """bench/README.md's case table and fastlstm.bench.CASES say the same thing."""
    import os

    with open(os.path.join(repo_root, "bench", "README.md"), encoding="utf-8") as f:
        text = f.read()
    table = text[text.index("| name | B | T | I | H | layers |"):].split("\n\n")[0]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = tuple(int(v) for v in cells[1:6])
    assert rows == {n: (c.B, c.T, c.I, c.H, c.layers) for n, c in bench.CASES.items()}


# ------------------------------------------------------------------------------ --stream
def test_stream_bench_reports_every_case(tmp_path, capsys):
    """The C++ streaming benchmark installed with the package: every case, both streams, the
    floors, and the same bits from Stream<float> and Model::Stream (checked by the program)."""
    from fastlstm.bench import stream

    if stream.executable() is None:
        pytest.fail("stream_bench is not installed with the package (fastlstm/bin)")
    path = tmp_path / "stream.json"
    code = bench.main(["--stream", "--quick", "--steps", "200", "--json", str(path)])
    assert code == 0
    with open(path) as f:
        doc = json.load(f)
    got = {(c["cell"], c["I"], c["H"]) for c in doc["cases"]}
    want = {(cell, 1, h) for cell in ("lstm", "gru") for h in (1, 8, 16, 32, 64, 128)}
    want |= {("lstm", 64, 256), ("gru", 64, 256)}
    assert got == want
    for c in doc["cases"]:
        assert c["same_bits"] is True
        assert c["bare_ns"] > 0 and c["model_ns"] > 0
        assert c["latency_floor_ns"] > 0 and c["bandwidth_floor_ns"] > 0
        gates = 4 if c["cell"] == "lstm" else 3
        assert c["weight_bytes"] == 4 * gates * c["H"] * (c["I"] + c["H"])
    assert doc["machine"]["cpu_model"] is not None
    out = capsys.readouterr().out
    assert doc["activation_pair_ns"] > 0
    assert doc["l1_read_gbs"] > 0 and doc["l2_read_gbs"] > 0  # the measured read bandwidths
    assert "Model::Stream" in out and "lat floor" in out and "GB/s" in out


def test_stream_bench_precisions(tmp_path, capsys):
    """--stream --precision: every case in float32 (always) and again in bf16 and int8 (the
    bare stream of that precision and Model::Stream quantized on load give the same bits),
    floors from their weight bytes."""
    from fastlstm.bench import stream

    if stream.executable() is None:
        pytest.fail("stream_bench is not installed with the package (fastlstm/bin)")
    path = tmp_path / "stream.json"
    code = bench.main(["--stream", "--quick", "--steps", "100", "--precision", "bf16,int8",
                       "--json", str(path)])
    assert code == 0
    with open(path) as f:
        doc = json.load(f)
    by_prec = {}
    for c in doc["cases"]:
        by_prec.setdefault(c["precision"], set()).add((c["cell"], c["I"], c["H"]))
        assert c["same_bits"] is True
        assert c["bare_ns"] > 0 and c["model_ns"] > 0
        gates = 4 if c["cell"] == "lstm" else 3
        per = {"float32": 4, "bf16": 2, "int8": 1}[c["precision"]]
        assert c["weight_bytes"] == per * gates * c["H"] * (c["I"] + c["H"])
    assert set(by_prec) == {"float32", "bf16", "int8"}
    assert by_prec["float32"] == by_prec["bf16"] == by_prec["int8"]
    assert len(by_prec["bf16"]) == 14
    out = capsys.readouterr().out
    assert " bf16 " in out and " int8 " in out


def test_stream_bench_missing_program_is_a_clear_error(monkeypatch, capsys):
    from fastlstm.bench import stream

    monkeypatch.setattr(stream, "executable", lambda: None)
    assert bench.main(["--stream"]) == 2
    assert "stream_bench" in capsys.readouterr().err


def test_precision_rows(tmp_path):
    """--precision adds fastlstm's quantized inference rows (no training rows), checked
    against fastlstm float32 on the same weights."""
    path = tmp_path / "p.json"
    code = bench.main(TINY + ["--cases", "stream_b1,train_small,step_py", "--precision",
                              "int8,bf16", "--threads", "1", "--no-memory", "--json", str(path)])
    assert code == 0
    with open(path) as f:
        doc = json.load(f)
    impls = {(r["case"], r["impl"]) for r in doc["results"]}
    for case in ("stream_b1", "step_py"):
        assert {(case, "fastlstm bf16"), (case, "fastlstm int8")} <= impls
    assert not any(i.startswith("fastlstm ") for c, i in impls if c == "train_small")
    assert doc["settings"]["precision"] == ["float32", "bf16", "int8"]
    for r in doc["results"]:
        if r["impl"] in ("fastlstm bf16", "fastlstm int8"):
            assert r["ratio_to_torch_float32"] is None  # --no-peers
            assert r["median_ms"] > 0


def test_precision_argument_checked():
    with pytest.raises(SystemExit):
        bench.main(TINY + ["--precision", "fp16"])


def test_small_grid(tmp_path, capsys):
    """--small-grid: a row per shape (the issue's three and the B x T x H grid, here scaled),
    the thread count the engine chose (1 below its work thresholds: a scaled grid is all below),
    the 2 / 1 threads ratio and the fit step; structure, not speed."""
    from fastlstm.bench.small import GRID_SHAPES, ISSUE_SHAPES

    path = tmp_path / "g.json"
    code = bench.main(["--small-grid", "--quick", "--scale", "0.25", "--no-peers",
                       "--min-sample", "0.002", "--threads", "2", "--json", str(path)])
    assert code == 0
    with open(path) as f:
        doc = json.load(f)
    assert doc["schema"] == "fastlstm-bench-small-grid/1"
    scaled = {tuple(max(1, round(v * 0.25)) for v in s) for s in ISSUE_SHAPES + GRID_SHAPES}
    assert {(r["B"], r["T"], r["I"], r["H"]) for r in doc["rows"]} == scaled
    for r in doc["rows"]:
        assert r["threads_chosen"] == 1
        assert r["ms_1"] > 0 and r["ms_n"] > 0 and r["ms_torch"] is None
        assert r["ratio_n_to_1"] == pytest.approx(r["ms_n"] / r["ms_1"])
    fit = doc["fit_step"]
    assert (fit["B"], fit["T"], fit["I"], fit["H"]) == (8, 2, 2, 16)
    assert fit["fit_ms"] > 0 and fit["engine_ms"] > 0 and fit["keras_ms"] is None
    assert set(fit["fit_parts_ms"]) == {"engine_forward", "engine_backward", "loss",
                                        "optimizer", "rest"}
    out = capsys.readouterr().out
    assert "| B, T, I, H | threads chosen |" in out and "worst 2 / 1 threads" in out
    assert "Sequential.fit step at 8, 2, 2, 16" in out
