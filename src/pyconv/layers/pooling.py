"""MaxPooling2D, AveragePooling2D and the global poolings, on the C++ pooling core."""

from __future__ import annotations

from .. import functional
from .._shapes import flag, pair, pool_output_size, resolve_padding, window_centres
from .base import Layer
from .conv import data_format_arg, image_shape, padding_arg, spatial_dims


class _Pooling2D(Layer):
    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = pair(pool_size, "pool_size", 1)
        self.strides = self.pool_size if strides is None else pair(strides, "strides", 1)
        self.padding = padding_arg(padding)
        if not isinstance(self.padding, str):
            (t, b), (l, r) = self.padding
            if t != b or l != r:
                raise ValueError(
                    f"pooling padding must be the same on both sides (ph, pw), got {padding!r}"
                )
        self._fmt = data_format_arg(data_format)  # first: `or` is ambiguous for arrays
        self.data_format = data_format or "channels_last"

    def compute_output_shape(self, input_shape):
        h, w, c = spatial_dims(input_shape, self._fmt, self.name)
        t, b, l, r = resolve_padding(self.padding, (h, w), self.pool_size, self.strides, (1, 1))
        oh = pool_output_size(h, self.pool_size[0], self.strides[0], t, b, False)
        ow = pool_output_size(w, self.pool_size[1], self.strides[1], l, r, False)
        if oh < 1 or ow < 1:
            raise ValueError(
                f"{type(self).__name__} {self.name!r}: pool_size {self.pool_size} is larger "
                f"than the input {(None, *input_shape)}"
            )
        return image_shape(oh, ow, c, self._fmt)

    def spatial_map(self):
        h, w, _ = spatial_dims(self.input_shape, self._fmt, self.name)
        t, _, l, _ = resolve_padding(self.padding, (h, w), self.pool_size, self.strides, (1, 1))
        return tuple(
            window_centres(pad, k, s, 1) for pad, k, s in zip((t, l), self.pool_size, self.strides)
        )

    def _args(self) -> dict:
        return dict(
            kernel_size=self.pool_size,
            stride=self.strides,
            padding=self.padding
            if isinstance(self.padding, str)
            else (self.padding[0][0], self.padding[1][0]),
            data_format=self._fmt,
        )

    def _backward(self, ctx, dy, need_input_grad):
        x, shape = ctx
        dy = self._grad(dy, shape)
        return self._pool_backward(dy, x) if need_input_grad else None

    def get_config(self):
        return {
            **super().get_config(),
            "pool_size": list(self.pool_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "data_format": self.data_format,
        }


class MaxPooling2D(_Pooling2D):
    """Max over each window ("same" padding never wins a window)."""

    def _forward(self, x, training):
        y = functional.max_pool2d(x, **self._args())
        return y, (x, y.shape)

    def _pool_backward(self, dy, x):
        return functional.max_pool2d_backward(dy, x, **self._args())


class AveragePooling2D(_Pooling2D):
    """Mean over each window; with "same" padding the padded cells are not counted (Keras)."""

    def _forward(self, x, training):
        y = functional.avg_pool2d(x, count_include_pad=False, **self._args())
        return y, (x, y.shape)

    def _pool_backward(self, dy, x):
        return functional.avg_pool2d_backward(dy, x, count_include_pad=False, **self._args())


class _GlobalPooling2D(Layer):
    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self._fmt = data_format_arg(data_format)  # first: `or` is ambiguous for arrays
        self.data_format = data_format or "channels_last"
        self.keepdims = flag(keepdims, "keepdims")

    def compute_output_shape(self, input_shape):
        c = spatial_dims(input_shape, self._fmt, self.name)[2]
        return image_shape(1, 1, c, self._fmt) if self.keepdims else (c,)

    def _shape_out(self, y):
        return y if self.keepdims else y.reshape(y.shape[0], -1)

    def _check_dy(self, x, dy):
        """dy must be (N, C), or with keepdims (N, 1, 1, C) / (N, C, 1, 1)."""
        c = x.shape[3] if self._fmt == "NHWC" else x.shape[1]
        kept = (x.shape[0], 1, 1, c) if self._fmt == "NHWC" else (x.shape[0], c, 1, 1)
        self._grad(dy, kept if self.keepdims else (x.shape[0], c))
        return kept

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format, "keepdims": self.keepdims}


class GlobalAveragePooling2D(_GlobalPooling2D):
    """Mean over H and W: (N, C) (or (N, 1, 1, C) with keepdims)."""

    def _forward(self, x, training):
        return self._shape_out(functional.global_avg_pool2d(x, self._fmt, keepdims=True)), x

    def _backward(self, x, dy, need_input_grad):
        self._check_dy(x, dy)
        if not need_input_grad:
            return None
        return functional.global_avg_pool2d_backward(dy, x, self._fmt)


class GlobalMaxPooling2D(_GlobalPooling2D):
    """Max over H and W: (N, C) (or (N, 1, 1, C) with keepdims)."""

    def _window(self, x):
        return x.shape[1:3] if self._fmt == "NHWC" else x.shape[2:4]

    def _forward(self, x, training):
        y = functional.max_pool2d(x, self._window(x), data_format=self._fmt)
        return self._shape_out(y), x

    def _backward(self, x, dy, need_input_grad):
        kept = self._check_dy(x, dy)
        if not need_input_grad:
            return None
        g = dy.reshape(kept)
        return functional.max_pool2d_backward(g, x, self._window(x), data_format=self._fmt)
