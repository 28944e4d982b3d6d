"""NumPy-facing ops: conv2d and pooling with their gradients.

PyTorch semantics at the boundary: activations NCHW (or NHWC with ``data_format="NHWC"``,
also spelled "channels_first"/"channels_last"), weights OIHW (or HWIO with
``weight_format="HWIO"``, the Keras layout). Inputs of any real dtype are converted to
float32 (float64 and integer inputs are accepted and converted; compute is float32); views
with any strides, including negative ones, are read in place. Outputs are new C-contiguous
float32 arrays in the caller's layout.
"""

from __future__ import annotations

import numpy as np

from . import _core
from ._shapes import (
    CHECK_MEMORY_FROM,
    as_int,
    check_memory,
    check_size,
    conv_output_size,
    flag,
    pair,
    pool_output_size,
    real,
    resolve_padding,
    size_of,
)
from .utils import as_float32

# Packed weights kept between conv2d calls (see conv2d's weight_cache): one per layer.
WeightCache = _core.WeightCache

__all__ = [
    "conv2d",
    "conv2d_backward",
    "conv_output_size",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "global_avg_pool2d",
    "global_avg_pool2d_backward",
    "dropout",
    "relu_backward",
]

_FORMATS = {"NCHW": "NCHW", "CHANNELS_FIRST": "NCHW", "NHWC": "NHWC", "CHANNELS_LAST": "NHWC"}
_AXES = {"NCHW": "(N, C, H, W)", "NHWC": "(N, H, W, C)"}


# --- argument validation (the one place) -------------------------------------------------


def _data_format(data_format) -> str:
    if not isinstance(data_format, str) or data_format.upper() not in _FORMATS:
        raise ValueError(
            "data_format must be 'NCHW'/'channels_first' or 'NHWC'/'channels_last', "
            f"got {data_format!r}"
        )
    return _FORMATS[data_format.upper()]


def _activation(a, name: str, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (array, logical NCHW view of it)."""
    arr = as_float32(a, name)
    if arr.ndim != 4:
        raise ValueError(f"{name} must be 4-D {_AXES[fmt]}, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    return arr, (arr.transpose(0, 3, 1, 2) if fmt == "NHWC" else arr)


def _weight(w, weight_format) -> np.ndarray:
    """Return the logical (O, C/groups, KH, KW) view of w."""
    if not isinstance(weight_format, str) or weight_format.upper() not in ("OIHW", "HWIO"):
        raise ValueError(f"weight_format must be 'OIHW' or 'HWIO', got {weight_format!r}")
    wf = weight_format.upper()
    arr = as_float32(w, "w")
    axes = "(O, C/groups, KH, KW)" if wf == "OIHW" else "(KH, KW, C/groups, O)"
    if arr.ndim != 4:
        raise ValueError(f"w must be 4-D {axes} for weight_format={wf!r}, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"w must not be empty, got shape {arr.shape}")
    return arr.transpose(3, 2, 0, 1) if wf == "HWIO" else arr


def _contiguous(a: np.ndarray) -> np.ndarray:
    """C-contiguous, keeping the shape (np.ascontiguousarray makes 0-d arrays 1-d)."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _aligned_empty(shape) -> np.ndarray:
    """A new float32 array for an op's output: 64-byte aligned (the kernels store whole cache
    lines; NumPy only promises 16 bytes) and drawn from the core's buffer cache, so a training
    step's same-sized outputs reuse memory that is already mapped instead of paying the OS's
    page faults on fresh memory every step (see pyconv.set_buffer_cache_limit)."""
    # (Sizes beyond the RAM are refused before: each output is the size of an input, or of
    # a conv2d output that _ConvGeometry checked.)
    shape = [int(d) for d in shape]
    nbytes = 4 * size_of(shape)
    if nbytes >= CHECK_MEMORY_FROM:
        check_memory(nbytes, f"an output of shape {tuple(shape)}")
    try:
        return _core.empty(shape)
    except MemoryError:
        raise MemoryError(f"out of memory for an output of shape {tuple(shape)}") from None


def _out_of_memory(op: str, xshape, padding) -> MemoryError:
    """What a core kernel's failed workspace allocation ("std::bad_alloc") becomes."""
    return MemoryError(
        f"out of memory for the workspace of {op} (x shape {tuple(xshape)} NCHW, "
        f"padding={padding!r})"
    )


def _empty(fmt: str, n: int, c: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A new array in layout fmt, and its logical NCHW view."""
    if fmt == "NHWC":
        out = _aligned_empty((n, h, w, c))
        return out, out.transpose(0, 3, 1, 2)
    out = _aligned_empty((n, c, h, w))
    return out, out


def _check_shape(view: np.ndarray, expected, name: str, fmt: str) -> None:
    if tuple(view.shape) != tuple(expected):
        n, c, h, w = expected
        want = (n, h, w, c) if fmt == "NHWC" else (n, c, h, w)
        got = view.transpose(0, 2, 3, 1).shape if fmt == "NHWC" else view.shape
        raise ValueError(f"{name} must have shape {want} {_AXES[fmt]}, got {tuple(got)}")


def _type_signature(v):
    return tuple(map(_type_signature, v)) if type(v) is tuple else v.__class__


_GEOMETRIES: dict = {}


def _geometry(cls, shapes, *args):
    """cls(*shapes, *args), remembered per argument values (and their types, so that 1.0 is
    still rejected after 1 was accepted): validation and shape arithmetic cost several
    microseconds of Python per call, and a network repeats the same few geometries."""
    try:
        key = (cls, shapes, args, _type_signature(args))
        geo = _GEOMETRIES.get(key)
    except TypeError:  # unhashable arguments (lists): validated every time
        return cls(*shapes, *args)
    if geo is None:
        geo = cls(*shapes, *args)
        if len(_GEOMETRIES) >= 1024:
            _GEOMETRIES.clear()
        _GEOMETRIES[key] = geo
    return geo


class _ConvGeometry:
    """Validated conv2d arguments, shared by the forward and the backward."""

    def __init__(self, xshape, wshape, stride, padding, dilation, groups):
        n, c, h, w = xshape
        o, cg, kh, kw = wshape
        self.stride = pair(stride, "stride", 1)
        self.dilation = pair(dilation, "dilation", 1)
        self.groups = as_int(groups, "groups")
        if self.groups < 1:
            raise ValueError(f"groups must be >= 1, got {groups}")
        if c % self.groups or o % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide the input channels ({c}) and the output "
                f"channels ({o})"
            )
        if cg * self.groups != c:
            raise ValueError(
                f"channel mismatch: x has {c} channels but w expects C/groups={cg} x "
                f"groups={self.groups} = {cg * self.groups} (x shape {tuple(xshape)} NCHW, "
                f"w shape {tuple(wshape)} OIHW)"
            )
        self.pads = resolve_padding(padding, (h, w), (kh, kw), self.stride, self.dilation)
        t, b, l, r = self.pads
        oh = conv_output_size(h, kh, self.stride[0], (t, b), self.dilation[0])
        ow = conv_output_size(w, kw, self.stride[1], (l, r), self.dilation[1])
        if oh < 1 or ow < 1:
            raise ValueError(
                f"kernel ({kh}x{kw}, dilation {self.dilation}) is larger than the padded input "
                f"({h + t + b}x{w + l + r}) for x shape {tuple(xshape)} NCHW"
            )
        self.out_shape = (n, o, oh, ow)
        # The core packs the padded input into one workspace, and writes the output: both
        # must fit in memory (an absurd padding is refused here, not by the allocator).
        check_size(
            n * c * (h + t + b) * (w + l + r),
            f"the padded input ({h + t + b}x{w + l + r}, padding={padding!r}) for x shape "
            f"{tuple(xshape)} NCHW",
        )
        check_size(
            n * o * oh * ow,
            f"the output of shape {self.out_shape} NCHW (x shape {tuple(xshape)}, w shape "
            f"{tuple(wshape)}, padding={padding!r})",
        )
        # Bytes of the buffers a call allocates together (outputs and the core's workspaces;
        # an upper bound), by data format: the kernels compute NHWC and unpack NCHW results
        # from a workspace of the output's size. Checked against the memory available at
        # each call (check_memory).
        padded = n * c * (h + t + b) * (w + l + r)
        size_in, size_out, size_w = n * c * h * w, n * o * oh * ow, o * cg * kh * kw
        unpack = {"NCHW": 1, "NHWC": 0}
        self.forward_bytes = {
            fmt: 4 * (padded + size_out * (1 + extra) + 2 * size_w) for fmt, extra in unpack.items()
        }
        self.backward_bytes = {
            fmt: 4 * (2 * padded + 2 * size_out + size_in * (1 + extra) + 4 * size_w)
            for fmt, extra in unpack.items()
        }
        self.what = f"(x shape {tuple(xshape)} NCHW, w shape {tuple(wshape)}, padding={padding!r})"

    def args(self):
        return (*self.stride, *self.pads, *self.dilation, self.groups)


# --- conv2d --------------------------------------------------------------------------------


def conv2d(
    x,
    w,
    bias=None,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    data_format="NCHW",
    weight_format="OIHW",
    activation=None,
    weight_cache=None,
    weight_version=None,
) -> np.ndarray:
    """2-D convolution (cross-correlation, as in every deep-learning library).

    x: (N, C, H, W) or (N, H, W, C); w: (O, C/groups, KH, KW) or (KH, KW, C/groups, O);
    bias: (O,) or None. padding: int, (ph, pw), ((top, bottom), (left, right)), "valid" or
    "same" (TF rule: output ceil(in/stride), odd padding at the bottom/right).
    activation: None or "relu" (applied as the output is stored: no second pass).
    weight_cache: a WeightCache that keeps w packed in the kernels' layout between calls
    (plan once, run many: at batch 1 packing costs about as much as a wide layer's
    convolution); weight_version (an int >= 0, required with a cache) must change whenever
    w's values do -- a layer passes its kernel Variable's version. The cache is reused while
    the version and w's address, shape and strides stay the same. Results are identical to
    an uncached call of the same algorithm; with the automatic choice, cached weights take
    Winograd on more 3x3 layers (up to 256 channels, from 32 tiles: no per-call weight
    transform), which rounds differently from the direct kernel by a few ulps.
    Returns y: (N, O, OH, OW) or (N, OH, OW, O).
    """
    if weight_cache is not None and not isinstance(weight_cache, WeightCache):
        raise TypeError(f"weight_cache must be a WeightCache or None, got {type(weight_cache)}")
    if (weight_cache is None) != (weight_version is None):
        raise ValueError("weight_cache and weight_version must be given together")
    if weight_version is not None and (
        isinstance(weight_version, bool)
        or not isinstance(weight_version, (int, np.integer))
        or weight_version < 0
    ):
        raise ValueError(f"weight_version must be an int >= 0, got {weight_version!r}")
    if activation is not None and (
        not isinstance(activation, str) or activation not in ("linear", "relu")
    ):
        raise ValueError(f"activation must be None, 'linear' or 'relu', got {activation!r}")
    fmt = _data_format(data_format)
    _, xv = _activation(x, "x", fmt)
    wv = _weight(w, weight_format)
    geo = _geometry(_ConvGeometry, (xv.shape, wv.shape), stride, padding, dilation, groups)
    b = None
    if bias is not None:
        b = as_float32(bias, "bias")
        if b.shape != (wv.shape[0],):
            raise ValueError(f"bias must have shape ({wv.shape[0]},), got {b.shape}")
        b = np.ascontiguousarray(b)
    if geo.forward_bytes[fmt] >= CHECK_MEMORY_FROM:
        check_memory(geo.forward_bytes[fmt], f"conv2d {geo.what}")
    y, yv = _empty(fmt, *geo.out_shape)
    try:
        _core.conv2d_forward(
            xv, wv, b, yv, *geo.args(), activation == "relu",
            weight_cache, 0 if weight_version is None else int(weight_version),
        )  # fmt: skip
    except MemoryError:
        raise _out_of_memory("conv2d", xv.shape, padding) from None
    return y


def conv2d_backward(
    grad_out,
    x,
    w,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    data_format="NCHW",
    weight_format="OIHW",
    grad_input=True,
    grad_weight=True,
    grad_bias=True,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Gradients of conv2d: (grad_x, grad_w, grad_bias), each None unless asked for.

    grad_x has x's shape and layout, grad_w w's shape and layout, grad_bias shape (O,).
    Each is computed on its own: grad_x needs only w (x for its shape), grad_w and grad_bias
    need x and grad_out.
    """
    grad_input = flag(grad_input, "grad_input")
    grad_weight = flag(grad_weight, "grad_weight")
    grad_bias = flag(grad_bias, "grad_bias")
    fmt = _data_format(data_format)
    _, xv = _activation(x, "x", fmt)
    wv = _weight(w, weight_format)
    geo = _geometry(_ConvGeometry, (xv.shape, wv.shape), stride, padding, dilation, groups)
    _, gyv = _activation(grad_out, "grad_out", fmt)
    _check_shape(gyv, geo.out_shape, "grad_out", fmt)
    if geo.backward_bytes[fmt] >= CHECK_MEMORY_FROM:
        check_memory(geo.backward_bytes[fmt], f"conv2d_backward {geo.what}")
    gx = gw = gb = None
    if grad_input:
        gx, gxv = _empty(fmt, *xv.shape)
        try:
            _core.conv2d_backward_data(gyv, wv, gxv, *geo.args())
        except MemoryError:
            raise _out_of_memory("conv2d_backward", xv.shape, padding) from None
    if grad_weight or grad_bias:
        gwv = None
        if grad_weight:
            # From the buffer cache like every other output: a 512-channel 3x3 layer's
            # gradient is 9.4 MB, fresh (page-faulting) memory every step otherwise.
            o, cg, kh, kw = wv.shape
            if weight_format.upper() == "HWIO":
                gw = _aligned_empty((kh, kw, cg, o))
                gwv = gw.transpose(3, 2, 0, 1)
            else:
                gw = gwv = _aligned_empty((o, cg, kh, kw))
        gb = np.empty(wv.shape[0], np.float32) if grad_bias else None
        try:
            _core.conv2d_backward_weight(gyv, xv, gwv, gb, *geo.args())
        except MemoryError:
            raise _out_of_memory("conv2d_backward", xv.shape, padding) from None
    return gx, gw, gb


# --- pooling -------------------------------------------------------------------------------


class _PoolGeometry:
    """Validated pooling arguments (PyTorch rules), shared by the forward and the backward."""

    def __init__(self, xshape, kernel_size, stride, padding, ceil_mode):
        n, c, h, w = xshape
        self.kernel = pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel if stride is None else pair(stride, "stride", 1)
        flag(ceil_mode, "ceil_mode")
        if not isinstance(padding, str):
            ph, pw = pair(padding, "padding", 0)
            if ph > self.kernel[0] // 2 or pw > self.kernel[1] // 2:
                raise ValueError(
                    f"padding {padding!r} must be at most half the kernel_size {self.kernel}"
                )
        self.pads = resolve_padding(padding, (h, w), self.kernel, self.stride, (1, 1))
        t, b, l, r = self.pads
        oh = pool_output_size(h, self.kernel[0], self.stride[0], t, b, bool(ceil_mode))
        ow = pool_output_size(w, self.kernel[1], self.stride[1], l, r, bool(ceil_mode))
        if oh < 1 or ow < 1:
            raise ValueError(
                f"kernel_size {self.kernel} is larger than the padded input "
                f"({h + t + b}x{w + l + r}) for x shape {tuple(xshape)} NCHW"
            )
        self.out_shape = (n, c, oh, ow)

    def args(self):
        return (*self.kernel, *self.stride, *self.pads)


def _pool_setup(x, kernel_size, stride, padding, ceil_mode, data_format):
    fmt = _data_format(data_format)
    _, xv = _activation(x, "x", fmt)
    return fmt, xv, _geometry(_PoolGeometry, (xv.shape,), kernel_size, stride, padding, ceil_mode)


def _pool_grad_out(grad_out, geo, fmt):
    _, gyv = _activation(grad_out, "grad_out", fmt)
    _check_shape(gyv, geo.out_shape, "grad_out", fmt)
    return gyv


def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, data_format="NCHW"):
    """Max pooling (stride defaults to kernel_size; padded cells never win; NaN propagates)."""
    fmt, xv, geo = _pool_setup(x, kernel_size, stride, padding, ceil_mode, data_format)
    y, yv = _empty(fmt, *geo.out_shape)
    _core.max_pool2d_forward(xv, yv, *geo.args())
    return y


def max_pool2d_backward(
    grad_out, x, kernel_size, stride=None, padding=0, ceil_mode=False, data_format="NCHW"
):
    """Gradient of max_pool2d w.r.t. x: each window's grad goes to its (first) max."""
    fmt, xv, geo = _pool_setup(x, kernel_size, stride, padding, ceil_mode, data_format)
    gyv = _pool_grad_out(grad_out, geo, fmt)
    gx, gxv = _empty(fmt, *xv.shape)
    _core.max_pool2d_backward(gyv, xv, gxv, *geo.args())
    return gx


def avg_pool2d(
    x,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    data_format="NCHW",
):
    """Average pooling with PyTorch's divisor rules (count_include_pad, ceil_mode)."""
    count_include_pad = flag(count_include_pad, "count_include_pad")
    fmt, xv, geo = _pool_setup(x, kernel_size, stride, padding, ceil_mode, data_format)
    y, yv = _empty(fmt, *geo.out_shape)
    _core.avg_pool2d_forward(xv, yv, *geo.args(), count_include_pad)
    return y


def avg_pool2d_backward(
    grad_out,
    x,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    data_format="NCHW",
):
    """Gradient of avg_pool2d w.r.t. x (x is used for its shape only)."""
    count_include_pad = flag(count_include_pad, "count_include_pad")
    fmt, xv, geo = _pool_setup(x, kernel_size, stride, padding, ceil_mode, data_format)
    gyv = _pool_grad_out(grad_out, geo, fmt)
    gx, gxv = _empty(fmt, *xv.shape)
    _core.avg_pool2d_backward(gyv, gxv, *geo.args(), count_include_pad)
    return gx


def global_avg_pool2d(x, data_format="NCHW", keepdims=False):
    """Mean over H and W: (N, C), or (N, C, 1, 1) / (N, 1, 1, C) with keepdims."""
    keepdims = flag(keepdims, "keepdims")
    fmt = _data_format(data_format)
    _, xv = _activation(x, "x", fmt)
    y = avg_pool2d(x, xv.shape[2:], data_format=fmt)
    return y if keepdims else y.reshape(y.shape[0], -1)


def global_avg_pool2d_backward(grad_out, x, data_format="NCHW"):
    """Gradient of global_avg_pool2d; grad_out is (N, C) or the keepdims shape."""
    fmt = _data_format(data_format)
    _, xv = _activation(x, "x", fmt)
    n, c = xv.shape[:2]
    g = as_float32(grad_out, "grad_out")
    if g.size != n * c or g.shape not in ((n, c), (n, c, 1, 1), (n, 1, 1, c)):
        raise ValueError(f"grad_out must have shape ({n}, {c}), got {g.shape}")
    g = g.reshape((n, c, 1, 1) if fmt == "NCHW" else (n, 1, 1, c))
    return avg_pool2d_backward(g, x, xv.shape[2:], data_format=fmt)


# --- batch normalization over rows -----------------------------------------------------------


def _rows(a, name: str) -> np.ndarray:
    """A C-contiguous float32 (rows, channels) array (copied only if it is not one already)."""
    r = _contiguous(as_float32(a, name))
    if r.ndim != 2 or r.shape[0] < 1 or r.shape[1] < 1:
        raise ValueError(f"{name} must be a non-empty 2-D (rows, channels) array, got {r.shape}")
    return r


def _channel_vector(v, name: str, c: int):
    if v is None:
        return None
    v = _contiguous(as_float32(v, name))
    if v.shape != (c,):
        raise ValueError(f"{name} must have shape ({c},), got {v.shape}")
    return v


def _epsilon(epsilon) -> float:
    eps = real(epsilon, "epsilon")
    if not eps >= 1e-45:  # > 0, also once the core rounds it to float32 (1e-50 would be 0)
        raise ValueError(f"epsilon must be > 0 (and >= 1e-45, float32's least), got {epsilon!r}")
    return eps


def batch_norm(x, gamma=None, beta=None, epsilon=1e-3):
    """Training-mode batch normalization of the columns of x (M, C): (y, mean, var).

    mean and var (biased) are the batch statistics over the M rows; y = gamma * (x - mean) /
    sqrt(var + epsilon) + beta (gamma/beta None: 1/0). For NHWC images pass x.reshape(-1, C).
    """
    epsilon = _epsilon(epsilon)
    xr = _rows(x, "x")
    c = xr.shape[1]
    g, b = _channel_vector(gamma, "gamma", c), _channel_vector(beta, "beta", c)
    y = _aligned_empty(xr.shape)
    mean, var = np.empty(c, np.float32), np.empty(c, np.float32)
    _core.batchnorm_forward(xr, g, b, epsilon, y, mean, var)
    return y, mean, var


def batch_norm_backward(
    grad_out, x, mean, var, gamma=None, epsilon=1e-3, batch_stats=True, grad_input=True
):
    """Gradients of batch normalization: (grad_x or None, grad_gamma, grad_beta).

    batch_stats=True: mean/var were the batch's own (training), so they depend on x;
    False: fixed statistics (inference), grad_x = gamma * grad_out / sqrt(var + epsilon).
    """
    epsilon = _epsilon(epsilon)
    batch_stats = flag(batch_stats, "batch_stats")
    grad_input = flag(grad_input, "grad_input")
    xr = _rows(x, "x")
    m, c = xr.shape
    gy = _rows(grad_out, "grad_out")
    if gy.shape != xr.shape:
        raise ValueError(f"grad_out must have x's shape {xr.shape}, got {gy.shape}")
    g = _channel_vector(gamma, "gamma", c)
    mu, v = _channel_vector(mean, "mean", c), _channel_vector(var, "var", c)
    if mu is None or v is None:
        raise ValueError("mean and var are required")
    gx = _aligned_empty((m, c)) if grad_input else None
    gg, gb = np.empty(c, np.float32), np.empty(c, np.float32)
    _core.batchnorm_backward(gy, xr, g, mu, v, epsilon, batch_stats, gx, gg, gb)
    return gx, gg, gb


def channel_affine(x, scale, shift):
    """y = x * scale + shift for each column of x (M, C) (batch norm at inference)."""
    xr = _rows(x, "x")
    c = xr.shape[1]
    sc, sh = _channel_vector(scale, "scale", c), _channel_vector(shift, "shift", c)
    if sc is None or sh is None:
        raise ValueError("scale and shift are required")
    y = _aligned_empty(xr.shape)
    _core.channel_affine(xr, sc, sh, y)
    return y


# --- activations ------------------------------------------------------------------------


def relu_backward(grad_out, y):
    """dL/dx of y = relu(x) from the output: grad_out where y > 0, else 0."""
    gy = _contiguous(as_float32(grad_out, "grad_out"))
    yr = _contiguous(as_float32(y, "y"))
    if gy.shape != yr.shape:
        raise ValueError(f"grad_out must have y's shape {yr.shape}, got {gy.shape}")
    gx = _aligned_empty(yr.shape)
    _core.relu_backward(gy, yr, gx)
    return gx


# --- dropout ------------------------------------------------------------------------------


def dropout(x, rate, key):
    """Inverted dropout: each element kept with probability 1 - rate and scaled by
    1/(1 - rate), else 0. The mask is a hash of (flat index, key) -- the same (shape, rate,
    key) always gives the same mask, on every ISA and thread count -- so the backward pass is
    ``dropout(grad_out, rate, key)`` and nothing needs storing. key: an int in [0, 2**64)."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)):
        raise TypeError(f"rate must be a float in [0, 1), got {rate!r}")
    if not 0 <= rate < 1:
        raise ValueError(f"rate must be in [0, 1), got {rate!r}")
    if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or not 0 <= key < 2**64:
        raise ValueError(f"key must be an int in [0, 2**64), got {key!r}")
    xr = as_float32(x, "x")
    if xr.size >= 2**32:  # checked before the copy below
        raise ValueError(f"x must have fewer than 2**32 elements, got shape {xr.shape}")
    xr = _contiguous(xr)
    y = _aligned_empty(xr.shape)
    _core.dropout(xr, float(rate), int(key), y)
    return y


# --- resampling (data augmentation) --------------------------------------------------------

FILL_MODES = {"constant": 0, "nearest": 1, "reflect": 2}


def affine_warp(x, matrices, fill_mode="nearest", fill_value=0.0):
    """Resample each image of x (N, H, W, C) through its own 2x3 affine map, bilinearly.

    Output pixel (col, row) of image n reads x[n] at ``matrices[n] @ (col, row, 1)`` (pixel
    centres at integers). fill_mode for points outside the image: "constant" (fill_value),
    "nearest" (edge pixel) or "reflect" (d c b a | a b c d | d c b a).
    """
    if not isinstance(fill_mode, str) or fill_mode not in FILL_MODES:
        raise ValueError(f"fill_mode must be one of {', '.join(FILL_MODES)}, got {fill_mode!r}")
    fill_value = real(fill_value, "fill_value")
    xr = _contiguous(as_float32(x, "x"))
    if xr.ndim != 4 or 0 in xr.shape:
        raise ValueError(f"x must be a non-empty (N, H, W, C) batch, got shape {xr.shape}")
    m = _contiguous(as_float32(matrices, "matrices"))
    if m.shape != (xr.shape[0], 2, 3):
        raise ValueError(f"matrices must have shape ({xr.shape[0]}, 2, 3), got {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("matrices must be finite")
    y = _aligned_empty(xr.shape)
    _core.affine_warp(xr, m, y, FILL_MODES[fill_mode], fill_value)
    return y
