"""Measurement: implementations timed **interleaved** (A B C A B C ...) so that the drift of a
shared machine hits every implementation alike, medians of repeats, the outputs compared
against fastlstm's once; the 1-vs-N-threads scan; the ``Sequential.fit`` overhead."""

from __future__ import annotations

import gc
import math
import statistics
import time

import numpy as np

from .cases import REFERENCE_CASES
from .peers import (LSTM, Runner, fastlstm_runner, make_models, ort_runner, reference_runner,
                    set_fastlstm_threads, torch_lowp_runner, torch_runner)
from .report import fmt_ms, log

__all__ = ["measure", "run_case", "threads_scan", "fit_overhead", "fit_breakdown"]


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
            parts.append(f"{impl} {fmt_ms(dt * 1e3)} ms")
        if progress:
            log(f"  [{case_name}] repeat {rep + 1}/{repeats}: " + ", ".join(parts))
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


def _check_outputs(runners, case_name, skipped):
    """Max |fastlstm - peer| of each compared array (output; for training also d_x and the
    gradient of weight_hh_l0): a benchmark that also says whether the peers computed the same
    thing. The peers share fastlstm's weights when PyTorch is installed. A peer whose first call
    fails (e.g. PyTorch's bf16 LSTM on a CPU without bf16 support: oneDNN has no primitive for
    it) is dropped from the run and listed in ``skipped`` with the error; fastlstm's own failure
    is raised."""
    ref = runners["fastlstm"].check()
    diffs = {}
    for impl in list(runners):
        r = runners[impl]
        if impl == "fastlstm" or r.check is None:
            continue
        try:
            out = r.check()
        except Exception as e:  # noqa: BLE001 - a peer path that fails is reported, not fatal
            if impl.startswith("fastlstm"):
                raise
            del runners[impl]
            skipped.append({"case": case_name, "impl": impl,
                            "reason": f"{type(e).__name__}: {str(e).splitlines()[0]}"})
            continue
        diffs[impl] = _max_diffs(ref, out)
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
    lstm, tmod = make_models(case, use_torch)
    runners = {"fastlstm": fastlstm_runner(case, lstm, data)}
    skipped = []
    if args.peers:
        if torch is None:
            skipped.append({"case": case.name, "impl": "torch", "reason": "not installed"})
        else:
            runners["torch"] = torch_runner(case, torch, tmod, data, threads)
        if case.kind == "inference":
            if ort is None or torch is None:
                why = "not installed" if ort is None else "needs torch for the ONNX export"
                skipped.append({"case": case.name, "impl": "onnxruntime", "reason": why})
            else:
                try:
                    runners["onnxruntime"] = ort_runner(case, torch, ort, tmod, data, threads,
                                                         tmpdir)
                except Exception as e:  # noqa: BLE001 - a failed export is reported, not fatal
                    skipped.append({"case": case.name, "impl": "onnxruntime",
                                    "reason": f"export failed: {type(e).__name__}: {e}"})
    # low precision (inference only): fastlstm's quantized module and PyTorch's own path
    for prec in getattr(args, "precision", ["float32"])[1:]:
        if case.kind == "training":
            continue
        runners[f"fastlstm {prec}"] = fastlstm_runner(case, lstm.quantize(prec), data)
        if use_torch is not None:
            try:
                runners[f"torch {prec}"] = torch_lowp_runner(case, torch, tmod, data, threads,
                                                             prec)
            except Exception as e:  # noqa: BLE001 - a peer path that fails is reported
                skipped.append({"case": case.name, "impl": f"torch {prec}",
                                "reason": f"{type(e).__name__}: {e}"})
    if args.reference and case.name in REFERENCE_CASES:
        runners["reference"] = reference_runner(case, lstm, data)

    diffs = _check_outputs(runners, case.name, skipped) if len(runners) > 1 else {}
    times, number, _, note = measure(case.name, runners, args.repeats, args.warmup,
                                     args.min_sample, args.budget, progress)
    results = [_result(case, impl, times[impl], number[impl], threads, diffs.get(impl))
               for impl in runners]
    base = next(r["median_ms"] for r in results if r["impl"] == "fastlstm")
    med = {r["impl"]: r["median_ms"] for r in results}
    for r in results:
        r["ratio_fastlstm_to_impl"] = base / r["median_ms"]
        r["note"] = note
        if r["impl"] in ("fastlstm bf16", "fastlstm int8"):
            prec = r["impl"].split()[1]
            r["ratio_to_torch_float32"] = (r["median_ms"] / med["torch"]) if "torch" in med \
                else None
            r["ratio_to_torch_same_precision"] = (
                r["median_ms"] / med[f"torch {prec}"] if f"torch {prec}" in med else None)
    return results, skipped, note


# ============================================================================ threads scan
def threads_scan(cases, args, n):
    """fastlstm alone at 1 and at n threads, interleaved in one process
    (``fastlstm.set_num_threads`` before each sample)."""
    out = {"threads": [1, n], "cases": {},
           "method": "in-process fastlstm.set_num_threads, interleaved"}
    for case in cases:
        log(f"threads scan: {case.name} at 1 and {n} threads")
        data = {"x": np.random.default_rng(1234).standard_normal(
            (case.T, case.B, case.I), dtype=np.float32)}
        lstm, _ = make_models(case, None)
        base = fastlstm_runner(case, lstm, data)
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


def _scan_entry(med, n, note):
    return {"median_ms": {str(k): v for k, v in med.items()},
            "speedup": med[1] / med[n], "note": note}


def _fit_model(B, T, I, H, batches):  # noqa: E741
    """The timed training setup: ``Sequential([LSTM(H, return_sequences=True)])`` compiled
    with Adam and MSE, and ``batches`` batches of random data. Returns (model, x, y)."""
    from ..layers import LSTM as KLSTM, Input
    from ..models import Sequential, set_seed

    rng = np.random.default_rng(0)
    x = rng.standard_normal((B * batches, T, I)).astype(np.float32)
    y = rng.standard_normal((B * batches, T, H)).astype(np.float32)
    set_seed(0)
    model = Sequential([Input((T, I)), KLSTM(H, return_sequences=True)])
    model.compile(optimizer="adam", loss="mse")
    return model, x, y


def fit_and_engine_runs(B, T, I, H, batches):  # noqa: E741
    """One epoch of ``batches`` batches two ways on the same shapes: ``Sequential.fit`` of an
    LSTM with return_sequences (MSE, Adam: the whole training layer) and the engine's bare
    forward + backward. Returns ({"fit": callable, "engine": callable}, x, y)."""
    model, x, y = _fit_model(B, T, I, H, batches)
    bare = LSTM(I, H, batch_first=True, seed=0)
    ones = np.ones((B, T, H), np.float32)

    def run_fit():
        model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)

    def run_bare():
        for k in range(batches):
            bare.forward(x[k * B:(k + 1) * B], train=True)
            bare.backward(ones)

    return {"fit": run_fit, "engine": run_bare}, x, y


def fit_overhead(case, repeats, batches=16):
    """Time per batch of ``Sequential.fit`` against the engine's bare forward + backward on
    ``case``'s shapes (:func:`fit_and_engine_runs`), interleaved, medians of ``repeats``
    epochs of ``batches`` batches."""
    runs, _, _ = fit_and_engine_runs(case.B, case.T, case.I, case.H, batches)
    run_fit, run_bare = runs["fit"], runs["engine"]
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



class _Timed:
    """Stands in for an object while :func:`fit_breakdown` runs: the named methods are timed
    (wall clock, summed per name into ``totals``), everything else is the object's."""

    def __init__(self, obj, names, totals):
        self._obj = obj
        for name in names:
            setattr(self, name, self._timer(getattr(obj, name), name, totals))

    @staticmethod
    def _timer(fn, name, totals):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - t0
        return timed

    def __getattr__(self, name):
        return getattr(self._obj, name)


def fit_breakdown(B, T, I, H, batches, repeats):  # noqa: E741
    """Where the time of a ``Sequential.fit`` batch goes (the setup of :func:`_fit_model`):
    ms per batch of the whole epoch, of the engine's forward and backward calls (the bindings
    included), of the loss (value and gradient), of the optimizer step (its ``apply``: the
    fused update) and the rest (the graph walk, the layers' Python, the finiteness check, data
    slicing, the per-call setup of ``fit`` spread over its batches), medians of ``repeats``
    epochs. The timers add about a microsecond per timed call to the total."""
    model, x, y = _fit_model(B, T, I, H, batches)
    layer = model.layers[-1]
    module, loss, opt = layer._module, model._losses[0], model.optimizer
    totals = {}
    engine = module._engine
    module._engine = _Timed(engine, ("forward", "backward"), totals)
    loss.value_and_grad = _Timed._timer(loss.value_and_grad, "loss", totals)
    opt.apply = _Timed._timer(opt.apply, "optimizer", totals)
    rows = []
    try:
        for k in range(repeats + 1):
            totals.clear()
            t0 = time.perf_counter()
            model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)
            total = time.perf_counter() - t0
            if k:  # the first epoch warms up
                rows.append(dict(totals, total=total))
    finally:
        module._engine = engine
        del loss.value_and_grad, opt.apply
    med = {k: float(np.median([r[k] for r in rows])) / batches * 1e3 for k in rows[0]}
    parts = {"engine_forward": med["forward"], "engine_backward": med["backward"],
             "loss": med["loss"], "optimizer": med["optimizer"]}
    parts["rest"] = med["total"] - sum(parts.values())
    return {"B": B, "T": T, "I": I, "H": H, "batches": batches, "total_ms": med["total"],
            "parts_ms": parts}
