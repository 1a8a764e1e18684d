"""fastlstm.callbacks: History, EarlyStopping, ModelCheckpoint, CSVLogger, LambdaCallback,
ReduceLROnPlateau, LearningRateScheduler and the progress output (verbose 0/1/2)."""

import csv
import io as _io

import numpy as np
import pytest
from fastlstm import callbacks as cbm
from fastlstm import optim
from fastlstm.callbacks import (
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
)
from fastlstm.layers import LSTM, Dense, Input
from fastlstm.models import Sequential, set_seed


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6, 2)).astype(np.float32)
    y = x[:, :, :1].sum(axis=1) * 0.3
    return x, y


def _model(lr=0.01):
    set_seed(0)
    m = Sequential([Input((6, 2)), LSTM(8), Dense(1)])
    m.compile(optim.Adam(lr), "mse", metrics=["mae"])
    return m


class FakeModel:
    """What EarlyStopping/ReduceLROnPlateau touch: weights, stop flag, optimizer."""

    def __init__(self):
        self.w = 0
        self.stop_training = False
        self.optimizer = optim.SGD(1.0)

    def get_weights(self):
        return [self.w]

    def set_weights(self, ws):
        self.w = ws[0]


def _drive(cb, values, key="val_loss", model=None):
    model = model or FakeModel()
    cb.set_model(model)
    cb.on_train_begin()
    stopped = None
    for epoch, v in enumerate(values):
        model.w = epoch
        cb.on_epoch_end(epoch, {key: v})
        if model.stop_training:
            stopped = epoch
            break
    cb.on_train_end()
    return model, stopped


def test_history_records_every_epoch():
    m = _model()
    x, y = _data()
    h = m.fit(x, y, epochs=3, batch_size=16, validation_split=0.25, verbose=0)
    assert h is m.history and h.epoch == [0, 1, 2]
    assert set(h.history) == {"loss", "mae", "val_loss", "val_mae"}
    assert all(len(v) == 3 for v in h.history.values())
    assert h.params["epochs"] == 3 and h.params["steps"] == 3


def test_early_stopping_patience_and_restore_best_weights():
    model, stopped = _drive(EarlyStopping(patience=2, restore_best_weights=True),
                            [1.0, 0.5, 0.6, 0.7, 0.4])
    assert stopped == 3 and model.w == 1  # best epoch 1 restored
    model, stopped = _drive(EarlyStopping(patience=1, min_delta=0.1), [1.0, 0.95, 0.5])
    assert stopped == 1  # 0.95 is not better by more than min_delta
    model, stopped = _drive(EarlyStopping(monitor="val_accuracy", patience=0), [0.5, 0.6, 0.55],
                            key="val_accuracy")
    assert stopped == 2  # auto mode maximizes accuracy
    # improving epochs that miss the baseline do not reset the patience count (Keras's rule)
    model, stopped = _drive(EarlyStopping(patience=2, baseline=0.1), [1.0, 0.5, 0.6, 0.7])
    assert stopped == 2
    model, stopped = _drive(EarlyStopping(patience=2), [1.0, 0.5, 0.6, 0.7])
    assert stopped == 3


def test_early_stopping_in_fit_and_unknown_monitor():
    m = _model(lr=0.0)
    x, y = _data()
    # a zero learning rate never improves the loss; unshuffled, every epoch sums the same batch
    # losses in the same order, so the loss is the same bits (shuffled, the epoch means differ
    # in their last bits, by NumPy's CPU-dependent float32 summation, and may "improve")
    h = m.fit(x, y, epochs=10, verbose=0, shuffle=False,
              callbacks=[EarlyStopping(monitor="loss", patience=1)])
    assert len(set(h.history["loss"])) == 1
    assert h.epoch == [0, 1]
    with pytest.raises(ValueError, match="monitors 'val_loss'.*available: \\['loss', 'mae'\\]"):
        m.fit(x, y, epochs=2, verbose=0, callbacks=[EarlyStopping()])


def test_model_checkpoint_best_only(tmp_path):
    io = pytest.importorskip("fastlstm.io")  # model files: the same package's io module
    m = _model()
    x, y = _data()
    path = tmp_path / "best.fastlstm"
    saved = []
    ck = ModelCheckpoint(str(path), monitor="loss", save_best_only=True)
    orig = m.save

    def spy(p, **kw):
        saved.append(m.get_weights())
        return orig(p, **kw)

    m.save = spy
    h = m.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[ck])
    losses = h.history["loss"]
    improvements = sum(1 for i, v in enumerate(losses) if v < min(losses[:i], default=np.inf))
    assert len(saved) == improvements >= 1
    loaded = io.load_model(path)
    best = saved[-1]
    np.testing.assert_array_equal(loaded.get_weights()[0], best[0])


def test_model_checkpoint_formats_the_path_and_saves_weights(tmp_path):
    m = _model()
    x, y = _data()
    m.fit(x, y, epochs=2, verbose=0,
          callbacks=[ModelCheckpoint(str(tmp_path / "w-{epoch:02d}-{loss:.2f}.npz"),
                                     save_weights_only=True)])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[0].startswith("w-01-") and names[1].startswith("w-02-")
    other = _model()
    other.load_weights(tmp_path / names[1])
    np.testing.assert_array_equal(other.predict(x, verbose=0), m.predict(x, verbose=0))


def test_csv_logger_rows_match_history(tmp_path):
    m = _model()
    x, y = _data()
    path = tmp_path / "log.csv"
    h = m.fit(x, y, epochs=3, verbose=0, validation_split=0.25, callbacks=[CSVLogger(path)])
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    for key in ("loss", "val_mae"):
        np.testing.assert_allclose([float(r[key]) for r in rows], h.history[key], rtol=1e-12)
    m.fit(x, y, epochs=1, verbose=0, callbacks=[CSVLogger(path, append=True)])
    with open(path) as f:
        assert len(list(csv.DictReader(f))) == 4


def test_lambda_callback_hooks_are_called():
    m = _model()
    x, y = _data(48)
    calls = {"epoch_begin": 0, "epoch_end": 0, "batch_end": 0, "train_begin": 0, "train_end": 0}
    cb = LambdaCallback(
        on_epoch_begin=lambda e, logs: calls.__setitem__("epoch_begin", calls["epoch_begin"] + 1),
        on_epoch_end=lambda e, logs: calls.__setitem__("epoch_end", calls["epoch_end"] + 1),
        on_batch_end=lambda b, logs: calls.__setitem__("batch_end", calls["batch_end"] + 1),
        on_train_begin=lambda logs: calls.__setitem__("train_begin", calls["train_begin"] + 1),
        on_train_end=lambda logs: calls.__setitem__("train_end", calls["train_end"] + 1),
    )
    m.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[cb])
    assert calls == {"epoch_begin": 2, "epoch_end": 2, "batch_end": 6, "train_begin": 1,
                     "train_end": 1}


def test_reduce_lr_on_plateau():
    model = FakeModel()
    cb = ReduceLROnPlateau(factor=0.5, patience=2, min_lr=0.2, cooldown=1, min_delta=0.0)
    _drive(cb, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], model=model)
    # plateau from epoch 1: cut after 2 bad epochs (1.0 -> 0.5), one cooldown epoch, 2 more
    # bad epochs (-> 0.25), then clipped at min_lr
    assert model.optimizer.learning_rate == pytest.approx(0.2)
    m = _model(lr=0.0)
    x, y = _data()
    h = m.fit(x, y, epochs=2, verbose=0,
              callbacks=[ReduceLROnPlateau(monitor="loss", patience=1, factor=0.5)])
    assert h.history["learning_rate"] == [0.0, 0.0]


def test_learning_rate_scheduler():
    m = _model(lr=0.1)
    x, y = _data()
    h = m.fit(x, y, epochs=3, verbose=0,
              callbacks=[LearningRateScheduler(lambda epoch, lr: lr * 0.5)])
    assert h.history["learning_rate"] == pytest.approx([0.05, 0.025, 0.0125])


# ------------------------------------------------------------------------------------ progress
def test_progress_output_verbose_levels(capsys):
    m = _model()
    x, y = _data()
    m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert capsys.readouterr().out == ""
    m.fit(x, y, epochs=2, batch_size=16, verbose=2, validation_split=0.25)
    out = capsys.readouterr().out
    lines = out.strip().split("\n")
    assert "\r" not in out and lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2"
    assert lines[1].startswith("3/3 - ") and "loss: " in lines[1] and "val_mae: " in lines[1]
    m.fit(x, y, epochs=1, batch_size=16, verbose=1)
    out = capsys.readouterr().out
    # stdout is not a terminal here: one line per epoch, no redraws
    assert out.startswith("Epoch 1/1\n4/4 [==============================]") and "\r" not in out
    assert out.count("\n") == 2
    assert "ms/step" in out or "us/step" in out
    m.evaluate(x, y, verbose=1)
    assert "2/2 [" in capsys.readouterr().out
    m.predict(x, verbose=0)
    assert capsys.readouterr().out == ""


class _Terminal(_io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_redraws_only_on_a_terminal():
    for stream, lines in ((_Terminal(), None), (_io.StringIO(), 1)):
        bar = cbm.Progbar(50, stream=stream, interval=0.0)
        for step in range(1, 51):
            bar.update(step, {"loss": 1.0}, finalize=step == 50)
        out = stream.getvalue()
        if lines is None:
            assert out.count("\r") == 50  # a redraw per step at interval 0
        else:
            assert "\r" not in out and out.count("\n") == lines and "50/50 [" in out


def test_progress_bar_redraws_at_most_every_interval(monkeypatch):
    clock = [0.0]

    def fake_clock():
        clock[0] += 0.001  # every call: 1 ms later
        return clock[0]

    monkeypatch.setattr(cbm.time, "perf_counter", fake_clock)
    stream = _Terminal()
    bar = cbm.Progbar(1000, stream=stream, interval=0.1)
    for step in range(1, 1001):
        bar.update(step, {"loss": 1.0 / step}, finalize=step == 1000)
    redraws = stream.getvalue().count("\r")
    assert 5 <= redraws <= 12  # ~1 s of fake time at 0.1 s intervals, plus the final line
    assert stream.getvalue().endswith("\n") and "1000/1000" in stream.getvalue()


def test_callbacks_must_be_callback_objects():
    m = _model()
    x, y = _data()
    with pytest.raises(TypeError, match="Callback objects"):
        m.fit(x, y, verbose=0, callbacks=[lambda: None])


def test_batch_hooks_reach_callbacks_that_have_them_and_only_them():
    # fit skips the per-batch hooks (and their running logs) when no callback has one; a
    # subclass overriding the Keras alias on_batch_begin, or a hook set on the instance, counts
    class Alias(cbm.Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_batch_begin(self, batch, logs=None):
            self.seen.append(batch)

    class Stopper(cbm.Callback):
        def on_train_batch_end(self, batch, logs=None):
            assert "loss" in logs and np.isfinite(logs["loss"])
            if batch == 1:
                self.model.stop_training = True

    inst = cbm.Callback()
    got = []
    inst.on_train_batch_end = lambda b, logs=None: got.append((b, logs["loss"]))
    assert not cbm.CallbackList([cbm.History(), cbm.Callback()]).implements(
        "on_train_batch_begin", "on_train_batch_end")
    for cb in (Alias(), Stopper(), inst):
        assert cbm.CallbackList([cbm.History(), cb]).implements("on_train_batch_end",
                                                                "on_train_batch_begin")
    m = _model()
    x, y = _data(64)
    a = Alias()
    m.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[a, inst])
    assert a.seen == [0, 1, 2, 3] * 2
    assert [b for b, _ in got] == [0, 1, 2, 3] * 2
    hist = m.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[Stopper()])
    assert len(hist.history["loss"]) == 1  # stopped after batch 2 of the first epoch
