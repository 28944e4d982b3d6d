"""Dense, Flatten, Dropout and the activation layers."""

from __future__ import annotations

import math

import numpy as np

from .. import activations, functional, initializers, regularizers
from .._shapes import MAX_DIM, as_int, flag
from ..utils import new_rng
from .base import Layer, named, seed_arg


class ActivationContext:
    """ctx of a layer that ends in an activation.

    x: its input; y: its output (activation backwards need only y); logits: the
    pre-activation, kept for softmax/sigmoid outputs (small: a classifier head) so that a
    cross-entropy loss can be computed from logits (exact, no clipping) with its gradient
    fused with the activation's (p - y), and so that Grad-CAM can start from class scores.
    dy_is_logits_grad: set by the model before the backward when the loss (or Grad-CAM's
    seed) already is dL/d(logits), so the activation's own backward is skipped.
    """

    __slots__ = ("x", "y", "logits", "dy_is_logits_grad")

    def __init__(self, x, y, logits=None):
        self.x, self.y, self.logits = x, y, logits
        self.dy_is_logits_grad = False


def activate(activation, z: np.ndarray, x: np.ndarray, training: bool) -> ActivationContext:
    """Apply ``activation`` to the pre-activation buffer z (in place) and build the ctx."""
    logits = z.copy() if activation.name in ("softmax", "sigmoid") else None
    return ActivationContext(x, activation.forward(z), logits)


def activation_grad(activation, ctx: ActivationContext, dy):
    """dL/dz: dy itself when the loss already gave the gradient w.r.t. the logits."""
    return dy if ctx.dy_is_logits_grad else activation.backward(ctx.y, dy)


class KernelLayer(Layer):
    """What Dense and Conv2D share: a kernel, an optional bias, a fused activation, and their
    initializers and regularizers (one place for these arguments and their config)."""

    _needs_build = True

    def __init__(
        self,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.activation = named(activations.get, activation, "activation")
        self.use_bias = flag(use_bias, "use_bias")
        self.kernel_initializer = named(initializers.get, kernel_initializer, "kernel_initializer")
        self.bias_initializer = named(initializers.get, bias_initializer, "bias_initializer")
        self.kernel_regularizer = named(regularizers.get, kernel_regularizer, "kernel_regularizer")
        self.bias_regularizer = named(regularizers.get, bias_regularizer, "bias_regularizer")
        self.activity_regularizer = named(
            regularizers.get, activity_regularizer, "activity_regularizer"
        )

    def _build_kernel(self, kernel_shape, units: int) -> None:
        self.kernel = self.add_weight(
            "kernel", kernel_shape, self.kernel_initializer, self.kernel_regularizer
        )
        # The kernel packed in the convolution kernels' layout, kept between inference calls
        # while kernel.version stays (see functional.conv2d). Not for training: the weights
        # change every step, so it would only hold a copy per layer instead of sharing the
        # core's per-thread workspace.
        self._weight_cache = functional.WeightCache()
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                "bias", (units,), self.bias_initializer, self.bias_regularizer
            )

    def _cache_args(self, training) -> dict:
        """conv2d's weight-cache arguments for a forward: the cache for inference only."""
        if training:
            return {}
        return dict(weight_cache=self._weight_cache, weight_version=self.kernel.version)

    def get_config(self):
        return {
            **super().get_config(),
            "activation": activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "activity_regularizer": regularizers.serialize(self.activity_regularizer),
        }


class Dense(KernelLayer):
    """y = activation(x @ kernel + bias) over the last axis; kernel shape (in, units)."""

    _size_args = "units"

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        **kwargs,
    ):
        super().__init__(
            activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
            bias_regularizer, activity_regularizer, **kwargs,
        )  # fmt: skip
        self.units = as_int(units, "units")
        if self.units < 1:
            raise ValueError(f"units must be >= 1, got {units!r}")

    def compute_output_shape(self, input_shape):
        if len(input_shape) < 1:
            raise ValueError(f"Dense {self.name!r} needs inputs with a feature axis")
        return (*input_shape[:-1], self.units)

    def build(self, input_shape):
        self._build_kernel((input_shape[-1], self.units), self.units)

    # The matmuls run on the convolution core as 1x1 convolutions over (M, 1, 1, in) "images":
    # same threads as the conv layers, and no BLAS thread pool left spinning on the cores
    # the next conv needs (that contention doubled a conv backward in a training step).
    _GEO = dict(data_format="NHWC", weight_format="HWIO")

    def _as_images(self, a):
        return a.reshape(-1, 1, 1, a.shape[-1])  # (M, 1, 1, features), a free view

    def _kernel4(self):
        return self.kernel.value.reshape(1, 1, *self.kernel.shape)  # (1, 1, in, units)

    def _forward(self, x, training):
        bias = None if self.bias is None else self.bias.value
        z = functional.conv2d(
            self._as_images(x), self._kernel4(), bias, **self._GEO, **self._cache_args(training)
        )
        ctx = activate(self.activation, z.reshape(-1, self.units), x, training)  # (M, units)
        ctx.y = ctx.y.reshape(*x.shape[:-1], self.units)
        return ctx.y, ctx

    def _backward(self, ctx, dy, need_input_grad):
        dz = activation_grad(self.activation, ctx, self._grad(dy, ctx.y.shape))
        train = self._param_grads_enabled
        gx, gw, gb = functional.conv2d_backward(
            self._as_images(dz), self._as_images(ctx.x), self._kernel4(), **self._GEO,
            grad_input=need_input_grad, grad_weight=train, grad_bias=train and self.use_bias,
        )  # fmt: skip
        if gw is not None:
            self.kernel.add_grad(gw)  # (1, 1, in, units) -> (in, units)
        if gb is not None:
            self.bias.add_grad(gb)
        return None if gx is None else gx.reshape(ctx.x.shape)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...) in channels-last order.

    With data_format="channels_first" the input (N, C, ...) is read as (N, ..., C) first, as
    Keras does, so a Dense layer after it keeps the same weights in either format."""

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        formats = ("channels_last", "channels_first")
        if data_format is not None and (
            not isinstance(data_format, str) or data_format not in formats
        ):
            raise ValueError(
                f"data_format must be channels_last or channels_first, got {data_format!r}"
            )
        self.data_format = data_format

    def compute_output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def _channels_first(self, x) -> bool:
        return self.data_format == "channels_first" and x.ndim > 2

    def _forward(self, x, training):
        if self._channels_first(x):
            x = np.moveaxis(x, 1, -1)
        return np.ascontiguousarray(x).reshape(x.shape[0], math.prod(x.shape[1:])), x.shape

    def _backward(self, ctx, dy, need_input_grad):
        dy = self._grad(dy, (ctx[0], math.prod(ctx[1:])))
        if not need_input_grad:
            return None
        dx = dy.reshape(ctx)  # ctx: the (possibly channels-last) shape that was flattened
        return np.ascontiguousarray(np.moveaxis(dx, -1, 1)) if self._channels_first(dx) else dx

    def get_config(self):
        cfg = super().get_config()
        if self.data_format is not None:
            cfg["data_format"] = self.data_format
        return cfg


class Reshape(Layer):
    """Reshape each sample to ``target_shape`` (one dimension may be -1)."""

    _needs_build = True

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        if isinstance(target_shape, (str, bytes)) or not hasattr(target_shape, "__iter__"):
            raise TypeError(f"target_shape must be a tuple of ints, got {target_shape!r}")
        self.target_shape = tuple(as_int(d, "target_shape") for d in target_shape)
        if any(d < 1 and d != -1 for d in self.target_shape) or self.target_shape.count(-1) > 1:
            raise ValueError(
                f"target_shape must have dimensions >= 1 and at most one -1, got {target_shape!r}"
            )

    def compute_output_shape(self, input_shape):
        size = math.prod(input_shape)
        known = math.prod(d for d in self.target_shape if d != -1)
        if -1 in self.target_shape and size % known == 0:
            return tuple(size // known if d == -1 else d for d in self.target_shape)
        if -1 not in self.target_shape and size == known:
            return self.target_shape
        raise ValueError(
            f"Reshape {self.name!r}: cannot reshape {input_shape} to {self.target_shape}"
        )

    def _forward(self, x, training):
        if math.prod(x.shape[1:]) != math.prod(self.output_shape):
            raise ValueError(
                f"Reshape {self.name!r}: cannot reshape x of shape {x.shape} to "
                f"{(x.shape[0], *self.output_shape)}"
            )
        return x.reshape(x.shape[0], *self.output_shape), x.shape

    def _backward(self, ctx, dy, need_input_grad):
        dy = self._grad(dy, (ctx[0], *self.output_shape))
        return dy.reshape(ctx) if need_input_grad else None

    def get_config(self):
        return {**super().get_config(), "target_shape": list(self.target_shape)}


class Dropout(Layer):
    """In training, zero each input with probability ``rate`` and scale the rest by
    1/(1-rate) (inverted dropout); the identity at inference."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)):
            raise TypeError(f"rate must be a float in [0, 1), got {rate!r}")
        if not 0 <= rate < 1:
            raise ValueError(f"rate must be in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self.noise_shape = None if noise_shape is None else _noise_shape(noise_shape)
        self.seed = seed_arg(seed)
        self._rng = new_rng(self.seed)

    def _forward(self, x, training):
        """ctx: (None or the mask's key or a broadcast mask (with noise_shape), x's shape)."""
        if not training or self.rate == 0:
            return x, (None, x.shape)
        key = int(self._rng.integers(0, 2**64, dtype=np.uint64))
        if self.noise_shape is None:
            return functional.dropout(x, self.rate, key), (key, x.shape)
        # one mask broadcast along the axes given as 1 / None
        if len(self.noise_shape) != x.ndim or any(
            n not in (None, 1, s) for s, n in zip(x.shape, self.noise_shape)
        ):
            raise ValueError(
                f"Dropout {self.name!r}: noise_shape {self.noise_shape} does not fit x of shape "
                f"{x.shape} (one entry per axis: None, 1 or that axis's size)"
            )
        shape = tuple(s if n is None else n for s, n in zip(x.shape, self.noise_shape))
        mask = functional.dropout(np.ones(shape, np.float32), self.rate, key)
        return x * mask, (mask, x.shape)

    def _backward(self, ctx, dy, need_input_grad):
        mask, shape = ctx
        dy = self._grad(dy, shape)
        if not need_input_grad:
            return None
        if mask is None:
            return dy
        if isinstance(mask, np.ndarray):
            return dy * mask
        return functional.dropout(dy, self.rate, mask)  # the same key: the same mask

    def get_config(self):
        cfg = {**super().get_config(), "rate": self.rate, "seed": self.seed}
        if self.noise_shape is not None:
            cfg["noise_shape"] = list(self.noise_shape)
        return cfg


def _noise_shape(noise_shape) -> tuple:
    """Dropout's noise_shape: one entry per axis of x, each None or an int >= 1."""
    if isinstance(noise_shape, (str, bytes)) or not hasattr(noise_shape, "__iter__"):
        raise TypeError(f"noise_shape must be a tuple of ints or None, got {noise_shape!r}")
    out = tuple(None if n is None else as_int(n, "noise_shape") for n in noise_shape)
    if any(n is not None and not 1 <= n <= MAX_DIM for n in out):
        raise ValueError(
            f"noise_shape entries must be None or in [1, {MAX_DIM}], got {noise_shape!r}"
        )
    return out


class Activation(Layer):
    """Apply an activation function ("relu", "softmax", ...) as its own layer."""

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = named(activations.get, activation, "activation")

    def _forward(self, x, training):
        ctx = activate(self.activation, x.copy(), x, training)
        return ctx.y, ctx

    def _backward(self, ctx, dy, need_input_grad):
        dy = self._grad(dy, ctx.y.shape)
        if not need_input_grad:
            return None
        return activation_grad(self.activation, ctx, dy)

    def get_config(self):
        return {**super().get_config(), "activation": activations.serialize(self.activation)}


class ReLU(Activation):
    """max(x, 0), optionally leaky below 0 (negative_slope) and capped (max_value)."""

    def __init__(self, max_value=None, negative_slope=0.0, **kwargs):
        super().__init__(activations.Relu(negative_slope, max_value), **kwargs)

    def get_config(self):
        cfg = Layer.get_config(self)
        return {**cfg, **self.activation.get_config()}


class LeakyReLU(Activation):
    def __init__(self, negative_slope=0.3, **kwargs):
        super().__init__(activations.LeakyRelu(negative_slope), **kwargs)

    def get_config(self):
        return {**Layer.get_config(self), "negative_slope": self.activation.negative_slope}


class ELU(Activation):
    def __init__(self, alpha=1.0, **kwargs):
        super().__init__(activations.Elu(alpha), **kwargs)

    def get_config(self):
        return {**Layer.get_config(self), "alpha": self.activation.alpha}


class Softmax(Activation):
    """Softmax over the last axis."""

    def __init__(self, axis=-1, **kwargs):
        is_int = isinstance(axis, (int, np.integer)) and not isinstance(axis, (bool, np.bool_))
        if not is_int or axis != -1:
            raise ValueError(f"Softmax supports axis=-1 only, got {axis!r}")
        super().__init__(activations.Softmax(), **kwargs)

    def get_config(self):
        return Layer.get_config(self)
