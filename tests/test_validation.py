"""Bad input gets a clear ValueError/TypeError naming the argument; nothing crashes."""

from __future__ import annotations

import numpy as np
import pytest

import pyconv
from pyconv import _core
from pyconv import functional as F

X = np.zeros((2, 3, 8, 8), np.float32)
W = np.zeros((4, 3, 3, 3), np.float32)

CONV_ERRORS = [
    (dict(x="abc"), TypeError, "x must be an array"),
    (dict(x=None), TypeError, "x must be an array"),
    (dict(x=X.astype(complex)), TypeError, "real numbers"),
    (dict(x=np.array([["a"]], dtype=object)), TypeError, "real numbers"),
    (dict(x=X[0]), ValueError, r"x must be 4-D \(N, C, H, W\), got shape \(3, 8, 8\)"),
    (dict(w=W[0]), ValueError, "w must be 4-D"),
    (dict(w=W[:, :2]), ValueError, "channel mismatch: x has 3 channels"),
    (dict(groups=2), ValueError, "groups=2 must divide"),
    (dict(groups=0), ValueError, "groups must be >= 1"),
    (dict(stride=0), ValueError, "stride must be >= 1"),
    (dict(stride=(1, -2)), ValueError, "stride must be >= 1"),
    (dict(stride=1.5), TypeError, "stride must be an int"),
    (dict(dilation=0), ValueError, "dilation must be >= 1"),
    (dict(padding=-1), ValueError, "padding must be >= 0"),
    (dict(padding="full"), ValueError, "padding must be an int, a pair, 'valid' or 'same'"),
    (dict(padding=(1, 2, 3)), ValueError, "padding must be an int or a pair"),
    (dict(w=np.zeros((4, 3, 9, 9))), ValueError, "larger than the padded input"),
    (dict(w=np.zeros((4, 3, 3, 3)), dilation=5), ValueError, "larger than the padded input"),
    (dict(x=X[:0]), ValueError, "x must not be empty"),
    (dict(x=X[:, :, :0]), ValueError, "x must not be empty"),
    (dict(w=W[:0]), ValueError, "w must not be empty"),
    (dict(bias=np.zeros(3)), ValueError, r"bias must have shape \(4,\)"),
    (dict(bias=np.float32(1)), ValueError, r"bias must have shape \(4,\), got \(\)"),
    (dict(data_format="NCWH"), ValueError, "data_format must be"),
    (dict(weight_format="OHWI"), ValueError, "weight_format must be"),
]


@pytest.mark.parametrize("kwargs,exc,match", CONV_ERRORS)
def test_conv2d_errors(kwargs, exc, match):
    args = dict(x=X, w=W)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        F.conv2d(**args)


def test_conv2d_backward_errors():
    with pytest.raises(ValueError, match=r"grad_out must have shape \(2, 4, 6, 6\)"):
        F.conv2d_backward(np.zeros((2, 4, 5, 5)), X, W)
    with pytest.raises(ValueError, match=r"grad_out must have shape \(2, 6, 6, 4\)"):
        F.conv2d_backward(np.zeros((2, 4, 6, 6)), X.transpose(0, 2, 3, 1), W, data_format="NHWC")
    with pytest.raises(TypeError, match="grad_out must be an array"):
        F.conv2d_backward(None, X, W)


POOL_ERRORS = [
    (dict(kernel_size=0), ValueError, "kernel_size must be >= 1"),
    (dict(kernel_size=2, stride=0), ValueError, "stride must be >= 1"),
    (dict(kernel_size=2, padding=2), ValueError, "at most half the kernel_size"),
    (dict(kernel_size=2, padding=-1), ValueError, "padding must be >= 0"),
    (dict(kernel_size=9), ValueError, "larger than the padded input"),
    (dict(kernel_size=(2, 2, 2)), ValueError, "kernel_size must be an int or a pair"),
    (dict(kernel_size="2"), TypeError, "kernel_size must be an int"),
    (dict(kernel_size=2, ceil_mode="yes"), TypeError, "ceil_mode must be a bool"),
]


@pytest.mark.parametrize("kwargs,exc,match", POOL_ERRORS)
@pytest.mark.parametrize("op", [F.max_pool2d, F.avg_pool2d])
def test_pool_errors(op, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        op(X, **kwargs)


def test_pool_backward_errors():
    with pytest.raises(ValueError, match="grad_out must have shape"):
        F.max_pool2d_backward(np.zeros((2, 3, 3, 3)), X, 2)
    with pytest.raises(ValueError, match="grad_out must have shape"):
        F.avg_pool2d_backward(np.zeros((2, 3, 3, 3)), X, 2)
    with pytest.raises(ValueError, match="grad_out must have shape"):
        F.global_avg_pool2d_backward(np.zeros((2, 4)), X)


def test_core_rechecks_geometry_so_direct_calls_cannot_overrun():
    """The private module validates too: wrong output shapes or read-only outputs raise."""
    with pytest.raises(ValueError, match="y has logical shape"):
        _core.conv2d_forward(
            X, W, None, np.empty((2, 4, 3, 3), np.float32), 1, 1, 0, 0, 0, 0, 1, 1, 1
        )
    with pytest.raises(ValueError, match="must be writeable"):
        _core.max_pool2d_forward(
            X, np.broadcast_to(np.float32(0), (2, 3, 4, 4)), 2, 2, 2, 2, 0, 0, 0, 0
        )
    with pytest.raises(ValueError, match="too large for the input"):
        _core.max_pool2d_forward(X, np.empty((2, 3, 40, 40), np.float32), 2, 2, 2, 2, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="must be float32"):
        _core.conv2d_forward(
            X.astype(np.float64),
            W,
            None,
            np.empty((2, 4, 6, 6), np.float32),
            1,
            1,
            0,
            0,
            0,
            0,
            1,
            1,
            1,
        )
    with pytest.raises(ValueError, match="stride must be >= 1"):
        _core.conv2d_forward(
            X, W, None, np.empty((2, 4, 6, 6), np.float32), 0, 1, 0, 0, 0, 0, 1, 1, 1
        )


def test_runtime_control_errors():
    with pytest.raises(ValueError, match="isa must be one of"):
        pyconv.set_isa("sse9")
    with pytest.raises(TypeError):
        pyconv.set_isa(3)
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        pyconv.set_num_threads(0)
    with pytest.raises(TypeError, match="num_threads must be an int"):
        pyconv.set_num_threads(2.5)


def test_misaligned_float32_input_is_copied_aligned():
    """A C-contiguous float32 view at an odd byte offset (found by the fuzzer under UBSan):
    the core must get an aligned copy, and the result must be right."""
    raw = np.zeros(4 * 2 * 3 * 5 * 5 + 1, np.uint8)[1:]
    x = raw.view(np.float32).reshape(2, 3, 5, 5)
    x[...] = np.arange(x.size, dtype=np.float32).reshape(x.shape) / 10
    assert x.flags.c_contiguous and not x.flags.aligned
    conv = pyconv.utils.as_float32(x, "x")
    assert conv.flags.aligned and conv.flags.c_contiguous
    w = np.ones((1, 3, 3, 3), np.float32)
    np.testing.assert_allclose(F.conv2d(x, w), F.conv2d(x.copy(), w), rtol=0, atol=0)
