"""Augmentation: the C++ resampler against a naive bilinear reference on every ISA, exact
flips/rotations/shifts, seeded random transforms, preprocessing layers, fit(augment=...)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import pyconv
from pyconv import functional as F
from pyconv import layers as L
from pyconv.augment import ImageAugmenter, random_matrices


def naive_warp(x, mats, fill_mode, fill_value):
    """Independent float64 reference: bilinear sampling, one pixel at a time."""
    n, h, w, c = x.shape
    out = np.zeros((n, h, w, c))

    def fetch(img, yy, xx):
        if 0 <= yy < h and 0 <= xx < w:
            return img[yy, xx]
        if fill_mode == "constant":
            return np.full(c, fill_value)
        if fill_mode == "nearest":
            return img[min(max(yy, 0), h - 1), min(max(xx, 0), w - 1)]
        fold = lambda i, m: (i % (2 * m)) if (i % (2 * m)) < m else 2 * m - 1 - (i % (2 * m))  # noqa: E731
        return img[fold(yy, h), fold(xx, w)]

    for k in range(n):
        m = mats[k].astype(np.float64)
        for oy in range(h):
            for ox in range(w):
                sx, sy = m @ [ox, oy, 1.0]
                x0, y0 = int(np.floor(sx)), int(np.floor(sy))
                ax, ay = sx - x0, sy - y0
                out[k, oy, ox] = (1 - ay) * (
                    (1 - ax) * fetch(x[k], y0, x0) + ax * fetch(x[k], y0, x0 + 1)
                ) + ay * ((1 - ax) * fetch(x[k], y0 + 1, x0) + ax * fetch(x[k], y0 + 1, x0 + 1))
    return out


@pytest.mark.parametrize("fill_mode", ["constant", "nearest", "reflect"])
def test_warp_matches_naive_bilinear(isa, threads, rng, fill_mode):
    x = rng.standard_normal((3, 7, 9, 2)).astype(np.float32)
    mats = random_matrices(3, 7, 9, rng, rotation=40, height_shift=0.3, width_shift=0.3, zoom=(0.6, 1.5),
                           horizontal_flip=True)  # fmt: skip
    y = F.affine_warp(x, mats, fill_mode, fill_value=0.5)
    assert_close(y, naive_warp(x, mats, fill_mode, 0.5), 1e-5, fill_mode)


def test_exact_flips_rotations_and_shifts(rng):
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    flip_h = np.tile(np.array([[-1, 0, 5], [0, 1, 0]], np.float32), (2, 1, 1))
    np.testing.assert_array_equal(F.affine_warp(x, flip_h), x[:, :, ::-1])
    ident = np.tile(np.array([[1, 0, 0], [0, 1, 0]], np.float32), (2, 1, 1))
    np.testing.assert_array_equal(F.affine_warp(x, ident), x)
    shift = np.tile(
        np.array([[1, 0, -2], [0, 1, 0]], np.float32), (2, 1, 1)
    )  # content moves right by 2
    y = F.affine_warp(x, shift, "constant", 0.0)
    np.testing.assert_array_equal(y[:, :, 2:], x[:, :, :-2])
    assert not y[:, :, :2].any()
    rot = random_matrices(2, 6, 6, np.random.default_rng(0), rotation=0, horizontal_flip=False)
    np.testing.assert_allclose(F.affine_warp(x, rot), x, atol=1e-6)


def test_quarter_turn_is_rot90():
    x = np.arange(2 * 5 * 5 * 1, dtype=np.float32).reshape(2, 5, 5, 1)

    class Fixed:  # a "random" generator that always returns the extreme angle
        def uniform(self, lo, hi, n):
            return np.full(n, hi)

        def random(self, n):
            return np.ones(n)

    m = random_matrices(2, 5, 5, Fixed(), rotation=90)
    y = F.affine_warp(x, m)
    assert any(
        np.allclose(y[..., 0], np.rot90(x[..., 0], k, axes=(1, 2)), atol=1e-4) for k in (1, 3)
    )


def test_augmenter_is_seeded_and_flip_only_flips(rng):
    x = rng.standard_normal((64, 8, 8, 1)).astype(np.float32)
    a = ImageAugmenter(horizontal_flip=True, seed=3)
    y = a(x)
    same = np.all(y == x, axis=(1, 2, 3))
    flipped = np.all(y == x[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same | flipped) and 15 < flipped.sum() < 49
    np.testing.assert_array_equal(ImageAugmenter(horizontal_flip=True, seed=3)(x), y)
    assert not np.array_equal(ImageAugmenter(horizontal_flip=True, seed=4)(x), y)


def test_augmenter_keeps_content_roughly(rng):
    x = np.zeros((16, 28, 28, 1), np.float32)
    x[:, 10:18, 10:18] = 1.0
    y = ImageAugmenter(
        rotation_range=10, width_shift_range=0.1, height_shift_range=0.1, zoom_range=0.1, seed=0
    )(x)
    mass = y.sum(axis=(1, 2, 3))
    assert np.all((mass > 40) & (mass < 95))  # 64 +- zoom (0.81 .. 1.21 area)
    assert np.abs(y - x).sum() > 0


@pytest.mark.parametrize(
    "kwargs,match",
    [({"rotation_range": -1}, "rotation_range"), ({"zoom_range": 1.5}, "zoom_range"),
     ({"fill_mode": "wrap"}, "fill_mode"), ({"width_shift_range": "a"}, "width_shift_range")],
)  # fmt: skip
def test_augmenter_argument_errors(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ImageAugmenter(**kwargs)


def test_warp_argument_errors(rng):
    x = rng.standard_normal((2, 4, 4, 1)).astype(np.float32)
    with pytest.raises(ValueError, match="matrices"):
        F.affine_warp(x, np.zeros((3, 2, 3)))
    with pytest.raises(ValueError, match="fill_mode"):
        F.affine_warp(x, np.zeros((2, 2, 3)), "wrap")
    with pytest.raises(ValueError, match="finite"):
        F.affine_warp(x, np.full((2, 2, 3), np.nan))
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        F.affine_warp(x[0], np.zeros((2, 2, 3)))
    far = np.tile(np.array([[1, 0, 1e30], [0, 1, 0]], np.float32), (2, 1, 1))
    assert not F.affine_warp(x, far, "constant").any()  # no overflow, just fill


@pytest.mark.parametrize(
    "layer",
    [lambda: L.RandomFlip("horizontal", seed=1), lambda: L.RandomRotation(0.1, seed=1),
     lambda: L.RandomTranslation(0.1, 0.2, seed=1), lambda: L.RandomZoom(0.2, seed=1)],
    ids=["flip", "rotation", "translation", "zoom"],
)  # fmt: skip
def test_preprocessing_layers_train_only(rng, layer):
    x = rng.random((8, 10, 10, 3)).astype(np.float32)
    lay = layer()
    np.testing.assert_array_equal(lay(x, training=False), x)
    assert not np.array_equal(lay(x, training=True), x)
    clone = L.deserialize(L.serialize(lay))
    assert clone.get_config() == lay.get_config()


def test_fit_with_augmentation_and_preprocessing_layers(rng):
    pyconv.set_random_seed(0)
    model = pyconv.Sequential(
        [pyconv.Input((8, 8, 1)), L.RandomFlip("horizontal"), L.Conv2D(2, 3), L.Flatten(),
         L.Dense(2, activation="softmax")]
    )  # fmt: skip
    model.compile("adam", "sparse_categorical_crossentropy")
    x = rng.random((16, 8, 8, 1)).astype(np.float32)
    seen = []

    def aug(xb):
        seen.append(xb.shape)
        return ImageAugmenter(rotation_range=5, seed=1)(xb)

    model.fit(x, rng.integers(0, 2, 16), batch_size=8, epochs=2, verbose=0, augment=aug)
    assert seen == [(8, 8, 8, 1)] * 4
    with pytest.raises(TypeError, match="augment"):
        model.fit(x, rng.integers(0, 2, 16), verbose=0, augment="flip")
