"""Models: the training loop (``Model``) and the layer stack (``Sequential``).

``Model`` owns everything that does not depend on how layers are wired: compile, fit,
evaluate, predict, weights, summary, save. A subclass supplies the wiring through two
methods over a *tape* (the list of per-layer contexts of one forward pass):

    y, tape = model._forward(x, training)
    model._backward(tape, dy, skip_activation)

``Sequential`` implements them as a chain; a layer graph (functional ``Model(inputs,
outputs)``) implements them as a walk over its nodes in topological order, reusing all
of the rest.
"""

from __future__ import annotations

import json

import numpy as np

from . import augment as augment_mod
from . import callbacks as cbks
from . import losses as losses_mod
from . import metrics as metrics_mod
from . import optimizers as optimizers_mod
from . import saving
from ._shapes import as_int, flag, real
from .layers import InputLayer, Layer, SymbolicTensor, deserialize, serialize
from .layers.base import no_param_grads
from .utils import check_not_keras_path, new_rng, shape_str, snake_case, unique_name


class TapeEntry:
    """One layer application: the layer, its ctx, and (with an activity regularizer) its output."""

    __slots__ = ("layer", "ctx", "output", "node")

    def __init__(self, layer, ctx, output=None):
        self.layer, self.ctx, self.output = layer, ctx, output
        self.node = None  # in a layer graph: the node (call of the layer) this entry ran


def apply_layer(layer: Layer, x, training: bool, tape: list, penalties: list, keep=False):
    """Forward one layer, recording its tape entry and activity penalty (one place for both).

    The output is kept on the tape when the activity regularizer needs it or ``keep``."""
    y, ctx = layer.forward(x, training)
    reg = layer.activity_regularizer
    if reg is not None:
        penalties.append(reg.penalty(y) / len(y))
    tape.append(TapeEntry(layer, ctx, y if (reg is not None or keep) else None))
    return y


def backprop_layer(entry: TapeEntry, dy, need_input_grad: bool, skip_activation=False):
    """Backward one tape entry (adding the activity penalty's gradient to dy first)."""
    layer = entry.layer
    if entry.output is not None and layer.activity_regularizer is not None:
        dy = dy + layer.activity_regularizer.gradient(entry.output) / np.float32(len(dy))
    if skip_activation:
        return layer.backward(entry.ctx, dy, need_input_grad, skip_activation=True)
    return layer.backward(entry.ctx, dy, need_input_grad)


def _as_batch_array(x, name: str) -> np.ndarray:
    if isinstance(x, (list, tuple)) and x and not np.isscalar(x[0]):
        x = np.asarray(x)
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.dtype.kind not in "biuf":  # complex would lose its imaginary part silently
        raise TypeError(f"{name} must be a real numeric array, got dtype {x.dtype}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have a batch dimension, got a scalar")
    return x


def _count_arg(value, name: str, minimum: int, default: int | None = None) -> int:
    """An int argument (Python or NumPy int; not bool, str or float) >= minimum."""
    if value is None and default is not None:
        return default
    v = as_int(value, name)
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def _verbose_arg(value) -> int:
    """ "auto" (1), 0, 1 or 2; True/False as 1/0 (Keras code writes verbose=False)."""
    if isinstance(value, str) and value == "auto":
        return 1
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    v = as_int(value, "verbose")
    if v not in (0, 1, 2):
        raise ValueError(f"verbose must be 'auto', 0, 1 or 2, got {v}")
    return v


def _require_samples(x, name: str) -> None:
    if len(x) == 0:
        raise ValueError(f"{name} is empty: there are no samples to work on")


class Model:
    """Base class: the training loop and everything shared by Sequential and layer graphs."""

    def __new__(cls, *args, **kwargs):
        # Model(inputs, outputs) builds a layer graph, as keras.Model does
        if cls is Model and (args or "inputs" in kwargs or "outputs" in kwargs):
            from .graph import Functional

            return object.__new__(Functional)
        return object.__new__(cls)

    def __init__(self, *args, name=None, **kwargs):
        if args or kwargs:
            raise TypeError(
                "Model() takes (inputs, outputs[, name]) to build a layer graph, or nothing "
                f"(as a base class); got {len(args)} positional and {sorted(kwargs)} keywords"
            )
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        self.name = name or unique_name(snake_case(type(self).__name__))
        self.optimizer = None
        self.loss = None  # the (first output's) loss
        self._losses: list = []
        self._loss_weights: list[float] = [1.0]
        self.compiled = False
        self.stop_training = False
        self.history = None
        self._metric_names: list[str] = []
        self._metric_fns: list = []
        self._metric_specs: list = []
        self._rng = None
        self.metadata: dict = {}  # JSON-serializable notes saved with the model (dataset, ...)

    # --- wiring (subclasses) ----------------------------------------------------------------

    @property
    def layers(self) -> list[Layer]:
        raise NotImplementedError

    @property
    def built(self) -> bool:
        raise NotImplementedError

    def _forward(self, x, training: bool, keep=frozenset()):
        """(y, tape, activity_penalty); the outputs of layers in ``keep`` stay on the tape."""
        raise NotImplementedError

    def _backward(self, tape, dy, skip_activation: bool, stop_at=None):
        """Backpropagate dy (dL/d output) through the tape, adding weight gradients. With
        ``stop_at`` (a layer), stop above it and return dL/d(that layer's output)."""
        raise NotImplementedError

    def _ensure_built(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def _prepare_x(self, x, name="x"):
        """The model's input batch from what the user passed (a layer graph with several
        inputs takes a list of arrays and returns them bundled, sliced together)."""
        return _as_batch_array(x, name)

    # --- weights ----------------------------------------------------------------------------

    def _unique_variables(self):
        seen, out = set(), []
        for layer in self.layers:
            for v in layer.weights:
                if id(v) not in seen:
                    seen.add(id(v))
                    out.append((layer, v))
        return out

    @property
    def weights(self):
        return [v for _, v in self._unique_variables()]

    @property
    def trainable_weights(self):
        return [v for layer, v in self._unique_variables() if v.trainable and layer.trainable]

    @property
    def non_trainable_weights(self):
        return [v for layer, v in self._unique_variables() if not (v.trainable and layer.trainable)]

    def get_weights(self) -> list[np.ndarray]:
        return [v.value.copy() for v in self.weights]

    def set_weights(self, weights) -> None:
        """Give every weight its array (get_weights's order): all of them checked first,
        then assigned together, so one bad array leaves the model as it was."""
        saving.assign_weights(self.weights, weights, f"model {self.name!r}: set_weights")

    def count_params(self) -> int:
        self._require_built("count_params")
        return int(sum(v.value.size for v in self.weights))

    def get_layer(self, name=None, index=None) -> Layer:
        if index is not None:
            index = as_int(index, "index")
            if not -len(self.layers) <= index < len(self.layers):
                raise ValueError(f"index {index} is out of range: the model has "
                                 f"{len(self.layers)} layers")  # fmt: skip
            return self.layers[index]
        if not isinstance(name, str):
            raise TypeError(f"get_layer() needs a layer name (str) or an index, got {name!r}")
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(
            f"no layer named {name!r}; layers: {', '.join(l.name for l in self.layers)}"
        )

    def _require_built(self, what: str) -> None:
        if not self.built:
            raise ValueError(
                f"model {self.name!r} is not built: give the first layer an input_shape, start "
                f"with pyconv.Input(shape), or call fit/predict before {what}()"
            )

    # --- compile ----------------------------------------------------------------------------

    def _output_names(self) -> list[str]:
        """Names of the model's outputs (their layers' names); one for a Sequential."""
        return [self.layers[-1].name] if self.layers else ["output"]

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None):
        """Choose the optimizer, the loss and the metrics (names or objects, as in Keras).

        A model with several outputs takes one loss for all, a list (one per output) or a
        dict {output layer name: loss}; ``loss_weights`` likewise (the total loss is the
        weighted sum); metrics apply to every output, logged as ``<output>_<metric>``."""
        if loss is None:
            raise ValueError("compile() needs a loss, e.g. loss='sparse_categorical_crossentropy'")
        names = self._output_names()
        per_output = self._per_output(loss, "loss", names)
        weights = self._per_output(
            1.0 if loss_weights is None else loss_weights, "loss_weights", names
        )
        for w in weights:
            if not np.isfinite(real(w, "loss_weights")) or w < 0:
                raise ValueError(f"loss_weights must be finite numbers >= 0, got {w!r}")
        self.optimizer = optimizers_mod.get(optimizer)
        self._losses = [losses_mod.get(l) for l in per_output]
        self._loss_weights = [float(w) for w in weights]
        self._loss_spec = loss
        self.loss = self._losses[0]
        if metrics is None:
            metrics = []
        if isinstance(metrics, (str,)) or callable(metrics):
            metrics = [metrics]
        self._metric_specs = list(metrics)
        self._metric_names, self._metric_fns = [], []
        for out, out_loss in zip(names, self._losses):
            for m in self._metric_specs:
                name, fn = metrics_mod.get(m, out_loss.name)
                self._metric_names.append(name if len(names) == 1 else f"{out}_{name}")
                self._metric_fns.append(fn)
        self.compiled = True

    @property
    def metrics_names(self) -> list[str]:
        """["loss", then each metric's log name], as Keras (empty before compile): the order
        of ``evaluate``'s and ``train_on_batch``'s list results."""
        return ["loss", *self._metric_names] if self.compiled else []

    def _output_shapes(self) -> list[tuple]:
        """Per-sample shape of each output (the model is built)."""
        return [tuple(self.output_shape[1:])]

    def _check_targets(self, y, name="y") -> None:
        """Check all targets against each output's loss once, before any weight changes
        (a label out of range would otherwise surface mid-epoch, or never)."""
        arrays = getattr(y, "arrays", None) or [y]  # several outputs: Inputs
        outputs = self._output_names()
        for i, (loss, arr, shape) in enumerate(zip(self._losses, arrays, self._output_shapes())):
            loss.check_targets(arr, shape, name if len(arrays) == 1 else f"{name}[{i}] "
                               f"(output {outputs[i]!r})")  # fmt: skip

    def _check_sample_weight(self, sample_weight, n: int, name="sample_weight"):
        if sample_weight is None:
            return None
        return losses_mod.check_sample_weight(sample_weight, n, name)

    @staticmethod
    def _per_output(value, what: str, names: list[str]) -> list:
        """One entry per output from a single value, a list or a dict by output name."""
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(names))
            if unknown or len(value) != len(names):
                raise ValueError(
                    f"{what} must have one entry per output {names}, got keys {sorted(value)}"
                )
            return [value[n] for n in names]
        if isinstance(value, (list, tuple)):
            if len(value) != len(names):
                raise ValueError(
                    f"{what} must have one entry per output ({len(names)}), got {len(value)}"
                )
            return list(value)
        return [value] * len(names)

    def _prepare_y(self, y):
        return _as_batch_array(y, "y")

    def _loss_value(self, y_true, y_pred, sample_weight) -> float:
        """The loss (without penalties) of a batch's predictions, in inference."""
        return self.loss.value_and_grad(y_true, y_pred, sample_weight)[0] * self._loss_weights[0]

    def _require_compiled(self, what: str) -> None:
        if not self.compiled:
            raise RuntimeError(f"call model.compile(optimizer, loss, metrics) before {what}()")

    # --- one step ---------------------------------------------------------------------------

    def _loss_and_grad(self, y_true, y_pred, tape, sample_weight):
        """(loss, dL/d(output or logits), whether the last activation's backward is folded in)."""
        return self._output_loss(0, y_true, y_pred, tape[-1], sample_weight)

    def _output_loss(self, i, y_true, y_pred, entry, sample_weight, can_fuse=True):
        """Output i's weighted (loss, gradient, fused): a softmax/sigmoid output whose loss
        is the matching cross-entropy gets the gradient w.r.t. its logits (fused=True); any
        other, the gradient w.r.t. the output. entry: the tape entry that made the output."""
        loss_fn = self._losses[i]
        act = getattr(entry.layer, "activation", None) if entry is not None else None
        logits = getattr(entry.ctx, "logits", None) if entry is not None else None
        if (
            can_fuse
            and loss_fn.fused_activation is not None
            and not loss_fn.from_logits
            and act is not None
            and act.name == loss_fn.fused_activation
            and logits is not None
        ):
            loss, grad = loss_fn.value_and_grad_logits(y_true, logits, sample_weight)
            return self._weighted(loss, grad, i) + (True,)
        loss, grad = loss_fn.value_and_grad(y_true, y_pred, sample_weight)
        return self._weighted(loss, grad.astype(np.float32, copy=False), i) + (False,)

    def _weighted(self, loss, grad, i):
        w = self._loss_weights[i]
        return (loss, grad) if w == 1.0 else (loss * w, grad * np.float32(w))

    def _regularization(self, add_grads: bool) -> float:
        """Sum of weight penalties; with add_grads, their gradients go into trainable .grad."""
        total = 0.0
        for layer, var in self._unique_variables():
            if var.regularizer is None:
                continue
            total += var.regularizer.penalty(var.value)
            if add_grads and var.trainable and layer.trainable:
                var.add_grad(var.regularizer.gradient(var.value))
        return total

    def _metrics(self, y_true, y_pred) -> list[np.ndarray]:
        return [
            np.asarray(f(y_true, y_pred), dtype=np.float64).reshape(-1) for f in self._metric_fns
        ]

    def _loss_and_gradients(self, x, y, sample_weight):
        """Forward + backward of one batch in training mode: (total loss, y_pred).

        Leaves dL/dw in each trainable variable's ``.grad`` (L includes regularization).
        """
        y_pred, tape, penalty = self._forward(x, training=True)
        loss, grad, fused = self._loss_and_grad(y, y_pred, tape, sample_weight)
        for v in self.trainable_weights:
            v.grad = None
        self._backward(tape, grad, fused)
        return loss + penalty + self._regularization(add_grads=True), y_pred

    def compute_gradients(self, x, y, sample_weight=None):
        """(loss, [dL/dw for w in trainable_weights]) for one batch, without updating anything
        but batch-norm moving statistics (the forward runs in training mode)."""
        self._require_compiled("compute_gradients")
        x, y = self._check_xy(x, y)
        _require_samples(x, "x")
        self._ensure_built(x)
        self._check_targets(y)
        sample_weight = self._check_sample_weight(sample_weight, len(x))
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
        with optimizers_mod.hold_interrupts(strict=False):
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
        x, y = self._check_xy(x, y)
        _require_samples(x, "x")
        self._ensure_built(x)
        self._check_targets(y)
        sample_weight = self._check_sample_weight(sample_weight, len(x))
        loss, mets = self._train_step(x.astype(np.float32, copy=False), y, sample_weight)
        return self._result(loss, [float(m.mean()) for m in mets], return_dict)

    def _result(self, loss, metric_values, return_dict):
        if return_dict:
            return {"loss": loss, **dict(zip(self._metric_names, metric_values))}
        return [loss, *metric_values] if self._metric_names else loss

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
        batch_size = _count_arg(batch_size, "batch_size", 1, default=32)
        epochs = _count_arg(epochs, "epochs", 1)
        initial_epoch = _count_arg(initial_epoch, "initial_epoch", 0)
        if initial_epoch > epochs:
            raise ValueError(f"initial_epoch ({initial_epoch}) must be <= epochs ({epochs})")
        verbose = _verbose_arg(verbose)
        shuffle = flag(shuffle, "shuffle")
        validation_batch_size = _count_arg(
            validation_batch_size, "validation_batch_size", 1, default=batch_size
        )
        validation_split = real(validation_split, "validation_split")
        if not 0 <= validation_split < 1:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
        if callbacks is not None and not isinstance(callbacks, (list, tuple)):
            raise TypeError(
                f"callbacks must be a list of Callbacks, got {type(callbacks).__name__}"
            )
        x, y = self._check_xy(x, y)
        _require_samples(x, "x")
        self._ensure_built(x)
        self._check_targets(y)
        sample_weight = self._check_sample_weight(sample_weight, len(x))
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

    # --- evaluate / predict -------------------------------------------------------------------

    def evaluate(
        self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, return_dict=False
    ):
        """Loss (with regularization penalties, as in Keras) and metrics over (x, y)."""
        self._require_compiled("evaluate")
        batch_size = _count_arg(batch_size, "batch_size", 1, default=32)
        verbose = _verbose_arg(verbose)
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
        _require_samples(x, x_name)
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
        """Outputs for x, computed in batches of ``batch_size`` (default 32) in inference mode.

        verbose=1 shows the progress bar (as fit's), 2 one line at the end, 0 nothing."""
        batch_size = _count_arg(batch_size, "batch_size", 1, default=32)
        verbose = _verbose_arg(verbose)
        x = self._prepare_x(x, "x")
        self._ensure_built(x)
        bar = cbks.Progbar(-(-len(x) // batch_size), verbose if len(x) else 0)
        outs = []
        for step, s in enumerate(range(0, len(x), batch_size)):
            xb = x[s : s + batch_size].astype(np.float32, copy=False)
            outs.append(self._forward(xb, training=False)[0])
            bar.update(step + 1)
        bar.finish({})
        if outs and isinstance(outs[0], list):  # several outputs: one array each
            return [np.concatenate(parts) for parts in zip(*outs)]
        if not outs:
            return np.zeros((0, *self.output_shape[1:]), np.float32)
        return np.concatenate(outs) if len(outs) > 1 else np.ascontiguousarray(outs[0])

    def predict_on_batch(self, x):
        x = self._prepare_x(x, "x")
        return self.predict(x, batch_size=max(len(x), 1))

    def __call__(self, x, training=False):
        training = flag(training, "training")
        x = self._prepare_x(x, "x")
        self._ensure_built(x)
        return self._forward(x.astype(np.float32, copy=False), training)[0]

    # --- looking inside -------------------------------------------------------------------

    def _resolve_layer(self, layer) -> Layer:
        if isinstance(layer, Layer):
            if not any(layer is l for l in self.layers):
                raise ValueError(f"layer {layer.name!r} is not in model {self.name!r}")
            return layer
        if isinstance(layer, str):
            return self.get_layer(layer)
        raise TypeError(f"layer must be a Layer or a layer name, got {type(layer).__name__}")

    def layer_outputs(self, x, layers=None, training=False) -> dict:
        """{layer name: that layer's output} for one forward pass of x (all layers if None)."""
        training = flag(training, "training")
        if layers is not None and not isinstance(layers, (list, tuple)):
            raise TypeError(
                f"layers must be a list of layers or layer names, got {type(layers).__name__}"
            )
        x = self._prepare_x(x, "x")
        self._ensure_built(x)
        wanted = self.layers if layers is None else [self._resolve_layer(l) for l in layers]
        keep = frozenset(id(l) for l in wanted)
        _, tape, _ = self._forward(x.astype(np.float32, copy=False), training, keep)
        return {e.layer.name: e.output for e in tape if id(e.layer) in keep}

    def backward_to(self, x, layer, output_gradient, logits=True):
        """Gradients of a scalar of the output w.r.t. an intermediate layer's output.

        Runs x forward (inference mode) and backward from the output down to ``layer``
        (a Layer or its name), without touching any weight gradient or other state.
        output_gradient: an array shaped like the output (dS/d output for each sample), or a
        callable(output) -> such an array; e.g. a one-hot of class c gives the gradient of
        the class-c score. logits=True applies it to the last layer's pre-activation when
        that is a softmax/sigmoid (the class *score*, as Grad-CAM uses), else to the output.
        Returns (layer output A, dS/dA, model output).
        """
        logits = flag(logits, "logits")
        x = self._prepare_x(x, "x")
        self._ensure_built(x)
        target = self._resolve_layer(layer)
        last = self.layers[-1]
        act = getattr(last, "activation", None)
        fuse = bool(logits) and act is not None and act.name in ("softmax", "sigmoid")
        with no_param_grads():
            y, tape, _ = self._forward(x.astype(np.float32, copy=False), False, {id(target)})
            seed = output_gradient(y) if callable(output_gradient) else output_gradient
            seed = np.asarray(seed)
            if seed.dtype.kind not in "biuf":
                raise TypeError(f"output_gradient must be a real array, got dtype {seed.dtype}")
            seed = seed.astype(np.float32)
            if seed.shape != y.shape:
                raise ValueError(
                    f"output_gradient must have the output's shape {y.shape}, got {seed.shape}"
                )
            out = next(e.output for e in tape if e.layer is target)
            grad = self._backward(tape, seed.copy(), fuse, stop_at=target)
        return out, grad, y

    # --- summary ----------------------------------------------------------------------------

    def _summary_rows(self) -> tuple[tuple, list[tuple]]:
        """(column heads, one row of strings per layer) of the summary table."""
        heads = ("Layer (type)", "Output Shape", "Param #")
        rows = [
            (f"{layer.name} ({type(layer).__name__})", shape_str((None, *layer.output_shape)),
             f"{layer.count_params():,}")
            for layer in self.layers
        ]  # fmt: skip
        return heads, rows

    def summary(self, line_length=None, print_fn=None):
        """Print Keras's table: layer (type), output shape, params (and, for a layer graph,
        what each layer is connected to); then the totals."""
        self._require_built("summary")
        if line_length is not None:
            line_length = _count_arg(line_length, "line_length", 1)
        if print_fn is not None and not callable(print_fn):
            raise TypeError(f"print_fn must be callable, got {print_fn!r}")
        print_fn = print_fn or print
        heads, rows = self._summary_rows()
        # every column but the last padded to its widest entry + 3 (Keras's look)
        widths = [max(len(h), *(len(r[i]) for r in rows)) + 3 for i, h in enumerate(heads)]
        widths[-1] -= 3
        widths[0] -= 1  # the leading space

        def line(cells):
            return " " + "".join(c.ljust(w) for c, w in zip(cells[:-1], widths)) + cells[-1]

        width = max(line_length or 0, sum(widths) + 2)
        lines = [f'Model: "{self.name}"', "_" * width, line(heads), "=" * width]
        for i, r in enumerate(rows):
            lines.append(line(r))
            if i + 1 < len(rows):
                lines.append("")
        trainable = sum(v.value.size for v in self.trainable_weights)
        non_trainable = sum(v.value.size for v in self.non_trainable_weights)
        lines += ["=" * width, f"Total params: {trainable + non_trainable:,}",
                  f"Trainable params: {trainable:,}", f"Non-trainable params: {non_trainable:,}",
                  "_" * width]  # fmt: skip
        for text in lines:
            print_fn(text)

    # --- saving -----------------------------------------------------------------------------

    def get_config(self) -> dict:
        raise NotImplementedError

    def to_json(self, **kwargs) -> str:
        """The architecture (no weights) as a JSON string, as Keras's ``model.to_json()``;
        ``model_from_json`` rebuilds it. ``kwargs`` go to ``json.dumps`` (e.g. indent=2)."""
        spec = {"class_name": type(self).__name__, "config": self.get_config(),
                "format": "pyconv-architecture"}  # fmt: skip
        return json.dumps(spec, **kwargs)

    def _generators(self) -> dict:
        """Every random generator training draws from, by a key stable across save/load:
        "fit" (shuffling) and "layer:NAME" (a layer's own ``_rng``: dropout masks, the
        random augmentation layers)."""
        gens = {} if self._rng is None else {"fit": self._rng}
        for layer in self.layers:
            g = getattr(layer, "_rng", None)
            if isinstance(g, np.random.Generator):
                gens[f"layer:{layer.name}"] = g
        return gens

    def _restore_generators(self, states: dict, where: str) -> None:
        for key, state in states.items():
            g = saving.generator_from_state(state, f"{where}: random state {key!r}")
            if key == "fit":
                self._rng = g
            elif key.startswith("layer:"):
                for layer in self.layers:
                    if layer.name == key[6:] and hasattr(layer, "_rng"):
                        layer._rng = g

    def save(self, filepath, include_optimizer=True) -> None:
        """Architecture, weights and optimizer state in one file, written atomically.

        The file also holds the state of the random generators training draws from
        (shuffling, dropout), so ``load_model`` + ``fit(initial_epoch=k)`` continues a run
        exactly as if it had not stopped. pyconv's own format, not Keras's: a name ending in
        .keras or .h5 is refused (use .pyconv)."""
        check_not_keras_path(filepath, "save")
        include_optimizer = flag(include_optimizer, "include_optimizer")
        self._require_built("save")
        entries, arrays = saving.weight_arrays(self.weights)
        manifest = {
            "format": "pyconv-model",
            "model": {"class_name": type(self).__name__, "config": self.get_config()},
            "weights": entries,
            "compile": None,
            "metadata": self.metadata,
        }
        try:
            json.dumps(self.metadata)
        except (TypeError, ValueError) as e:
            raise TypeError(f"model.metadata must be JSON-serializable: {e}") from None
        rng_state = {key: saving.generator_state(g) for key, g in self._generators().items()}
        if rng_state:
            manifest["rng_state"] = rng_state
        if self.compiled:
            specs = [m for m in self._metric_specs if isinstance(m, str)]
            manifest["compile"] = {
                "loss": losses_mod.serialize(self.loss)
                if len(self._losses) == 1
                else [losses_mod.serialize(l) for l in self._losses],
                "loss_weights": self._loss_weights,
                "metrics": specs,
                "optimizer": optimizers_mod.serialize(self.optimizer),
            }
            if include_optimizer:
                slots = {}
                for vi, var in enumerate(self.weights):
                    for slot, value in self.optimizer.slots.get(var.name, {}).items():
                        key = f"opt{vi:04d}_{slot}"
                        slots.setdefault(var.name, {})[slot] = key
                        arrays[key] = value
                manifest["optimizer_state"] = {
                    "iterations": self.optimizer.iterations,
                    "slots": slots,
                }
        saving.write_archive(filepath, manifest, arrays)

    def save_weights(self, filepath) -> None:
        """Only the weights (in order), written atomically; read back with load_weights."""
        check_not_keras_path(filepath, "save_weights")
        self._require_built("save_weights")
        entries, arrays = saving.weight_arrays(self.weights)
        saving.write_archive(filepath, {"format": "pyconv-weights", "weights": entries}, arrays)

    def load_weights(self, filepath) -> None:
        """Load weights saved by save_weights or save into this (same-architecture) model."""
        self._require_built("load_weights")
        with saving.Archive(filepath, "weights") as ar:
            saving.load_weight_arrays(ar, self.weights)


class Sequential(Model):
    """A plain stack of layers, each feeding the next."""

    def __init__(self, layers=None, name=None):
        super().__init__(name=name)
        self._layers: list[Layer] = []
        self._input_layer: InputLayer | None = None
        self._input_shape: tuple | None = None
        for layer in layers or []:
            self.add(layer)

    @property
    def layers(self) -> list[Layer]:
        return list(self._layers)

    @property
    def built(self) -> bool:
        return self._input_shape is not None and all(l.built for l in self._layers)

    @property
    def input_shape(self):
        return None if self._input_shape is None else (None, *self._input_shape)

    @property
    def output_shape(self):
        self._require_built("output_shape")
        shape = self._input_shape if not self._layers else self._layers[-1].output_shape
        return (None, *shape)

    def add(self, layer) -> None:
        if isinstance(layer, SymbolicTensor):
            layer = layer.layer
        if isinstance(layer, InputLayer):
            if self._layers or self._input_layer is not None:
                raise ValueError("an Input can only be the first element of a Sequential model")
            self._input_layer = layer
            self._build(layer.shape)
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add() takes a Layer, got {type(layer).__name__}")
        if any(layer is l for l in self._layers):
            raise ValueError(f"layer {layer.name!r} is already in this model")
        if any(layer.name == l.name for l in self._layers):
            raise ValueError(
                f"a layer named {layer.name!r} is already in this model; names must be unique"
            )
        self._layers.append(layer)
        if not self._layers[:-1] and self._input_shape is None and layer._declared_input_shape:
            self._build(layer._declared_input_shape)
        elif self._input_shape is not None:
            try:
                layer.build_for(
                    self._layers[-2].output_shape if len(self._layers) > 1 else self._input_shape
                )
            except Exception:
                self._layers.pop()
                raise

    def pop(self) -> Layer:
        if not self._layers:
            raise ValueError("there are no layers to pop")
        return self._layers.pop()

    def _build(self, input_shape) -> None:
        shape = tuple(input_shape)
        for layer in self._layers:
            shape = layer.build_for(shape)
        self._input_shape = tuple(input_shape)

    def build(self, input_shape) -> None:
        """Build for inputs of ``input_shape`` (with or without the leading None)."""
        shape = tuple(input_shape)
        if shape and shape[0] is None:
            shape = shape[1:]
        self._build(shape)

    def _ensure_built(self, x: np.ndarray) -> None:
        if self._input_shape is None:
            self._build(x.shape[1:])
        elif tuple(x.shape[1:]) != self._input_shape:
            raise ValueError(
                f"model {self.name!r} expects inputs of shape "
                f"{shape_str((None, *self._input_shape))}, "
                f"got x with shape {x.shape}"
            )
        elif not self.built:
            self._build(self._input_shape)

    def _forward(self, x, training, keep=frozenset()):
        tape: list[TapeEntry] = []
        penalties: list[float] = []
        for layer in self._layers:
            x = apply_layer(layer, x, training, tape, penalties, id(layer) in keep)
        return x, tape, float(sum(penalties))

    def _first_layer_needing_backward(self) -> int:
        """Layers below the lowest trainable layer need no backward at all (frozen bases)."""
        for i, layer in enumerate(self._layers):
            if layer.trainable_weights:
                return i
        return len(self._layers)

    def _backward(self, tape, dy, skip_activation, stop_at=None):
        # Each entry is dropped from the tape once used (and the ones below the first layer
        # that needs a backward at once), so a layer's saved activations are freed as soon
        # as its gradient is done: lower peak memory, and their buffers serve the next
        # gradients.
        last = len(tape) - 1
        if stop_at is not None:  # dL/d(output of stop_at): every layer above it, inputs too
            k = next(i for i, e in enumerate(tape) if e.layer is stop_at)
            for i in range(last, k, -1):
                dy = backprop_layer(tape[i], dy, True, skip_activation and i == last)
                tape[i] = None
            return dy
        first = self._first_layer_needing_backward()
        tape[:first] = [None] * first
        for i in range(last, first - 1, -1):
            dy = backprop_layer(tape[i], dy, i > first, skip_activation and i == last)
            tape[i] = None
        return None

    def get_config(self) -> dict:
        layers = [serialize(l) for l in self._layers]
        if self._input_layer is not None:
            layers.insert(0, serialize(self._input_layer))
        cfg = {"name": self.name, "layers": layers}
        if self._input_shape is not None:
            cfg["input_shape"] = list(self._input_shape)
        return cfg

    @classmethod
    def from_config(cls, config: dict, custom_objects=None):
        model = cls(name=config.get("name"))
        for spec in config.get("layers", []):
            model.add(deserialize(spec, custom_objects))
        if not model.built and config.get("input_shape") is not None:
            model._build(tuple(config["input_shape"]))
        return model


MODEL_CLASSES = {"Sequential": Sequential}


def model_from_json(json_string, custom_objects=None) -> Model:
    """A new model (fresh weights) with the architecture ``model.to_json()`` wrote, as
    ``keras.models.model_from_json``. custom_objects: {name: class} of your own layers."""
    if not isinstance(json_string, (str, bytes, bytearray)):
        raise TypeError(f"json_string must be a str, got {type(json_string).__name__}")
    if custom_objects is not None and not isinstance(custom_objects, dict):
        raise TypeError(f"custom_objects must be a dict, got {type(custom_objects).__name__}")
    try:
        spec = json.loads(json_string)
    except ValueError as e:
        raise ValueError(f"json_string is not valid JSON: {e}") from None
    if (
        not isinstance(spec, dict)
        or not isinstance(spec.get("class_name"), str)
        or not isinstance(spec.get("config"), dict)
    ):
        raise ValueError('json_string must hold {"class_name": ..., "config": {...}}')
    name = spec["class_name"]
    cls = (custom_objects or {}).get(name) or MODEL_CLASSES.get(name)
    if cls is None and name == "Functional":
        from .graph import Functional as cls
    if cls is None:
        raise ValueError(f"unknown model class {name!r} (Sequential or Functional)")
    return cls.from_config(spec["config"], custom_objects)


def _model_class(name):
    if name == "Functional":
        from .graph import Functional

        return Functional
    return MODEL_CLASSES.get(name)


def load_model(filepath, custom_objects=None, compile=True) -> Model:
    """Rebuild a model saved with ``model.save``: architecture, weights, optimizer state.

    Anything wrong with the file (hostile or damaged included) raises ``ModelFileError``
    naming it; the manifest's declared sizes are checked before anything is read or built."""
    if custom_objects is not None and not isinstance(custom_objects, dict):
        raise TypeError(
            "custom_objects must be a dict of names to classes, got "
            f"{type(custom_objects).__name__}"
        )
    with saving.Archive(filepath, "model") as ar:
        if ar.manifest.get("format") != "pyconv-model":
            raise saving.ModelFileError(f"{ar.path!r} holds only weights; use model.load_weights()")
        n_values = saving.check_model_manifest(ar)
        try:
            with saving.weight_budget(n_values, repr(ar.path)):
                return _rebuild_model(ar, custom_objects or {}, compile)
        except saving.ModelFileError:
            raise
        except Exception as e:  # whatever a constructor makes of a hostile configuration
            raise saving.ModelFileError(
                f"{ar.path!r}: cannot rebuild the model it describes ({type(e).__name__}: {e})"
            ) from e


def _rebuild_model(ar, custom_objects: dict, compile: bool) -> Model:
    m = ar.manifest
    spec = m["model"]
    cls = custom_objects.get(spec["class_name"]) or _model_class(spec["class_name"])
    if cls is None:
        raise saving.ModelFileError(f"{ar.path!r}: unknown model class {spec['class_name']!r}")
    model = cls.from_config(spec.get("config", {}), custom_objects)
    saving.load_weight_arrays(ar, model.weights)
    model.metadata = dict(m.get("metadata") or {})
    if m.get("rng_state") is not None:
        model._restore_generators(m["rng_state"], repr(ar.path))
    comp = m.get("compile")
    if compile and comp:
        loss = comp["loss"]
        model.compile(
            optimizer=optimizers_mod.get(comp["optimizer"]),
            loss=[losses_mod.get(l) for l in loss]
            if isinstance(loss, list)
            else losses_mod.get(loss),
            loss_weights=comp.get("loss_weights"),
            metrics=comp.get("metrics") or None,
        )
        if m.get("optimizer_state"):
            saving.restore_optimizer_state(ar, model.optimizer, model.weights)
    return model
