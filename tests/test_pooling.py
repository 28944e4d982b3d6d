"""Max, average and global average pooling, forward and backward, against the reference."""

from __future__ import annotations

import numpy as np
import pytest
import ref64
from conftest import assert_close

from pyconv import functional as F

# (kernel, stride, padding, ceil_mode)
CASES = [
    (2, None, 0, False),
    (3, 2, 1, False),
    (3, 2, 1, True),
    (2, 2, 0, True),
    ((3, 2), (2, 1), (1, 0), True),
    (3, 3, 1, True),
    (1, 1, 0, False),
    (3, 2, "same", False),
    (2, 2, "valid", False),
]


def _pads(x_shape, k, s, p):
    k = (k, k) if isinstance(k, int) else k
    s = k if s is None else ((s, s) if isinstance(s, int) else s)
    if p == "same":
        pads = (
            *ref64.resolve_same(x_shape[2], k[0], s[0]),
            *ref64.resolve_same(x_shape[3], k[1], s[1]),
        )
    elif p == "valid":
        pads = (0, 0, 0, 0)
    else:
        p = (p, p) if isinstance(p, int) else p
        pads = (p[0], p[0], p[1], p[1])
    return k, s, pads


def _nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_max_pool(case, fmt, isa, rng):
    k, s, p, ceil_mode = case
    x = rng.permutation(2 * 19 * 9 * 8).reshape(2, 19, 9, 8).astype(np.float32) / 7
    kk, ss, pads = _pads(x.shape, k, s, p)
    y_ref = ref64.max_pool2d(x, kk, ss, pads, ceil_mode)
    gy = rng.standard_normal(y_ref.shape).astype(np.float32)
    gx_ref = ref64.max_pool2d_backward(gy, x, kk, ss, pads, ceil_mode)
    conv = _nhwc if fmt == "NHWC" else (lambda a: a)
    back = (lambda a: a.transpose(0, 3, 1, 2)) if fmt == "NHWC" else (lambda a: a)
    y = F.max_pool2d(conv(x), k, s, p, ceil_mode, data_format=fmt)
    assert_close(back(y), y_ref)
    gx = F.max_pool2d_backward(conv(gy), conv(x), k, s, p, ceil_mode, data_format=fmt)
    assert_close(back(gx), gx_ref)


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
@pytest.mark.parametrize("cip", [True, False])
@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_avg_pool(case, cip, fmt, isa, rng):
    k, s, p, ceil_mode = case
    x = rng.standard_normal((2, 5, 9, 8)).astype(np.float32)
    kk, ss, pads = _pads(x.shape, k, s, p)
    y_ref = ref64.avg_pool2d(x, kk, ss, pads, ceil_mode, cip)
    gy = rng.standard_normal(y_ref.shape).astype(np.float32)
    gx_ref = ref64.avg_pool2d_backward(gy, x, kk, ss, pads, ceil_mode, cip)
    conv = _nhwc if fmt == "NHWC" else (lambda a: a)
    back = (lambda a: a.transpose(0, 3, 1, 2)) if fmt == "NHWC" else (lambda a: a)
    y = F.avg_pool2d(conv(x), k, s, p, ceil_mode, cip, data_format=fmt)
    assert_close(back(y), y_ref)
    gx = F.avg_pool2d_backward(conv(gy), conv(x), k, s, p, ceil_mode, cip, data_format=fmt)
    assert_close(back(gx), gx_ref)


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_max_pool_ties_go_to_first_element(fmt, isa):
    x = np.ones((1, 37, 4, 4), np.float32)
    x[0, 3, 1, 1] = 2  # one channel with a strict maximum
    gy = np.ones((1, 37, 2, 2), np.float32)
    conv = _nhwc if fmt == "NHWC" else (lambda a: a)
    gx = F.max_pool2d_backward(conv(gy), conv(x), 2, data_format=fmt)
    gx = gx.transpose(0, 3, 1, 2) if fmt == "NHWC" else gx
    expected = np.zeros((4, 4), np.float32)
    expected[0::2, 0::2] = 1
    for c in (0, 36):
        np.testing.assert_array_equal(gx[0, c], expected)
    assert gx[0, 3, 1, 1] == 1 and gx[0, 3, 0, 0] == 0


@pytest.mark.parametrize("hw,k,s,p", [((8, 6), 2, 2, 0), ((9, 7), 2, 2, 0), ((8, 8), 2, 3, 0),
                                      ((7, 7), 2, 2, 1), ((6, 9), (2, 3), (2, 3), 0)])  # fmt: skip
def test_max_pool_backward_non_overlapping_windows(hw, k, s, p, isa, rng):
    """The tiled channels-last backward: windows that tile the input exactly, leave rows or
    columns over, have gaps (stride > kernel) or padding; 37 channels = vector body + tail."""
    x = rng.permutation(2 * 37 * hw[0] * hw[1]).reshape(2, 37, *hw).astype(np.float32)
    kk, ss, pads = _pads(x.shape, k, s, p)
    y_ref = ref64.max_pool2d(x, kk, ss, pads, False)
    gy = rng.standard_normal(y_ref.shape).astype(np.float32)
    gx_ref = ref64.max_pool2d_backward(gy, x, kk, ss, pads, False)
    gx = F.max_pool2d_backward(_nhwc(gy), _nhwc(x), k, s, p, data_format="NHWC")
    assert_close(gx.transpose(0, 3, 1, 2), gx_ref)


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
@pytest.mark.parametrize("nan_at", [(0, 0), (0, 1), (1, 1)])
def test_max_pool_nan_and_inf(fmt, nan_at, isa):
    """NaN anywhere in a window wins (first or last position), -inf stays -inf; 37 channels
    cover the vector body and the scalar tail of the channels-last path."""
    x = np.tile(np.array([[1, 2], [3, 4]], np.float32), (1, 37, 1, 1))
    x[0, 5][nan_at] = np.nan
    x[0, 36][nan_at] = np.nan
    x[0, 7] = -np.inf
    y = F.max_pool2d(_nhwc(x) if fmt == "NHWC" else x, 2, data_format=fmt)
    y = y.transpose(0, 3, 1, 2) if fmt == "NHWC" else y
    assert np.isnan(y[0, 5, 0, 0]) and np.isnan(y[0, 36, 0, 0])
    assert y[0, 7, 0, 0] == -np.inf and y[0, 0, 0, 0] == 4
    gy = np.ones((1, 37, 1, 1), np.float32)  # the gradient goes to the NaN (first -inf)
    gx = F.max_pool2d_backward(
        _nhwc(gy) if fmt == "NHWC" else gy, _nhwc(x) if fmt == "NHWC" else x, 2, data_format=fmt
    )
    gx = gx.transpose(0, 3, 1, 2) if fmt == "NHWC" else gx
    for c in (5, 36):
        assert gx[0, c][nan_at] == 1 and gx[0, c].sum() == 1
    assert gx[0, 7, 0, 0] == 1 and gx[0, 7].sum() == 1
    assert gx[0, 0, 1, 1] == 1 and gx[0, 0].sum() == 1


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_global_avg_pool(fmt, isa, rng):
    x = rng.standard_normal((3, 7, 5, 6)).astype(np.float32)
    xin = _nhwc(x) if fmt == "NHWC" else x
    y = F.global_avg_pool2d(xin, data_format=fmt)
    assert y.shape == (3, 7)
    assert_close(y, x.astype(np.float64).mean(axis=(2, 3)))
    yk = F.global_avg_pool2d(xin, data_format=fmt, keepdims=True)
    assert yk.shape == ((3, 7, 1, 1) if fmt == "NCHW" else (3, 1, 1, 7))
    gy = rng.standard_normal((3, 7)).astype(np.float32)
    gx = F.global_avg_pool2d_backward(gy, xin, data_format=fmt)
    want = np.broadcast_to(gy[:, :, None, None] / 30.0, x.shape)
    assert_close(gx.transpose(0, 3, 1, 2) if fmt == "NHWC" else gx, want)


@pytest.mark.parametrize("h,w,k,s,p", [(2, 2, 3, 2, 0), (1, 1, 2, 2, 0), (3, 3, 6, 3, 1)])
@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_ceil_mode_window_larger_than_input(h, w, k, s, p, fmt, isa, rng):
    """PyTorch keeps a ceil_mode window that starts inside the input even when the kernel
    overhangs the padded input by less than the stride (2x2 input, kernel 3, stride 2 -> 1x1);
    without ceil_mode the same call has no output and is an error."""
    x = rng.permutation(3 * h * w).reshape(1, 3, h, w).astype(np.float32)
    pads = (p,) * 4
    kw = dict(kernel_size=k, stride=s, padding=p, ceil_mode=True, data_format=fmt)
    xin = _nhwc(x) if fmt == "NHWC" else x
    back = (lambda a: a.transpose(0, 3, 1, 2)) if fmt == "NHWC" else (lambda a: a)
    assert_close(back(F.max_pool2d(xin, **kw)), ref64.max_pool2d(x, (k, k), (s, s), pads, True))
    assert_close(
        back(F.avg_pool2d(xin, **kw)), ref64.avg_pool2d(x, (k, k), (s, s), pads, True, True)
    )
    with pytest.raises(ValueError, match="kernel_size"):
        F.max_pool2d(xin, **dict(kw, ceil_mode=False))
