"""Next-step time-series forecasting with an LSTM, against the naive last-value forecast.

Two series:
  * a noisy mixture of sines (synthetic);
  * a real recording that ships inside an installed package: the membrane-potential trace in
    matplotlib's sample data (``matplotlib.cbook.get_sample_data("membrane.dat")``, 12000
    float32 samples; downsampled 4x here). No download.

Each series is split in time (first 80% train, last 20% test), standardized with the training
part's mean and std, cut into windows of ``window`` steps, and an LSTM(units) -> Dense(1)
predicts the value after each window. The script prints the test RMSE (in the series' own
units) of the model and of the naive forecast "the next value equals the last one".

Run:  python examples/python/forecast_timeseries.py [--epochs 30] [--series sine membrane]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from fastlstm import Sequential, set_seed
from fastlstm.callbacks import EarlyStopping
from fastlstm.layers import LSTM, Dense, Input
from fastlstm.optim import Adam


def sine_mixture(n=3000, noise=0.1, seed=0):
    """Two incommensurate sines plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.sin(0.07 * t) + 0.5 * np.sin(0.31 * t + 1.0) + noise * rng.normal(size=n)


def membrane(step=4):
    """matplotlib's bundled membrane-potential recording (real data), every ``step``-th sample."""
    from matplotlib.cbook import get_sample_data

    with get_sample_data("membrane.dat") as f:
        data = np.frombuffer(f.read(), dtype=np.float32)
    return data[::step].astype(np.float64)


def windows(series, window):
    """[N, window, 1] inputs and [N, 1] next values."""
    idx = np.arange(window)[None, :] + np.arange(len(series) - window)[:, None]
    return series[idx][:, :, None], series[window:][:, None]


def forecast(series, window=32, units=32, epochs=30, batch_size=64, seed=0, verbose=2):
    """Trains on the first 80% of ``series``; returns test RMSEs of the model and the naive
    forecast, in the series' units."""
    set_seed(seed)
    split = int(len(series) * 0.8)
    mean, std = series[:split].mean(), series[:split].std()
    z = (series - mean) / std
    x_train, y_train = windows(z[:split], window)
    x_test, y_test = windows(z[split - window :], window)  # test targets: the last 20%

    model = Sequential([Input((window, 1)), LSTM(units), Dense(1)])
    model.compile(optimizer=Adam(0.005), loss="mse")
    model.fit(x_train.astype(np.float32), y_train.astype(np.float32), epochs=epochs,
              batch_size=batch_size, validation_split=0.1, verbose=verbose,
              callbacks=[EarlyStopping(patience=5, restore_best_weights=True)])
    pred = model.predict(x_test.astype(np.float32), verbose=0).astype(np.float64)
    rmse = float(np.sqrt(np.mean((pred - y_test) ** 2))) * std
    naive = float(np.sqrt(np.mean((x_test[:, -1] - y_test) ** 2))) * std
    r = {"rmse": rmse, "naive_rmse": naive, "test_points": len(y_test)}
    # the same trained model with its LSTM quantized for inference (Keras's model.quantize)
    for precision, q in quantized_copies(model):
        pq = q.predict(x_test.astype(np.float32), verbose=0).astype(np.float64)
        r[f"rmse_{precision}"] = float(np.sqrt(np.mean((pq - y_test) ** 2))) * std
    return r


def quantized_copies(model, precisions=("bf16", "int8")):
    """(precision, a copy of the trained model quantized in place); the model is untouched."""
    import copy

    for precision in precisions:
        q = copy.deepcopy(model)
        q.quantize(precision)
        yield precision, q


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--series", nargs="+", default=["sine", "membrane"],
                        choices=["sine", "membrane"])
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)
    results = {}
    for name in args.series:
        series = sine_mixture() if name == "sine" else membrane()
        print(f"== {name}: {len(series)} points, window {args.window}")
        t0 = time.perf_counter()
        r = forecast(series, window=args.window, units=args.units, epochs=args.epochs,
                     verbose=args.verbose)
        r["seconds"] = time.perf_counter() - t0
        results[name] = r
        print(f"{name}: test RMSE {r['rmse']:.4f} vs naive last-value {r['naive_rmse']:.4f} "
              f"({r['rmse'] / r['naive_rmse']:.2f}x) on {r['test_points']} points, "
              f"{r['seconds']:.1f}s")
    return results


if __name__ == "__main__":
    main()
