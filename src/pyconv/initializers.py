"""Weight initializers (Keras names and rules). ``get("he_normal")`` resolves a name."""

from __future__ import annotations

import numpy as np

from .utils import from_registry, global_rng


def _fans(shape) -> tuple[float, float]:
    """fan_in, fan_out of a kernel: Dense (in, out), Conv2D (kh, kw, in, out)."""
    if len(shape) < 1:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    receptive = float(np.prod(shape[:-2])) if len(shape) > 2 else 1.0
    return shape[-2] * receptive, shape[-1] * receptive


class Initializer:
    """Callable ``(shape) -> float32 array``; ``get_config`` round-trips through ``get``."""

    def __call__(self, shape, rng: np.random.Generator | None = None) -> np.ndarray:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    def _spec(self) -> dict:
        return {"class_name": type(self).__name__, "config": self.get_config()}


class Zeros(Initializer):
    def __call__(self, shape, rng=None):
        return np.zeros(shape, np.float32)


class Ones(Initializer):
    def __call__(self, shape, rng=None):
        return np.ones(shape, np.float32)


class Constant(Initializer):
    def __init__(self, value=0.0):
        self.value = float(value)

    def __call__(self, shape, rng=None):
        return np.full(shape, self.value, np.float32)

    def get_config(self):
        return {"value": self.value}


class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05):
        self.mean, self.stddev = float(mean), float(stddev)

    def __call__(self, shape, rng=None):
        rng = rng or global_rng()
        return rng.normal(self.mean, self.stddev, shape).astype(np.float32)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev}


class RandomUniform(Initializer):
    def __init__(self, minval=-0.05, maxval=0.05):
        self.minval, self.maxval = float(minval), float(maxval)

    def __call__(self, shape, rng=None):
        rng = rng or global_rng()
        return rng.uniform(self.minval, self.maxval, shape).astype(np.float32)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval}


class VarianceScaling(Initializer):
    """Keras's VarianceScaling: variance ``scale / n`` with n = fan_in, fan_out or their mean.

    ``truncated_normal`` redraws beyond two standard deviations and widens the normal so the
    truncated distribution keeps the requested variance (Keras's 0.8796... constant).
    """

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal"):
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"mode must be fan_in, fan_out or fan_avg, got {mode!r}")
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError(f"unknown distribution {distribution!r}")
        self.scale, self.mode, self.distribution = float(scale), mode, distribution

    def __call__(self, shape, rng=None):
        rng = rng or global_rng()
        fan_in, fan_out = _fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        var = self.scale / max(1.0, n)
        if self.distribution == "uniform":
            lim = np.sqrt(3.0 * var)
            return rng.uniform(-lim, lim, shape).astype(np.float32)
        if self.distribution == "untruncated_normal":
            return rng.normal(0.0, np.sqrt(var), shape).astype(np.float32)
        std = np.sqrt(var) / 0.87962566103423978
        out = rng.standard_normal(shape)
        bad = np.abs(out) > 2.0
        while bad.any():  # resample the tails; converges in a few vectorized rounds
            out[bad] = rng.standard_normal(int(bad.sum()))
            bad = np.abs(out) > 2.0
        return (out * std).astype(np.float32)

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution}


class GlorotUniform(VarianceScaling):
    def __init__(self):
        super().__init__(1.0, "fan_avg", "uniform")

    def get_config(self):
        return {}


class GlorotNormal(VarianceScaling):
    def __init__(self):
        super().__init__(1.0, "fan_avg", "truncated_normal")

    def get_config(self):
        return {}


class HeNormal(VarianceScaling):
    def __init__(self):
        super().__init__(2.0, "fan_in", "truncated_normal")

    def get_config(self):
        return {}


class HeUniform(VarianceScaling):
    def __init__(self):
        super().__init__(2.0, "fan_in", "uniform")

    def get_config(self):
        return {}


class LecunNormal(VarianceScaling):
    def __init__(self):
        super().__init__(1.0, "fan_in", "truncated_normal")

    def get_config(self):
        return {}


_BY_NAME = {
    "zeros": Zeros,
    "ones": Ones,
    "constant": Constant,
    "random_normal": RandomNormal,
    "random_uniform": RandomUniform,
    "variance_scaling": VarianceScaling,
    "glorot_uniform": GlorotUniform,
    "glorot_normal": GlorotNormal,
    "he_normal": HeNormal,
    "he_uniform": HeUniform,
    "lecun_normal": LecunNormal,
}
_BY_CLASS = {cls.__name__: cls for cls in _BY_NAME.values()}


def get(identifier) -> Initializer:
    """An Initializer from a name ("he_normal"), a config dict, or an Initializer."""
    return from_registry(identifier, Initializer, _BY_NAME, _BY_CLASS, "initializer")


def serialize(init: Initializer) -> dict:
    return init._spec()
