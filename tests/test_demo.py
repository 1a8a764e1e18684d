"""The main job: `fastlstm demo` learns the adding problem (test MSE must beat 0.05)."""

import io

import numpy as np

from fastlstm.cli import adding_problem, main, run_demo


def test_adding_problem_data():
    x, y = adding_problem(200, 50, np.random.default_rng(0))
    assert x.shape == (200, 50, 2) and y.shape == (200,)
    assert np.all(x[..., 1].sum(axis=1) == 2)
    np.testing.assert_allclose(y, (x[..., 0] * x[..., 1]).sum(axis=1), rtol=1e-6)
    # the mean predictor's MSE is ~1/6, the baseline the demo must beat by far
    assert 0.12 < np.var(y) < 0.22


def test_demo_learns_saves_and_reloads(tmp_path):
    out = io.StringIO()
    mse = run_demo(out=out, verbose=0, save_dir=str(tmp_path))
    text = out.getvalue()
    assert "epoch 1: train MSE" in text and "test MSE" in text and "reloaded" in text
    assert (tmp_path / "adding_lstm.safetensors").stat().st_size > 0
    # the reloaded model's test MSE, far below the mean predictor's ~0.167
    assert mse < 0.05, text


def test_cli_info(capsys):
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "eigen_version" in text and "3.4" in text
