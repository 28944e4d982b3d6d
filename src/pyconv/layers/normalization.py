"""BatchNormalization over one axis (the channels, or a Dense layer's units)."""

from __future__ import annotations

import numpy as np

from .. import functional, initializers, regularizers
from .._shapes import as_int, flag, real
from .base import Layer, named


class BatchNormalization(Layer):
    """y = gamma * (x - mean) / sqrt(var + epsilon) + beta, per feature along ``axis``.

    Training uses the batch statistics (biased variance) and updates the non-trainable
    moving_mean / moving_variance by ``moving = momentum * moving + (1 - momentum) * batch``;
    inference uses the moving ones. As in Keras, a layer with ``trainable = False`` runs in
    inference mode (so freezing a base model for fine-tuning keeps its statistics).
    Weights, in Keras's order: gamma, beta, moving_mean, moving_variance.
    """

    _needs_build = True
    _size_args = "axis"

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
        if not 0 <= real(momentum, "momentum") < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if not real(epsilon, "epsilon") >= 1e-45:  # > 0 also in float32
            raise ValueError(f"epsilon must be > 0 (and >= 1e-45), got {epsilon!r}")
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        self.center, self.scale = flag(center, "center"), flag(scale, "scale")
        self.beta_initializer = named(initializers.get, beta_initializer, "beta_initializer")
        self.gamma_initializer = named(initializers.get, gamma_initializer, "gamma_initializer")
        self.moving_mean_initializer = named(
            initializers.get, moving_mean_initializer, "moving_mean_initializer"
        )
        self.moving_variance_initializer = named(
            initializers.get, moving_variance_initializer, "moving_variance_initializer"
        )
        self.beta_regularizer = named(regularizers.get, beta_regularizer, "beta_regularizer")
        self.gamma_regularizer = named(regularizers.get, gamma_regularizer, "gamma_regularizer")

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
        """(rows, C) with channels contiguous: free for channels last (the feature axis is the
        last one); channels first moves the axis (a copy) and ``_restore`` moves it back."""
        axis = self._feature_axis(x.ndim)
        if axis == x.ndim - 1:
            return x.reshape(-1, x.shape[-1]), None
        return np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis]), axis

    @staticmethod
    def _restore(rows, shape, axis):
        if axis is None:
            return rows.reshape(shape)
        moved = (*shape[:axis], *shape[axis + 1 :], shape[axis])
        return np.ascontiguousarray(np.moveaxis(rows.reshape(moved), -1, axis))

    def _gamma_beta(self):
        return (
            None if self.gamma is None else self.gamma.value,
            None if self.beta is None else self.beta.value,
        )

    def inference_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, shift), each (C,) float32: inference maps x to x * scale + shift, with
        scale = gamma / sqrt(moving_variance + epsilon), shift = beta - moving_mean * scale
        (float32 throughout, as Keras; the inference plan uses the same numbers)."""
        gamma, beta = self._gamma_beta()
        mm, mv = self.moving_mean.value, self.moving_variance.value
        scale = np.sqrt(mv + np.float32(self.epsilon))
        np.divide(1.0 if gamma is None else gamma, scale, out=scale)
        shift = mm * scale
        np.subtract(0.0 if beta is None else beta, shift, out=shift)
        return scale, shift

    def _forward(self, x, training):
        c = self.moving_mean.shape[0]
        if x.ndim <= self._feature_axis(x.ndim) or x.shape[self._feature_axis(x.ndim)] != c:
            raise ValueError(
                f"BatchNormalization {self.name!r} was built for {c} features on axis "
                f"{self.axis}, got x of shape {x.shape}"
            )
        rows, axis = self._as_rows(x)  # (M, C)
        gamma, beta = self._gamma_beta()
        if not training or not self.trainable:  # inference: y = x * scale + shift
            scale, shift = self.inference_affine()
            y = functional.channel_affine(rows, scale, shift)
            mm, mv = self.moving_mean.value, self.moving_variance.value
            ctx = (rows, mm.copy(), mv.copy(), False, axis, x.shape)
            return self._restore(y, x.shape, axis), ctx
        y, mean, var = functional.batch_norm(rows, gamma, beta, self.epsilon)
        m = np.float32(self.momentum)
        with self.moving_mean.updating() as moving_mean:
            moving_mean *= m
            moving_mean += (1 - m) * mean
        with self.moving_variance.updating() as moving_variance:
            moving_variance *= m
            moving_variance += (1 - m) * var
        return self._restore(y, x.shape, axis), (rows, mean, var, True, axis, x.shape)

    def _backward(self, ctx, dy, need_input_grad):
        rows, mean, var, batch_stats, axis, shape = ctx
        dy = self._grad(dy, shape)
        g, _ = self._as_rows(dy)
        gamma, _ = self._gamma_beta()
        gx, dgamma, dbeta = functional.batch_norm_backward(
            g, rows, mean, var, gamma, self.epsilon, batch_stats, grad_input=need_input_grad
        )
        if self._param_grads_enabled:
            if self.gamma is not None:
                self.gamma.add_grad(dgamma)
            if self.beta is not None:
                self.beta.add_grad(dbeta)
        return None if gx is None else self._restore(gx, dy.shape, axis)

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
