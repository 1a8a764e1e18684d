"""Sine forecasting as a PyTorch user writes it, in fastlstm.

The PyTorch original (tests/data/make_pytorch_style_fixture.py runs it, and the test suite
checks that this file's loss curve equals its curve from the same initial weights)::

    lstm = torch.nn.LSTM(1, 32, batch_first=True)
    head = torch.nn.Linear(32, 1)
    opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=1e-2)
    for epoch in range(epochs):
        for xb, yb in batches:
            opt.zero_grad()
            out, _ = lstm(xb)
            pred = head(out[:, -1])
            loss = torch.nn.functional.mse_loss(pred, yb)
            loss.backward()
            opt.step()

fastlstm has no autograd: each module's ``backward`` takes the gradient of its output and
returns the gradient of its input, so the chain rule is written out (three lines below).
fastlstm's Adam defaults to Keras's form (epsilon added before the bias correction);
``epsilon_after_correction=True`` with ``epsilon=1e-8`` is PyTorch's.

Run: ``python examples/python/pytorch_style_training.py [--epochs 10] [--hidden 32]``.
"""

from __future__ import annotations

import argparse

import numpy as np

import fastlstm


def make_data(n=128, window=24, seed=0):
    """Windows of a noisy two-tone sine and the value after each: x [n, window, 1], y [n, 1]
    (float32)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n + window) * 0.25
    series = np.sin(t) + 0.5 * np.sin(0.37 * t) + 0.05 * rng.standard_normal(t.shape)
    x = np.stack([series[i:i + window] for i in range(n)])[:, :, None]
    y = series[window:window + n, None]
    return x.astype(np.float32), y.astype(np.float32)


def build(hidden=32, seed=0, dtype="float32"):
    """The two modules, PyTorch's default initialization (uniform in +-1/sqrt(fan))."""
    lstm = fastlstm.LSTM(1, hidden, batch_first=True, dtype=dtype, seed=seed)
    head = fastlstm.Linear(hidden, 1, dtype=dtype, seed=seed + 1)
    return lstm, head


def train(lstm, head, x, y, epochs=10, batch_size=32, learning_rate=1e-2):
    """The training loop; returns the loss of every step (batches in order, no shuffling)."""
    # PyTorch's Adam: epsilon 1e-8, added after the bias correction
    opt = fastlstm.optim.Adam(params=[lstm, head], learning_rate=learning_rate, epsilon=1e-8,
                              epsilon_after_correction=True)
    lstm.train()
    head.train()
    losses = []
    for _ in range(epochs):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size].astype(lstm.dtype)
            opt.zero_grad()
            out, _ = lstm.forward(xb)                    # [B, T, H], kept for backward
            pred = head.forward(out[:, -1])              # [B, 1]
            diff = pred - yb
            losses.append(float(np.mean(diff * diff)))   # mse_loss
            # loss.backward(), by hand: d loss / d pred, then back through head and lstm
            d_out = np.zeros_like(out)
            d_out[:, -1] = head.backward(2.0 * diff / diff.size)
            lstm.backward(d_out)
            opt.step()
    return losses


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    x, y = make_data()
    lstm, head = build(args.hidden, args.seed)
    losses = train(lstm, head, x, y, epochs=args.epochs)
    steps = len(losses) // args.epochs
    for e in range(args.epochs):
        print(f"epoch {e + 1}: mean loss {np.mean(losses[e * steps:(e + 1) * steps]):.4f}")
    lstm.eval()
    head.eval()
    pred = head(lstm(x)[0][:, -1])
    print(f"final MSE {float(np.mean((pred - y) ** 2)):.4f} (predicting the mean: "
          f"{float(np.var(y)):.4f})")
    return losses


if __name__ == "__main__":
    main()
