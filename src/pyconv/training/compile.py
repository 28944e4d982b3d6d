"""What ``Model.compile`` sets up: the losses (one per output, weighted), the metrics, and
the loss of a batch with its gradient, where a softmax/sigmoid output is folded into its
cross-entropy (the gradient then is w.r.t. the logits: exact and cheap, see losses.py).

``CompileMixin`` is one of ``Model``'s bases; it relies on the model for its wiring:
``_output_names()``, ``_output_shapes()`` and ``_unique_variables()``. A layer graph with
several outputs overrides ``_loss_and_grad``, ``_loss_value`` and ``_metrics``.
"""

from __future__ import annotations

import numpy as np

from .. import losses as losses_mod
from .. import metrics as metrics_mod
from .. import optimizers as optimizers_mod
from .._shapes import real
from .tape import fold_activation_into_gradient


class CompileMixin:
    """compile(), the per-output losses and metrics, and the loss of one batch."""

    def _init_compile_state(self) -> None:
        """Not compiled: no optimizer, loss or metrics."""
        self.optimizer = None
        self.loss = None  # the (first output's) loss
        self._losses: list = []
        self._loss_weights: list[float] = [1.0]
        self.compiled = False
        self._metric_names: list[str] = []
        self._metric_fns: list = []
        self._metric_specs: list = []

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

    def _require_compiled(self, what: str) -> None:
        if not self.compiled:
            raise RuntimeError(f"call model.compile(optimizer, loss, metrics) before {what}()")

    def _loss_value(self, y_true, y_pred, sample_weight) -> float:
        """The loss (without penalties) of a batch's predictions, in inference."""
        return self.loss.value_and_grad(y_true, y_pred, sample_weight)[0] * self._loss_weights[0]

    def _loss_and_grad(self, y_true, y_pred, tape, sample_weight):
        """(loss, dL/d(output or logits)); see ``_output_loss``."""
        return self._output_loss(0, y_true, y_pred, tape[-1], sample_weight)

    def _output_loss(self, i, y_true, y_pred, entry, sample_weight, can_fuse=True):
        """Output i's weighted (loss, gradient): a softmax/sigmoid output whose loss is the
        matching cross-entropy gets the gradient w.r.t. its logits, and its tape entry's ctx
        is marked so (the layer's backward then skips the activation's); any other, the
        gradient w.r.t. the output. entry: the tape entry that made the output."""
        loss_fn = self._losses[i]
        act = getattr(entry.layer, "activation", None) if entry is not None else None
        if (
            can_fuse
            and loss_fn.fused_activation is not None
            and not loss_fn.from_logits
            and act is not None
            and act.name == loss_fn.fused_activation
            and fold_activation_into_gradient(entry)
        ):
            loss, grad = loss_fn.value_and_grad_logits(y_true, entry.ctx.logits, sample_weight)
            return self._weighted(loss, grad, i)
        loss, grad = loss_fn.value_and_grad(y_true, y_pred, sample_weight)
        return self._weighted(loss, grad.astype(np.float32, copy=False), i)

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
