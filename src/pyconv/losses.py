"""Losses as value-and-gradient pairs.

Each loss reduces per-sample losses l_i with optional sample weights w_i as Keras does:
L = sum_i(w_i * l_i) / N. ``value_and_grad(y_true, y_pred)`` returns L and dL/dy_pred.
Cross-entropies after a softmax/sigmoid layer are *fused*: the model hands them the logits z
and they return dL/dz = w * (softmax(z) - y) / N directly, computed from log-softmax, so the
loss is exact for any logits and the softmax Jacobian is never formed.
"""

from __future__ import annotations

import numpy as np

from ._shapes import flag
from .utils import from_registry

_EPS = 1e-7  # Keras's clipping of probabilities when a loss gets probabilities, not logits


def check_sample_weight(sample_weight, n: int, name="sample_weight") -> np.ndarray:
    """One finite weight >= 0 per sample, as float32: shape (n,) or (n, 1)."""
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "biuf":  # a boolean mask is 0/1 weights
        raise TypeError(f"{name} must be a real numeric array, got dtype {w.dtype}")
    if w.ndim == 2 and w.shape[1] == 1:
        w = w[:, 0]
    if w.shape != (n,):
        raise ValueError(f"{name} must have one weight per sample, shape ({n},), got {w.shape}")
    w = w.astype(np.float32)
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"{name} must be finite and >= 0, got values in [{w.min()}, {w.max()}]")
    return w


def _weights(sample_weight, n: int) -> np.ndarray | None:
    return None if sample_weight is None else check_sample_weight(sample_weight, n)


def _reduce(per_sample: np.ndarray, w) -> float:
    n = per_sample.shape[0]
    if w is not None:  # not np.dot: BLAS splits long dots over its threads (order varies)
        return float((per_sample.astype(np.float64) * w).sum() / n)
    return float(per_sample.sum(dtype=np.float64) / n)


def _scale(per_sample_grad: np.ndarray, w, n: int) -> np.ndarray:
    """Multiply row i of a gradient by w_i / N."""
    g = per_sample_grad
    if w is not None:
        g *= (w / n).reshape(-1, *([1] * (g.ndim - 1)))
    else:
        g *= np.float32(1.0 / n)
    return g


def _positions(a: np.ndarray) -> int:
    """Number of class-axis positions per sample: 1 for (N, K), T for (N, T, K)."""
    return int(np.prod(a.shape[1:-1], dtype=np.int64))


def _per_sample(per_position: np.ndarray) -> np.ndarray:
    """Per-sample loss: the mean over every non-batch position (Keras: sum_over_batch_size)."""
    return per_position.reshape(len(per_position), -1).mean(axis=1)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float32, copy=True)
    z -= z.max(axis=-1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return z


def _sparse_labels(y_true, y_pred: np.ndarray, name="y") -> np.ndarray:
    return _sparse_labels_for(y_true, y_pred.shape, name)


def _sparse_labels_for(y_true, pred_shape: tuple, name="y") -> np.ndarray:
    """Integer class indices in [0, classes) for predictions of shape ``pred_shape``."""
    y = np.asarray(y_true)
    if y.dtype.kind not in "biuf":
        raise TypeError(f"sparse labels {name} must be integer class indices, got dtype {y.dtype}")
    if y.ndim == len(pred_shape) and y.shape[-1] == 1:
        y = y[..., 0]
    if y.shape != tuple(pred_shape[:-1]):
        raise ValueError(
            f"sparse labels {name} must have shape {tuple(pred_shape[:-1])} (one class index "
            f"per sample) for predictions of shape {tuple(pred_shape)}, got {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):  # NaN and inf fail this too
            raise ValueError(f"sparse labels {name} must be integer class indices")
        y = y.astype(np.int64)
    k = pred_shape[-1]
    if y.size and (y.min() < 0 or y.max() >= k):
        raise ValueError(
            f"labels {name} must be in [0, {k}) for {k} classes, got values in "
            f"[{y.min()}, {y.max()}]"
        )
    return y


def _dense_targets(y_true, y_pred: np.ndarray, name="y") -> np.ndarray:
    return _dense_targets_for(y_true, y_pred.shape, name)


def _dense_targets_for(y_true, pred_shape: tuple, name="y") -> np.ndarray:
    y = np.asarray(y_true)
    if y.dtype.kind not in "biuf":
        raise TypeError(f"targets {name} must be a real numeric array, got dtype {y.dtype}")
    y = y.astype(np.float32, copy=False)
    pred_shape = tuple(pred_shape)
    if (
        y.shape != pred_shape
        and y.ndim
        and len(y) == pred_shape[0]
        and y.size == np.prod(pred_shape, dtype=np.int64)
    ):
        y = y.reshape(pred_shape)  # e.g. (N,) labels for a (N, 1) sigmoid output
    if y.shape != pred_shape:
        raise ValueError(
            f"targets {name} must have the predictions' shape {pred_shape}, got {y.shape}"
        )
    return y


def _check_range(y: np.ndarray, name: str, loss: str, lo=0.0, hi=1.0, hint="") -> None:
    """Targets finite and in [lo, hi] (one vectorized pass)."""
    if y.size == 0:
        return
    low, high = float(y.min()), float(y.max())
    if not (np.isfinite(low) and np.isfinite(high)) or low < lo or high > hi:
        raise ValueError(
            f"{loss} needs targets {name} in [{lo:g}, {hi:g}], got values in "
            f"[{low:g}, {high:g}]{hint}"
        )


class Loss:
    name = "loss"
    fused_activation: str | None = None  # the activation whose gradient this loss can absorb

    def __init__(self, from_logits=False):
        self.from_logits = flag(from_logits, "from_logits")

    def value_and_grad(self, y_true, y_pred, sample_weight=None):
        raise NotImplementedError

    def check_targets(self, y_true, output_shape: tuple, name="y") -> None:
        """Raise ValueError/TypeError if ``y_true`` cannot be this loss's targets for outputs
        of per-sample shape ``output_shape`` (the model checks all of its data once before
        training, so a bad label is found before any weight changes). A loss of your own
        may override it; by default every real numeric array is accepted."""
        y = np.asarray(y_true)
        if y.dtype.kind not in "biuf":
            raise TypeError(f"targets {name} must be a real numeric array, got dtype {y.dtype}")

    def value_and_grad_logits(self, y_true, logits, sample_weight=None):
        raise NotImplementedError

    def __call__(self, y_true, y_pred, sample_weight=None) -> float:
        y_pred = np.asarray(y_pred, dtype=np.float32)
        if self.from_logits:
            return self.value_and_grad_logits(y_true, y_pred, sample_weight)[0]
        return self.value_and_grad(y_true, y_pred, sample_weight)[0]

    def get_config(self) -> dict:
        return {"from_logits": self.from_logits}


class CategoricalCrossentropy(Loss):
    """-sum(y * log p) per sample, y one-hot (or soft) targets."""

    name = "categorical_crossentropy"
    fused_activation = "softmax"

    def _targets(self, y_true, y_pred):
        return _dense_targets(y_true, y_pred)

    def check_targets(self, y_true, output_shape, name="y"):
        y = _dense_targets_for(y_true, (len(y_true), *output_shape), name)
        hint = ""
        if len(output_shape) and output_shape[-1] > 1 and np.asarray(y_true).ndim == 1:
            hint = "; integer class indices need loss='sparse_categorical_crossentropy'"
        _check_range(y, name, self.name, hint=hint)

    def value_and_grad(self, y_true, y_pred, sample_weight=None):
        if self.from_logits:
            return self.value_and_grad_logits(y_true, y_pred, sample_weight)
        y = self._targets(y_true, y_pred)
        w = _weights(sample_weight, len(y_pred))
        # Keras normalizes the rows to sum to 1 (and clips); the gradient includes that step:
        # L = -sum y log(p/S)  =>  dL/dp = (-y / (p/S) + sum(y)) / S.
        total = np.maximum(y_pred.sum(axis=-1, keepdims=True), _EPS)
        q = np.clip(y_pred / total, _EPS, 1 - _EPS)
        loss = _reduce(_per_sample(-(y * np.log(q)).sum(axis=-1)), w)
        grad = (-y / q + y.sum(axis=-1, keepdims=True)) / total / _positions(y_pred)
        return loss, _scale(grad.astype(np.float32), w, len(q))

    def value_and_grad_logits(self, y_true, logits, sample_weight=None):
        y = self._targets(y_true, logits)
        w = _weights(sample_weight, len(logits))
        logp = _log_softmax(logits)
        loss = _reduce(_per_sample(-(y * logp).sum(axis=-1)), w)
        grad = (np.exp(logp) * y.sum(axis=-1, keepdims=True) - y) / np.float32(_positions(logits))
        return loss, _scale(grad, w, len(logits))


class SparseCategoricalCrossentropy(Loss):
    """-log p[label] per sample, labels as integer class indices."""

    name = "sparse_categorical_crossentropy"
    fused_activation = "softmax"

    def check_targets(self, y_true, output_shape, name="y"):
        _sparse_labels_for(y_true, (len(y_true), *output_shape), name)

    def value_and_grad(self, y_true, y_pred, sample_weight=None):
        if self.from_logits:
            return self.value_and_grad_logits(y_true, y_pred, sample_weight)
        lab = _sparse_labels(y_true, y_pred)
        w = _weights(sample_weight, len(y_pred))
        total = np.maximum(y_pred.sum(axis=-1, keepdims=True), _EPS)
        q = np.clip(y_pred / total, _EPS, 1 - _EPS)
        picked = np.take_along_axis(q, lab[..., None], axis=-1)[..., 0]
        loss = _reduce(_per_sample(-np.log(picked)), w)
        # dL/dp = (-onehot / q + 1) / S (the row normalization's derivative included)
        grad = np.ones_like(q)
        np.put_along_axis(grad, lab[..., None], (1.0 - 1.0 / picked)[..., None], axis=-1)
        grad = grad / total / _positions(y_pred)
        return loss, _scale(grad.astype(np.float32), w, len(q))

    def value_and_grad_logits(self, y_true, logits, sample_weight=None):
        lab = _sparse_labels(y_true, logits)
        w = _weights(sample_weight, len(logits))
        logp = _log_softmax(logits)
        picked = np.take_along_axis(logp, lab[..., None], axis=-1)[..., 0]
        loss = _reduce(_per_sample(-picked), w)
        grad = np.exp(logp)
        idx = lab[..., None]
        np.put_along_axis(grad, idx, np.take_along_axis(grad, idx, axis=-1) - 1, axis=-1)
        grad /= np.float32(_positions(logits))
        return loss, _scale(grad, w, len(logits))


class BinaryCrossentropy(Loss):
    """-(y log p + (1-y) log(1-p)), averaged over the last axis."""

    name = "binary_crossentropy"
    fused_activation = "sigmoid"

    def check_targets(self, y_true, output_shape, name="y"):
        y = _dense_targets_for(y_true, (len(y_true), *output_shape), name)
        hint = ""
        if y.size and float(y.max()) > 1 and np.all(np.mod(y, 1) == 0):
            hint = (
                f"; {int(y.max()) + 1} class labels need a softmax output with one unit per "
                "class and loss='sparse_categorical_crossentropy'"
            )
        _check_range(y, name, self.name, hint=hint)

    def value_and_grad(self, y_true, y_pred, sample_weight=None):
        if self.from_logits:
            return self.value_and_grad_logits(y_true, y_pred, sample_weight)
        y = _dense_targets(y_true, y_pred)
        w = _weights(sample_weight, len(y_pred))
        p = np.clip(y_pred, _EPS, 1 - _EPS)
        k = p[0].size if len(p) else 1  # mean over every non-batch element
        per = -(y * np.log(p) + (1 - y) * np.log1p(-p))
        loss = _reduce(_per_sample(per), w)
        grad = (p - y) / (p * (1 - p) * k)
        return loss, _scale(grad.astype(np.float32), w, len(p))

    def value_and_grad_logits(self, y_true, logits, sample_weight=None):
        y = _dense_targets(y_true, logits)
        w = _weights(sample_weight, len(logits))
        z = logits.astype(np.float32)
        k = z[0].size if len(z) else 1
        per = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
        loss = _reduce(_per_sample(per), w)
        sig = np.exp(-np.logaddexp(0, -z))
        return loss, _scale(((sig - y) / k).astype(np.float32), w, len(z))


class _Regression(Loss):
    def check_targets(self, y_true, output_shape, name="y"):
        y = _dense_targets_for(y_true, (len(y_true), *output_shape), name)
        if not np.isfinite(y).all():
            raise ValueError(f"{self.name} needs finite targets {name}; got NaN or infinity")


class MeanSquaredError(_Regression):
    name = "mean_squared_error"

    def value_and_grad(self, y_true, y_pred, sample_weight=None):
        y = _dense_targets(y_true, y_pred)
        w = _weights(sample_weight, len(y_pred))
        d = y_pred - y
        k = d[0].size if len(d) else 1
        loss = _reduce(np.square(d).reshape(len(d), -1).sum(axis=1) / k, w)
        return loss, _scale(d * np.float32(2.0 / k), w, len(d))

    def get_config(self):
        return {}


class MeanAbsoluteError(_Regression):
    name = "mean_absolute_error"

    def value_and_grad(self, y_true, y_pred, sample_weight=None):
        y = _dense_targets(y_true, y_pred)
        w = _weights(sample_weight, len(y_pred))
        d = y_pred - y
        k = d[0].size if len(d) else 1
        loss = _reduce(np.abs(d).reshape(len(d), -1).sum(axis=1) / k, w)
        return loss, _scale(np.sign(d) / np.float32(k), w, len(d))

    def get_config(self):
        return {}


class ContrastiveLoss(Loss):
    """Contrastive loss of a Siamese network (Hadsell, Chopra and LeCun 2006) on the
    predicted distance d of a pair: y_true = 1 for a similar pair (loss d^2, pulls the
    embeddings together), 0 for a dissimilar one (loss max(margin - d, 0)^2, pushes them at
    least ``margin`` apart). L = mean over pairs. y_pred: (N, 1) distances, e.g. from
    ``layers.EuclideanDistance``."""

    name = "contrastive_loss"

    def __init__(self, margin=1.0):
        super().__init__()
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin <= 0:
            raise ValueError(f"margin must be a positive number, got {margin!r}")
        self.margin = float(margin)

    def check_targets(self, y_true, output_shape, name="y"):
        y = np.asarray(y_true)
        if y.dtype.kind not in "biuf":
            raise TypeError(f"targets {name} must be a real numeric array, got dtype {y.dtype}")
        if y.size != len(y):
            raise ValueError(f"{self.name} needs one label per pair, got {name} of shape {y.shape}")
        _check_range(y.astype(np.float32), name, self.name)

    def value_and_grad(self, y_true, y_pred, sample_weight=None):
        d = np.asarray(y_pred, dtype=np.float32).reshape(len(y_pred), -1)
        if d.shape[1] != 1:
            raise ValueError(f"contrastive loss needs one distance per pair, got y_pred {d.shape}")
        y = np.asarray(y_true, dtype=np.float32).reshape(-1, 1)
        if len(y) != len(d):
            raise ValueError(f"y_true has {len(y)} labels for {len(d)} pairs")
        w = _weights(sample_weight, len(d))
        gap = np.maximum(np.float32(self.margin) - d, 0)
        per = y * d * d + (1 - y) * gap * gap
        grad = 2 * y * d - 2 * (1 - y) * gap
        return _reduce(per[:, 0], w), _scale(
            grad.reshape(y_pred.shape).astype(np.float32), w, len(d)
        )

    def get_config(self):
        return {"margin": self.margin}


_BY_NAME = {
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "mean_squared_error": MeanSquaredError,
    "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError,
    "mae": MeanAbsoluteError,
    "contrastive_loss": ContrastiveLoss,
}
_BY_CLASS = {cls.__name__: cls for cls in _BY_NAME.values()}


def get(identifier) -> Loss:
    """A Loss from a name ("sparse_categorical_crossentropy"), a config dict or a Loss."""
    return from_registry(identifier, Loss, _BY_NAME, _BY_CLASS, "loss")


def serialize(loss: Loss) -> dict:
    return {"class_name": type(loss).__name__, "config": loss.get_config()}
