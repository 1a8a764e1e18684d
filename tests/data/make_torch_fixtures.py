"""Writes the PyTorch golden fixtures ``tests/data/torch_*.npz`` (committed; the suite never
imports torch). Run from anywhere: ``python3 tests/data/make_torch_fixtures.py``.

Each fixture is one ``torch.nn.LSTM``/``torch.nn.GRU`` in float64 with:

- ``config``: a 0-d string array holding ``json.dumps`` of cell, input_size, hidden_size,
  num_layers, bidirectional, proj_size, batch_first, bias, has_h0, lengths (list or null);
- ``param.<name>`` for every parameter under PyTorch's name;
- inputs ``x`` (in the module's layout), ``h0``/``c0`` if used, ``lengths`` if used;
- upstream gradients ``d_output``, ``d_h_n`` and (LSTM) ``d_c_n``, random;
- torch's results ``output`` (padded with zeros past each length for packed cases), ``h_n``,
  ``c_n``, ``d_x``, ``d_h0``/``d_c0`` (if h0 is used) and ``grad.<name>`` for every parameter,
  from backward of ``sum(output*d_output) + sum(h_n*d_h_n) + sum(c_n*d_c_n)``.

Sizes are odd on purpose (I=5, H=7, T=9, B=4) so that no dimension hides a transposition.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))

I, H, T, B = 5, 7, 9, 4

# name -> (cell, kwargs for the torch module, has_h0, lengths or None)
CASES = {
    "lstm_single": ("lstm", dict(), False, None),
    "lstm_single_h0": ("lstm", dict(), True, None),
    "lstm_batch_first": ("lstm", dict(batch_first=True), True, None),
    "lstm_stacked3": ("lstm", dict(num_layers=3), True, None),
    "lstm_bidir2": ("lstm", dict(num_layers=2, bidirectional=True), True, None),
    "lstm_proj_bidir": ("lstm", dict(num_layers=2, bidirectional=True, proj_size=3), True, None),
    "lstm_nobias": ("lstm", dict(num_layers=2, bias=False), True, None),
    "gru_single": ("gru", dict(), True, None),
    "gru_stacked_bidir": ("gru", dict(num_layers=2, bidirectional=True), True, None),
    # unsorted lengths, one of them full (T) and one of them 1
    "lstm_packed_bidir2": ("lstm", dict(num_layers=2, bidirectional=True), True, [6, T, 1, 4]),
    "gru_packed_bidir": ("gru", dict(bidirectional=True), True, [3, 1, T, 7]),
}


def make_case(name, cell, kwargs, has_h0, lengths, seed):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cls = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
    module = cls(I, H, dtype=torch.float64, **kwargs)
    num_layers = kwargs.get("num_layers", 1)
    bidirectional = kwargs.get("bidirectional", False)
    proj_size = kwargs.get("proj_size", 0)
    batch_first = kwargs.get("batch_first", False)
    bias = kwargs.get("bias", True)
    D = 2 if bidirectional else 1
    S = proj_size or H
    LD = num_layers * D

    x_np = rng.standard_normal((B, T, I) if batch_first else (T, B, I))
    x = torch.tensor(x_np, requires_grad=True)
    h0 = torch.tensor(rng.standard_normal((LD, B, S)) * 0.5, requires_grad=True) if has_h0 else None
    c0 = (torch.tensor(rng.standard_normal((LD, B, H)) * 0.5, requires_grad=True)
          if has_h0 and cell == "lstm" else None)
    hx = None
    if has_h0:
        hx = (h0, c0) if cell == "lstm" else h0

    if lengths is None:
        output, state = module(x, hx)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False)
        out_packed, state = module(packed, hx)
        output, _ = torch.nn.utils.rnn.pad_packed_sequence(
            out_packed, batch_first=batch_first, total_length=T)
    h_n, c_n = state if cell == "lstm" else (state, None)

    # past a length d_output stays non-zero on purpose: torch ignores it there (the padded
    # output is a constant zero), so a backward that wrongly reads it shows up in d_x
    d_output = rng.standard_normal(tuple(output.shape))
    d_h_n = rng.standard_normal(tuple(h_n.shape))
    loss = (output * torch.tensor(d_output)).sum() + (h_n * torch.tensor(d_h_n)).sum()
    d_c_n = None
    if c_n is not None:
        d_c_n = rng.standard_normal(tuple(c_n.shape))
        loss = loss + (c_n * torch.tensor(d_c_n)).sum()
    loss.backward()

    config = dict(cell=cell, input_size=I, hidden_size=H, num_layers=num_layers,
                  bidirectional=bidirectional, proj_size=proj_size, batch_first=batch_first,
                  bias=bias, has_h0=has_h0, lengths=lengths)
    data = {"config": np.array(json.dumps(config, sort_keys=True))}
    for pname, p in module.named_parameters():
        data["param." + pname] = p.detach().numpy().copy()
        data["grad." + pname] = p.grad.numpy().copy()
    data["x"] = x_np
    data["d_x"] = x.grad.numpy().copy()
    if has_h0:
        data["h0"] = h0.detach().numpy().copy()
        data["d_h0"] = h0.grad.numpy().copy()
        if c0 is not None:
            data["c0"] = c0.detach().numpy().copy()
            data["d_c0"] = c0.grad.numpy().copy()
    if lengths is not None:
        data["lengths"] = np.array(lengths, dtype=np.int64)
    data["d_output"] = d_output
    data["d_h_n"] = d_h_n
    data["output"] = output.detach().numpy().copy()
    data["h_n"] = h_n.detach().numpy().copy()
    if c_n is not None:
        data["d_c_n"] = d_c_n
        data["c_n"] = c_n.detach().numpy().copy()

    path = os.path.join(HERE, f"torch_{name}.npz")
    np.savez_compressed(path, **data)
    return path


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    for k, (name, (cell, kwargs, has_h0, lengths)) in enumerate(CASES.items()):
        path = make_case(name, cell, kwargs, has_h0, lengths, seed=1000 + k)
        print(f"{os.path.relpath(path)}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
