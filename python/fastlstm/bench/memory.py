"""Training memory: what fastlstm's forward keeps for backward (a formula from the engine's
storage) and the measured growth of peak RSS over one forward + backward, each implementation
in a fresh subprocess (``python -m fastlstm.bench --_memory-child``)."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import numpy as np

from .cases import Case
from .peers import (fastlstm_runner, import_torch, make_models, set_fastlstm_threads,
                    torch_runner)
from .report import log

__all__ = ["engine_memory_bytes", "memory_report", "memory_child"]


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


def memory_child(impl, dims, threads):
    """Runs in a fresh process: the growth of peak RSS over one forward + backward."""
    import resource

    B, T, I, H, L = dims
    case = Case("memory", B, T, I, H, L, "training", "")
    data = {"x": np.random.default_rng(0).standard_normal((T, B, I), dtype=np.float32)}
    if impl == "fastlstm":
        set_fastlstm_threads(threads)
        lstm, _ = make_models(case, None)
        runner = fastlstm_runner(case, lstm, data)
    else:
        torch = import_torch()
        _, tmod = make_models(case, torch)
        runner = torch_runner(case, torch, tmod, data, threads)
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
        log(f"memory: {impl} forward + backward on {case.name} in a fresh process")
        dims = ",".join(str(v) for v in (case.B, case.T, case.I, case.H, case.layers))
        cmd = [sys.executable, "-m", "fastlstm.bench", "--_memory-child", impl,
               "--_memory-dims", dims, "--threads", str(threads)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            rep["measured"][impl] = {"error": p.stderr.strip().splitlines()[-1:]}
            continue
        rep["measured"][impl] = json.loads(p.stdout.strip().splitlines()[-1])
    return rep

