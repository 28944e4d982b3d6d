"""BatchNormalization over one axis (the channels, or a Dense layer's units)."""

from __future__ import annotations

import numpy as np

from .. import initializers, regularizers
from .._shapes import as_int
from .base import Layer


class BatchNormalization(Layer):
    """y = gamma * (x - mean) / sqrt(var + epsilon) + beta, per feature along ``axis``.

    Training uses the batch statistics (biased variance) and updates the non-trainable
    moving_mean / moving_variance by ``moving = momentum * moving + (1 - momentum) * batch``;
    inference uses the moving ones. As in Keras, a layer with ``trainable = False`` runs in
    inference mode (so freezing a base model for fine-tuning keeps its statistics).
    Weights, in Keras's order: gamma, beta, moving_mean, moving_variance.
    """

    def __init__(
        self,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.axis = as_int(axis, "axis")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)

    def _feature_axis(self, ndim: int) -> int:
        """The normalized axis of a batch with ``ndim`` dims (batch dim included)."""
        axis = self.axis if self.axis >= 0 else ndim + self.axis
        if not 1 <= axis < ndim:
            raise ValueError(
                f"BatchNormalization {self.name!r}: axis={self.axis} is not a feature axis "
                f"of inputs with {ndim - 1} dims per sample"
            )
        return axis

    def build(self, input_shape):
        c = input_shape[self._feature_axis(len(input_shape) + 1) - 1]
        self.gamma = self.beta = None
        if self.scale:
            self.gamma = self.add_weight(
                "gamma", (c,), self.gamma_initializer, self.gamma_regularizer
            )
        if self.center:
            self.beta = self.add_weight("beta", (c,), self.beta_initializer, self.beta_regularizer)
        self.moving_mean = self.add_weight(
            "moving_mean", (c,), self.moving_mean_initializer, trainable=False
        )
        self.moving_variance = self.add_weight(
            "moving_variance", (c,), self.moving_variance_initializer, trainable=False
        )

    def _as_rows(self, x):
        """A (rows, C) view when the feature axis is the last one (channels last: free)."""
        axis = self._feature_axis(x.ndim)
        if axis == x.ndim - 1:
            return x.reshape(-1, x.shape[-1]), None
        # Channels first: move the axis last (a copy), normalize, move back.
        return np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis]), axis

    @staticmethod
    def _restore(rows, shape, axis):
        if axis is None:
            return rows.reshape(shape)
        moved = (*shape[:axis], *shape[axis + 1 :], shape[axis])
        return np.ascontiguousarray(np.moveaxis(rows.reshape(moved), -1, axis))

    def _scale_shift(self):
        c = self.moving_mean.value.shape[0]
        gamma = self.gamma.value if self.gamma is not None else np.ones(c, np.float32)
        beta = self.beta.value if self.beta is not None else np.zeros(c, np.float32)
        return gamma, beta

    def _forward(self, x, training):
        rows, axis = self._as_rows(x)  # (M, C)
        gamma, beta = self._scale_shift()
        if not training or not self.trainable:
            inv = 1.0 / np.sqrt(self.moving_variance.value + np.float32(self.epsilon))
            a = (gamma * inv).astype(np.float32)
            b = (beta - self.moving_mean.value * a).astype(np.float32)
            y = rows * a
            y += b
            return self._restore(y, x.shape, axis), x
        mean = rows.mean(axis=0, dtype=np.float32)
        xhat = rows - mean
        var = np.square(xhat).mean(axis=0, dtype=np.float32)
        inv = (1.0 / np.sqrt(var + np.float32(self.epsilon))).astype(np.float32)
        xhat *= inv
        y = xhat * gamma
        y += beta
        m = np.float32(self.momentum)
        self.moving_mean.value *= m
        self.moving_mean.value += (1 - m) * mean
        self.moving_variance.value *= m
        self.moving_variance.value += (1 - m) * var
        return self._restore(y, x.shape, axis), (xhat, inv, x.shape, axis)

    def _backward(self, ctx, dy, need_input_grad):
        if isinstance(
            ctx, np.ndarray
        ):  # inference mode, ctx = x: y = gamma*xhat + beta, xhat = (x - mm)*inv
            return self._backward_inference(ctx, dy, need_input_grad)
        xhat, inv, shape, axis = ctx
        g, _ = self._as_rows(dy)  # (M, C)
        m = g.shape[0]
        dbeta = g.sum(axis=0, dtype=np.float32)
        dgamma = np.einsum("mc,mc->c", g, xhat, dtype=np.float32)
        if self.trainable:
            if self.gamma is not None:
                self.gamma.add_grad(dgamma)
            if self.beta is not None:
                self.beta.add_grad(dbeta)
        if not need_input_grad:
            return None
        gamma, _ = self._scale_shift()
        # dx = gamma*inv/M * (M*dy - sum(dy) - xhat*sum(dy*xhat)), per feature
        dx = xhat * (dgamma / m)
        dx += dbeta / m
        np.subtract(g, dx, out=dx)
        dx *= gamma * inv
        return self._restore(dx, shape, axis)

    def _backward_inference(self, x, dy, need_input_grad):
        gamma, _ = self._scale_shift()
        inv = (1.0 / np.sqrt(self.moving_variance.value + np.float32(self.epsilon))).astype(
            np.float32
        )
        g, axis = self._as_rows(dy)
        if self.trainable:
            rows, _ = self._as_rows(x)
            if self.gamma is not None:
                xhat = (rows - self.moving_mean.value) * inv
                self.gamma.add_grad(np.einsum("mc,mc->c", g, xhat, dtype=np.float32))
            if self.beta is not None:
                self.beta.add_grad(g.sum(axis=0, dtype=np.float32))
        if not need_input_grad:
            return None
        return self._restore(g * (gamma * inv), dy.shape, axis)

    def get_config(self):
        return {
            **super().get_config(),
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "moving_mean_initializer": initializers.serialize(self.moving_mean_initializer),
            "moving_variance_initializer": initializers.serialize(self.moving_variance_initializer),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
        }
