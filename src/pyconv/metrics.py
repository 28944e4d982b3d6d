"""Metrics: functions (y_true, y_pred) -> one value per sample, averaged by the model.

``"accuracy"`` resolves as in Keras from the loss: sparse labels -> sparse categorical
accuracy, one-hot -> categorical, binary cross-entropy -> threshold 0.5.
"""

from __future__ import annotations

import numpy as np

from .losses import _dense_targets, _sparse_labels


def sparse_categorical_accuracy(y_true, y_pred):
    lab = _sparse_labels(y_true, y_pred)
    return (np.argmax(y_pred, axis=-1) == lab).reshape(len(y_pred), -1).mean(axis=1)


def categorical_accuracy(y_true, y_pred):
    y = _dense_targets(y_true, y_pred)
    hit = np.argmax(y_pred, axis=-1) == np.argmax(y, axis=-1)
    return hit.reshape(len(y_pred), -1).mean(axis=1)


def binary_accuracy(y_true, y_pred, threshold=0.5):
    y = _dense_targets(y_true, y_pred)
    return ((y_pred > threshold) == (y > 0.5)).reshape(len(y_pred), -1).mean(axis=1)


def mean_squared_error(y_true, y_pred):
    d = y_pred - _dense_targets(y_true, y_pred)
    return np.square(d).reshape(len(d), -1).mean(axis=1)


def mean_absolute_error(y_true, y_pred):
    d = y_pred - _dense_targets(y_true, y_pred)
    return np.abs(d).reshape(len(d), -1).mean(axis=1)


_BY_NAME = {
    "sparse_categorical_accuracy": sparse_categorical_accuracy,
    "categorical_accuracy": categorical_accuracy,
    "binary_accuracy": binary_accuracy,
    "mean_squared_error": mean_squared_error,
    "mse": mean_squared_error,
    "mean_absolute_error": mean_absolute_error,
    "mae": mean_absolute_error,
}


def get(identifier, loss_name: str) -> tuple[str, callable]:
    """(display name, function) for a metric name or callable, given the model's loss."""
    if callable(identifier):
        return getattr(identifier, "__name__", "metric"), identifier
    if not isinstance(identifier, str):
        raise ValueError(f"metrics must be names or callables, got {identifier!r}")
    key = identifier.lower()
    if key in ("accuracy", "acc"):
        if loss_name == "sparse_categorical_crossentropy":
            return identifier, sparse_categorical_accuracy
        if loss_name == "binary_crossentropy":
            return identifier, binary_accuracy
        return identifier, categorical_accuracy
    if key in _BY_NAME:
        return identifier, _BY_NAME[key]
    raise ValueError(
        f"unknown metric {identifier!r}; use 'accuracy' or one of {', '.join(sorted(_BY_NAME))}"
    )
