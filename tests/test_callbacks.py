"""Training callbacks on small Dense models: History, EarlyStopping, ModelCheckpoint,
LearningRateScheduler, ReduceLROnPlateau, CSVLogger, TerminateOnNaN and the progress bar.

Monitored values are scripted (a callback writes them into the logs before the callback under
test) so that when training stops, what is saved and how the learning rate moves are known
exactly in advance.
"""

from __future__ import annotations

import csv
import math
import re

import numpy as np
import pytest

import pyconv
from pyconv.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    History,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TerminateOnNaN,
)

N_TRAIN, N_VAL = 48, 16


def make_data(seed=0):
    """Linearly separable 2-class data: (x_train, y_train, x_val, y_val)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N_TRAIN + N_VAL, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 1.5]) > 0).astype(np.int64)
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def make_model(optimizer=None, seed=0):
    pyconv.set_random_seed(seed)
    model = pyconv.Sequential(
        [
            pyconv.Input((4,)),
            pyconv.Dense(8, activation="tanh"),
            pyconv.Dense(2, activation="softmax"),
        ]
    )
    model.compile(
        optimizer if optimizer is not None else pyconv.optimizers.SGD(0.1),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


class Script(Callback):
    """Write values[epoch] into the epoch's logs under ``key`` (seen by later callbacks)."""

    def __init__(self, key, values):
        super().__init__()
        self.key, self.values = key, list(values)

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]


class Recorder(Callback):
    """Weights, predictions on ``x``, the learning rate and the logs, per epoch and batch."""

    def __init__(self, x=None):
        super().__init__()
        self.x = x
        self.weights, self.preds, self.lrs, self.logs = [], [], [], []
        self.batch_logs, self.batch_lrs, self.batch_epochs = [], [], []
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.batch_logs.append(dict(logs))
        self.batch_lrs.append(self.model.optimizer.learning_rate)
        self.batch_epochs.append(self.epoch)

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())
        self.lrs.append(self.model.optimizer.learning_rate)
        self.logs.append(dict(logs))
        if self.x is not None:
            self.preds.append(self.model.predict(self.x))


def assert_same_weights(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def weights_differ(a, b):
    return max(float(np.abs(u - v).max()) for u, v in zip(a, b)) > 1e-6


# --------------------------------------------------------------------------------------------
# History


def test_history_records_loss_metrics_and_validation_per_epoch():
    x, y, xv, yv = make_data()
    model = make_model()
    rec = Recorder()
    history = model.fit(x, y, batch_size=16, epochs=4, validation_data=(xv, yv), verbose=0,
                        callbacks=[rec])  # fmt: skip
    assert isinstance(history, History)
    assert model.history is history
    assert history.epoch == [0, 1, 2, 3]
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    for key, values in history.history.items():
        assert len(values) == 4
        assert all(math.isfinite(v) for v in values), key
        assert values == [logs[key] for logs in rec.logs]
    # the epoch's loss and accuracy are the running means the last batch reported
    assert len(rec.batch_logs) == 4 * 3
    for e in range(4):
        last = rec.batch_logs[3 * e + 2]
        assert history.history["loss"][e] == last["loss"]
        assert history.history["accuracy"][e] == last["accuracy"]
        assert history.history["accuracy"][e] * N_TRAIN == pytest.approx(
            round(history.history["accuracy"][e] * N_TRAIN), abs=1e-9
        )
    # the last epoch's validation numbers are those of the final weights
    final = model.evaluate(xv, yv, batch_size=16, verbose=0, return_dict=True)
    assert history.history["val_loss"][-1] == pytest.approx(final["loss"], rel=1e-9)
    assert history.history["val_accuracy"][-1] == pytest.approx(final["accuracy"], rel=1e-12)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_each_fit_returns_a_fresh_history():
    x, y, _, _ = make_data()
    model = make_model()
    first = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    second = model.fit(x, y, batch_size=16, epochs=5, initial_epoch=3, verbose=0)
    assert second is not first and model.history is second
    assert first.epoch == [0, 1] and len(first.history["loss"]) == 2
    assert second.epoch == [3, 4] and set(second.history) == {"loss", "accuracy"}
    assert len(second.history["loss"]) == 2


def test_validation_split_adds_val_logs():
    x, y, _, _ = make_data()
    model = make_model()
    history = model.fit(x, y, batch_size=16, epochs=2, validation_split=0.25, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    final = model.evaluate(x[36:], y[36:], verbose=0, return_dict=True)
    assert history.history["val_loss"][-1] == pytest.approx(final["loss"], rel=1e-9)


def test_callbacks_must_be_callback_instances():
    x, y, _, _ = make_data()
    model = make_model()
    with pytest.raises(TypeError, match="Callback"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[lambda *a: None])


# --------------------------------------------------------------------------------------------
# EarlyStopping

SCRIPT = [5.0, 4.0, 4.5, 4.2, 3.0, 2.0, 1.0, 0.5]


@pytest.mark.parametrize(
    "mode,monitor,values,patience,stopped,best,best_epoch",
    [
        ("min", "score", SCRIPT, 2, 3, 4.0, 1),
        ("max", "score", SCRIPT, 2, 2, 5.0, 0),
        ("auto", "score", SCRIPT, 2, 3, 4.0, 1),  # auto: min for a non-accuracy name
        ("auto", "val_acc_score", SCRIPT, 2, 2, 5.0, 0),  # auto: max when the name has "acc"
        ("min", "score", SCRIPT, 0, 2, 4.0, 1),
        ("min", "score", [5.0, 4.0, 3.0, 3.5, 3.4, 3.3, 3.2, 2.0], 3, 5, 3.0, 2),
    ],
)
def test_early_stopping_stops_after_patience_epochs_without_improvement(
    mode, monitor, values, patience, stopped, best, best_epoch
):
    x, y, _, _ = make_data()
    model = make_model()
    es = EarlyStopping(monitor=monitor, mode=mode, patience=patience)
    history = model.fit(x, y, batch_size=16, epochs=len(values), verbose=0,
                        callbacks=[Script(monitor, values), es])  # fmt: skip
    assert history.epoch == list(range(stopped + 1))
    assert es.stopped_epoch == stopped
    assert es.best == best and es.best_epoch == best_epoch
    assert model.stop_training


def test_early_stopping_without_a_plateau_runs_every_epoch():
    x, y, _, _ = make_data()
    model = make_model()
    es = EarlyStopping(monitor="score", patience=1)
    history = model.fit(x, y, batch_size=16, epochs=6, verbose=0,
                        callbacks=[Script("score", [6, 5, 4, 3, 2, 1]), es])  # fmt: skip
    assert len(history.epoch) == 6 and es.stopped_epoch == 0 and es.best == 1


def test_early_stopping_min_delta():
    values = [5.0, 4.95, 4.92, 4.85, 4.8, 4.75, 4.7, 4.65]  # small steps down
    x, y, _, _ = make_data()
    with_delta = EarlyStopping(monitor="score", patience=2, min_delta=0.1)
    h1 = make_model().fit(
        x, y, epochs=8, verbose=0, callbacks=[Script("score", values), with_delta]
    )
    assert h1.epoch == [0, 1, 2] and with_delta.best == 5.0
    without = EarlyStopping(monitor="score", patience=2)
    h2 = make_model().fit(x, y, epochs=8, verbose=0, callbacks=[Script("score", values), without])
    assert len(h2.epoch) == 8 and without.best == 4.65


def test_early_stopping_on_val_loss_that_barely_moves():
    """A learning rate so small that val_loss moves by far less than min_delta."""
    x, y, xv, yv = make_data()
    model = make_model(pyconv.optimizers.SGD(1e-7))
    es = EarlyStopping(min_delta=0.5, patience=1)  # monitor="val_loss", mode auto -> min
    history = model.fit(x, y, batch_size=16, epochs=10, validation_data=(xv, yv), verbose=0,
                        callbacks=[es])  # fmt: skip
    assert es.monitor == "val_loss" and es.mode == "min"
    assert history.epoch == [0, 1]
    assert es.best == history.history["val_loss"][0]
    assert abs(history.history["val_loss"][1] - history.history["val_loss"][0]) < 1e-3


@pytest.mark.parametrize("restore", [True, False])
def test_early_stopping_restore_best_weights(restore, capsys):
    x, y, _, _ = make_data()
    model = make_model()
    rec = Recorder()
    es = EarlyStopping(monitor="score", patience=2, restore_best_weights=restore, verbose=1)
    values = [3.0, 1.0, 2.0, 2.5, 2.7, 0.1]
    history = model.fit(x, y, batch_size=16, epochs=6, verbose=0,
                        callbacks=[rec, Script("score", values), es])  # fmt: skip
    assert history.epoch == [0, 1, 2, 3]
    assert weights_differ(rec.weights[1], rec.weights[3])  # the weights did move after the best
    if restore:
        assert_same_weights(model.get_weights(), rec.weights[1])
    else:
        assert_same_weights(model.get_weights(), rec.weights[3])
    out = capsys.readouterr().out
    assert "Epoch 4: early stopping" in out
    assert ("Restoring model weights from the end of epoch 2." in out) == restore


def test_early_stopping_warns_about_a_missing_monitor_and_keeps_training(capsys):
    x, y, _, _ = make_data()
    es = EarlyStopping(monitor="val_loss", patience=0)
    history = make_model().fit(x, y, epochs=3, verbose=0, callbacks=[es])
    assert len(history.epoch) == 3
    err = capsys.readouterr().err
    assert "'val_loss' is not available" in err and "accuracy, loss" in err


def test_early_stopping_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="biggest")
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=-1)


# --------------------------------------------------------------------------------------------
# ModelCheckpoint


def test_model_checkpoint_saves_every_epoch(tmp_path):
    x, y, xv, yv = make_data()
    model = make_model()
    rec = Recorder(x=xv)
    ckpt = ModelCheckpoint(str(tmp_path / "m-{epoch:02d}.pyconv"))
    model.fit(x, y, batch_size=16, epochs=3, validation_data=(xv, yv), verbose=0,
              callbacks=[rec, ckpt])  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m-01.pyconv",
        "m-02.pyconv",
        "m-03.pyconv",
    ]
    for e in range(3):
        loaded = pyconv.load_model(tmp_path / f"m-{e + 1:02d}.pyconv")
        np.testing.assert_allclose(loaded.predict(xv), rec.preds[e], rtol=1e-6, atol=1e-7)
        assert_same_weights(loaded.get_weights(), rec.weights[e])
        assert loaded.optimizer.iterations == 3 * (e + 1)  # optimizer state saved with it
    assert float(np.abs(rec.preds[0] - rec.preds[2]).max()) > 1e-3  # epochs really differ


@pytest.mark.parametrize(
    "mode,expected",
    [
        ("min", {1: "3.00", 2: "2.00", 4: "1.00"}),
        ("max", {1: "3.00"}),
        ("auto", {1: "3.00", 2: "2.00", 4: "1.00"}),
    ],
)
def test_model_checkpoint_save_best_only(tmp_path, mode, expected):
    x, y, xv, _ = make_data()
    model = make_model()
    rec = Recorder(x=xv)
    ckpt = ModelCheckpoint(str(tmp_path / "best-{epoch:02d}-{score:.2f}.pyconv"), monitor="score",
                           save_best_only=True, mode=mode)  # fmt: skip
    model.fit(x, y, batch_size=16, epochs=5, verbose=0,
              callbacks=[rec, Script("score", [3.0, 2.0, 2.5, 1.0, 1.5]), ckpt])  # fmt: skip
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"best-{e:02d}-{s}.pyconv" for e, s in sorted(expected.items())]
    for e, s in expected.items():
        loaded = pyconv.load_model(tmp_path / f"best-{e:02d}-{s}.pyconv")
        np.testing.assert_allclose(loaded.predict(xv), rec.preds[e - 1], rtol=1e-6, atol=1e-7)


def test_model_checkpoint_best_only_to_one_file_keeps_the_best_epoch(tmp_path):
    x, y, xv, yv = make_data()
    model = make_model()
    rec = Recorder(x=xv)
    path = tmp_path / "best.pyconv"
    ckpt = ModelCheckpoint(path, monitor="score", save_best_only=True)
    model.fit(x, y, batch_size=16, epochs=5, verbose=0,
              callbacks=[rec, Script("score", [3.0, 2.0, 2.5, 1.0, 1.5]), ckpt])  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["best.pyconv"]  # no temp files left behind
    pred = pyconv.load_model(path).predict(xv)
    np.testing.assert_allclose(pred, rec.preds[3], rtol=1e-6, atol=1e-7)
    assert float(np.abs(pred - rec.preds[4]).max()) > 1e-4  # not the last epoch


def test_model_checkpoint_on_val_loss_saves_exactly_the_improving_epochs(tmp_path):
    x, y, xv, yv = make_data()
    model = make_model(pyconv.optimizers.SGD(0.5, momentum=0.9))
    ckpt = ModelCheckpoint(str(tmp_path / "c{epoch}.pyconv"), save_best_only=True)
    history = model.fit(x, y, batch_size=8, epochs=6, validation_data=(xv, yv), verbose=0,
                        callbacks=[ckpt])  # fmt: skip
    val, best, improving = history.history["val_loss"], math.inf, []
    for e, v in enumerate(val):
        if v < best:
            best = v
            improving.append(e + 1)
    assert sorted(int(p.stem[1:]) for p in tmp_path.iterdir()) == improving
    assert ckpt.best == min(val)


def test_model_checkpoint_save_weights_only(tmp_path):
    x, y, xv, _ = make_data()
    model = make_model()
    rec = Recorder(x=xv)
    ckpt = ModelCheckpoint(str(tmp_path / "w-{epoch}.weights"), save_weights_only=True)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[rec, ckpt])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w-1.weights", "w-2.weights"]
    fresh = make_model(seed=7)
    assert weights_differ(fresh.get_weights(), rec.weights[0])
    for e in range(2):
        fresh.load_weights(tmp_path / f"w-{e + 1}.weights")
        assert_same_weights(fresh.get_weights(), rec.weights[e])
        np.testing.assert_allclose(fresh.predict(xv), rec.preds[e], rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="weights"):
        pyconv.load_model(tmp_path / "w-1.weights")


# --------------------------------------------------------------------------------------------
# LearningRateScheduler and ReduceLROnPlateau


def test_learning_rate_scheduler_sets_the_rate_each_epoch():
    x, y, _, _ = make_data()
    model = make_model(pyconv.optimizers.SGD(0.4))
    calls = []

    def schedule(epoch, lr):
        calls.append((epoch, lr))
        return lr if epoch == 0 else lr * 0.5

    rec = Recorder()
    model.fit(x, y, batch_size=16, epochs=4, verbose=0,
              callbacks=[LearningRateScheduler(schedule), rec])  # fmt: skip
    assert calls == [(0, 0.4), (1, 0.4), (2, 0.2), (3, 0.1)]
    assert rec.lrs == [0.4, 0.2, 0.1, 0.05]
    assert rec.batch_lrs == [lr for lr in rec.lrs for _ in range(3)]  # used by every batch
    assert model.optimizer.learning_rate == 0.05
    assert [logs["learning_rate"] for logs in rec.logs] == rec.lrs


class CheckSGDStep(Callback):
    """With one full batch per epoch and plain SGD, the epoch's update is -lr * gradient."""

    def __init__(self, x, y):
        super().__init__()
        self.x, self.y, self.checked = x, y, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.before = self.model.get_weights()
        _, self.grads = self.model.compute_gradients(self.x, self.y)
        self.lr = self.model.optimizer.learning_rate

    def on_epoch_end(self, epoch, logs=None):
        for w0, g, w1 in zip(self.before, self.grads, self.model.get_weights()):
            np.testing.assert_allclose(w1, w0 - self.lr * g, rtol=1e-5, atol=1e-6)
            assert float(np.abs(w1 - w0).max()) > 1e-5
        self.checked += 1


def test_scheduled_learning_rate_is_the_one_the_update_uses():
    x, y, _, _ = make_data()
    model = make_model(pyconv.optimizers.SGD(0.1))
    rates = [0.5, 0.01, 2.0]
    check = CheckSGDStep(x, y)
    model.fit(x, y, batch_size=N_TRAIN, epochs=3, shuffle=False, verbose=0,
              callbacks=[LearningRateScheduler(lambda e, lr: rates[e]), check])  # fmt: skip
    assert check.checked == 3 and model.optimizer.learning_rate == 2.0


def test_history_records_the_learning_rate_of_a_scheduler():
    x, y, _, _ = make_data()
    model = make_model(pyconv.optimizers.SGD(0.4))
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0,
                        callbacks=[LearningRateScheduler(lambda e, lr: 0.4 / (e + 1))])  # fmt: skip
    assert history.history["learning_rate"] == pytest.approx([0.4, 0.2, 0.4 / 3])


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        ({}, [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]),
        ({"min_lr": 0.04}, [0.1, 0.1, 0.05, 0.05, 0.04, 0.04]),
        ({"cooldown": 2}, [0.1, 0.1, 0.05, 0.05, 0.05, 0.025]),
    ],
    ids=["plain", "min_lr", "cooldown"],
)
def test_reduce_lr_on_plateau_reduces_the_rate(kwargs, expected):
    x, y, _, _ = make_data()
    model = make_model(pyconv.optimizers.SGD(0.1))
    rec = Recorder()
    rlr = ReduceLROnPlateau(monitor="score", factor=0.5, patience=2, **kwargs)
    model.fit(x, y, batch_size=16, epochs=6, verbose=0,
              callbacks=[Script("score", [1.0] * 6), rlr, rec])  # fmt: skip
    assert rec.lrs == pytest.approx(expected, rel=1e-12)
    # the next epoch trains with the reduced rate
    per_epoch = [rec.batch_lrs[3 * e] for e in range(6)]
    assert per_epoch == pytest.approx([0.1, *expected[:-1]], rel=1e-12)


def test_reduce_lr_on_plateau_keeps_the_rate_while_improving():
    x, y, _, _ = make_data()
    model = make_model(pyconv.optimizers.SGD(0.1))
    rlr = ReduceLROnPlateau(monitor="score", factor=0.5, patience=1)
    model.fit(x, y, epochs=5, verbose=0, callbacks=[Script("score", [5, 4, 3, 2, 1]), rlr])
    assert model.optimizer.learning_rate == 0.1
    model = make_model(pyconv.optimizers.SGD(0.1))
    rlr = ReduceLROnPlateau(monitor="score", mode="max", factor=0.5, patience=1)
    model.fit(x, y, epochs=5, verbose=0, callbacks=[Script("score", [5, 4, 3, 2, 1]), rlr])
    assert model.optimizer.learning_rate == pytest.approx(0.1 * 0.5**4, rel=1e-12)


def test_reduce_lr_on_plateau_on_a_flat_val_loss():
    x, y, xv, yv = make_data()
    model = make_model(pyconv.optimizers.SGD(1e-6))
    rlr = ReduceLROnPlateau(factor=0.1, patience=1)  # val_loss, min_delta 1e-4
    history = model.fit(x, y, batch_size=16, epochs=3, validation_data=(xv, yv), verbose=0,
                        callbacks=[rlr])  # fmt: skip
    assert len(history.epoch) == 3
    assert model.optimizer.learning_rate == pytest.approx(1e-8, rel=1e-9)


def test_reduce_lr_on_plateau_rejects_bad_factor():
    for factor in (0.0, 1.0, 2.0):
        with pytest.raises(ValueError, match="factor"):
            ReduceLROnPlateau(factor=factor)


# --------------------------------------------------------------------------------------------
# CSVLogger and TerminateOnNaN


def read_csv(path, sep=","):
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter=sep))


def test_csv_logger_writes_a_header_and_a_row_per_epoch(tmp_path):
    x, y, xv, yv = make_data()
    model = make_model()
    path = tmp_path / "log.csv"
    history = model.fit(x, y, batch_size=16, epochs=3, validation_data=(xv, yv), verbose=0,
                        callbacks=[CSVLogger(path)])  # fmt: skip
    rows = read_csv(path)
    assert rows[0] == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert len(rows) == 4
    for e, row in enumerate(rows[1:]):
        assert row[0] == str(e)
        for key, cell in zip(rows[0][1:], row[1:]):
            assert float(cell) == history.history[key][e]

    # append: more rows, no second header
    model.fit(x, y, batch_size=16, epochs=2, validation_data=(xv, yv), verbose=0,
              callbacks=[CSVLogger(path, append=True)])  # fmt: skip
    rows = read_csv(path)
    assert len(rows) == 6 and [r[0] for r in rows[1:]] == ["0", "1", "2", "0", "1"]
    # without append, the file starts over
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[CSVLogger(path, separator=";")])
    rows = read_csv(path, sep=";")
    assert rows[0] == ["epoch", "accuracy", "loss"] and len(rows) == 2


def nan_data():
    x, y, _, _ = make_data()
    x = x.copy()
    x[20] = np.nan  # in the second batch of 16
    return x, y


def test_terminate_on_nan_stops_at_the_first_nan_batch(capsys):
    x, y = nan_data()
    model = make_model()
    rec = Recorder()
    history = model.fit(x, y, batch_size=16, epochs=5, shuffle=False, verbose=0,
                        callbacks=[rec, TerminateOnNaN()])  # fmt: skip
    assert len(rec.batch_logs) == 2  # batch 0 fine, batch 1 NaN: no third batch
    assert math.isfinite(rec.batch_logs[0]["loss"]) and math.isnan(rec.batch_logs[1]["loss"])
    assert history.epoch == [0] and math.isnan(history.history["loss"][0])
    assert "Batch 1: invalid loss, terminating training" in capsys.readouterr().out


def test_without_terminate_on_nan_training_goes_on():
    x, y = nan_data()
    rec = Recorder()
    history = make_model().fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0,
                               callbacks=[rec])  # fmt: skip
    assert len(rec.batch_logs) == 9 and len(history.epoch) == 3


# --------------------------------------------------------------------------------------------
# progress bar

FINAL_LINE = re.compile(
    r"^3/3 \[={30}\] - \d+s \d+ms/step - loss: (\d+\.\d{4}) - accuracy: (\d\.\d{4})"
    r"(?: - val_loss: (\d+\.\d{4}) - val_accuracy: (\d\.\d{4}))?$"
)


@pytest.mark.parametrize("verbose", [1, 2, "auto"])
@pytest.mark.parametrize("validation", [False, True])
def test_progress_bar_prints_epoch_headers_and_a_final_line(verbose, validation, capsys):
    x, y, xv, yv = make_data()
    model = make_model()
    kw = {"validation_data": (xv, yv)} if validation else {}
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=verbose, **kw)
    out = capsys.readouterr().out
    assert "\r" not in out and "\033" not in out  # capsys's stdout is not a terminal
    lines = out.splitlines()
    assert len(lines) == 6
    for e in range(3):
        assert lines[2 * e] == f"Epoch {e + 1}/3"
        m = FINAL_LINE.match(lines[2 * e + 1])
        assert m, lines[2 * e + 1]
        assert m.group(1) == f"{history.history['loss'][e]:.4f}"
        assert m.group(2) == f"{history.history['accuracy'][e]:.4f}"
        if validation:
            assert m.group(3) == f"{history.history['val_loss'][e]:.4f}"
            assert m.group(4) == f"{history.history['val_accuracy'][e]:.4f}"
        else:
            assert m.group(3) is None


def test_progress_bar_counts_from_initial_epoch(capsys):
    x, y, _, _ = make_data()
    make_model().fit(x, y, batch_size=16, epochs=4, initial_epoch=2, verbose=2)
    lines = capsys.readouterr().out.splitlines()
    assert [lines[0], lines[2]] == ["Epoch 3/4", "Epoch 4/4"] and len(lines) == 4
    assert "loss: " in lines[1] and "loss: " in lines[3]


def test_verbose_0_prints_nothing(capsys):
    x, y, xv, yv = make_data()
    make_model().fit(x, y, batch_size=16, epochs=2, validation_data=(xv, yv), verbose=0)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
