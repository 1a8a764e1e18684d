"""``fastlstm bench --small-grid``: small training steps at 1 and N threads.

Most models people train are small, and for them a thread split can cost more than it saves.
This mode times one forward + backward of one batch (an LSTM, float32, ``[T, B, I]``) over a
grid of small shapes, for fastlstm at 1 thread and at N threads and PyTorch at N threads,
interleaved, and reports the ratios that matter: fastlstm N threads / fastlstm 1 thread (never
above 1.0 is the goal: below the engine's work threshold the call runs on one thread and wakes
nobody) and fastlstm / PyTorch at N threads. It also reports the thread count the engine chose
for each shape (``RNN.last_threads``), and the time of one ``Sequential.fit`` step at
``FIT_SHAPE`` against the bare engine and, when Keras 3 imports, Keras' own ``fit``.
"""

from __future__ import annotations

import itertools
import os
import statistics
import time

import numpy as np

from .cases import Case
from .peers import Runner, fastlstm_runner, make_models, set_fastlstm_threads, torch_runner
from .report import log
from .timing import fit_and_engine_runs, fit_breakdown, measure

__all__ = ["ISSUE_SHAPES", "GRID_SHAPES", "FIT_SHAPE", "small_grid", "fit_step",
           "format_small_grid"]

#: (B, T, I, H) shapes measured when the thread split of small steps was chosen
ISSUE_SHAPES = ((32, 8, 8, 64), (32, 20, 1, 50), (32, 40, 16, 32))
#: the grid: B in {1, 8, 32}, T in {8, 40}, I = 8, H in {8, 32, 64, 128}
GRID_SHAPES = tuple((B, T, 8, H) for B, T, H in itertools.product((1, 8, 32), (8, 40),
                                                                   (8, 32, 64, 128)))
#: the shape of the timed Sequential.fit step
FIT_SHAPE = (32, 8, 8, 64)


def _case(B, T, I, H):  # noqa: E741 - the shape letter of the house style
    return Case(f"{B},{T},{I},{H}", B, T, I, H, 1, "training", "small grid")


def small_grid(args, threads, torch, shapes=None):
    """[{B, T, I, H, threads_chosen, ms_1, ms_n, ms_torch (or None), ratio_n_to_1,
    ratio_n_to_torch}] for ``shapes`` (default: ISSUE_SHAPES + GRID_SHAPES)."""
    shapes = list(shapes or (ISSUE_SHAPES + GRID_SHAPES))
    rows = []
    for B, T, I, H in shapes:  # noqa: E741
        case = _case(B, T, I, H)
        data = {"x": np.random.default_rng(1234).standard_normal((T, B, I), dtype=np.float32)}
        lstm, tmod = make_models(case, torch)
        base = fastlstm_runner(case, lstm, data)
        # PyTorch's OpenMP workers spin for a while after its call and take the CPUs of a
        # small machine: with PyTorch in the round, fastlstm's samples start after a pause
        pause = 0.02 if torch is not None else 0.0

        def at(n):
            def before():
                set_fastlstm_threads(n)
                time.sleep(pause)
            return before

        runners = {"fastlstm@1": Runner(base.call, before=at(1)),
                   f"fastlstm@{threads}": Runner(base.call, before=at(threads))}
        if torch is not None:
            tr = torch_runner(case, torch, tmod, data, threads)
            runners[f"torch@{threads}"] = Runner(
                tr.call, before=lambda: torch.set_num_threads(threads))
        times, _, _, _ = measure(case.name, runners, args.repeats, args.warmup,
                                 args.min_sample, args.budget, progress=False)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        set_fastlstm_threads(threads)
        base.call()
        chosen = lstm._engine.last_threads  # the backward's split; the forward's is <= it
        lstm.forward(data["x"], train=True)
        chosen = max(chosen, lstm._engine.last_threads)
        ms_1, ms_n = med["fastlstm@1"], med[f"fastlstm@{threads}"]
        ms_t = med.get(f"torch@{threads}")
        rows.append({"B": B, "T": T, "I": I, "H": H, "threads_chosen": chosen,
                     "ms_1": ms_1, "ms_n": ms_n, "ms_torch": ms_t,
                     "ratio_n_to_1": ms_n / ms_1,
                     "ratio_n_to_torch": ms_n / ms_t if ms_t else None})
        log(f"  [small grid] {case.name}: 1 thread {ms_1:.3f} ms, {threads} threads "
            f"{ms_n:.3f} ms" + (f", torch {ms_t:.3f} ms" if ms_t else ""))
    set_fastlstm_threads(threads)
    return rows


def _import_keras():
    """Keras 3 on JAX when both import (no TensorFlow needed), else None."""
    try:
        import jax  # noqa: F401
    except ImportError:
        return None
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
    except Exception:  # noqa: BLE001 - any failure to import means: no Keras peer
        return None
    return keras if keras.backend.backend() == "jax" else None


def fit_step(repeats, batches=32, shape=FIT_SHAPE, with_keras=True):
    """ms per batch of ``Sequential.fit`` (LSTM(H, return_sequences=True), MSE, Adam), of the
    bare engine's forward + backward on the same shapes, and of Keras 3's ``fit`` of the same
    model (when it imports), interleaved, medians of ``repeats`` epochs of ``batches``
    batches; ``fit_parts_ms``: the fit batch split into engine forward/backward, loss,
    optimizer and the rest (:func:`~fastlstm.bench.timing.fit_breakdown`)."""
    B, T, I, H = shape  # noqa: E741
    runs, x, y = fit_and_engine_runs(B, T, I, H, batches)
    keras = _import_keras() if with_keras else None
    if keras is not None:
        km = keras.Sequential([keras.Input((T, I)), keras.layers.LSTM(H, return_sequences=True)])
        km.compile(optimizer="adam", loss="mse")
        runs["keras"] = lambda: km.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)
    for f in runs.values():  # warm-up (Keras compiles its step here)
        f()
        f()
    t = {k: [] for k in runs}
    for _ in range(repeats):
        for k, f in runs.items():
            t0 = time.perf_counter()
            f()
            t[k].append((time.perf_counter() - t0) / batches * 1e3)
    med = {k: statistics.median(v) for k, v in t.items()}
    parts = fit_breakdown(B, T, I, H, batches, repeats)["parts_ms"]
    return {"B": B, "T": T, "I": I, "H": H, "batches": batches,
            "fit_ms": med["fit"], "engine_ms": med["engine"], "keras_ms": med.get("keras"),
            "fit_to_keras": med["fit"] / med["keras"] if "keras" in med else None,
            "fit_parts_ms": parts}


def format_small_grid(rows, threads, fit=None):
    n = threads
    out = [f"| B, T, I, H | threads chosen | fastlstm 1 thread | fastlstm {n} threads | "
           f"PyTorch {n} threads | {n} / 1 | fastlstm / PyTorch |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        t = f"{r['ms_torch']:.3f} ms" if r["ms_torch"] else "-"
        q = f"{r['ratio_n_to_torch']:.2f}" if r["ratio_n_to_torch"] else "-"
        out.append(f"| {r['B']}, {r['T']}, {r['I']}, {r['H']} | {r['threads_chosen']} | "
                   f"{r['ms_1']:.3f} ms | {r['ms_n']:.3f} ms | {t} | {r['ratio_n_to_1']:.2f} "
                   f"| {q} |")
    worst = max(rows, key=lambda r: r["ratio_n_to_1"])
    out.append(f"worst {n} / 1 threads: {worst['ratio_n_to_1']:.2f} at "
               f"{worst['B']}, {worst['T']}, {worst['I']}, {worst['H']}")
    if fit:
        k = (f", Keras 3 (JAX) fit {fit['keras_ms']:.3f} ms (fit / Keras "
             f"{fit['fit_to_keras']:.2f})" if fit["keras_ms"] else ", Keras not importable")
        out.append(f"Sequential.fit step at {fit['B']}, {fit['T']}, {fit['I']}, {fit['H']}: "
                   f"{fit['fit_ms']:.3f} ms per batch (bare engine forward + backward "
                   f"{fit['engine_ms']:.3f} ms){k}")
        parts = fit.get("fit_parts_ms")
        if parts:
            out.append("  where a fit batch's time goes (ms, a separate timed epoch): " + ", ".join(
                f"{name.replace('_', ' ')} {v:.3f}" for name, v in parts.items()))
    return "\n".join(out)
