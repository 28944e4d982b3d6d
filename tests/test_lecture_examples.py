"""The worked examples of the lectures (../shared/seeds/), as our users first met them."""

from __future__ import annotations

import numpy as np
import pytest
import ref64

from pyconv import functional as F


def _conv(image, kernel, **kw):
    x = np.asarray(image, np.float32)[None, None]
    w = np.asarray(kernel, np.float32)[None, None]
    return F.conv2d(x, w, **kw)[0, 0]


def test_output_size_formula_and_exercise(isa):
    # (W - F + 2P)/S + 1: 32x32x3 input, ten 5x5 filters, stride 1, padding 2 -> 32x32x10
    assert F.conv_output_size(32, 5, stride=1, padding=2) == 32
    x = np.zeros((1, 3, 32, 32), np.float32)
    w = np.zeros((10, 3, 5, 5), np.float32)
    b = np.zeros(10, np.float32)
    assert F.conv2d(x, w, b, stride=1, padding=2, data_format="NCHW").shape == (1, 10, 32, 32)
    assert w.size + b.size == 760  # 10 x (5*5*3 + 1) parameters
    # (5,5) + 2*(1,1) - (3,3), stride 2 -> (3,3)
    assert F.conv_output_size(5, 3, stride=2, padding=1) == 3
    # dilation widens the kernel: 3x3 dilated by 2 covers 5x5
    assert F.conv_output_size(7, 3, dilation=2) == 3


def test_binary_image_with_x_filter(isa):
    image = [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]]
    x_filter = [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
    np.testing.assert_array_equal(_conv(image, x_filter), [[4, 3, 4], [2, 4, 3], [2, 3, 4]])


def test_grid_of_numbers_with_ones_filter_stride_2(isa):
    grid = np.array([[10 * r + c for c in range(1, 8)] for r in range(8)])  # 1..7, 11..17, ...
    out = _conv(grid, np.ones((3, 3)), stride=2)
    np.testing.assert_array_equal(out[:2, :2], [[108, 126], [288, 306]])  # as the slide shows
    assert out.shape == (3, 3)


def test_padded_example_stride_2(isa):
    # Lecture 000's padded 5x5 channel, filter and stride 2. The slide's 3x3 output sums
    # three input channels and a bias, of which the text shows one, so we check the size
    # and this channel's first window, worked by hand: the zero-padded corner
    # [[0,0,0],[0,2,2],[0,0,1]] times the filter is 1*1 = 1.
    image = [[2, 2, 3, 3, 3], [0, 1, 3, 0, 3], [2, 3, 0, 1, 3], [3, 3, 2, 1, 2], [3, 3, 0, 2, 3]]
    kernel = [[2, 0, 1], [1, 0, 0], [0, 1, 1]]
    out = _conv(image, kernel, padding=1, stride=2)
    assert out.shape == (3, 3)
    assert out[0, 0] == 1
    want = ref64.conv2d(
        np.asarray(image)[None, None],
        np.asarray(kernel)[None, None],
        stride=(2, 2),
        pads=(1, 1, 1, 1),
    )[0, 0]
    np.testing.assert_array_equal(out, want)


KERNELS = {
    "identity": [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
    "edge": [[1, 0, -1], [0, 0, 0], [-1, 0, 1]],
    "laplacian": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
    "outline": [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]],
    "sobel_x": [[1, 0, -1], [2, 0, -2], [1, 0, -1]],
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
    "box_blur": np.ones((3, 3)) / 9,
    "gaussian_blur": np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16,
}


@pytest.mark.parametrize("name", list(KERNELS))
def test_classic_fixed_kernels(name, isa, rng):
    image = rng.integers(0, 256, size=(12, 10)).astype(np.float32)
    kernel = np.asarray(KERNELS[name], np.float32)
    out = _conv(image, kernel, padding="same")
    want = ref64.conv2d(image[None, None], kernel[None, None], pads=(1, 1, 1, 1))[0, 0]
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-3)
    if name == "identity":
        np.testing.assert_array_equal(out, image)
