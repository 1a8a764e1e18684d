"""The benchmark cases (the table in bench/README.md) and how their FLOPs are counted.

FLOPs count the matrix products only: per layer ``2*B*T*4H*(I_layer + H)``, times 3 for
training (the forward product plus the two products of backward: d_x and d_W); per step for
the ``step`` kind.
"""

from __future__ import annotations

import dataclasses

__all__ = ["Case", "CASES", "REFERENCE_CASES", "QUICK_CASES", "SCAN_CASES", "MEMORY_CASE",
           "NOISY_SPREAD"]


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
        """FLOPs of one timed unit (one call; one step for kind 'step'), the formula above."""
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
