"""The benchmark suite: ``fastlstm bench``, ``python -m fastlstm.bench``, ``python bench/run.py``.

The cases are those of the project's BENCH.md, by the same names, so figures compare across
commits. Each case runs fastlstm and the peers that are installed (PyTorch, ONNX Runtime; the
NumPy reference with ``--reference``) at the same thread count, **interleaved** (A B C A B C
...) so that the drift of a shared machine hits every implementation alike, and reports the
median of the repeats, GFLOP/s and the time ratio fastlstm/peer.

FLOPs (matrix products only, BENCH.md): per layer ``2*B*T*4H*(I_layer + H)``, times 3 for
training (forward + the two products of backward).

What one timed call is:

* inference cases: ``lstm(x)`` (no activations kept); PyTorch ``module(x)`` under
  ``torch.no_grad()``; ONNX Runtime ``session.run`` of the exported ``torch.nn.LSTM``.
* training cases: ``lstm.forward(x, train=True)`` + ``lstm.backward(d_output)`` with
  ``d_output = ones`` (the gradient of ``sum(output)``, allocated once outside the timing);
  PyTorch ``module.zero_grad(set_to_none=True); module(x)[0].sum().backward()`` with
  ``x.requires_grad`` so that both compute d_x and every parameter gradient.
* ``step_py``: one Python call per time step with the state carried, over a pre-made sequence
  of ``--steps`` steps (the time reported is per step): ``stream.step(x_t)`` against
  ``torch.nn.LSTMCell`` under ``torch.no_grad()``.

Peers that are not installed are reported as ``-``, never an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

__all__ = ["CASES", "Case", "add_arguments", "run", "main", "engine_memory_bytes"]


# ===================================================================================== cases
@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    B: int
    T: int
    I: int  # noqa: E741 - the shape letter of the house style
    H: int
    layers: int
    kind: str  # "inference" | "training" | "step"
    description: str

    def flop(self):
        """FLOPs of one timed unit (one call; one step for kind 'step'), BENCH.md's formula."""
        total = 0
        for layer in range(self.layers):
            i_layer = self.I if layer == 0 else self.H
            total += 2 * self.B * self.T * 4 * self.H * (i_layer + self.H)
        return total * (3 if self.kind == "training" else 1)

    def scaled(self, scale):
        """The same case with B, T, I, H multiplied by ``scale`` (at least 1): for quick tests."""
        if scale == 1.0:
            return self
        f = lambda v: max(1, int(round(v * scale)))  # noqa: E731
        return dataclasses.replace(self, B=f(self.B), T=f(self.T), I=f(self.I), H=f(self.H))

    def shape(self):
        return dict(B=self.B, T=self.T, I=self.I, H=self.H, layers=self.layers)


CASES = {
    c.name: c
    for c in (
        Case("stream_b1", 1, 1000, 64, 256, 1, "inference", "whole sequence in one call"),
        Case("batch_inf", 64, 100, 128, 512, 2, "inference", "batched inference"),
        Case("large_fwd", 128, 200, 512, 1024, 1, "inference", "large inference"),
        Case("train_small", 32, 50, 128, 256, 1, "training", "forward + backward"),
        Case("train_large", 64, 100, 256, 512, 2, "training", "forward + backward"),
        Case("step_py", 1, 1, 64, 256, 1, "step",
             "one Python call per step, state carried (peer torch.nn.LSTMCell)"),
    )
}

#: the NumPy reference is slow: it runs (with --reference) on these cases only
REFERENCE_CASES = ("stream_b1", "train_small")
#: --quick without --cases leaves out large_fwd (~1.3 s per PyTorch call, ~3x that in all)
QUICK_CASES = tuple(n for n in CASES if n != "large_fwd")
#: the cases of --threads-scan
SCAN_CASES = ("batch_inf", "train_large")
#: the case whose forward + backward memory is reported
MEMORY_CASE = "train_large"
#: max/min of a result's repeats above which the output flags it as noisy
NOISY_SPREAD = 1.5


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


# ================================================================================== threads
def default_threads():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def set_fastlstm_threads(n):
    """Sets fastlstm's thread count if this build can (``fastlstm.set_num_threads``)."""
    import fastlstm

    fn = getattr(fastlstm, "set_num_threads", None)
    if fn is None:
        return False
    fn(int(n))
    return True


# ============================================================================ implementations
class Runner:
    """One implementation on one case.

    ``call()`` is the timed unit of work; ``units`` is how many reported units one call holds
    (steps, for step_py); ``before()`` runs untimed before each sample (thread settings);
    ``check()`` returns arrays compared against fastlstm's once, untimed."""

    def __init__(self, call, units=1, before=None, check=None):
        self.call, self.units, self.before, self.check = call, units, before, check


def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


def _make_models(case, torch, seed=0):
    """fastlstm module and (when torch is installed) a torch module with the same weights."""
    import fastlstm

    tmod = None
    if torch is not None:
        torch.manual_seed(seed)
        if case.kind == "step":
            tmod = torch.nn.LSTMCell(case.I, case.H)
            lstm = fastlstm.LSTM(case.I, case.H, 1)
            lstm.load_state_dict({f"{k}_l0": v for k, v in tmod.state_dict().items()})
        else:
            tmod = torch.nn.LSTM(case.I, case.H, case.layers)
            lstm = fastlstm.LSTM.from_torch(tmod)
    else:
        lstm = fastlstm.LSTM(case.I, case.H, case.layers, seed=seed)
    return lstm, tmod


def _fastlstm_runner(case, lstm, data):
    x = data.get("x")
    if case.kind == "inference":
        return Runner(lambda: lstm(x), check=lambda: [lstm(x)[0]])
    if case.kind == "training":
        d_out = np.ones((case.T, case.B, case.H), dtype=np.float32)

        def call():
            lstm.forward(x, train=True)
            lstm.backward(d_out)

        def check():
            out, _ = lstm.forward(x, train=True)
            d_x, _ = lstm.backward(d_out)
            return [out, d_x, lstm.grads["weight_hh_l0"].copy()]

        return Runner(call, check=check)
    # step: the stream reads the module's parameters; the state is carried across steps
    stream = lstm.stream(batch=1)
    xs = data["x_steps"]  # [steps, 1, I]

    def run_steps():
        stream.reset()
        step = stream.step
        y = None
        for t in range(xs.shape[0]):
            y = step(xs[t])
        return y

    return Runner(run_steps, units=xs.shape[0], check=lambda: [run_steps()])


def _torch_runner(case, torch, tmod, data, threads):
    torch.set_num_threads(threads)
    if case.kind == "inference":
        x = torch.from_numpy(data["x"])

        def call():
            with torch.no_grad():
                return tmod(x)

        return Runner(call, check=lambda: [call()[0].numpy()])
    if case.kind == "training":
        x = torch.from_numpy(data["x"].copy()).requires_grad_(True)

        def call():
            tmod.zero_grad(set_to_none=True)
            x.grad = None
            out, _ = tmod(x)
            out.sum().backward()
            return out

        def check():
            out = call()
            return [out.detach().numpy(), x.grad.numpy(), tmod.weight_hh_l0.grad.numpy().copy()]

        return Runner(call, check=check)
    xs = torch.from_numpy(data["x_steps"])

    def run_steps():
        with torch.no_grad():
            h, c = tmod(xs[0])
            for t in range(1, xs.shape[0]):
                h, c = tmod(xs[t], (h, c))
        return h

    return Runner(run_steps, units=xs.shape[0], check=lambda: [run_steps().numpy()])


def _ort_runner(case, torch, ort, tmod, data, threads, tmpdir):
    """Exports the torch module (TorchScript exporter, ``dynamo=False``) and runs it in ORT."""
    import contextlib
    import io

    path = os.path.join(tmpdir, f"{case.name}.onnx")
    x = data["x"]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(tmod, (torch.from_numpy(x),), path, dynamo=False,
                          input_names=["x"], output_names=["y", "h_n", "c_n"])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feed = {"x": x}
    return Runner(lambda: sess.run(["y"], feed), check=lambda: [sess.run(["y"], feed)[0]])


def _reference_runner(case, lstm, data):
    from . import reference

    params = {k: np.array(v) for k, v in lstm.params.items()}
    x = data["x"]
    if case.kind == "inference":
        fwd = lambda: reference.lstm_forward(params, x, num_layers=case.layers)  # noqa: E731
        return Runner(fwd, check=lambda: [fwd()[0]])
    d_out = np.ones((case.T, case.B, case.H))

    def call():
        out, _, _, cache = reference.lstm_forward(params, x, num_layers=case.layers)
        return out, reference.lstm_backward(cache, d_out)

    def check():
        out, (d_x, _, _, grads) = call()
        return [out, d_x, grads["weight_hh_l0"]]

    return Runner(call, check=check)


# =============================================================================== measurement
def _time_sample(runner, number):
    if runner.before is not None:
        runner.before()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(number):
            runner.call()
        dt = time.perf_counter() - t0
    finally:
        if gc_was:
            gc.enable()
    return dt


def measure(case_name, runners, repeats, warmup, min_sample_s, budget_s, progress=True):
    """Interleaved timing of ``runners`` ({impl: Runner}).

    Warm-up calls first (their time calibrates how many calls make one sample of at least
    ``min_sample_s`` seconds), then ``repeats`` rounds of one sample per implementation in
    turn, each sample preceded by one untimed call of the same implementation: a library's
    idle threads keep spinning for a while after its call (PyTorch's OpenMP workers slowed the
    next fastlstm call 2x, measured), and that time belongs to nobody's sample. Rounds beyond
    what fits in ``budget_s`` are dropped (never below 3, or ``repeats`` if smaller). Returns
    ({impl: [seconds per unit, one per repeat]}, {impl: calls per sample}, repeats actually
    run, note or None)."""
    number, est_round = {}, 0.0
    for impl, r in runners.items():
        t = 0.0
        for _ in range(max(1, warmup)):
            t = _time_sample(r, 1)
        number[impl] = max(1, min(10000, math.ceil(min_sample_s / max(t, 1e-9))))
        est_round += t * number[impl]
    note = None
    if budget_s and repeats * est_round > budget_s:
        fit = max(min(3, repeats), int(budget_s // max(est_round, 1e-9)))
        if fit < repeats:
            note = (f"{fit} repeats instead of {repeats} (one round takes ~{est_round:.1f} s; "
                    f"--budget {budget_s:g} s per case)")
            repeats = fit
    times = {impl: [] for impl in runners}
    for rep in range(repeats):
        parts = []
        for impl, r in runners.items():
            gc.collect()
            _time_sample(r, 1)  # settle: absorbs the previous implementation's idle threads
            dt = _time_sample(r, number[impl]) / number[impl] / r.units
            times[impl].append(dt)
            parts.append(f"{impl} {_fmt_ms(dt * 1e3)} ms")
        if progress:
            _log(f"  [{case_name}] repeat {rep + 1}/{repeats}: " + ", ".join(parts))
    return times, number, repeats, note


def _max_diffs(ref_arrays, arrays):
    out = []
    for a, b in zip(ref_arrays, arrays):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            out.append(None)
        else:
            out.append(float(np.max(np.abs(a - b))) if a.size else 0.0)
    return out


def _check_outputs(runners):
    """Max |fastlstm - peer| of each compared array (output; for training also d_x and the
    gradient of weight_hh_l0): a benchmark that also says whether the peers computed the same
    thing. The peers share fastlstm's weights when PyTorch is installed."""
    ref = runners["fastlstm"].check()
    diffs = {}
    for impl, r in runners.items():
        if impl != "fastlstm" and r.check is not None:
            diffs[impl] = _max_diffs(ref, r.check())
    return diffs


def _result(case, impl, times, number, threads, diffs=None):
    med = statistics.median(times)
    return {
        "case": case.name,
        "impl": impl,
        "kind": case.kind,
        **case.shape(),
        "threads": threads,
        "repeats": len(times),
        "calls_per_sample": number,
        "times_ms": [t * 1e3 for t in times],
        "median_ms": med * 1e3,
        "min_ms": min(times) * 1e3,
        "max_ms": max(times) * 1e3,
        "flop": case.flop(),
        "gflops": case.flop() / med / 1e9,
        "spread": max(times) / min(times),
        "max_abs_diff_vs_fastlstm": diffs,
    }


def run_case(case, args, threads, tmpdir, torch, ort, progress=True):
    """Builds every implementation of ``case``, times them interleaved, returns
    (results, skipped, note)."""
    data_rng = np.random.default_rng(1234)
    data = {}
    if case.kind == "step":
        data["x_steps"] = data_rng.standard_normal((args.steps, 1, case.I), dtype=np.float32)
    else:
        data["x"] = data_rng.standard_normal((case.T, case.B, case.I), dtype=np.float32)
    use_torch = torch if args.peers else None
    lstm, tmod = _make_models(case, use_torch)
    runners = {"fastlstm": _fastlstm_runner(case, lstm, data)}
    skipped = []
    if args.peers:
        if torch is None:
            skipped.append({"case": case.name, "impl": "torch", "reason": "not installed"})
        else:
            runners["torch"] = _torch_runner(case, torch, tmod, data, threads)
        if case.kind == "inference":
            if ort is None or torch is None:
                why = "not installed" if ort is None else "needs torch for the ONNX export"
                skipped.append({"case": case.name, "impl": "onnxruntime", "reason": why})
            else:
                try:
                    runners["onnxruntime"] = _ort_runner(case, torch, ort, tmod, data, threads,
                                                         tmpdir)
                except Exception as e:  # noqa: BLE001 - a failed export is reported, not fatal
                    skipped.append({"case": case.name, "impl": "onnxruntime",
                                    "reason": f"export failed: {type(e).__name__}: {e}"})
    if args.reference and case.name in REFERENCE_CASES:
        runners["reference"] = _reference_runner(case, lstm, data)

    diffs = _check_outputs(runners) if len(runners) > 1 else {}
    times, number, _, note = measure(case.name, runners, args.repeats, args.warmup,
                                     args.min_sample, args.budget, progress)
    results = [_result(case, impl, times[impl], number[impl], threads, diffs.get(impl))
               for impl in runners]
    base = next(r["median_ms"] for r in results if r["impl"] == "fastlstm")
    for r in results:
        r["ratio_fastlstm_to_impl"] = base / r["median_ms"]
        r["note"] = note
    return results, skipped, note


# ============================================================================ threads scan
def threads_scan(cases, args, n):
    """fastlstm alone at 1 and at n threads, interleaved in one process when fastlstm has
    ``set_num_threads``; otherwise one subprocess per count with OMP_NUM_THREADS and
    FASTLSTM_NUM_THREADS set (not interleaved: noisier)."""
    import fastlstm

    out = {"threads": [1, n], "cases": {}, "method": None}
    if hasattr(fastlstm, "set_num_threads"):
        out["method"] = "in-process fastlstm.set_num_threads, interleaved"
        for case in cases:
            _log(f"threads scan: {case.name} at 1 and {n} threads")
            data = {"x": np.random.default_rng(1234).standard_normal(
                (case.T, case.B, case.I), dtype=np.float32)}
            lstm, _ = _make_models(case, None)
            base = _fastlstm_runner(case, lstm, data)
            runners = {
                f"fastlstm@{k}": Runner(base.call, before=(lambda k=k: set_fastlstm_threads(k)))
                for k in (1, n)
            }
            times, _, _, note = measure(case.name, runners, args.repeats, args.warmup,
                                        args.min_sample, args.budget)
            med = {k: statistics.median(times[f"fastlstm@{k}"]) * 1e3 for k in (1, n)}
            out["cases"][case.name] = _scan_entry(med, n, note)
        set_fastlstm_threads(n)
        return out
    out["method"] = ("subprocess per thread count (OMP_NUM_THREADS, FASTLSTM_NUM_THREADS): "
                     "fastlstm has no set_num_threads")
    per_k = {}
    for k in (1, n):
        _log(f"threads scan: subprocess at {k} thread(s)")
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "scan.json")
            cmd = [sys.executable, "-m", "fastlstm.bench", "--no-peers", "--no-memory",
                   "--cases", ",".join(c.name for c in cases), "--threads", str(k),
                   "--repeats", str(args.repeats), "--warmup", str(args.warmup),
                   "--min-sample", str(args.min_sample), "--budget", str(args.budget),
                   "--scale", str(args.scale), "--json", path]
            env = dict(os.environ, OMP_NUM_THREADS=str(k), FASTLSTM_NUM_THREADS=str(k))
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
            with open(path) as f:
                per_k[k] = {r["case"]: r["median_ms"] for r in json.load(f)["results"]}
    for case in cases:
        out["cases"][case.name] = _scan_entry({k: per_k[k][case.name] for k in (1, n)}, n, None)
    return out


def _scan_entry(med, n, note):
    return {"median_ms": {str(k): v for k, v in med.items()},
            "speedup": med[1] / med[n], "note": note}


# ================================================================================== memory
def engine_memory_bytes(case, itemsize=4, proj_size=0, directions=1):
    """What fastlstm's training forward keeps for backward, from the engine's storage.

    Per layer and direction, for every (t, b): the post-activation gates (G = 4H floats), the
    cell state c (H) and the state h (S = proj_size or H), plus H for the unprojected h of a
    projected LSTM; h and c also keep one initial row ((T+1) rows). Per layer, the layer input
    as the backward reads it (I_layer floats per (t, b): layer 0 keeps a copy of x, layer k > 0
    the previous layer's output, D*S). The workspace of the call (input projection, reused for
    the gate gradients in user order, and the gate gradients in step order, [N, G] each,
    N = T*B; the inner layers' input gradient, [N, D*S]; packed copies for the weight-gradient
    products) and the returned arrays (output, d_x) come on top; they are estimated
    separately."""
    B, T, H, L, D = case.B, case.T, case.H, case.layers, directions
    S = proj_size or H
    G, N = 4 * H, case.B * case.T
    kept = 0
    per_row = 0
    for layer in range(L):
        i_layer = case.I if layer == 0 else D * S
        per_dir = G + H + S + (H if proj_size else 0)
        per_row += D * per_dir + i_layer
        kept += D * (N * G + (T + 1) * B * (S + H) + (N * H if proj_size else 0)) + N * i_layer
    # [N, G] input projection (reused for d_x in backward), [N, G] gate gradients in step order,
    # [N, S] projected-h gradients (LSTMP), the inner layers' input gradients (two [N, D*S]),
    # and the weight-gradient kernels' packed copies of the layer input and h (and h_raw)
    pad = lambda n: -(-n // 32) * 32  # noqa: E731 - panels of 32 columns
    max_in = max(pad(case.I if layer == 0 else D * S) for layer in range(L))
    workspace = (2 * N * G + (N * S if proj_size else 0) + min(L - 1, 2) * N * D * S
                 + N * max_in + N * pad(S) + (N * pad(H) if proj_size else 0))
    returned = N * D * S + N * case.I
    return {
        "formula": "per layer/direction G + H + S (+H with projection) floats per (t, b), "
                   "plus I_layer per layer for the kept layer input",
        "kept_floats_per_row": per_row,
        "kept_bytes_per_time_step": per_row * B * itemsize,
        "kept_bytes": kept * itemsize,
        "workspace_bytes_estimate": workspace * itemsize,
        "returned_bytes": returned * itemsize,
    }


def _rss_kib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _memory_child(impl, dims, threads):
    """Runs in a fresh process: the growth of peak RSS over one forward + backward."""
    import resource

    B, T, I, H, L = dims
    case = Case("memory", B, T, I, H, L, "training", "")
    data = {"x": np.random.default_rng(0).standard_normal((T, B, I), dtype=np.float32)}
    if impl == "fastlstm":
        set_fastlstm_threads(threads)
        lstm, _ = _make_models(case, None)
        runner = _fastlstm_runner(case, lstm, data)
    else:
        torch = _import_torch()
        _, tmod = _make_models(case, torch)
        runner = _torch_runner(case, torch, tmod, data, threads)
    gc.collect()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    rss_before = _rss_kib("VmRSS")
    method = "getrusage ru_maxrss growth (a lower bound: earlier peaks hide part of it)"
    try:  # resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        if _rss_kib("VmHWM") is not None and rss_before is not None:
            method = "VmHWM after reset (/proc/self/clear_refs) minus VmRSS before"
    except OSError:
        pass
    runner.call()
    if method.startswith("VmHWM"):
        delta = _rss_kib("VmHWM") - rss_before
    else:
        delta = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - maxrss_before
    print(json.dumps({"impl": impl, "rss_delta_bytes": max(0, delta) * 1024, "method": method}))


def memory_report(case, threads, with_torch):
    """Formula for fastlstm plus measured peak-RSS growth for fastlstm (and torch) around one
    training call, each in a fresh subprocess."""
    rep = {"case": case.name, **case.shape(), "fastlstm_formula": engine_memory_bytes(case),
           "measured": {}}
    impls = ["fastlstm"] + (["torch"] if with_torch else [])
    for impl in impls:
        _log(f"memory: {impl} forward + backward on {case.name} in a fresh process")
        dims = ",".join(str(v) for v in (case.B, case.T, case.I, case.H, case.layers))
        cmd = [sys.executable, "-m", "fastlstm.bench", "--_memory-child", impl,
               "--_memory-dims", dims, "--threads", str(threads)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            rep["measured"][impl] = {"error": p.stderr.strip().splitlines()[-1:]}
            continue
        rep["measured"][impl] = json.loads(p.stdout.strip().splitlines()[-1])
    return rep


# =================================================================================== output
def _fmt_ms(ms):
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.4f}"


def _mib(b):
    return f"{b / 2**20:.1f} MiB" if abs(b) >= 2**20 else f"{b / 2**10:.1f} KiB"


def busy_cpus(interval=0.25):
    """How many CPUs other processes keep busy now (from /proc/stat over ``interval`` seconds,
    while this process waits); None where /proc/stat is missing."""

    def snapshot():
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
        return sum(v[:8]), idle

    try:
        t0, i0 = snapshot()
        time.sleep(interval)
        t1, i1 = snapshot()
    except (OSError, ValueError, IndexError):
        return None
    if t1 <= t0:
        return None
    return (1.0 - (i1 - i0) / (t1 - t0)) * (os.cpu_count() or 1)


def _loadavg():
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - not Unix
        return None


def format_table(results, skipped, order):
    head = ["case", "impl", "median ms", "min-max ms", "GFLOP/s", "fastlstm/impl", "n"]
    rows = []
    for name in order:
        for r in (x for x in results if x["case"] == name):
            unit = " /step" if r["kind"] == "step" else ""
            rows.append([name, r["impl"], _fmt_ms(r["median_ms"]) + unit,
                         f"{_fmt_ms(r['min_ms'])}-{_fmt_ms(r['max_ms'])}",
                         f"{r['gflops']:.1f}", f"{r['ratio_fastlstm_to_impl']:.2f}",
                         str(r["repeats"])])
        for s in (x for x in skipped if x["case"] == name):
            rows.append([name, s["impl"], "-", "-", "-", "-", "-"])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    line = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(head), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    return "\n".join(out)


def machine_info(threads, fastlstm_threads_set):
    import fastlstm

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_available": default_threads(),
        "threads": threads,
        "fastlstm_threads": threads if fastlstm_threads_set else
        "not set (this build has no fastlstm.set_num_threads)",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "fastlstm": fastlstm.__version__,
        "build_info": fastlstm.build_info(),
        "torch": None,
        "onnxruntime": None,
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_CORETYPE",
                                           "FASTLSTM_NUM_THREADS", "MKL_NUM_THREADS")
                if k in os.environ},
    }
    torch, ort = _import_torch(), _import_ort()
    if torch is not None:
        info["torch"] = torch.__version__
    if ort is not None:
        info["onnxruntime"] = ort.__version__
    return info


def plot(results, order, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    impls = []
    for r in results:
        if r["impl"] not in impls:
            impls.append(r["impl"])
    cases = [c for c in order if any(r["case"] == c for r in results)]
    width = 0.8 / max(1, len(impls))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cases)), 4.5))
    for k, impl in enumerate(impls):
        xs, ys = [], []
        for i, c in enumerate(cases):
            r = next((r for r in results if r["case"] == c and r["impl"] == impl), None)
            if r is not None:
                xs.append(i + (k - (len(impls) - 1) / 2) * width)
                ys.append(r["median_ms"])
        ax.bar(xs, ys, width, label=impl)
    ax.set_yscale("log")
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels([c + (" (/step)" if CASES.get(c, None) and CASES[c].kind == "step"
                             else "") for c in cases])
    ax.set_ylabel("median time, ms (log scale)")
    threads = results[0]["threads"] if results else "?"
    ax.set_title(f"fastlstm benchmark cases, {threads} thread(s), lower is better")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ====================================================================================== CLI
def _case_list(text):
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"--cases must be a comma-separated subset of {','.join(CASES)}, got {text!r}")
    return names


def _positive(kind):
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"expected a value > 0, got {text!r}")
        return v

    return parse


def add_arguments(parser):
    """The options of ``fastlstm bench`` (shared with ``python -m fastlstm.bench``)."""
    parser.add_argument("--cases", type=_case_list, default=None,
                        help=f"comma-separated cases (default: all): {','.join(CASES)}")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--threads", type=_positive(int), default=None,
                        help="threads for every implementation (default: all available CPUs)")
    parser.add_argument("--repeats", type=_positive(int), default=None,
                        help="timed rounds per case (default 7, --quick 3)")
    parser.add_argument("--warmup", type=_positive(int), default=None,
                        help="untimed calls per implementation first (default 2, --quick 1)")
    parser.add_argument("--quick", action="store_true",
                        help="3 repeats, 1 warm-up, 200 steps for step_py, no memory report, "
                             "and without --cases every case but large_fwd")
    parser.add_argument("--steps", type=_positive(int), default=None,
                        help="steps per sample of step_py (default 1000, --quick 200)")
    parser.add_argument("--min-sample", type=_positive(float), default=None,
                        help="short calls are repeated to fill samples of at least this many "
                             "seconds (default 0.05, --quick 0.02)")
    parser.add_argument("--budget", type=_positive(float), default=45.0,
                        help="seconds per case: fewer repeats (>= 3) where all would not fit; "
                             "the output says so (default 45)")
    parser.add_argument("--no-peers", dest="peers", action="store_false",
                        help="fastlstm only (no PyTorch, no ONNX Runtime)")
    parser.add_argument("--reference", action="store_true",
                        help="also time the NumPy reference (slow; only on "
                             f"{', '.join(REFERENCE_CASES)})")
    parser.add_argument("--threads-scan", action="store_true",
                        help="also time fastlstm at 1 and N threads on "
                             f"{', '.join(SCAN_CASES)} and report the speedup")
    parser.add_argument("--fit-overhead", action="store_true",
                        help="also time Sequential.fit per batch against the bare engine "
                             "forward+backward on train_small's shapes")
    parser.add_argument("--memory", dest="memory", action="store_true", default=None,
                        help=f"report forward+backward memory on {MEMORY_CASE} (default: on "
                             "unless --quick)")
    parser.add_argument("--no-memory", dest="memory", action="store_false")
    parser.add_argument("--kernels", action="store_true",
                        help="instead of the cases: the machine's FMA peak and L2/memory "
                             "bandwidth, and the float32 kernels' GFLOP/s on each case's "
                             "product shapes against them (single thread)")
    parser.add_argument("--json", metavar="FILE", help="write every result and machine info")
    parser.add_argument("--plot", metavar="FILE.png", help="grouped bar chart (matplotlib)")
    parser.add_argument("--scale", type=_positive(float), default=1.0,
                        help="multiply B, T, I, H of every case (for tests; 1 = BENCH.md)")
    parser.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    parser.add_argument("--_memory-dims", dest="memory_dims", help=argparse.SUPPRESS)
    return parser


def fit_overhead(case, repeats, batches=16):
    """Time per batch of ``Sequential.fit`` (LSTM with return_sequences, MSE, Adam: the whole
    training layer) against the engine's bare forward + backward on the same shapes,
    interleaved, medians of ``repeats`` epochs of ``batches`` batches."""
    from .layers import LSTM as KLSTM, Input
    from .models import Sequential, set_seed
    from .rnn import LSTM

    B, T, I, H = case.B, case.T, case.I, case.H
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B * batches, T, I)).astype(np.float32)
    y = rng.standard_normal((B * batches, T, H)).astype(np.float32)
    set_seed(0)
    model = Sequential([Input((T, I)), KLSTM(H, return_sequences=True)])
    model.compile(optimizer="adam", loss="mse")
    bare = LSTM(I, H, batch_first=True, seed=0)
    ones = np.ones((B, T, H), np.float32)

    def run_fit():
        model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)

    def run_bare():
        for k in range(batches):
            bare.forward(x[k * B:(k + 1) * B], train=True)
            bare.backward(ones)

    run_fit()
    run_bare()
    t_fit, t_bare = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_fit()
        t1 = time.perf_counter()
        run_bare()
        t2 = time.perf_counter()
        t_fit.append((t1 - t0) / batches)
        t_bare.append((t2 - t1) / batches)
    mf, mb = float(np.median(t_fit)), float(np.median(t_bare))
    return {"case": case.name, "fit_ms_per_batch": mf * 1e3, "engine_ms_per_batch": mb * 1e3,
            "ratio": mf / mb}


def _finish_defaults(args):
    q = args.quick
    args.repeats = args.repeats or (3 if q else 7)
    args.warmup = args.warmup or (1 if q else 2)
    args.steps = args.steps or max(10, int(round((200 if q else 1000) * min(1.0, args.scale))))
    args.min_sample = args.min_sample or (0.02 if q else 0.05)
    if args.memory is None:
        args.memory = not q
    args.threads = args.threads or default_threads()


def run_kernels(args):
    """``--kernels``: the kernel table (fastlstm.bench_kernels) for the kernel cases among
    ``--cases`` (default all), optionally as JSON."""
    from .bench_kernels import KERNEL_CASES, format_kernel_table, kernel_report

    cases = [c for c in (args.cases or KERNEL_CASES) if c in KERNEL_CASES]
    if not cases:
        print(f"error: --kernels measures the cases {', '.join(KERNEL_CASES)}", file=sys.stderr)
        return 2
    seconds = 0.05 if args.quick else 0.2
    rep = kernel_report(seconds * args.scale if args.scale < 1 else seconds, cases)
    print(format_kernel_table(rep))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"schema": "fastlstm-bench-kernels/1", "report": rep,
                       "build_info": _core_build_info()}, f, indent=1)
    return 0


def _core_build_info():
    from . import _core

    return _core.build_info()


def run(args):
    """Runs the suite as ``args`` (from :func:`add_arguments`) says; returns an exit code."""
    if getattr(args, "memory_child", None):
        dims = tuple(int(v) for v in args.memory_dims.split(","))
        _memory_child(args.memory_child, dims, args.threads or default_threads())
        return 0
    if args.list:
        for c in CASES.values():
            print(f"{c.name:12s} B={c.B:<4d} T={c.T:<5d} I={c.I:<4d} H={c.H:<5d} "
                  f"layers={c.layers}  {c.kind}: {c.description}  "
                  f"({c.flop() / 1e9:.3g} GFLOP per {'step' if c.kind == 'step' else 'call'})")
        return 0
    if getattr(args, "kernels", False):
        return run_kernels(args)
    _finish_defaults(args)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("error: --plot needs matplotlib (pip install matplotlib)", file=sys.stderr)
            return 2
    t_start = time.perf_counter()
    busy = busy_cpus()
    busy_warning = None
    if busy is not None and busy > 0.3:
        busy_warning = (f"other processes kept ~{busy:.1f} of {os.cpu_count()} CPUs busy just "
                        "before the start: timings will be noisy (multi-threaded peers suffer "
                        "most)")
        _log("warning: " + busy_warning)
    threads = args.threads
    fl_threads = set_fastlstm_threads(threads)
    torch = _import_torch() if args.peers else None
    ort = _import_ort() if args.peers else None
    order = args.cases or list(QUICK_CASES if args.quick else CASES)
    cases = [CASES[n].scaled(args.scale) for n in order]
    _log(f"fastlstm bench: {len(cases)} case(s), {threads} thread(s), {args.repeats} repeats, "
         f"peers: {'torch ' if torch else ''}{'onnxruntime' if ort else ''}"
         f"{'' if args.peers else 'disabled'}"
         + ("" if fl_threads else " (fastlstm has no set_num_threads: its threads not set)"))
    results, skipped, notes = [], [], []
    with tempfile.TemporaryDirectory(prefix="fastlstm-bench-") as tmpdir:
        for case in cases:
            _log(f"[{case.name}] B={case.B} T={case.T} I={case.I} H={case.H} "
                 f"layers={case.layers} ({case.kind})")
            res, sk, note = run_case(case, args, threads, tmpdir, torch, ort)
            results += res
            skipped += sk
            if note:
                notes.append(f"{case.name}: {note}")
                _log(f"  [{case.name}] note: {note}")
    scan = None
    if args.threads_scan:
        scan_cases = [CASES[n].scaled(args.scale) for n in SCAN_CASES]
        scan = threads_scan(scan_cases, args, threads)
    fit = None
    if getattr(args, "fit_overhead", False):
        _log("[fit overhead] Sequential.fit vs the bare engine on train_small's shapes")
        fit = fit_overhead(CASES["train_small"].scaled(args.scale), args.repeats)
    memory = None
    if args.memory and MEMORY_CASE in order:
        memory = memory_report(CASES[MEMORY_CASE].scaled(args.scale), threads,
                               with_torch=torch is not None)

    print(format_table(results, skipped, order))
    print("fastlstm/impl = fastlstm's median time / impl's (below 1: fastlstm is faster); "
          "step_py times are per step; n = repeats")
    for s in skipped:
        print(f"{s['case']} {s['impl']}: - ({s['reason']})")
    for n in notes:
        print(f"note: {n}")
    noisy = [r for r in results if r["spread"] > NOISY_SPREAD]
    for r in noisy:
        print(f"noisy: {r['case']} {r['impl']} max/min = {r['spread']:.2f} "
              "(the machine was busy? compare the medians with care)")
    if busy_warning:
        print("warning: " + busy_warning)
    for r in results:
        d = r["max_abs_diff_vs_fastlstm"]
        if d:
            what = "output, d_x, d_W_hh" if r["kind"] == "training" else "output"
            vals = ", ".join("shape?" if v is None else f"{v:.2g}" for v in d)
            print(f"check {r['case']} {r['impl']}: max |fastlstm - {r['impl']}| ({what}) = {vals}")
    if scan:
        print(f"threads scan ({scan['method']}):")
        for name, e in scan["cases"].items():
            m = e["median_ms"]
            print(f"  {name}: 1 thread {_fmt_ms(m['1'])} ms, {threads} threads "
                  f"{_fmt_ms(m[str(threads)])} ms, speedup {e['speedup']:.2f}x")
    if fit:
        print(f"fit overhead ({fit['case']} shapes): Sequential.fit {fit['fit_ms_per_batch']:.2f}"
              f" ms per batch, bare engine forward+backward {fit['engine_ms_per_batch']:.2f} ms,"
              f" ratio {fit['ratio']:.2f}")
    if memory:
        f = memory["fastlstm_formula"]
        print(f"memory, forward + backward on {memory['case']} (B={memory['B']} T={memory['T']} "
              f"I={memory['I']} H={memory['H']} layers={memory['layers']}):")
        print(f"  fastlstm kept for backward (formula: {f['formula']}): {f['kept_floats_per_row']}"
              f" floats per (t, b) = {_mib(f['kept_bytes'])}; + workspace ~"
              f"{_mib(f['workspace_bytes_estimate'])}, + returned output/d_x "
              f"{_mib(f['returned_bytes'])}")
        for impl, m in memory["measured"].items():
            if "error" in m:
                print(f"  {impl} measured: failed ({m['error']})")
            else:
                print(f"  {impl} measured peak RSS growth: {_mib(m['rss_delta_bytes'])} "
                      f"({m['method']})")
    elapsed = time.perf_counter() - t_start
    print(f"total {elapsed:.0f} s")
    if args.json:
        doc = {
            "schema": "fastlstm-bench/1",
            "machine": machine_info(threads, fl_threads),
            "settings": {k: getattr(args, k) for k in (
                "repeats", "warmup", "quick", "steps", "min_sample", "budget", "peers",
                "reference", "scale", "threads")} | {"cases": order},
            "results": results,
            "skipped": skipped,
            "notes": notes,
            "threads_scan": scan,
            "memory": memory,
            "fit_overhead": fit,
            "busy_cpus_before": busy,
            "loadavg_1min_end": _loadavg(),
            "elapsed_s": elapsed,
        }
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1)
        _log(f"wrote {args.json}")
    if args.plot:
        plot(results, order, args.plot)
        _log(f"wrote {args.plot}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="fastlstm bench",
        description="fastlstm against PyTorch / ONNX Runtime on the BENCH.md cases, "
                    "interleaved, medians of repeats.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
