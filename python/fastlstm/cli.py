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


def run_demo(T=50, hidden=64, batch=64, n_train=16384, epochs=8, lr=3e-3, seed=0,
             save_dir=None, verbose=1, out=sys.stdout):
    """Trains Sequential([LSTM, Dense]) on the adding problem with the Keras-style layer,
    saves the model, reloads it and returns the reloaded model's test MSE."""
    import os
    import tempfile

    from . import load_model
    from .layers import LSTM, Dense, Input
    from .models import Sequential, set_seed
    from .optim import Adam

    set_seed(seed)
    x, y = adding_problem(n_train, T, np.random.default_rng(seed))
    x_val, y_val = adding_problem(1000, T, np.random.default_rng(seed + 1))
    x_test, y_test = adding_problem(1000, T, np.random.default_rng(seed + 2))
    model = Sequential([Input((T, 2)), LSTM(hidden), Dense(1)])
    # gradient clipping against exploding gradients, as the design notes advise
    model.compile(optimizer=Adam(learning_rate=lr, clipnorm=1.0), loss="mse")
    print(f"fastlstm demo: the adding problem (T={T}); predicting the mean gives MSE ~ 0.167",
          file=out)
    print(f"LSTM({hidden}) + Dense(1), Adam lr={lr} clipnorm=1, {n_train} sequences, batch "
          f"{batch}, {epochs} epochs", file=out, flush=True)
    t0 = time.perf_counter()
    history = model.fit(x, y[:, None], batch_size=batch, epochs=epochs,
                        validation_data=(x_val, y_val[:, None]), verbose=verbose)
    if not verbose:  # the progress bar showed these already
        for epoch, (loss, val) in enumerate(zip(history.history["loss"],
                                                history.history["val_loss"]), 1):
            print(f"epoch {epoch}: train MSE {loss:.4f}  validation MSE {val:.4f}", file=out)
    with tempfile.TemporaryDirectory() if save_dir is None else _nullcontext(save_dir) as d:
        path = os.path.join(d, "adding_lstm.safetensors")
        model.save(path)
        reloaded = load_model(path)
        pred = reloaded.predict(x_test, batch_size=256, verbose=0)[:, 0]
        print(f"saved to {path} ({os.path.getsize(path)} bytes) and reloaded", file=out)
    mse = float(np.mean((pred - y_test) ** 2))
    print(f"test MSE {mse:.4f} on 1000 new sequences (mean predictor: ~0.167) "
          f"in {time.perf_counter() - t0:.1f} s", file=out)
    return mse


class _nullcontext:
    def __init__(self, value):
        self.value = value

    def __enter__(self):
        return self.value

    def __exit__(self, *exc):
        return False


def _cmd_info(args):
    from . import build_info, cpu_info

    info = build_info()
    cpu = cpu_info()
    if args.json:
        print(json.dumps(dict(info, cpu=cpu), indent=2))
    else:
        for k, v in info.items():
            print(f"{k:14s} {v}")
        print(f"{'cpu':14s} {cpu['model']} ({cpu['vendor']})")
        print(f"{'cpu features':14s} {' '.join(cpu['features'])}")
        print(f"{'kernel levels':14s} {' '.join(cpu['levels'])} (runnable here, lowest first)")
        print(f"{'kernel level':14s} {cpu['level']} (FASTLSTM_CPU=<level> caps it)")
    return 0


def _cmd_demo(args):
    mse = run_demo(epochs=args.epochs, seed=args.seed, save_dir=args.save_dir)
    if mse >= 0.05:
        print(f"demo FAILED: test MSE {mse:.4f} did not beat 0.05", file=sys.stderr)
        return 1
    print("demo passed: test MSE beats 0.05")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastlstm", description="fastlstm: a fast CPU LSTM")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="how the C++ core was built, the CPU and the kernel level in use")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("demo", help="train an LSTM on the adding problem")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-dir", default=None,
                   help="keep the trained model file here (default: a temporary directory)")
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
