"""Element-wise core kernels. functional.dropout: the counter-based mask against an
independent NumPy version of the hash (bit-exact on every ISA and thread count), its
statistics, and the Dropout layer. functional.relu_backward against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

import pyconv
from pyconv import functional as F
from pyconv import layers as L


def mix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x7FEB352D)
    h = h ^ (h >> np.uint32(15))
    h = h * np.uint32(0x846CA68B)
    return h ^ (h >> np.uint32(16))


def reference_keep(n: int, rate: float, key: int) -> np.ndarray:
    """keep(i) = mix32(mix32(i ^ key_lo) + key_hi) >= rate * 2^32, in NumPy uint32."""
    i = np.arange(n, dtype=np.uint32)
    k0, k1 = np.uint32(key & 0xFFFFFFFF), np.uint32(key >> 32)
    with np.errstate(over="ignore"):
        h = mix32(mix32(i ^ k0) + k1)
    return h >= np.uint32(min(int(rate * 2**32), 2**32 - 1))


@pytest.mark.parametrize("rate", [0.0, 0.25, 0.5, 0.9])
def test_mask_matches_the_reference_hash_on_every_isa_and_thread_count(rate, isa, threads, rng):
    x = rng.standard_normal((3, 7, 11, 37)).astype(np.float32)  # odd sizes: vector tails
    key = 0x9E3779B97F4A7C15
    y = F.dropout(x, rate, key)
    keep = reference_keep(x.size, rate, key).reshape(x.shape)
    scale = np.float32(1 / (1 - rate))
    np.testing.assert_array_equal(y, np.where(keep, x * scale, 0).astype(np.float32))


def test_statistics_of_the_mask():
    n = 1_000_000
    ones = np.ones(n, np.float32)
    for rate in (0.1, 0.5, 0.8):
        kept = F.dropout(ones, rate, 7) != 0
        sigma = np.sqrt(n * rate * (1 - rate))
        assert abs(kept.sum() - n * (1 - rate)) < 5 * sigma, rate
        both = np.mean(kept[:-1] & kept[1:])  # neighbours independent
        assert abs(both - (1 - rate) ** 2) < 5 * np.sqrt((1 - rate) ** 2 / n) + 1e-3
    a, b = F.dropout(ones, 0.5, 1) != 0, F.dropout(ones, 0.5, 1 << 32) != 0
    assert abs(np.mean(a == b) - 0.5) < 0.005  # the high half of the key matters too
    np.testing.assert_array_equal(F.dropout(ones, 0.5, 1), F.dropout(ones, 0.5, 1))


def test_dropout_rejects_bad_arguments():
    x = np.ones(4, np.float32)
    with pytest.raises(ValueError, match="rate"):
        F.dropout(x, 1.0, 0)
    with pytest.raises(TypeError, match="rate"):
        F.dropout(x, "0.5", 0)
    with pytest.raises(ValueError, match="key"):
        F.dropout(x, 0.5, -1)
    with pytest.raises(ValueError, match="key"):
        F.dropout(x, 0.5, 2**64)


def test_layer_backward_reuses_the_forward_mask(rng):
    pyconv.set_random_seed(3)
    layer = L.Dropout(0.4)
    x = rng.standard_normal((8, 5, 5, 6)).astype(np.float32)
    y, ctx = layer.forward(x, training=True)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx = layer.backward(ctx, dy)
    kept = y != 0
    np.testing.assert_array_equal(dx != 0, kept)
    np.testing.assert_allclose(dx[kept], dy[kept] / 0.6, rtol=1e-6)
    y2, _ = layer.forward(x, training=True)
    assert not np.array_equal(y2, y)  # a fresh mask every step
    np.testing.assert_array_equal(layer.forward(x, training=False)[0], x)
    shared = L.Dropout(0.5, noise_shape=(None, 1, 1, 6))
    ys, ctx = shared.forward(x, training=True)
    zero = ys == 0
    assert (zero == zero[:, :1, :1, :]).all()  # one mask per (image, channel)
    np.testing.assert_array_equal(shared.backward(ctx, dy) == 0, zero)


@pytest.mark.parametrize("shape", [(1,), (17,), (3, 7, 11, 37)])
def test_relu_backward_matches_numpy_on_every_isa(shape, isa, threads, rng):
    y = np.maximum(rng.standard_normal(shape), 0).astype(np.float32)
    y.flat[:3] = [np.nan, -0.0, 0.0][: y.size] if y.size >= 3 else y.flat[:3]
    dy = rng.standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(F.relu_backward(dy, y), np.where(y > 0, dy, 0))
    with pytest.raises(ValueError, match="grad_out"):
        F.relu_backward(dy.ravel()[:-1], y.ravel())
