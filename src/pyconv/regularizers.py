"""Weight and activity penalties: ``L1``, ``L2``, ``L1L2`` (Keras names and defaults)."""

from __future__ import annotations

import numpy as np

from .utils import from_registry


class Regularizer:
    """``penalty(w)`` is added to the loss; ``gradient(w)`` is its derivative w.r.t. ``w``."""

    def penalty(self, w: np.ndarray) -> float:
        raise NotImplementedError

    def gradient(self, w: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, w) -> float:
        return self.penalty(np.asarray(w))

    def get_config(self) -> dict:
        return {}


class L1L2(Regularizer):
    """``l1 * sum(|w|) + l2 * sum(w**2)``."""

    def __init__(self, l1=0.0, l2=0.0):
        for name, v in (("l1", l1), ("l2", l2)):
            if isinstance(v, (bool, np.bool_)) or not isinstance(
                v, (int, float, np.integer, np.floating)
            ):
                raise TypeError(f"{name} must be a number, got {type(v).__name__}")
            if not np.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        self.l1, self.l2 = float(l1), float(l2)

    def penalty(self, w):
        p = 0.0
        if self.l1:
            p += self.l1 * float(np.abs(w).sum(dtype=np.float64))
        if self.l2:
            p += self.l2 * float(np.square(w, dtype=np.float64).sum())
        return p

    def gradient(self, w):
        g = np.zeros_like(w)
        if self.l1:
            g += self.l1 * np.sign(w)
        if self.l2:
            g += (2.0 * self.l2) * w
        return g

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


class L1(L1L2):
    def __init__(self, l1=0.01):
        super().__init__(l1=l1)

    def get_config(self):
        return {"l1": self.l1}


class L2(L1L2):
    def __init__(self, l2=0.01):
        super().__init__(l2=l2)

    def get_config(self):
        return {"l2": self.l2}


_BY_CLASS = {"L1L2": L1L2, "L1": L1, "L2": L2}
_BY_NAME = {"l1": L1, "l2": L2, "l1_l2": L1L2, "l1l2": L1L2}


def get(identifier) -> Regularizer | None:
    """A Regularizer from None, a name ("l2"), a config dict, or a Regularizer."""
    if identifier is None:
        return None
    return from_registry(identifier, Regularizer, _BY_NAME, _BY_CLASS, "regularizer")


def serialize(reg: Regularizer | None) -> dict | None:
    if reg is None:
        return None
    return {"class_name": type(reg).__name__, "config": reg.get_config()}
