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
from ._shapes import as_int, flag, real
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


def _seed(seed) -> int | None:
    if seed is None:
        return None
    seed = as_int(seed, "seed")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return seed


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
        self.horizontal_flip = flag(horizontal_flip, "horizontal_flip")
        self.vertical_flip = flag(vertical_flip, "vertical_flip")
        if fill_mode not in functional.FILL_MODES:
            raise ValueError(f"fill_mode must be one of {', '.join(functional.FILL_MODES)}")
        self.fill_mode = fill_mode
        self.cval = real(cval, "cval")
        if not np.isfinite(self.cval):
            raise ValueError(f"cval must be finite, got {cval!r}")
        self.seed = _seed(seed)
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
        return self._transform(x, self.rng)

    def _transform(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not self.active or len(x) == 0:
            return x
        m = random_matrices(
            len(x), x.shape[1], x.shape[2], rng, self.rotation_range,
            self.height_shift_range, self.width_shift_range, self.zoom_range,
            self.horizontal_flip, self.vertical_flip,
        )  # fmt: skip
        return functional.affine_warp(x, m, self.fill_mode, self.cval)

    def flow(self, x, y=None, batch_size=32, shuffle=True, seed=None) -> Flow:
        """Augmented batches of (x, y), as Keras's ``ImageDataGenerator.flow``: an endless
        iterator (reshuffled each pass) yielding ``(x_batch, y_batch)``, or ``x_batch``
        alone without y; ``len()`` is the number of batches per pass. seed: its shuffling
        and transforms repeat exactly (default: the augmenter's own generator).
        For training, ``model.fit(x, y, augment=augmenter)`` does the same per batch."""
        return Flow(self, x, y, batch_size, shuffle, seed)

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


class Flow:
    """The iterator ``ImageAugmenter.flow`` returns (see there)."""

    def __init__(self, augmenter: ImageAugmenter, x, y, batch_size, shuffle, seed):
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            raise TypeError(f"x must be a numeric array, got dtype {x.dtype}")
        if x.ndim != 4:
            raise ValueError(f"x must be an (N, H, W, C) batch of images, got shape {x.shape}")
        if len(x) == 0:
            raise ValueError("x is empty: there are no images to augment")
        if y is not None:
            y = np.asarray(y)
            if y.ndim == 0 or len(y) != len(x):
                raise ValueError(
                    f"x and y must have the same number of samples, got {len(x)} and "
                    f"{'a scalar' if y.ndim == 0 else len(y)}"
                )
        self.batch_size = as_int(batch_size, "batch_size")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        self.shuffle = flag(shuffle, "shuffle")
        seed = _seed(seed)
        self.augmenter, self.x, self.y = augmenter, x, y
        self.rng = augmenter.rng if seed is None else new_rng(seed)
        self._order = np.arange(len(x))
        self._next = len(x)  # start a new pass on the first batch

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self):
        return self

    def __next__(self):
        if self._next >= len(self.x):  # a new pass over the data
            self._order = self.rng.permutation(len(self.x)) if self.shuffle else self._order
            self._next = 0
        idx = self._order[self._next : self._next + self.batch_size]
        self._next += self.batch_size
        if self.shuffle:
            idx = np.sort(idx)  # gather in memory order (same batch)
        xb = self.augmenter._transform(self.x[idx].astype(np.float32, copy=False), self.rng)
        return xb if self.y is None else (xb, self.y[idx])
