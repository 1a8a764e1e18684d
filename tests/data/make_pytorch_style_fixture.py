"""Writes ``tests/data/pytorch_style_training.npz`` (committed; the suite never imports torch):
the PyTorch loop that examples/python/pytorch_style_training.py ports, run from PyTorch's own
initial weights, and its loss at every step. Run: ``python3 tests/data/make_pytorch_style_fixture.py``
(needs torch==2.13.0, the ``bench`` extra).

Everything in float64. Keys: ``x`` [N, T, 1], ``y`` [N, 1] (the example's ``make_data()``), ``lstm.<name>`` and
``head.<name>`` (the initial parameters under PyTorch's names), ``losses`` (one per step),
``config`` (a JSON string: hidden, epochs, batch_size, learning_rate).
"""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "..", "examples", "python", "pytorch_style_training.py")
CONFIG = {"hidden": 32, "epochs": 10, "batch_size": 32, "learning_rate": 1e-2}


def main():
    spec = importlib.util.spec_from_file_location("pytorch_style_training", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    x, y = example.make_data()

    torch.manual_seed(0)
    torch.set_num_threads(1)
    # float64, so that the comparison sees the algorithm, not float32's rounding (which makes
    # two correct float32 runs drift apart by ~0.3% over these 40 steps)
    lstm = torch.nn.LSTM(1, CONFIG["hidden"], batch_first=True).double()
    head = torch.nn.Linear(CONFIG["hidden"], 1).double()
    init = {f"lstm.{k}": v.detach().numpy().copy() for k, v in lstm.state_dict().items()}
    init.update({f"head.{k}": v.detach().numpy().copy() for k, v in head.state_dict().items()})

    opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=CONFIG["learning_rate"])
    xt, yt = torch.from_numpy(x.astype(np.float64)), torch.from_numpy(y.astype(np.float64))
    losses = []
    bs = CONFIG["batch_size"]
    for _ in range(CONFIG["epochs"]):
        for i in range(0, len(x), bs):
            xb, yb = xt[i:i + bs], yt[i:i + bs]
            opt.zero_grad()
            out, _ = lstm(xb)
            pred = head(out[:, -1])
            loss = torch.nn.functional.mse_loss(pred, yb)
            loss.backward()
            opt.step()
            losses.append(loss.item())

    path = os.path.join(HERE, "pytorch_style_training.npz")
    np.savez(path, x=x, y=y, losses=np.array(losses), config=np.array(json.dumps(CONFIG)),
             **init)
    print(f"wrote {path}: {len(losses)} steps, loss {losses[0]:.4f} -> {losses[-1]:.4f}")


if __name__ == "__main__":
    main()
