"""``fastlstm bench --kernels``: this machine's limits and the float32 kernels against them.

The measuring is C++ (``fastlstm._core.kernel_bench``), single threaded, timed with the thread's
CPU time (time the thread was descheduled on a busy machine is not counted), best call of
repeated groups:

- the FMA peak: independent multiply-add chains in registers at the vector width of the kernel
  level in use (``fastlstm.cpu_info()['level']``, capped by ``FASTLSTM_CPU``): the products
  measured are that level's too;
- read bandwidth of a buffer that fits one core's L2 (256 KiB) and of one far larger than the
  caches (1 GiB, "memory");
- for each benchmark case, the products the engine runs on its shapes (the recurrent product of
  one time step, the input projection, and for training the per-step dh, the weight gradients
  dW_hh / dW_ih and d_x) in GFLOP/s and as a fraction of the FMA peak; the memory-bound kernels
  (a batch-1 step streams its weights; the LSTM gate pass) in GB/s against the L2 bandwidth.
"""

import platform

from .. import _core

KERNEL_CASES = ("stream_b1", "batch_inf", "large_fwd", "train_small", "train_large")

__all__ = ["KERNEL_CASES", "kernel_report", "format_kernel_table"]


def kernel_report(seconds_per_row=0.2, cases=None):
    """Measures and returns a dict: ``level`` (the kernel level measured), ``fma_peak_gflops``,
    ``bf16_peak_gflops`` and ``int8_peak_gops`` (the register-only rate of the instructions the
    level's low-precision products use: AMX tiles, vdpbf16ps / vpdpbusd, or AVX2's FMA and
    vpmaddwd; 0 at the generic level),
    ``l2_gbytes``, ``mem_gbytes``, ``vector_floats`` and ``rows`` (one dict per kernel and case: case, kernel, bound, M, N, K,
    seconds, gflops, gbytes, fraction, against)."""
    seconds_per_row = float(seconds_per_row)
    if not seconds_per_row > 0:
        raise ValueError(f"seconds_per_row must be > 0, got {seconds_per_row}")
    cases = list(KERNEL_CASES if cases is None else cases)
    unknown = [c for c in cases if c not in KERNEL_CASES]
    if unknown:
        raise ValueError(f"cases: unknown {unknown}; expected some of {list(KERNEL_CASES)}")
    rep = _core.kernel_bench(seconds_per_row, cases)
    rep["cpu_model"] = cpu_model()
    rep["simd"] = _core.build_info()["simd"]
    return rep


def cpu_model():
    """``lscpu``'s model name where /proc/cpuinfo has it, else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def format_kernel_table(rep):
    """The report as a Markdown table (one row per kernel and case) with a header line naming
    the machine's limits."""
    lines = [
        f"CPU: {rep.get('cpu_model', '?')}; kernel level {rep['level']} "
        f"({rep['vector_floats'] * 32}-bit vectors); single thread",
        f"FMA peak {rep['fma_peak_gflops']:.1f} GFLOP/s"
        + (f"; bf16 peak {rep['bf16_peak_gflops']:.0f} GFLOP/s, int8 peak "
           f"{rep['int8_peak_gops']:.0f} GOP/s" if rep.get("bf16_peak_gflops") else "")
        + f"; read bandwidth L2 {rep['l2_gbytes']:.1f} GB/s, memory {rep['mem_gbytes']:.1f} GB/s",
        "",
        "| case | kernel | M x N x K | GFLOP/s | GB/s | fraction |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rep["rows"]:
        shape = f"{r['M']} x {r['N']} x {r['K']}" if r["K"] else f"{r['M']} x {r['N']}"
        gf = f"{r['gflops']:.1f}" if r["gflops"] > 0 else ""
        gb = f"{r['gbytes']:.1f}" if r["gbytes"] > 0 else ""
        lines.append(f"| {r['case']} | {r['kernel']} | {shape} | {gf} | {gb} | "
                     f"{100 * r['fraction']:.0f}% of {r['against']} |")
    return "\n".join(lines)
