"""The benchmark suite: ``fastlstm bench``, ``python -m fastlstm.bench``, ``python bench/run.py``.

Each case (:mod:`~fastlstm.bench.cases`; the table is in bench/README.md) runs fastlstm and the
peers that are installed (:mod:`~fastlstm.bench.peers`: PyTorch, ONNX Runtime; the NumPy
reference with ``--reference``) at the same thread count, timed interleaved
(:mod:`~fastlstm.bench.timing`), and reports (:mod:`~fastlstm.bench.report`) the median of the
repeats, GFLOP/s and the time ratio fastlstm/peer; :mod:`~fastlstm.bench.memory` measures the
memory of training; ``--stream`` runs the C++ streaming benchmark (:mod:`~fastlstm.bench.stream`);
``--kernels`` (:mod:`~fastlstm.bench.kernels`) measures the machine's limits and the kernels
against them instead; ``--small-grid`` (:mod:`~fastlstm.bench.small`) small training steps at 1
and N threads. This module is the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from . import cases, memory, peers, report, stream, timing
from .cases import CASES, MEMORY_CASE, QUICK_CASES, REFERENCE_CASES, SCAN_CASES, Case
from .memory import engine_memory_bytes, memory_child, memory_report
from .peers import default_threads, import_ort, import_torch, set_fastlstm_threads
from .report import busy_cpus, log, machine_info, print_summary
from .timing import fit_overhead, run_case, threads_scan

__all__ = ["CASES", "Case", "add_arguments", "run", "main", "engine_memory_bytes", "cases",
           "peers", "timing", "memory", "report", "stream"]


# ====================================================================================== CLI
def _case_list(text):
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"--cases must be a comma-separated subset of {','.join(CASES)}, got {text!r}")
    return names


def _precision_list(text):
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in ("float32", "bf16", "int8")]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"--precision must be a comma-separated subset of float32,bf16,int8, got {text!r}")
    return ["float32"] + [n for n in ("bf16", "int8") if n in names]


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
    parser.add_argument("--stream", action="store_true",
                        help="ns per streaming step in C++ (Stream, Model::Stream, LSTM and GRU, "
                             "small to large sizes, with each case's floor), one thread; "
                             "--quick, --steps (most steps per case) and --json apply")
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
    parser.add_argument("--precision", type=_precision_list, default=["float32"],
                        help="comma-separated precisions of fastlstm's inference rows: float32 "
                             "(always), bf16, int8 (module.quantize), side by side with "
                             "PyTorch's own bf16 (autocast) and int8 (quantize_dynamic) paths")
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
    parser.add_argument("--small-grid", action="store_true",
                        help="instead of the cases: forward + backward of small LSTMs (a grid of "
                             "B, T, H) at 1 and N threads and PyTorch at N, the threads the "
                             "engine chose, and a Sequential.fit step against Keras; --quick, "
                             "--repeats, --threads, --no-peers, --json apply")
    parser.add_argument("--json", metavar="FILE", help="write every result and machine info")
    parser.add_argument("--plot", metavar="FILE.png", help="grouped bar chart (matplotlib)")
    parser.add_argument("--scale", type=_positive(float), default=1.0,
                        help="multiply B, T, I, H of every case (for tests; 1 = the cases as listed)")
    parser.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    parser.add_argument("--_memory-dims", dest="memory_dims", help=argparse.SUPPRESS)
    return parser


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
    """``--kernels``: the kernel table (:mod:`~fastlstm.bench.kernels`) for the kernel cases among
    ``--cases`` (default all), optionally as JSON."""
    from .kernels import KERNEL_CASES, format_kernel_table, kernel_report

    names = [c for c in (args.cases or KERNEL_CASES) if c in KERNEL_CASES]
    if not names:
        print(f"error: --kernels measures the cases {', '.join(KERNEL_CASES)}", file=sys.stderr)
        return 2
    seconds = (0.05 if args.quick else 0.2) * min(1.0, args.scale)
    rep = kernel_report(seconds, names)
    print(format_kernel_table(rep))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"schema": "fastlstm-bench-kernels/1", "report": rep}, f, indent=1)
    return 0


def run_small_grid(args):
    """``--small-grid``: the table of :mod:`~fastlstm.bench.small`, optionally as JSON."""
    from .small import (FIT_SHAPE, GRID_SHAPES, ISSUE_SHAPES, fit_step, format_small_grid,
                        small_grid)

    _finish_defaults(args)
    torch = import_torch() if args.peers else None
    log(f"fastlstm bench --small-grid: 1 and {args.threads} threads, {args.repeats} repeats")
    shapes = fit_shape = None
    if args.scale != 1.0:  # for tests: every shape scaled (B, T, I, H each at least 1)
        def f(shape):
            return tuple(max(1, int(round(v * args.scale))) for v in shape)
        shapes = list(dict.fromkeys(f(s) for s in ISSUE_SHAPES + GRID_SHAPES))
        fit_shape = f(FIT_SHAPE)
    rows = small_grid(args, args.threads, torch, shapes)
    fit = fit_step(args.repeats, shape=fit_shape or FIT_SHAPE, with_keras=args.peers)
    print(format_small_grid(rows, args.threads, fit))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"schema": "fastlstm-bench-small-grid/1",
                       "machine": machine_info(args.threads), "busy_cpus_before": busy_cpus(),
                       "rows": rows, "fit_step": fit}, f, indent=1)
    return 0


def run(args):
    """Runs the suite as ``args`` (from :func:`add_arguments`) says; returns an exit code."""
    if getattr(args, "memory_child", None):
        dims = tuple(int(v) for v in args.memory_dims.split(","))
        memory_child(args.memory_child, dims, args.threads or default_threads())
        return 0
    if args.list:
        for c in CASES.values():
            print(f"{c.name:12s} B={c.B:<4d} T={c.T:<5d} I={c.I:<4d} H={c.H:<5d} "
                  f"layers={c.layers}  {c.kind}: {c.description}  "
                  f"({c.flop() / 1e9:.3g} GFLOP per {'step' if c.kind == 'step' else 'call'})")
        return 0
    if getattr(args, "stream", False):
        return stream.run_stream(args)
    if args.kernels:
        return run_kernels(args)
    if args.small_grid:
        return run_small_grid(args)
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
        log("warning: " + busy_warning)
    threads = args.threads
    set_fastlstm_threads(threads)
    torch = import_torch() if args.peers else None
    ort = import_ort() if args.peers else None
    order = args.cases or list(QUICK_CASES if args.quick else CASES)
    cases = [CASES[n].scaled(args.scale) for n in order]
    log(f"fastlstm bench: {len(cases)} case(s), {threads} thread(s), {args.repeats} repeats, "
         f"peers: {'torch ' if torch else ''}{'onnxruntime' if ort else ''}"
         f"{'' if args.peers else 'disabled'}")
    results, skipped, notes = [], [], []
    with tempfile.TemporaryDirectory(prefix="fastlstm-bench-") as tmpdir:
        for case in cases:
            log(f"[{case.name}] B={case.B} T={case.T} I={case.I} H={case.H} "
                 f"layers={case.layers} ({case.kind})")
            res, sk, note = run_case(case, args, threads, tmpdir, torch, ort)
            results += res
            skipped += sk
            if note:
                notes.append(f"{case.name}: {note}")
                log(f"  [{case.name}] note: {note}")
    scan = None
    if args.threads_scan:
        scan_cases = [CASES[n].scaled(args.scale) for n in SCAN_CASES]
        scan = threads_scan(scan_cases, args, threads)
    fit = None
    if getattr(args, "fit_overhead", False):
        log("[fit overhead] Sequential.fit vs the bare engine on train_small's shapes")
        fit = fit_overhead(CASES["train_small"].scaled(args.scale), args.repeats)
    memory = None
    if args.memory and MEMORY_CASE in order:
        memory = memory_report(CASES[MEMORY_CASE].scaled(args.scale), threads,
                               with_torch=torch is not None)

    print_summary(results, skipped, order, notes, busy_warning, threads, scan, fit, memory)
    elapsed = time.perf_counter() - t_start
    print(f"total {elapsed:.0f} s")
    if args.json:
        doc = {
            "schema": "fastlstm-bench/1",
            "machine": machine_info(threads),
            "settings": {k: getattr(args, k) for k in (
                "repeats", "warmup", "quick", "steps", "min_sample", "budget", "peers",
                "reference", "scale", "threads", "precision")} | {"cases": order},
            "results": results,
            "skipped": skipped,
            "notes": notes,
            "threads_scan": scan,
            "memory": memory,
            "fit_overhead": fit,
            "busy_cpus_before": busy,
            "loadavg_1min_end": report.loadavg(),
            "elapsed_s": elapsed,
        }
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1)
        log(f"wrote {args.json}")
    if args.plot:
        report.plot(results, order, args.plot)
        log(f"wrote {args.plot}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="fastlstm bench",
        description="fastlstm against PyTorch / ONNX Runtime on the benchmark cases, "
                    "interleaved, medians of repeats.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
