"""Random image augmentation, on the fly per batch: flips, rotations, shifts and zooms.

Every transform of a batch becomes one 2x3 matrix per image (composed here, in float64) and
one call of the C++ resampler (``functional.affine_warp``: bilinear, threaded), so
augmentation costs about as much as one pass over the batch whatever is enabled.

- ``ImageAugmenter(...)``: Keras ImageDataGenerator-style settings; ``fit(..., augment=aug)``
  applies it to each training batch. Seeded: ``seed=`` or the global ``set_random_seed``.
- Preprocessing layers (``pyconv.layers.RandomFlip``, ``RandomRotation``,
  ``RandomTranslation``, ``RandomZoom``) do the same inside a model, in training only.
"""

from __future__ import annotations

import numpy as np

from . import functional
from .utils import new_rng


def random_matrices(
    n: int,
    height: int,
    width: int,
    rng: np.random.Generator,
    rotation: float = 0.0,
    height_shift: float = 0.0,
    width_shift: float = 0.0,
    zoom: tuple[float, float] = (1.0, 1.0),
    horizontal_flip: bool = False,
    vertical_flip: bool = False,
) -> np.ndarray:
    """(n, 2, 3) output -> input maps for random transforms about the image centre.

    rotation: max angle in degrees (uniform in +-rotation); height/width_shift: max shift as
    a fraction of the size; zoom: (lo, hi) magnification range (> 1 enlarges); flips with
    probability 1/2 each.
    """
    angle = np.deg2rad(rng.uniform(-rotation, rotation, n)) if rotation else np.zeros(n)
    ty = rng.uniform(-height_shift, height_shift, n) * height if height_shift else np.zeros(n)
    tx = rng.uniform(-width_shift, width_shift, n) * width if width_shift else np.zeros(n)
    z = rng.uniform(zoom[0], zoom[1], n) if zoom != (1.0, 1.0) else np.ones(n)
    fx = np.where(rng.random(n) < 0.5, -1.0, 1.0) if horizontal_flip else np.ones(n)
    fy = np.where(rng.random(n) < 0.5, -1.0, 1.0) if vertical_flip else np.ones(n)
    # forward: p' = c + t + z R(angle) F (p - c); we need its inverse p = c + A (p' - c - t)
    # with A = F^-1 R(-angle) / z (F is its own inverse).
    cos, sin = np.cos(angle), np.sin(angle)
    a = np.empty((n, 2, 2))
    a[:, 0, 0], a[:, 0, 1] = fx * cos / z, fx * sin / z
    a[:, 1, 0], a[:, 1, 1] = -fy * sin / z, fy * cos / z
    c = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    shift = c[None, :] + np.stack([tx, ty], axis=1)  # (n, 2): c + t
    b = c[None, :] - np.einsum("nij,nj->ni", a, shift)
    return np.concatenate([a, b[:, :, None]], axis=2).astype(np.float32)


def _range(value, name: str, lo: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not (np.isfinite(value) and value >= lo):
        raise ValueError(f"{name} must be a finite number >= {lo}, got {value!r}")
    return float(value)


class ImageAugmenter:
    """Random flips/rotations/shifts/zooms of NHWC batches (Keras ImageDataGenerator names).

    rotation_range: degrees; width_shift_range, height_shift_range: fractions of the size;
    zoom_range: z or (lo, hi), magnification drawn from [1 - z, 1 + z] or [lo, hi];
    fill_mode: "nearest" (default), "reflect" or "constant" (with cval).
    """

    def __init__(
        self,
        rotation_range=0.0,
        width_shift_range=0.0,
        height_shift_range=0.0,
        zoom_range=0.0,
        horizontal_flip=False,
        vertical_flip=False,
        fill_mode="nearest",
        cval=0.0,
        seed=None,
    ):
        self.rotation_range = _range(rotation_range, "rotation_range")
        self.width_shift_range = _range(width_shift_range, "width_shift_range")
        self.height_shift_range = _range(height_shift_range, "height_shift_range")
        if isinstance(zoom_range, (tuple, list)):
            lo, hi = (_range(v, "zoom_range") for v in zoom_range)
        else:
            z = _range(zoom_range, "zoom_range")
            lo, hi = 1.0 - z, 1.0 + z
        if not 0 < lo <= hi:
            raise ValueError(f"zoom_range must give 0 < lo <= hi, got {zoom_range!r}")
        self.zoom_range = (lo, hi)
        self.horizontal_flip, self.vertical_flip = bool(horizontal_flip), bool(vertical_flip)
        if fill_mode not in functional.FILL_MODES:
            raise ValueError(f"fill_mode must be one of {', '.join(functional.FILL_MODES)}")
        self.fill_mode, self.cval = fill_mode, float(cval)
        self.seed = seed
        self.rng = new_rng(seed)

    @property
    def active(self) -> bool:
        return bool(
            self.rotation_range or self.width_shift_range or self.height_shift_range
            or self.zoom_range != (1.0, 1.0) or self.horizontal_flip or self.vertical_flip
        )  # fmt: skip

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """A randomly transformed float32 copy of the NHWC batch x."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4:
            raise ValueError(f"augmentation needs an (N, H, W, C) batch, got shape {x.shape}")
        if not self.active or len(x) == 0:
            return x
        m = random_matrices(
            len(x), x.shape[1], x.shape[2], self.rng, self.rotation_range,
            self.height_shift_range, self.width_shift_range, self.zoom_range,
            self.horizontal_flip, self.vertical_flip,
        )  # fmt: skip
        return functional.affine_warp(x, m, self.fill_mode, self.cval)

    def get_config(self) -> dict:
        return {
            "rotation_range": self.rotation_range,
            "width_shift_range": self.width_shift_range,
            "height_shift_range": self.height_shift_range,
            "zoom_range": list(self.zoom_range),
            "horizontal_flip": self.horizontal_flip,
            "vertical_flip": self.vertical_flip,
            "fill_mode": self.fill_mode,
            "cval": self.cval,
            "seed": self.seed,
        }
