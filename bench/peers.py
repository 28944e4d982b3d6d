"""The NumPy peer: im2col + matmul convolutions (float32, NHWC activations, HWIO weights).

This is the textbook way to run a convolution in NumPy: gather every receptive field into a
matrix (im2col) and multiply by the flattened kernel with BLAS.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _pad(x, p):
    return np.pad(x, ((0, 0), (p, p), (p, p), (0, 0))) if p else x


def im2col(x, k, s, p):
    """x (N, H, W, C) -> columns (N*OH*OW, k*k*C) ordered (kh, kw, c)."""
    win = sliding_window_view(_pad(x, p), (k, k), axis=(1, 2))[:, ::s, ::s]  # N,OH,OW,C,k,k
    n, oh, ow = win.shape[:3]
    return win.transpose(0, 1, 2, 4, 5, 3).reshape(n * oh * ow, -1), (n, oh, ow)


def conv2d_forward(x, w, s, p):
    """x (N, H, W, C), w (k, k, C, O) -> y (N, OH, OW, O)."""
    cols, (n, oh, ow) = im2col(x, w.shape[0], s, p)
    return (cols @ w.reshape(-1, w.shape[3])).reshape(n, oh, ow, -1)


def conv2d_backward_data(gy, w, x_shape, s, p):
    """gy (N, OH, OW, O) -> gx (N, H, W, C): matmul to columns, then col2im (scatter-add)."""
    k, _, c, o = w.shape
    n, h, wd, _ = x_shape
    _, oh, ow, _ = gy.shape
    cols = (gy.reshape(-1, o) @ w.reshape(-1, o).T).reshape(n, oh, ow, k, k, c)
    gxp = np.zeros((n, h + 2 * p, wd + 2 * p, c), np.float32)
    for i in range(k):
        for j in range(k):
            gxp[:, i : i + (oh - 1) * s + 1 : s, j : j + (ow - 1) * s + 1 : s] += cols[
                :, :, :, i, j
            ]
    return gxp[:, p : p + h, p : p + wd]


def conv2d_backward_weight(gy, x, k, s, p):
    """gy (N, OH, OW, O), x (N, H, W, C) -> gw (k, k, C, O)."""
    cols, _ = im2col(x, k, s, p)
    return (cols.T @ gy.reshape(-1, gy.shape[3])).reshape(k, k, x.shape[3], -1)


def max_pool_2x2(x):
    """x (N, H, W, C) with even H, W -> 2x2/2 max pool by reshape."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
