"""Writes tests/data/cpp_engine_fixture.txt: golden values from torch.nn.LSTM / torch.nn.GRU
for the C++ engine test (tests/cpp/test_engine.cpp), as plain text so C++ reads it without
Python or a parser. Run: python tests/data/make_cpp_engine_fixture.py (needs torch).

Format, one block per case:
  case <name> <cell> I H L bidirectional proj_size batch_first T B
  then named arrays, each as: <name> <count> v1 v2 ... (float64 text, 17 significant digits)
  end
Arrays: params (the flat buffer in fastlstm's layout: PyTorch's parameter order), x, h0, c0,
d_output, d_h_n, d_c_n, output, h_n, c_n, d_x, d_h0, d_c0, d_params (same layout as params).
"""

import os

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = [
    # name, cell, I, H, L, bidirectional, proj, batch_first, T, B
    ("lstm_basic", "lstm", 5, 7, 1, False, 0, False, 6, 3),
    ("lstm_stacked_bidir_proj", "lstm", 4, 9, 2, True, 3, True, 5, 2),
    ("gru_stacked_bidir", "gru", 3, 6, 2, True, 0, False, 4, 3),
]


def fmt(name, a):
    a = np.asarray(a, dtype=np.float64).ravel()
    return f"{name} {a.size} " + " ".join(f"{v:.17g}" for v in a)


def main():
    torch.manual_seed(1234)
    lines = []
    for name, cell, I, H, L, bid, P, bf, T, B in CASES:
        kw = dict(num_layers=L, bidirectional=bid, batch_first=bf)
        if cell == "lstm":
            m = torch.nn.LSTM(I, H, proj_size=P, **kw).double()
        else:
            m = torch.nn.GRU(I, H, **kw).double()
        D = 2 if bid else 1
        S = P if P else H
        x = torch.randn(*((B, T, I) if bf else (T, B, I)), dtype=torch.float64, requires_grad=True)
        h0 = torch.randn(L * D, B, S, dtype=torch.float64, requires_grad=True)
        c0 = torch.randn(L * D, B, H, dtype=torch.float64, requires_grad=True)
        if cell == "lstm":
            out, (hn, cn) = m(x, (h0, c0))
        else:
            out, hn = m(x, h0)
            cn = torch.zeros(0, dtype=torch.float64)
        d_out = torch.randn_like(out)
        d_hn = torch.randn_like(hn)
        d_cn = torch.randn_like(cn)
        loss = (out * d_out).sum() + (hn * d_hn).sum() + (cn * d_cn).sum()
        loss.backward()
        params = [p.detach().numpy().ravel() for p in m.parameters()]
        grads = [p.grad.numpy().ravel() for p in m.parameters()]
        lines.append(f"case {name} {cell} {I} {H} {L} {int(bid)} {P} {int(bf)} {T} {B}")
        lines.append(fmt("params", np.concatenate(params)))
        lines.append(fmt("x", x.detach()))
        lines.append(fmt("h0", h0.detach()))
        lines.append(fmt("c0", c0.detach() if cell == "lstm" else []))
        lines.append(fmt("d_output", d_out))
        lines.append(fmt("d_h_n", d_hn))
        lines.append(fmt("d_c_n", d_cn))
        lines.append(fmt("output", out.detach()))
        lines.append(fmt("h_n", hn.detach()))
        lines.append(fmt("c_n", cn.detach()))
        lines.append(fmt("d_x", x.grad))
        lines.append(fmt("d_h0", h0.grad))
        lines.append(fmt("d_c0", c0.grad if cell == "lstm" else []))
        lines.append(fmt("d_params", np.concatenate(grads)))
        lines.append("end")
    with open(os.path.join(HERE, "cpp_engine_fixture.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
