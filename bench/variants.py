"""Times every recurrent variant on one bench case (train_small's shape: B=32, T=50, I=128,
H=256), inference forward and forward+backward, next to PyTorch where PyTorch has the variant.
Interleaved per repeat (each timed call preceded by an untimed one of the same
implementation), medians of --repeats, same thread count.

    python bench/variants.py [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fastlstm

B, T, I, H = 32, 50, 128, 256

# name, fastlstm constructor kwargs, cell, uses lengths, torch kwargs (None = no peer)
VARIANTS = [
    ("lstm", {}, "LSTM", False, {}),
    ("stacked L=2", {"num_layers": 2}, "LSTM", False, {"num_layers": 2}),
    ("bidirectional", {"bidirectional": True}, "LSTM", False, {"bidirectional": True}),
    ("lengths (packed)", {}, "LSTM", True, {}),
    ("projection P=128", {"proj_size": 128}, "LSTM", False, {"proj_size": 128}),
    ("peephole", {"peephole": True}, "LSTM", False, None),
    ("dropout 0.2, L=2", {"num_layers": 2, "dropout": 0.2}, "LSTM", False,
     {"num_layers": 2, "dropout": 0.2}),
    ("gru", {}, "GRU", False, {}),
    ("gru bidirectional", {"bidirectional": True}, "GRU", False, {"bidirectional": True}),
]


def _median(ts):
    return float(np.median(ts)) * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=fastlstm.get_num_threads())
    args = ap.parse_args(argv)
    fastlstm.set_num_threads(args.threads)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    lengths = rng.integers(T // 2, T + 1, size=B)
    lengths[0] = T
    print(f"variants on B={B} T={T} I={I} H={H}, {args.threads} threads, median of "
          f"{args.repeats}; ratio = fastlstm / torch")
    print(f"{'variant':20s} {'fwd ms':>8s} {'torch':>8s} {'ratio':>6s}   "
          f"{'fwd+bwd ms':>10s} {'torch':>8s} {'ratio':>6s}")
    for name, kw, cell, use_len, tkw in VARIANTS:
        mod = getattr(fastlstm, cell)(I, H, seed=0, **kw)
        ln = lengths if use_len else None
        out, _ = mod.forward(x, lengths=ln, train=True)
        ones = np.ones_like(out)

        def f_inf():
            mod(x, lengths=ln)

        def f_train():
            mod.forward(x, lengths=ln, train=True)
            mod.backward(ones)

        t_inf = t_train = None
        if torch is not None and tkw is not None:
            tm = getattr(torch.nn, cell)(I, H, **tkw)
            xt = torch.from_numpy(x)
            lt = torch.from_numpy(lengths)

            def run_t(xin):
                if use_len:
                    packed = torch.nn.utils.rnn.pack_padded_sequence(xin, lt, enforce_sorted=False)
                    o, _ = tm(packed)
                    return torch.nn.utils.rnn.pad_packed_sequence(o, total_length=T)[0]
                return tm(xin)[0]

            def t_inf():
                with torch.no_grad():
                    run_t(xt)

            def t_train():
                xr = xt.clone().requires_grad_(True)
                run_t(xr).sum().backward()

        res = {k: [] for k in ("fi", "ft", "ti", "tt")}
        pairs = [("fi", f_inf), ("ft", f_train)]
        if t_inf is not None:
            pairs += [("ti", t_inf), ("tt", t_train)]
        for _, fn in pairs:
            fn()  # warm-up
        for _ in range(args.repeats):
            for key, fn in pairs:
                # settle: PyTorch's OpenMP workers spin for some milliseconds after its call and
                # doubled the time of a fastlstm call made right after (measured); 20 ms and
                # one untimed call let them sleep (a longer idle wakes the VM's second CPU
                # slowly, for every library alike)
                time.sleep(0.02)
                fn()
                t0 = time.perf_counter()
                fn()
                res[key].append(time.perf_counter() - t0)
        fi, ft = _median(res["fi"]), _median(res["ft"])
        if res["ti"]:
            ti, tt = _median(res["ti"]), _median(res["tt"])
            print(f"{name:20s} {fi:8.2f} {ti:8.2f} {fi / ti:6.2f}   {ft:10.2f} {tt:8.2f} "
                  f"{ft / tt:6.2f}")
        else:
            print(f"{name:20s} {fi:8.2f} {'-':>8s} {'-':>6s}   {ft:10.2f} {'-':>8s} {'-':>6s}")
    # the streaming step: one Python call per step, state carried
    lstm = fastlstm.LSTM(I, H, seed=0)
    stream = lstm.stream(batch=1)
    xs = x[:, 0, :]
    stream.step(xs[0])
    ts = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for t in range(T):
            stream.step(xs[t])
        ts.append((time.perf_counter() - t0) / T)
    print(f"{'stream step (B=1)':20s} {np.median(ts) * 1e6:8.1f} us per step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
