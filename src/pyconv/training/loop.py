"""The training loop: fit, evaluate, predict, train_on_batch and compute_gradients, the
checks of their arguments and data (all made before the first step changes a weight), the
progress bar and the callbacks.

One step: ``Model._forward`` (the tape of per-layer contexts) -> ``_loss_and_grad``
(training/compile.py) -> ``Model._backward`` (weight gradients into each ``.grad``) ->
``optimizer.apply``. ``TrainingLoopMixin`` is one of ``Model``'s bases; it relies on the
model for the wiring (``_forward``, ``_backward``, ``_ensure_built``, ``_prepare_x``,
``_prepare_y``) and on ``CompileMixin`` for the losses and metrics.
"""

from __future__ import annotations

import numpy as np

from .. import augment as augment_mod
from .. import callbacks as cbks
from .._shapes import as_int, flag, real
from ..utils import hold_interrupts, new_rng


def as_batch_array(x, name: str) -> np.ndarray:
    if isinstance(x, (list, tuple)) and x and not np.isscalar(x[0]):
        x = np.asarray(x)
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.dtype.kind not in "biuf":  # complex would lose its imaginary part silently
        raise TypeError(f"{name} must be a real numeric array, got dtype {x.dtype}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have a batch dimension, got a scalar")
    return x


def count_arg(value, name: str, minimum: int, default: int | None = None) -> int:
    """An int argument (Python or NumPy int; not bool, str or float) >= minimum."""
    if value is None and default is not None:
        return default
    v = as_int(value, name)
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def verbose_arg(value) -> int:
    """ "auto" (1), 0, 1 or 2; True/False as 1/0 (Keras code writes verbose=False)."""
    if isinstance(value, str) and value == "auto":
        return 1
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    v = as_int(value, "verbose")
    if v not in (0, 1, 2):
        raise ValueError(f"verbose must be 'auto', 0, 1 or 2, got {v}")
    return v


def require_samples(x, name: str) -> None:
    if len(x) == 0:
        raise ValueError(f"{name} is empty: there are no samples to work on")


class TrainingLoopMixin:
    """fit / evaluate / predict / train_on_batch / compute_gradients."""

    # --- data -------------------------------------------------------------------------------

    def _check_xy(self, x, y):
        x = self._prepare_x(x, "x")
        if y is None:
            raise ValueError("y (the targets) is required")
        y = self._prepare_y(y)
        if len(x) != len(y):
            raise ValueError(
                f"x and y must have the same number of samples, got {len(x)} and {len(y)}"
            )
        return x, y

    def _check_data(self, x, y, sample_weight):
        """(x, y, sample_weight) for training, checked: as many targets as samples, not
        empty, shaped for the model (building it), targets valid for each output's loss."""
        x, y = self._check_xy(x, y)
        require_samples(x, "x")
        self._ensure_built(x)
        self._check_targets(y)
        return x, y, self._check_sample_weight(sample_weight, len(x))

    def _class_sample_weights(self, y, class_weight) -> np.ndarray:
        """Each sample's weight from its class (targets already checked against the loss)."""
        if not isinstance(y, np.ndarray):
            raise ValueError("class_weight needs a model with one output; use sample_weight")
        if not isinstance(class_weight, dict):
            raise TypeError("class_weight must be a dict {class index: weight}")
        units = self._output_shapes()[0][-1] if self._output_shapes()[0] else 1
        classes = max(units, 2)  # one sigmoid unit: classes 0 and 1
        table = np.ones(classes, np.float32)
        for k, w in class_weight.items():
            if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
                raise TypeError(f"class_weight keys must be int class indices, got {k!r}")
            if not 0 <= k < classes:
                raise ValueError(
                    f"class_weight key {k} is not a class of this model's output (0 to "
                    f"{classes - 1})"
                )
            w = real(w, f"class_weight[{k}]")
            if not (np.isfinite(w) and w >= 0):
                raise ValueError(f"class_weight[{k}] must be finite and >= 0, got {w!r}")
            table[k] = w
        if y.ndim > 1 and y.shape[-1] > 1:
            labels = np.argmax(y, axis=-1)
        else:  # class indices, or 0/1 targets of one sigmoid unit (rounded, as Keras)
            labels = np.rint(y.reshape(len(y), -1)[:, 0]).astype(np.int64)
        if labels.ndim > 1:
            raise ValueError("class_weight needs one class per sample; use sample_weight")
        return table[labels]

    # --- one step ---------------------------------------------------------------------------

    def _loss_and_gradients(self, x, y, sample_weight):
        """Forward + backward of one batch in training mode: (total loss, y_pred).

        Leaves dL/dw in each trainable variable's ``.grad`` (L includes regularization).
        """
        y_pred, tape, penalty = self._forward(x, training=True)
        loss, grad = self._loss_and_grad(y, y_pred, tape, sample_weight)
        for v in self.trainable_weights:
            v.grad = None
        self._backward(tape, grad)
        return loss + penalty + self._regularization(add_grads=True), y_pred

    def compute_gradients(self, x, y, sample_weight=None):
        """(loss, [dL/dw for w in trainable_weights]) for one batch, without updating anything
        but batch-norm moving statistics (the forward runs in training mode)."""
        self._require_compiled("compute_gradients")
        x, y, sample_weight = self._check_data(x, y, sample_weight)
        loss, _ = self._loss_and_gradients(x.astype(np.float32, copy=False), y, sample_weight)
        grads = []
        for v in self.trainable_weights:
            grads.append(np.zeros_like(v.value) if v.grad is None else v.grad)
            v.grad = None
        return loss, grads

    def _train_step(self, x, y, sample_weight):
        # A step is the unit of change: Ctrl-C during it is held until the weights, the
        # optimizer state and the batch-norm statistics all reflect the whole step, then
        # raised. Pressed twice it stops at once, but never inside the optimizer update
        # (optimizer.apply holds it strictly), so no step is ever half-applied.
        trainable = self.trainable_weights
        with hold_interrupts(strict=False):
            try:
                loss, y_pred = self._loss_and_gradients(x, y, sample_weight)
                self.optimizer.apply(trainable)
            finally:  # after an exception too: no stale gradients, their memory freed
                for v in trainable:
                    v.grad = None
        return loss, self._metrics(y, y_pred)

    def train_on_batch(self, x, y, sample_weight=None, return_dict=False):
        """One optimizer step on one batch; returns the loss and metrics of that batch."""
        self._require_compiled("train_on_batch")
        return_dict = flag(return_dict, "return_dict")
        x, y, sample_weight = self._check_data(x, y, sample_weight)
        loss, mets = self._train_step(x.astype(np.float32, copy=False), y, sample_weight)
        return self._result(loss, [float(m.mean()) for m in mets], return_dict)

    def _result(self, loss, metric_values, return_dict):
        if return_dict:
            return {"loss": loss, **dict(zip(self._metric_names, metric_values))}
        return [loss, *metric_values] if self._metric_names else loss

    # --- fit --------------------------------------------------------------------------------

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_split=0.0,
        validation_data=None,
        shuffle=True,
        class_weight=None,
        sample_weight=None,
        initial_epoch=0,
        validation_batch_size=None,
        augment=None,
    ):
        """Train for ``epochs`` epochs; returns a History (also ``model.history``).

        Every argument, the data, the validation data and the targets (against each
        output's loss: class indices in range, binary targets in [0, 1], ...) are checked
        once before the first step, so a bad label or argument changes no weight.

        augment: a callable applied to each float32 training batch (e.g.
        ``pyconv.augment.ImageAugmenter(rotation_range=10, horizontal_flip=True)``).
        """
        self._require_compiled("fit")
        if isinstance(x, augment_mod.Flow):
            raise TypeError(
                "fit takes arrays, not an ImageAugmenter.flow iterator: use "
                "model.fit(x, y, augment=augmenter) to augment each training batch"
            )
        if augment is not None and not callable(augment):
            raise TypeError(f"augment must be callable (e.g. an ImageAugmenter), got {augment!r}")
        # every argument and all the data checked before the first step changes a weight
        batch_size = count_arg(batch_size, "batch_size", 1, default=32)
        epochs = count_arg(epochs, "epochs", 1)
        initial_epoch = count_arg(initial_epoch, "initial_epoch", 0)
        if initial_epoch > epochs:
            raise ValueError(f"initial_epoch ({initial_epoch}) must be <= epochs ({epochs})")
        verbose = verbose_arg(verbose)
        shuffle = flag(shuffle, "shuffle")
        validation_batch_size = count_arg(
            validation_batch_size, "validation_batch_size", 1, default=batch_size
        )
        validation_split = real(validation_split, "validation_split")
        if not 0 <= validation_split < 1:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
        if callbacks is not None and not isinstance(callbacks, (list, tuple)):
            raise TypeError(
                f"callbacks must be a list of Callbacks, got {type(callbacks).__name__}"
            )
        x, y, sample_weight = self._check_data(x, y, sample_weight)
        if class_weight is not None:
            cw = self._class_sample_weights(y, class_weight)
            sample_weight = cw if sample_weight is None else sample_weight * cw
        if validation_data is not None:
            validation_data = self._check_validation_data(validation_data)
        elif validation_split > 0:
            split = int(len(x) * (1 - validation_split))
            if split < 1 or split == len(x):
                raise ValueError(
                    f"validation_split={validation_split} of {len(x)} samples leaves no "
                    f"{'training' if split < 1 else 'validation'} data"
                )
            sw_val = None if sample_weight is None else sample_weight[split:]
            validation_data = (x[split:], y[split:], sw_val)
            x, y = x[:split], y[:split]
            sample_weight = None if sample_weight is None else sample_weight[:split]
        if self._rng is None:
            self._rng = new_rng()
        n = len(x)
        steps = -(-n // batch_size)
        history = cbks.History()
        # As Keras: the progress bar first, History last (so it records keys that user
        # callbacks add to the epoch logs, e.g. LearningRateScheduler's learning_rate).
        cb_list = [*(callbacks or []), history]
        if verbose:
            cb_list.insert(0, cbks.ProgbarLogger(verbose))
        params = {"epochs": epochs, "steps": steps, "verbose": verbose, "batch_size": batch_size}
        cb = cbks.CallbackList(cb_list, self, params)
        self.stop_training = False
        self.history = history
        cb.on_train_begin()
        logs: dict = {}
        for epoch in range(initial_epoch, epochs):
            cb.on_epoch_begin(epoch)
            order = self._rng.permutation(n) if shuffle else np.arange(n)
            loss_sum, met_sums, seen = 0.0, [0.0] * len(self._metric_fns), 0
            for step in range(steps):
                idx = order[step * batch_size : (step + 1) * batch_size]
                if shuffle:
                    idx = np.sort(idx)  # gather in memory order: same batch, faster copy
                xb = x[idx].astype(np.float32, copy=False)
                if augment is not None:
                    xb = augment(xb)
                sw = None if sample_weight is None else sample_weight[idx]
                loss, mets = self._train_step(xb, y[idx], sw)
                b = len(idx)
                loss_sum += loss * b
                seen += b
                for i, m in enumerate(mets):
                    met_sums[i] += float(m.sum())
                logs = {"loss": loss_sum / seen}
                logs.update({k: s / seen for k, s in zip(self._metric_names, met_sums)})
                cb.on_train_batch_end(step, logs)
                if self.stop_training:
                    break
            if validation_data is not None:
                val = self._evaluate(*validation_data, validation_batch_size, verbose=0)
                val = self._result(*val, return_dict=True)
                logs.update({f"val_{k}": v for k, v in val.items()})
            cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        cb.on_train_end(logs)
        return history

    # --- evaluate / predict -----------------------------------------------------------------

    def evaluate(
        self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, return_dict=False
    ):
        """Loss (with regularization penalties, as in Keras) and metrics over (x, y)."""
        self._require_compiled("evaluate")
        batch_size = count_arg(batch_size, "batch_size", 1, default=32)
        verbose = verbose_arg(verbose)
        return_dict = flag(return_dict, "return_dict")
        x, y, sw = self._check_validation_data((x, y, sample_weight), "x", "y", "sample_weight")
        loss, values = self._evaluate(x, y, sw, batch_size, verbose)
        return self._result(loss, values, return_dict)

    def _check_validation_data(self, data, x_name="x_val", y_name="y_val", w_name="sample_weight"):
        """(x, y, sample_weight or None) of evaluation data, checked as training data is:
        non-empty, shaped for the model, targets valid for the loss."""
        if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
            raise ValueError(
                "validation_data must be a tuple (x_val, y_val) or (x_val, y_val, sample_weight)"
            )
        x = self._prepare_x(data[0], x_name)
        if data[1] is None:
            raise ValueError(f"{y_name} (the targets) is required")
        y = self._prepare_y(data[1])
        if len(x) != len(y):
            raise ValueError(
                f"{x_name} and {y_name} must have the same number of samples, got {len(x)} "
                f"and {len(y)}"
            )
        require_samples(x, x_name)
        self._ensure_built(x)
        self._check_targets(y, y_name)
        sw = data[2] if len(data) == 3 else None
        return x, y, self._check_sample_weight(sw, len(x), w_name)

    def _evaluate(self, x, y, sw, batch_size: int, verbose: int):
        """(loss, metric values) over checked, non-empty data."""
        n = len(x)
        bar = cbks.Progbar(-(-n // batch_size), verbose)
        loss_sum, met_sums = 0.0, [0.0] * len(self._metric_fns)
        for step, start in enumerate(range(0, n, batch_size)):
            xb = x[start : start + batch_size].astype(np.float32, copy=False)
            yb = y[start : start + batch_size]
            y_pred, tape, penalty = self._forward(xb, training=False)
            swb = None if sw is None else sw[start : start + batch_size]
            loss = self._loss_value(yb, y_pred, swb)
            loss_sum += (loss + penalty) * len(xb)
            for i, m in enumerate(self._metrics(yb, y_pred)):
                met_sums[i] += float(m.sum())
            bar.update(step + 1)
        loss = loss_sum / n + self._regularization(add_grads=False)
        values = [s / n for s in met_sums]
        bar.finish(self._result(loss, values, return_dict=True))
        return loss, values

    def predict(self, x, batch_size=None, verbose=0):
        """Outputs for x, computed in batches of ``batch_size`` (default 32) in inference mode
        (through the model's inference plan: see ``Model.inference_fusion``).

        verbose=1 shows the progress bar (as fit's), 2 one line at the end, 0 nothing."""
        batch_size = count_arg(batch_size, "batch_size", 1, default=32)
        verbose = verbose_arg(verbose)
        x = self._prepare_x(x, "x")
        self._ensure_built(x)
        return self._predict(x, batch_size, verbose)

    def _predict(self, x, batch_size: int, verbose: int):
        """predict over checked x."""
        n = len(x)
        if 0 < n <= batch_size and not verbose:  # one batch: no progress bar, no joining
            y = self._infer(x.astype(np.float32, copy=False))
            if isinstance(y, list):  # several outputs: one array each (copies: one node
                return [np.array(a, np.float32) for a in y]  # may be two outputs)
            return np.ascontiguousarray(y)
        bar = cbks.Progbar(-(-n // batch_size), verbose if n else 0)
        outs = []
        for step, s in enumerate(range(0, n, batch_size)):
            xb = x[s : s + batch_size].astype(np.float32, copy=False)
            outs.append(self._infer(xb))
            bar.update(step + 1)
        bar.finish({})
        if outs and isinstance(outs[0], list):  # several outputs: one array each
            return [np.concatenate(parts) for parts in zip(*outs)]
        if not outs:
            return np.zeros((0, *self.output_shape[1:]), np.float32)
        return np.concatenate(outs) if len(outs) > 1 else np.ascontiguousarray(outs[0])

    def predict_on_batch(self, x):
        """Outputs for x as one batch (predict with batch_size=len(x))."""
        x = self._prepare_x(x, "x")
        self._ensure_built(x)
        return self._predict(x, max(len(x), 1), 0)
