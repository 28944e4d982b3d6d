"""Conv2D: the C++ convolution core behind a Keras layer.

Channels-last (N, H, W, C) by default, which is also the core's native layout, so no
transposes happen in the hot path; the kernel is stored as Keras stores it,
(kh, kw, in/groups, filters), and handed to the core as "HWIO" without a copy.
"""

from __future__ import annotations

from .. import functional
from .._shapes import as_int, conv_output_size, pair, resolve_padding, window_centres
from ..activations import is_plain_relu
from .core import ActivationContext, KernelLayer, activate, activation_grad


def data_format_arg(data_format) -> str:
    """Keras's data_format argument -> the core's "NHWC"/"NCHW" (one place for the rule)."""
    if data_format is None or (isinstance(data_format, str) and data_format == "channels_last"):
        return "NHWC"
    if isinstance(data_format, str) and data_format == "channels_first":
        return "NCHW"
    raise ValueError(
        f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}"
    )


def padding_arg(padding):
    """'valid' | 'same' (Keras), or explicit zero padding as PyTorch and ONNX give it: an
    int, (ph, pw) or ((top, bottom), (left, right)) -> ((top, bottom), (left, right))."""
    if isinstance(padding, str):
        if padding.lower() not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid', 'same' or ints, got {padding!r}")
        return padding.lower()
    if isinstance(padding, list):  # from a JSON config
        padding = tuple(tuple(p) if isinstance(p, list) else p for p in padding)
    try:
        t, b, l, r = resolve_padding(padding, (1, 1), (1, 1), (1, 1), (1, 1))
    except (TypeError, ValueError):
        raise ValueError(
            "padding must be 'valid', 'same', an int, (ph, pw) or ((top, bottom), "
            f"(left, right)) of non-negative ints, got {padding!r}"
        ) from None
    return ((t, b), (l, r))


def spatial_dims(input_shape, fmt: str, layer_name: str) -> tuple[int, int, int]:
    """(H, W, C) of a per-sample image shape in format ``fmt``."""
    if len(input_shape) != 3:
        raise ValueError(
            f"layer {layer_name!r} expects images of shape (H, W, C) "
            f"{'(channels first: (C, H, W))' if fmt == 'NCHW' else ''}, got input shape "
            f"{(None, *input_shape)}"
        )
    if fmt == "NHWC":
        return input_shape[0], input_shape[1], input_shape[2]
    return input_shape[1], input_shape[2], input_shape[0]


def image_shape(h: int, w: int, c: int, fmt: str) -> tuple[int, int, int]:
    return (h, w, c) if fmt == "NHWC" else (c, h, w)


class Conv2D(KernelLayer):
    _size_args = "filters, kernel_size and groups"

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        groups=1,
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
        self.filters = as_int(filters, "filters")
        if self.filters < 1:
            raise ValueError(f"filters must be >= 1, got {filters!r}")
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.strides = pair(strides, "strides", 1)
        self.dilation_rate = pair(dilation_rate, "dilation_rate", 1)
        self.padding = padding_arg(padding)
        self._fmt = data_format_arg(data_format)  # first: `or` is ambiguous for arrays
        self.data_format = data_format or "channels_last"
        self.groups = as_int(groups, "groups")
        if self.groups < 1 or self.filters % self.groups:
            raise ValueError(
                f"groups must be >= 1 and divide filters={self.filters}, got {groups!r}"
            )

    def compute_output_shape(self, input_shape):
        h, w, c = spatial_dims(input_shape, self._fmt, self.name)
        if c % self.groups:
            raise ValueError(
                f"Conv2D {self.name!r}: input channels {c} not divisible by groups={self.groups}"
            )
        t, b, l, r = resolve_padding(
            self.padding, (h, w), self.kernel_size, self.strides, self.dilation_rate
        )
        oh = conv_output_size(
            h, self.kernel_size[0], self.strides[0], (t, b), self.dilation_rate[0]
        )
        ow = conv_output_size(
            w, self.kernel_size[1], self.strides[1], (l, r), self.dilation_rate[1]
        )
        if oh < 1 or ow < 1:
            raise ValueError(
                f"Conv2D {self.name!r}: kernel {self.kernel_size} (dilation "
                f"{self.dilation_rate}) does not fit input {(None, *input_shape)} with "
                f"padding={self.padding!r}"
            )
        return image_shape(oh, ow, self.filters, self._fmt)

    def spatial_map(self):
        h, w, _ = spatial_dims(self.input_shape, self._fmt, self.name)
        t, _, l, _ = resolve_padding(
            self.padding, (h, w), self.kernel_size, self.strides, self.dilation_rate
        )
        return tuple(
            window_centres(pad, k, s, d)
            for pad, k, s, d in zip((t, l), self.kernel_size, self.strides, self.dilation_rate)
        )

    def build(self, input_shape):
        c = spatial_dims(input_shape, self._fmt, self.name)[2]
        self._build_kernel((*self.kernel_size, c // self.groups, self.filters), self.filters)

    def _geometry(self) -> dict:
        return dict(
            stride=self.strides,
            padding=self.padding,
            dilation=self.dilation_rate,
            groups=self.groups,
            data_format=self._fmt,
            weight_format="HWIO",
        )

    def _forward(self, x, training):
        bias = None if self.bias is None else self.bias.value
        geo = {**self._geometry(), **self._cache_args(training)}
        if is_plain_relu(self.activation):  # fused into the convolution's stores
            y = functional.conv2d(x, self.kernel.value, bias, **geo, activation="relu")
            return y, ActivationContext(x, y)
        z = functional.conv2d(x, self.kernel.value, bias, **geo)
        ctx = activate(self.activation, z, x, training)
        return ctx.y, ctx

    def _backward(self, ctx, dy, need_input_grad):
        dz = activation_grad(self.activation, ctx, self._grad(dy, ctx.y.shape))
        train = self._param_grads_enabled
        gx, gw, gb = functional.conv2d_backward(
            dz, ctx.x, self.kernel.value, **self._geometry(),
            grad_input=need_input_grad, grad_weight=train, grad_bias=train and self.use_bias,
        )  # fmt: skip
        if gw is not None:
            self.kernel.add_grad(gw)
        if gb is not None:
            self.bias.add_grad(gb)
        return gx

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": list(self.dilation_rate),
            "groups": self.groups,
        }
