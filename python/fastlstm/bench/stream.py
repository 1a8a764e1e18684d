"""``fastlstm bench --stream``: nanoseconds per streaming step in C++, one thread.

Runs the ``stream_bench`` program that is built from bench/cpp/stream_bench.cpp and installed
with the package (``fastlstm/bin``): ``fastlstm::Stream<float>`` (the bare engine) and
``fastlstm::Model::Stream`` (the same weights from a model file) for LSTM and GRU at I=1,
H in {1, 8, 16, 32, 64, 128} and I=64, H=256, each with its floor (for small H the latency
chain: the recurrent product's H dependent FMAs plus the cell's two activations in a row; for
large H the weight bytes over the measured cache read bandwidth). A step of a small model takes tens of nanoseconds: it can only be timed in C++, never
through one Python call per step (that is the ``step_py`` case). ``--precision bf16,int8``
adds every case in those precisions (the bare stream of that precision, Model::Stream of the
model quantized on load), with the floors of their weight bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from .report import log, machine_info

__all__ = ["executable", "run_stream", "format_stream_table"]

ENV_VAR = "FASTLSTM_STREAM_BENCH"  # another stream_bench program (e.g. a C++ build's)


def executable():
    """The stream_bench program: $FASTLSTM_STREAM_BENCH, else the one installed with the
    package; None when neither exists."""
    override = os.environ.get(ENV_VAR)
    candidates = [Path(override)] if override else []
    pkg = Path(__file__).resolve().parent.parent
    candidates += [pkg / "bin" / "stream_bench", pkg / "bin" / "stream_bench.exe"]
    for p in candidates:
        if p.is_file() and os.access(p, os.X_OK):
            return p
    return None


def format_stream_table(doc):
    """The human-readable table of a stream_bench --json document."""
    lines = [
        f"one thread; FMA latency {doc['fma_latency_ns']:.3f} ns, sigmoid+tanh chain "
        f"{doc['activation_pair_ns']:.1f} ns; read bandwidth L1 (32 KB) "
        f"{doc['l1_read_gbs']:.0f} GB/s, L2 (256 KB) {doc['l2_read_gbs']:.0f} GB/s; ns/step = "
        "median over alternated windows of about 20 us",
        f"{'cell':5s} {'I':>4s} {'H':>4s} {'prec':7s} | {'Stream ns':>10s} {'Model::Stream':>13s} | "
        f"{'lat floor':>9s} {'bw floor':>9s} | {'Stream/floor':>12s}",
    ]
    for c in doc["cases"]:
        floor = max(c["latency_floor_ns"], c["bandwidth_floor_ns"])
        lines.append(
            f"{c['cell']:5s} {c['I']:4d} {c['H']:4d} {c.get('precision', 'float32'):7s} | "
            f"{c['bare_ns']:10.1f} {c['model_ns']:13.1f}"
            f" | {c['latency_floor_ns']:9.1f} {c['bandwidth_floor_ns']:9.1f} | "
            f"{c['bare_ns'] / floor:12.2f}")
    return "\n".join(lines)


def run_stream(args):
    """Runs stream_bench as ``args`` says (--quick, --steps, --precision, --json); returns an
    exit code."""
    exe = executable()
    if exe is None:
        log("error: --stream needs the stream_bench program, installed with the package in "
            f"fastlstm/bin (pip install .), or named by ${ENV_VAR}")
        return 2
    cmd = [str(exe), "--json"]
    if args.quick:
        cmd.append("--quick")
    if args.steps:
        cmd += ["--steps", str(args.steps)]
    precisions = getattr(args, "precision", None) or ["float32"]
    if precisions != ["float32"]:
        cmd += ["--precision", ",".join(precisions)]
    log(f"fastlstm bench --stream: {' '.join(cmd)}")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        log(f"error: stream_bench failed (exit code {proc.returncode}): {proc.stderr.strip()}")
        return 2
    doc = json.loads(proc.stdout)
    print(format_stream_table(doc))
    if proc.returncode == 1:  # the program found Model::Stream and Stream<float> disagreeing
        print(proc.stderr.strip())
    if args.json:
        doc["machine"] = machine_info(1)
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1)
        log(f"wrote {args.json}")
    return proc.returncode
