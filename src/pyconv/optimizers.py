"""SGD (momentum, Nesterov), Adam (AMSGrad) and RMSprop, with Keras's update rules.

An optimizer reads each trainable Variable's ``.grad`` and updates ``.value`` in place.
Its state (step count and per-variable slots such as Adam's moments) is keyed by variable
name, so it can be saved with the model and restored to resume training exactly.

An update is all-or-nothing with respect to Ctrl-C: ``apply`` holds SIGINT until every
variable and slot has its new value (``hold_interrupts``), so an interrupted training run
never keeps a step that changed some variables and not others.
"""

from __future__ import annotations

import numpy as np

from . import _core
from ._shapes import as_int, flag, real

# hold_interrupts: its home before utils, kept (scripts hold Ctrl-C as optimizers.hold_interrupts)
from .utils import from_registry, hold_interrupts


def _real_in(value, name: str, lo: float, hi: float = np.inf, lo_open=False, hi_open=True):
    """A finite real argument in the interval lo..hi (open or closed at each end)."""
    v = real(value, name)
    below = v <= lo if lo_open else v < lo
    above = v >= hi if hi_open else v > hi
    if not np.isfinite(v) or below or above:
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        interval = f"{left}{lo}, {hi}{right}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    return v


class Optimizer:
    def __init__(
        self,
        learning_rate=0.001,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        weight_decay=None,
        name=None,
    ):
        self.learning_rate = learning_rate
        # a limit of 0 would zero every gradient: > 0 (None: no clipping)
        for arg, v in (("clipnorm", clipnorm), ("clipvalue", clipvalue),
                       ("global_clipnorm", global_clipnorm)):  # fmt: skip
            setattr(self, arg, None if v is None else _real_in(v, arg, 0, lo_open=True))
        self.weight_decay = (
            None if weight_decay is None else _real_in(weight_decay, "weight_decay", 0)
        )
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name must be a non-empty str or None, got {name!r}")
        self.name = name or type(self).__name__.lower()
        self.iterations = 0
        self.slots: dict[str, dict[str, np.ndarray]] = {}

    @property
    def learning_rate(self) -> float:
        return self._lr

    @learning_rate.setter
    def learning_rate(self, value) -> None:
        self._lr = _real_in(value, "learning_rate", 0, lo_open=True)

    @property
    def iterations(self) -> int:
        """Number of updates applied (Adam's bias correction counts from it)."""
        return self._iterations

    @iterations.setter
    def iterations(self, value) -> None:
        value = as_int(value, "iterations")
        if value < 0:
            raise ValueError(f"iterations must be >= 0, got {value}")
        self._iterations = value

    def _slot(self, var, name: str) -> np.ndarray:
        slots = self.slots.setdefault(var.name, {})
        if name not in slots:
            slots[name] = np.zeros_like(var.value)
        return slots[name]

    def apply(self, variables) -> None:
        """One update of every variable in ``variables`` that has a gradient.

        All or nothing: everything that can fail (a gradient or slot of the wrong shape or
        dtype) is checked before any change, and ``iterations`` counts the step only once
        every variable has its new value. Clipping scales the ``.grad`` arrays in place
        (they belong to this step). Ctrl-C is held until the update is complete (see
        ``hold_interrupts``).
        """
        pairs = [(v, v.grad) for v in variables if v.grad is not None]
        self._check(pairs)
        with hold_interrupts():
            self._apply(pairs)

    def _check(self, pairs) -> None:
        for var, g in pairs:
            if not isinstance(g, np.ndarray) or g.dtype != np.float32 or g.shape != var.shape:
                got = f"{g.dtype} {g.shape}" if isinstance(g, np.ndarray) else type(g).__name__
                raise ValueError(
                    f"the gradient of {var.name!r} must be a float32 array of shape "
                    f"{var.shape}, got {got}"
                )
            for slot, value in self.slots.get(var.name, {}).items():
                if value.shape != var.shape or value.dtype != np.float32:
                    raise ValueError(
                        f"optimizer slot {slot!r} of {var.name!r} has shape {value.shape} "
                        f"({value.dtype}); the variable has {var.shape} (float32)"
                    )

    def _apply(self, pairs) -> None:
        if self.global_clipnorm is not None:
            norm = np.sqrt(sum(float(np.square(g, dtype=np.float64).sum()) for _, g in pairs))
            if norm > self.global_clipnorm:
                for _, g in pairs:
                    g *= np.float32(self.global_clipnorm / norm)
        lr = np.float32(self._lr)
        for var, g in pairs:
            if self.clipnorm is not None:
                norm = float(np.sqrt(np.square(g, dtype=np.float64).sum()))
                if norm > self.clipnorm:
                    g *= np.float32(self.clipnorm / norm)
            if self.clipvalue is not None:
                np.clip(g, -self.clipvalue, self.clipvalue, out=g)
            if self.weight_decay:  # decoupled (AdamW-style), as Keras 3
                with var.updating() as w:
                    w -= (lr * np.float32(self.weight_decay)) * w
            self._update(var, g, lr)
        self._iterations += 1

    def _update(self, var, g: np.ndarray, lr: np.float32) -> None:
        raise NotImplementedError

    def get_config(self) -> dict:
        cfg = {"name": self.name, "learning_rate": self._lr}
        for k in ("clipnorm", "clipvalue", "global_clipnorm", "weight_decay"):
            if getattr(self, k) is not None:
                cfg[k] = getattr(self, k)
        return cfg

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)


class SGD(Optimizer):
    """w -= lr*g; with momentum m = momentum*m - lr*g, w += m (Nesterov: w += momentum*m - lr*g)."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        # 1 would never forget a gradient: divergence
        self.momentum = _real_in(momentum, "momentum", 0, 1)
        self.nesterov = flag(nesterov, "nesterov")

    def _update(self, var, g, lr):
        # one fused pass in the core (no lr*g temporary the size of the weights)
        m = self._slot(var, "momentum") if self.momentum else None
        g = np.ascontiguousarray(g, np.float32)
        with var.updating() as w:
            _core.sgd_update(w, g, m, float(lr), self.momentum, self.nesterov)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam (Kingma & Ba) with Keras's bias correction folded into the step size."""

    def __init__(
        self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, **kwargs
    ):
        super().__init__(learning_rate, **kwargs)
        self.beta_1 = _real_in(beta_1, "beta_1", 0, 1)
        self.beta_2 = _real_in(beta_2, "beta_2", 0, 1)
        self.epsilon = _real_in(epsilon, "epsilon", 0, lo_open=True)
        self.amsgrad = flag(amsgrad, "amsgrad")

    def _update(self, var, g, lr):
        t = self._iterations + 1  # this step (iterations counts it once all of it is done)
        b1, b2 = self.beta_1, self.beta_2
        step = np.float32(lr * np.sqrt(1 - b2**t) / (1 - b1**t))
        m, v = self._slot(var, "m"), self._slot(var, "v")
        vhat = self._slot(var, "vhat") if self.amsgrad else None
        # one fused pass in the core (values and slots are C-contiguous float32 by design)
        g = np.ascontiguousarray(g, np.float32)
        with var.updating() as w:
            _core.adam_update(w, g, m, v, vhat, float(step), b1, b2, self.epsilon)

    def get_config(self):
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "amsgrad": self.amsgrad,
        }


class RMSprop(Optimizer):
    """v = rho*v + (1-rho)*g^2; w -= lr*g/sqrt(v + eps) (centered: v - mean(g)^2)."""

    def __init__(
        self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, **kwargs
    ):
        super().__init__(learning_rate, **kwargs)
        self.rho = _real_in(rho, "rho", 0, 1)
        self.momentum = _real_in(momentum, "momentum", 0, 1)
        self.epsilon = _real_in(epsilon, "epsilon", 0, lo_open=True)
        self.centered = flag(centered, "centered")

    def _update(self, var, g, lr):
        rho = np.float32(self.rho)
        v = self._slot(var, "velocity")
        v *= rho
        v += (1 - rho) * g * g
        denom = v + np.float32(self.epsilon)
        if self.centered:
            mg = self._slot(var, "average_gradient")
            mg *= rho
            mg += (1 - rho) * g
            denom -= mg * mg
        inc = lr * g / np.sqrt(denom)
        if self.momentum:
            m = self._slot(var, "momentum")
            m *= np.float32(self.momentum)
            m += inc
            inc = m
        with var.updating() as w:
            w -= inc

    def get_config(self):
        return {
            **super().get_config(),
            "rho": self.rho,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "centered": self.centered,
        }


_BY_NAME = {"sgd": SGD, "adam": Adam, "rmsprop": RMSprop}
_BY_CLASS = {cls.__name__: cls for cls in _BY_NAME.values()}


def get(identifier) -> Optimizer:
    """An Optimizer from a name ("adam"), a config dict or an Optimizer."""
    return from_registry(identifier, Optimizer, _BY_NAME, _BY_CLASS, "optimizer")


def serialize(opt: Optimizer) -> dict:
    return {"class_name": type(opt).__name__, "config": opt.get_config()}
