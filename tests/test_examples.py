"""The seed-task examples (examples/python/) run, shortened, and learn."""

import importlib.util
import pathlib

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples" / "python"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_forecast_sine_mixture_beats_naive(capsys):
    ex = _load("forecast_timeseries")
    results = ex.main(["--series", "sine", "--epochs", "8", "--units", "16", "--verbose", "0"])
    r = results["sine"]
    assert r["rmse"] < 0.8 * r["naive_rmse"]
    assert "sine: test RMSE" in capsys.readouterr().out


def test_forecast_real_series_beats_naive():
    # the real series is matplotlib's bundled sample recording (matplotlib: test extra)
    pytest.importorskip("matplotlib")
    ex = _load("forecast_timeseries")
    series = ex.membrane(step=4)
    assert series.shape == (3000,) and np.isfinite(series).all()
    r = ex.forecast(series, window=24, units=16, epochs=8, verbose=0)
    assert r["rmse"] < 0.85 * r["naive_rmse"]


def test_sequence_classification_needs_and_has_memory():
    ex = _load("sequence_classification")
    x, y = ex.make_data(500, max_len=30)
    assert (x[:, 0] > 0).all() and set(np.unique(y)) == {0.0, 1.0}
    # the label is decided by the first token only: the last 5 tokens carry no information
    assert not np.isin(x[:, 5:], ex.MARKERS).any()
    r = ex.train(n_train=1500, n_test=500, max_len=30, epochs=4, verbose=0)
    assert r["test_accuracy"] >= 0.9


def test_digits_rows_reach_95_percent():
    pytest.importorskip("sklearn")  # load_digits: the optional extra fastlstm[sklearn]
    ex = _load("digits_rows")
    r = ex.main(["--verbose", "0"])  # the full example: ~10 s
    assert r["test_accuracy"] >= 0.95


def test_char_text_generation_learns_the_zen(capsys):
    ex = _load("char_text_generation")
    text = ex.zen_text()
    assert text.startswith("The Zen of Python, by Tim Peters") and "Beautiful is better" in text
    cm = ex.CharModel(text, units=64)
    h = cm.fit(8, sample_every=4, verbose=0)
    out = capsys.readouterr().out
    assert out.count("--- sample after epoch") == 2
    assert h.history["loss"][-1] < 0.6 * h.history["loss"][0]
    # far above the most frequent character's share
    top = max(text.count(c) for c in set(text)) / len(text)
    assert h.history["accuracy"][-1] > 2 * top
    s = cm.sample("Beautiful is ", 80)
    assert s.startswith("Beautiful is ") and len(s) == 93 and set(s) <= set(text)


def test_pytorch_style_training_follows_pytorch_s_loss_curve():
    """examples/python/pytorch_style_training.py from PyTorch's initial weights gives PyTorch's
    loss at every step (tests/data/pytorch_style_training.npz, written by
    tests/data/make_pytorch_style_fixture.py from the PyTorch loop the example ports)."""
    import json

    ex = _load("pytorch_style_training")
    with np.load(EXAMPLES.parents[1] / "tests" / "data" / "pytorch_style_training.npz") as z:
        fx = {k: z[k] for k in z.files}
    cfg = json.loads(str(fx["config"]))
    x, y = ex.make_data()
    np.testing.assert_array_equal(x, fx["x"])  # the example's data is the fixture's
    np.testing.assert_array_equal(y, fx["y"])
    lstm, head = ex.build(cfg["hidden"], dtype="float64")  # the fixture is float64
    lstm.load_state_dict({k[5:]: v for k, v in fx.items() if k.startswith("lstm.")})
    head.load_state_dict({k[5:]: v for k, v in fx.items() if k.startswith("head.")})
    losses = ex.train(lstm, head, x, y, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                      learning_rate=cfg["learning_rate"])
    torch_losses = fx["losses"]
    assert len(losses) == len(torch_losses) == 40
    assert torch_losses[-1] < 0.05 * torch_losses[0]  # the curve falls: it is worth following
    np.testing.assert_allclose(losses, torch_losses, rtol=1e-9)
