"""Training callbacks (Keras's protocol): History, the progress bar, EarlyStopping,
ModelCheckpoint, LearningRateScheduler, ReduceLROnPlateau, CSVLogger, TerminateOnNaN."""

from __future__ import annotations

import csv
import math
import os
import sys
import time

import numpy as np

from ._shapes import as_int, flag, real
from .utils import check_not_keras_path


class Callback:
    def __init__(self):
        self.model = None
        self.params: dict = {}

    def set_model(self, model) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = params

    def on_train_begin(self, logs=None): ...
    def on_train_end(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_train_batch_begin(self, batch, logs=None): ...
    def on_train_batch_end(self, batch, logs=None): ...


class CallbackList:
    def __init__(self, callbacks, model, params):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be Callback instances, got {type(cb).__name__}")
            cb.set_model(model)
            cb.set_params(params)

    def __getattr__(self, hook):
        def call(*args):
            for cb in self.callbacks:
                getattr(cb, hook)(*args)

        return call


class History(Callback):
    """Per-epoch logs: ``history.history["val_loss"]`` etc.; ``fit`` returns one."""

    def __init__(self):
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs=None):
        self.epoch = []  # a new fit restarts the record (Keras)
        self.history = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


def _fmt_duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    if seconds >= 60:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    return f"{seconds:.0f}s"


def _fmt_logs(logs: dict) -> str:
    return "".join(f" - {k}: {v:.4f}" for k, v in logs.items() if isinstance(v, (int, float)))


class Progbar:
    """The Keras progress line over ``steps`` steps:
    ``469/469 [=====] - 3s 6ms/step - loss: 0.28 - accuracy: 0.91``.

    verbose=1: a bar redrawn in place on a terminal (only the final line elsewhere);
    verbose=2: the final line only; 0: nothing. Used by fit (per epoch), evaluate, predict.
    """

    def __init__(self, steps: int, verbose=1, stream=None):
        self.steps, self.verbose, self.stream = steps, verbose, stream
        self.start = self.last_draw = time.perf_counter()
        self.live = verbose == 1 and getattr(self._out(), "isatty", lambda: False)()

    def _out(self):
        return self.stream or sys.stdout

    def _line(self, done: int, logs: dict, final: bool) -> str:
        elapsed = time.perf_counter() - self.start
        width = 30
        filled = width if final else int(width * done / max(self.steps, 1))
        bar = "=" * filled if filled >= width else "=" * max(filled - 1, 0) + ">"
        bar = bar.ljust(width, ".")
        digits = len(str(self.steps))
        head = f"{done:>{digits}}/{self.steps} [{bar}]"
        per_step = elapsed / max(done, 1)
        if final:
            timing = f" - {_fmt_duration(elapsed)} {per_step * 1e3:.0f}ms/step"
        else:
            timing = f" - ETA: {_fmt_duration(per_step * (self.steps - done))}"
        return head + timing + _fmt_logs(logs)

    def update(self, done: int, logs=None) -> None:
        """``done`` steps of ``steps`` finished (redrawn at most every 0.1 s)."""
        if not self.live:
            return
        now = time.perf_counter()
        if now - self.last_draw < 0.1 and done < self.steps:
            return
        self.last_draw = now
        out = self._out()
        out.write("\r" + self._line(done, logs or {}, final=False) + "\033[K")
        out.flush()

    def finish(self, logs=None) -> None:
        if not self.verbose:
            return
        out = self._out()
        out.write(("\r" if self.live else "") + self._line(self.steps, logs or {}, final=True))
        out.write("\033[K\n" if self.live else "\n")
        out.flush()


class ProgbarLogger(Callback):
    """fit's progress: ``Epoch 1/5`` then a ``Progbar`` line per epoch (verbose 1 or 2)."""

    def __init__(self, verbose=1, stream=None):
        super().__init__()
        self.verbose = verbose
        self.stream = stream

    def on_epoch_begin(self, epoch, logs=None):
        self.bar = Progbar(self.params.get("steps"), self.verbose, self.stream)
        if self.verbose:
            out = self.bar._out()
            out.write(f"Epoch {epoch + 1}/{self.params.get('epochs')}\n")
            out.flush()

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(batch + 1, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.bar.finish(logs)


def _count(value, name: str) -> int:
    v = as_int(value, name)
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return v


def _finite(value, name: str) -> float:
    v = real(value, name)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


def _monitor_mode(monitor: str, mode: str):
    if not isinstance(monitor, str) or not monitor:
        raise TypeError(f"monitor must be the name of a logged value, got {monitor!r}")
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        mode = "max" if ("acc" in monitor or monitor.startswith("fmeasure")) else "min"
    return mode


class _MonitorMixin:
    def _init_monitor(self, monitor, mode, min_delta=0.0):
        self.monitor = monitor
        self.mode = _monitor_mode(monitor, mode)
        self.min_delta = abs(_finite(min_delta, "min_delta"))
        self.best = math.inf if self.mode == "min" else -math.inf

    def _improved(self, current: float, reference: float) -> bool:
        if self.mode == "min":
            return current < reference - self.min_delta
        return current > reference + self.min_delta

    def _current(self, logs):
        value = (logs or {}).get(self.monitor)
        if value is None:
            available = ", ".join(sorted(logs or {})) or "none"
            print(
                f"{type(self).__name__}: metric {self.monitor!r} is not available "
                f"(available: {available}); skipping",
                file=sys.stderr,
            )
        return value


class EarlyStopping(Callback, _MonitorMixin):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    restore_best_weights: when it stops, put back the weights of the best epoch.
    """

    def __init__(
        self,
        monitor="val_loss",
        min_delta=0.0,
        patience=0,
        verbose=0,
        mode="auto",
        baseline=None,
        restore_best_weights=False,
        start_from_epoch=0,
    ):
        super().__init__()
        self._init_monitor(monitor, mode, min_delta)
        self.patience, self.verbose = _count(patience, "patience"), verbose
        self.baseline = None if baseline is None else _finite(baseline, "baseline")
        self.restore_best_weights = flag(restore_best_weights, "restore_best_weights")
        self.start_from_epoch = _count(start_from_epoch, "start_from_epoch")

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        if self.baseline is not None:
            self.best = float(self.baseline)
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        current = self._current(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        self.wait += 1
        if self._improved(current, self.best):
            self.best, self.best_epoch, self.wait = current, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.restore_best_weights and self.best_weights is not None:
                if self.verbose:
                    print(f"Restoring model weights from the end of epoch {self.best_epoch + 1}.")
                self.model.set_weights(self.best_weights)

    def on_train_end(self, logs=None):
        if self.stopped_epoch and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")


class ModelCheckpoint(Callback, _MonitorMixin):
    """Save the model (atomically) after each epoch, or only when ``monitor`` improves.

    ``filepath`` may hold fields filled from the epoch and the logs, e.g.
    ``"ckpt-{epoch:02d}-{val_loss:.3f}.pyconv"``.
    """

    def __init__(
        self,
        filepath,
        monitor="val_loss",
        verbose=0,
        save_best_only=False,
        save_weights_only=False,
        mode="auto",
        save_freq="epoch",
    ):
        super().__init__()
        if save_freq != "epoch":
            raise ValueError("save_freq must be 'epoch'")
        self.filepath = os.fspath(filepath)
        check_not_keras_path(self.filepath, "ModelCheckpoint")  # now, not after an epoch
        self._init_monitor(monitor, mode)
        self.verbose = verbose
        self.save_best_only = flag(save_best_only, "save_best_only")
        self.save_weights_only = flag(save_weights_only, "save_weights_only")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            current = self._current(logs)
            if current is None or not self._improved(current, self.best):
                return
            if self.verbose:
                print(f"Epoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to "
                      f"{current:.5f}, saving model to {path}")  # fmt: skip
            self.best = current
        elif self.verbose:
            print(f"Epoch {epoch + 1}: saving model to {path}")
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)


class LearningRateScheduler(Callback):
    """Set the learning rate at each epoch start to ``schedule(epoch, lr)``."""

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"schedule must be callable(epoch, lr) -> lr, got {schedule!r}")
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        lr = float(self.schedule(epoch, self.model.optimizer.learning_rate))
        self.model.optimizer.learning_rate = lr
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = self.model.optimizer.learning_rate


class ReduceLROnPlateau(Callback, _MonitorMixin):
    """Multiply the learning rate by ``factor`` after ``patience`` epochs without improvement."""

    def __init__(
        self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto",
        min_delta=1e-4, cooldown=0, min_lr=0.0,
    ):  # fmt: skip
        super().__init__()
        factor = real(factor, "factor")
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor!r}")
        self._init_monitor(monitor, mode, min_delta)
        self.factor, self.patience, self.verbose = factor, _count(patience, "patience"), verbose
        self.cooldown = _count(cooldown, "cooldown")
        self.min_lr = _finite(min_lr, "min_lr")
        if self.min_lr < 0:
            raise ValueError(f"min_lr must be >= 0, got {min_lr!r}")

    def on_train_begin(self, logs=None):
        self.wait = self.cooldown_counter = 0
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch, logs=None):
        current = self._current(logs)
        if current is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(current, self.best):
            self.best, self.wait = current, 0
            return
        if self.cooldown_counter > 0:
            return
        self.wait += 1
        if self.wait >= self.patience:
            old = self.model.optimizer.learning_rate
            new = max(old * self.factor, self.min_lr)
            if new < old and new > 0:
                self.model.optimizer.learning_rate = new
                if self.verbose:
                    print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}.")
            self.cooldown_counter, self.wait = self.cooldown, 0


class CSVLogger(Callback):
    """Append each epoch's logs as a CSV row."""

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename, self.sep, self.append = os.fspath(filename), separator, append

    def on_train_begin(self, logs=None):
        exists = self.append and os.path.exists(self.filename)
        self.file = open(self.filename, "a" if self.append else "w", newline="")  # noqa: SIM115
        self.writer = None
        self.header_written = exists

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.writer is None:
            self.keys = sorted(logs)
            self.writer = csv.DictWriter(self.file, ["epoch", *self.keys], delimiter=self.sep)
            if not self.header_written:
                self.writer.writeheader()
        self.writer.writerow({"epoch": epoch, **{k: logs.get(k, "") for k in self.keys}})
        self.file.flush()

    def on_train_end(self, logs=None):
        self.file.close()


class TerminateOnNaN(Callback):
    """Stop training when the loss becomes NaN or infinite."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            print(f"Batch {batch}: invalid loss, terminating training")
            self.model.stop_training = True
