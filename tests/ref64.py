"""Independent float64 NumPy references for conv2d and pooling (and their gradients).

Written from the definitions, sharing no code with pyconv: the backward passes are the
adjoint scatter of the forward, and tests/test_reference.py checks them against finite
differences (and against PyTorch where it is installed). Everything is NCHW / OIHW with
explicit (top, bottom, left, right) padding.
"""

from __future__ import annotations

import numpy as np


def resolve_same(size, k, s, d=1):
    """TensorFlow's 'same': output ceil(size / s), odd padding at the end."""
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def _taps(xp, kh, kw, s, d, oh, ow):
    """The input values tap (kh, kw) reads for every output position: (N, C, OH, OW)."""
    h0, w0 = kh * d[0], kw * d[1]
    return xp[:, :, h0 : h0 + (oh - 1) * s[0] + 1 : s[0], w0 : w0 + (ow - 1) * s[1] + 1 : s[1]]


def conv2d(x, w, b=None, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, c, h, wd = x.shape
    o, cg, k1, k2 = w.shape
    t, bt, l, r = pads
    xp = np.pad(x, ((0, 0), (0, 0), (t, bt), (l, r)))
    oh = (h + t + bt - dilation[0] * (k1 - 1) - 1) // stride[0] + 1
    ow = (wd + l + r - dilation[1] * (k2 - 1) - 1) // stride[1] + 1
    og = o // groups
    y = np.zeros((n, o, oh, ow))
    for g in range(groups):
        for i in range(k1):
            for j in range(k2):
                patch = _taps(xp[:, g * cg : (g + 1) * cg], i, j, stride, dilation, oh, ow)
                y[:, g * og : (g + 1) * og] += np.einsum(
                    "nchw,oc->nohw", patch, w[g * og : (g + 1) * og, :, i, j]
                )
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    return y


def conv2d_backward(gy, x, w, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """Adjoint of conv2d: (grad_x, grad_w, grad_b)."""
    gy = np.asarray(gy, np.float64)
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, c, h, wd = x.shape
    o, cg, k1, k2 = w.shape
    t, bt, l, r = pads
    xp = np.pad(x, ((0, 0), (0, 0), (t, bt), (l, r)))
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(w)
    oh, ow = gy.shape[2:]
    og = o // groups
    for g in range(groups):
        cs, os_ = slice(g * cg, (g + 1) * cg), slice(g * og, (g + 1) * og)
        for i in range(k1):
            for j in range(k2):
                h0, w0 = i * dilation[0], j * dilation[1]
                hs = slice(h0, h0 + (oh - 1) * stride[0] + 1, stride[0])
                ws = slice(w0, w0 + (ow - 1) * stride[1] + 1, stride[1])
                gxp[:, cs, hs, ws] += np.einsum("nohw,oc->nchw", gy[:, os_], w[os_, :, i, j])
                gw[os_, :, i, j] = np.einsum("nohw,nchw->oc", gy[:, os_], xp[:, cs, hs, ws])
    gx = gxp[:, :, t : t + h, l : l + wd]
    return gx, gw, gy.sum(axis=(0, 2, 3))


def pool_out(size, k, s, lo, hi, ceil_mode):
    span = size + lo + hi - k
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + lo:
        out -= 1
    return out


def _windows(x, k, s, pads, ceil_mode):
    n, c, h, w = x.shape
    t, b, l, r = pads
    oh = pool_out(h, k[0], s[0], t, b, ceil_mode)
    ow = pool_out(w, k[1], s[1], l, r, ceil_mode)
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s[0] - t, j * s[1] - l
            yield i, j, hs, ws, (oh, ow)


def max_pool2d(x, k, s, pads=(0, 0, 0, 0), ceil_mode=False):
    x = np.asarray(x, np.float64)
    n, c, h, w = x.shape
    y = None
    for i, j, hs, ws, (oh, ow) in _windows(x, k, s, pads, ceil_mode):
        if y is None:
            y = np.zeros((n, c, oh, ow))
        win = x[:, :, max(hs, 0) : min(hs + k[0], h), max(ws, 0) : min(ws + k[1], w)]
        y[:, :, i, j] = win.max(axis=(2, 3))
    return y


def max_pool2d_backward(gy, x, k, s, pads=(0, 0, 0, 0), ceil_mode=False):
    x = np.asarray(x, np.float64)
    n, c, h, w = x.shape
    gx = np.zeros_like(x)
    for i, j, hs, ws, _ in _windows(x, k, s, pads, ceil_mode):
        h0, w0 = max(hs, 0), max(ws, 0)
        win = x[:, :, h0 : min(hs + k[0], h), w0 : min(ws + k[1], w)]
        flat = win.reshape(n, c, -1).argmax(axis=2)  # first maximum, row-major
        wh, ww = np.unravel_index(flat, win.shape[2:])
        for a in range(n):
            for ch in range(c):
                gx[a, ch, h0 + wh[a, ch], w0 + ww[a, ch]] += gy[a, ch, i, j]
    return gx


def _avg_divisor(hs, ws, k, h, w, pads, count_include_pad):
    t, b, l, r = pads
    if count_include_pad:
        return (min(hs + k[0], h + b) - hs) * (min(ws + k[1], w + r) - ws)
    return (min(hs + k[0], h) - max(hs, 0)) * (min(ws + k[1], w) - max(ws, 0))


def avg_pool2d(x, k, s, pads=(0, 0, 0, 0), ceil_mode=False, count_include_pad=True):
    x = np.asarray(x, np.float64)
    n, c, h, w = x.shape
    y = None
    for i, j, hs, ws, (oh, ow) in _windows(x, k, s, pads, ceil_mode):
        if y is None:
            y = np.zeros((n, c, oh, ow))
        win = x[:, :, max(hs, 0) : min(hs + k[0], h), max(ws, 0) : min(ws + k[1], w)]
        y[:, :, i, j] = win.sum(axis=(2, 3)) / _avg_divisor(
            hs, ws, k, h, w, pads, count_include_pad
        )
    return y


def avg_pool2d_backward(gy, x, k, s, pads=(0, 0, 0, 0), ceil_mode=False, count_include_pad=True):
    x = np.asarray(x, np.float64)
    n, c, h, w = x.shape
    gx = np.zeros_like(x)
    for i, j, hs, ws, _ in _windows(x, k, s, pads, ceil_mode):
        div = _avg_divisor(hs, ws, k, h, w, pads, count_include_pad)
        gx[:, :, max(hs, 0) : min(hs + k[0], h), max(ws, 0) : min(ws + k[1], w)] += (
            np.asarray(gy, np.float64)[:, :, i, j, None, None] / div
        )
    return gx


def numerical_grad(f, x, eps=1e-6):
    """Central finite differences of the scalar f at x (float64), one element at a time."""
    x = np.array(x, np.float64)
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        old = x[idx]
        x[idx] = old + eps
        fp = f(x)
        x[idx] = old - eps
        fm = f(x)
        x[idx] = old
        g[idx] = (fp - fm) / (2 * eps)
    return g
