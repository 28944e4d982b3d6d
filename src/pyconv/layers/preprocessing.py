"""Keras-style random augmentation layers: active in training, the identity at inference."""

from __future__ import annotations

import numpy as np

from .. import augment, functional
from .._shapes import real
from ..utils import new_rng
from .base import Layer, seed_arg


class _RandomAffine(Layer):
    """Base: draws per-image transforms and resamples the batch (NHWC) in training only."""

    def __init__(self, fill_mode="reflect", fill_value=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(fill_mode, str) or fill_mode not in functional.FILL_MODES:
            raise ValueError(
                f"fill_mode must be one of {', '.join(functional.FILL_MODES)}, got {fill_mode!r}"
            )
        self.fill_mode, self.fill_value = fill_mode, real(fill_value, "fill_value")
        self.seed = seed_arg(seed)
        self._rng = new_rng(self.seed)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{type(self).__name__} expects (H, W, C) images, got {input_shape}")
        return input_shape

    def _transform_args(self) -> dict:
        raise NotImplementedError

    def _forward(self, x, training):
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects (N, H, W, C) batches, got {x.shape}")
        if not training or len(x) == 0:
            return x, (False, x.shape)
        m = augment.random_matrices(
            len(x), x.shape[1], x.shape[2], self._rng, **self._transform_args()
        )
        return functional.affine_warp(x, m, self.fill_mode, self.fill_value), (True, x.shape)

    def _backward(self, ctx, dy, need_input_grad):
        transformed, shape = ctx
        dy = self._grad(dy, shape)
        if not need_input_grad:
            return None
        if transformed:
            raise NotImplementedError(
                f"{type(self).__name__} has no gradient in training mode; put augmentation "
                "layers first in the model"
            )
        return dy

    def get_config(self):
        return {**super().get_config(), "fill_mode": self.fill_mode,
                "fill_value": self.fill_value, "seed": self.seed}  # fmt: skip


# Factors beyond this (a million turns, image sizes or zoom steps) only overflow the
# transforms; nothing sensible needs them.
_MAX_FACTOR = 1e6


def _factor(value, name):
    """A number f (the range [-f, f]) or a (lo, hi) pair, finite, lo <= hi."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be a number or a (lo, hi) pair, got {value!r}")
        lo, hi = (real(v, name) for v in value)
    else:
        hi = real(value, name)
        lo = -hi
    if not (abs(lo) <= _MAX_FACTOR and abs(hi) <= _MAX_FACTOR and lo <= hi):
        raise ValueError(
            f"{name} must give -{_MAX_FACTOR:g} <= lo <= hi <= {_MAX_FACTOR:g}, got {value!r}"
        )
    return lo, hi


class RandomFlip(_RandomAffine):
    """Flip each image with probability 1/2: mode "horizontal", "vertical" or both."""

    def __init__(self, mode="horizontal_and_vertical", seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if not isinstance(mode, str) or mode not in (
            "horizontal",
            "vertical",
            "horizontal_and_vertical",
        ):
            raise ValueError(
                f"mode must be horizontal, vertical or horizontal_and_vertical, got {mode!r}"
            )
        self.mode = mode

    def _transform_args(self):
        return {
            "horizontal_flip": "horizontal" in self.mode,
            "vertical_flip": "vertical" in self.mode,
        }

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


class RandomRotation(_RandomAffine):
    """Rotate by a random fraction of a full turn in [-factor, factor] (or [lo, hi])."""

    def __init__(self, factor, fill_mode="reflect", fill_value=0.0, seed=None, **kwargs):
        super().__init__(fill_mode, fill_value, seed, **kwargs)
        self.factor = _factor(factor, "factor")
        if self.factor[0] != -self.factor[1]:
            raise ValueError(f"factor must be symmetric (f or (-f, f)), got {factor!r}")

    def _transform_args(self):
        return {"rotation": 360.0 * self.factor[1]}

    def get_config(self):
        return {**super().get_config(), "factor": list(self.factor)}


class RandomTranslation(_RandomAffine):
    """Shift by random fractions of the height and width in [-f, f]."""

    def __init__(
        self, height_factor, width_factor, fill_mode="reflect", fill_value=0.0, seed=None, **kwargs
    ):
        super().__init__(fill_mode, fill_value, seed, **kwargs)
        self.height_factor = abs(real(height_factor, "height_factor"))
        self.width_factor = abs(real(width_factor, "width_factor"))
        for name, f in (("height_factor", self.height_factor), ("width_factor", self.width_factor)):
            if not f <= _MAX_FACTOR:
                raise ValueError(f"{name} must be in [-{_MAX_FACTOR:g}, {_MAX_FACTOR:g}], got {f}")

    def _transform_args(self):
        return {"height_shift": self.height_factor, "width_shift": self.width_factor}

    def get_config(self):
        return {
            **super().get_config(),
            "height_factor": self.height_factor,
            "width_factor": self.width_factor,
        }


class RandomZoom(_RandomAffine):
    """Zoom by a random factor: height_factor f in [-f, f] means magnification 1/(1+f)
    (Keras: positive zooms out)."""

    def __init__(self, height_factor, fill_mode="reflect", fill_value=0.0, seed=None, **kwargs):
        super().__init__(fill_mode, fill_value, seed, **kwargs)
        self.height_factor = _factor(height_factor, "height_factor")
        if self.height_factor[0] <= -1:
            raise ValueError("height_factor must be > -1")

    def _transform_args(self):
        lo, hi = self.height_factor
        return {"zoom": (1.0 / (1.0 + hi), 1.0 / (1.0 + lo))}

    def get_config(self):
        return {**super().get_config(), "height_factor": list(self.height_factor)}
