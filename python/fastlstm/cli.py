"""The ``fastlstm`` command: ``info``, ``demo``, ``bench``."""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def adding_problem(n, T, rng):
    """Hochreiter & Schmidhuber (1997): x[:, t] = (value in [0, 1), marker); two markers per
    sequence, target = the sum of the two marked values. Predicting the mean gives MSE ~ 0.167.
    Returns x [n, T, 2] float32 and y [n] float32."""
    values = rng.random((n, T)).astype(np.float32)
    markers = np.zeros((n, T), dtype=np.float32)
    first = rng.integers(0, T // 2, size=n)
    second = rng.integers(T // 2, T, size=n)
    markers[np.arange(n), first] = 1.0
    markers[np.arange(n), second] = 1.0
    x = np.stack([values, markers], axis=-1)
    y = (values * markers).sum(axis=1)
    return x, y


class _Adam:
    """A minimal Adam over one flat parameter vector (the full optimizers live elsewhere)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.b1, self.b2, self.eps = params, lr, betas[0], betas[1], eps
        self.m = np.zeros_like(params)
        self.v = np.zeros_like(params)
        self.t = 0

    def step(self, grads):
        self.t += 1
        self.m *= self.b1
        self.m += (1 - self.b1) * grads
        self.v *= self.b2
        self.v += (1 - self.b2) * grads * grads
        mhat = self.m / (1 - self.b1**self.t)
        vhat = self.v / (1 - self.b2**self.t)
        self.params -= self.lr * mhat / (np.sqrt(vhat) + self.eps)


def run_demo(T=50, hidden=64, batch=64, steps=2500, lr=3e-3, seed=0, out=sys.stdout):
    """Trains LSTM + linear head on the adding problem; returns the test MSE."""
    from .rnn import LSTM

    rng = np.random.default_rng(seed)
    lstm = LSTM(2, hidden, batch_first=True, seed=seed)
    # one flat buffer for every parameter (LSTM + head), so Adam is one vectorized update
    n_lstm = lstm.flat_params.size
    flat = np.zeros(n_lstm + hidden + 1, dtype=np.float32)
    grads = np.zeros_like(flat)
    lstm.use_buffers(flat[:n_lstm], grads[:n_lstm])
    w, b = flat[n_lstm:-1], flat[-1:]
    dw, db = grads[n_lstm:-1], grads[-1:]
    w[...] = rng.normal(0, 1 / np.sqrt(hidden), hidden)
    opt = _Adam(flat, lr=lr)
    x_test, y_test = adding_problem(1000, T, np.random.default_rng(seed + 1))

    def predict(x):
        _, (h_n, _) = lstm(x)
        return h_n[0] @ w + b[0]

    print(f"fastlstm demo: the adding problem (T={T}); predicting the mean gives MSE ~ 0.167",
          file=out)
    print(f"LSTM(2, {hidden}) + linear head, Adam lr={lr}, batch {batch}, {steps} steps",
          file=out)
    t0 = time.perf_counter()
    running = None
    for step in range(1, steps + 1):
        x, y = adding_problem(batch, T, rng)
        _, (h_n, _) = lstm.forward(x, train=True)
        h = h_n[0]                               # [B, H]
        pred = h @ w + b[0]                      # [B]
        err = pred - y
        loss = float(np.mean(err * err))
        d_pred = (2.0 / batch) * err             # dL/dpred
        dw[...] = h.T @ d_pred
        db[...] = d_pred.sum()
        d_h_n = (d_pred[:, None] * w[None, :])[None].astype(np.float32)
        lstm.backward(None, d_h_n=d_h_n)         # fills the LSTM's part of `grads`
        np.clip(grads, -1.0, 1.0, out=grads)     # against exploding gradients
        opt.step(grads)
        running = loss if running is None else 0.95 * running + 0.05 * loss
        if step % 100 == 0 or step == 1:
            print(f"step {step:5d}  train MSE {running:.4f}  ({time.perf_counter() - t0:.1f} s)",
                  file=out, flush=True)
    mse = float(np.mean((predict(x_test) - y_test) ** 2))
    print(f"test MSE {mse:.4f} on 1000 new sequences (mean predictor: ~0.167) "
          f"in {time.perf_counter() - t0:.1f} s", file=out)
    return mse


def _cmd_info(args):
    from . import build_info

    info = build_info()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:14s} {v}")
    return 0


def _cmd_demo(args):
    mse = run_demo(steps=args.steps, seed=args.seed)
    if mse >= 0.05:
        print(f"demo FAILED: test MSE {mse:.4f} did not beat 0.05", file=sys.stderr)
        return 1
    print("demo passed: test MSE beats 0.05")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastlstm", description="fastlstm: a fast CPU LSTM")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="how the C++ core was built")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("demo", help="train an LSTM on the adding problem")
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)
    try:
        from . import bench
    except ImportError:  # pragma: no cover - the bench module is part of the package
        bench = None
    if bench is not None and hasattr(bench, "add_arguments"):
        p = sub.add_parser("bench", help="benchmark against PyTorch / ONNX Runtime")
        bench.add_arguments(p)
        p.set_defaults(func=bench.run)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
