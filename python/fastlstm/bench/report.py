"""Output: the results table, machine information, the load of the machine, the plot."""

from __future__ import annotations

import os
import platform
import sys
import time

import numpy as np

from .. import __version__, build_info
from .cases import CASES, NOISY_SPREAD
from .peers import default_threads, import_ort, import_torch

__all__ = ["fmt_ms", "mib", "log", "busy_cpus", "loadavg", "format_table", "machine_info",
           "plot"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def fmt_ms(ms):
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.4f}"


def mib(b):
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


def loadavg():
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
            rows.append([name, r["impl"], fmt_ms(r["median_ms"]) + unit,
                         f"{fmt_ms(r['min_ms'])}-{fmt_ms(r['max_ms'])}",
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


def machine_info(threads):
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
        "fastlstm_threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "fastlstm": __version__,
        "build_info": build_info(),
        "torch": None,
        "onnxruntime": None,
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_CORETYPE",
                                           "FASTLSTM_NUM_THREADS", "MKL_NUM_THREADS")
                if k in os.environ},
    }
    torch, ort = import_torch(), import_ort()
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



def print_summary(results, skipped, order, notes, busy_warning, threads, scan, fit, memory):
    """The table and everything measured besides it, to stdout."""
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
            print(f"  {name}: 1 thread {fmt_ms(m['1'])} ms, {threads} threads "
                  f"{fmt_ms(m[str(threads)])} ms, speedup {e['speedup']:.2f}x")
    if fit:
        print(f"fit overhead ({fit['case']} shapes): Sequential.fit {fit['fit_ms_per_batch']:.2f}"
              f" ms per batch, bare engine forward+backward {fit['engine_ms_per_batch']:.2f} ms,"
              f" ratio {fit['ratio']:.2f}")
    if memory:
        f = memory["fastlstm_formula"]
        print(f"memory, forward + backward on {memory['case']} (B={memory['B']} T={memory['T']} "
              f"I={memory['I']} H={memory['H']} layers={memory['layers']}):")
        print(f"  fastlstm kept for backward (formula: {f['formula']}): {f['kept_floats_per_row']}"
              f" floats per (t, b) = {mib(f['kept_bytes'])}; + workspace ~"
              f"{mib(f['workspace_bytes_estimate'])}, + returned output/d_x "
              f"{mib(f['returned_bytes'])}")
        for impl, m in memory["measured"].items():
            if "error" in m:
                print(f"  {impl} measured: failed ({m['error']})")
            else:
                print(f"  {impl} measured peak RSS growth: {mib(m['rss_delta_bytes'])} "
                      f"({m['method']})")
