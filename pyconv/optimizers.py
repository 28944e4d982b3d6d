"""SGD (momentum, Nesterov), Adam (AMSGrad) and RMSprop, with Keras's update rules.

An optimizer reads each trainable Variable's ``.grad`` and updates ``.value`` in place.
Its state (step count and per-variable slots such as Adam's moments) is keyed by variable
name, so it can be saved with the model and restored to resume training exactly.

An update is all-or-nothing with respect to Ctrl-C: ``apply`` holds SIGINT until every
variable and slot has its new value (``hold_interrupts``), so an interrupted training run
never keeps a step that changed some variables and not others.
"""

from __future__ import annotations

import contextlib
import signal
import threading

import numpy as np

from . import _core


class _Held:
    """State of the main thread's hold_interrupts blocks (only the main thread touches it)."""

    depth = 0  # nesting of blocks
    strict = 0  # nesting of strict blocks
    pending = 0  # SIGINTs received while held
    previous = None  # the handler to put back


def _held_handler(signum, frame):
    _Held.pending += 1
    if _Held.pending >= 2 and not _Held.strict:  # pressed again: stop now (nothing half-done)
        _Held.pending = 0
        raise KeyboardInterrupt


@contextlib.contextmanager
def hold_interrupts(strict: bool = True):
    """Hold Ctrl-C (SIGINT) until the block ends, then raise the KeyboardInterrupt there.

    Makes a multi-array change (an optimizer step, a weight load, a training step) atomic
    with respect to Ctrl-C. With ``strict=False`` a second Ctrl-C raises at once, unless a
    strict block inside is running. Acts only in the main thread (the only one Python
    delivers signals to) while Python's default SIGINT handler is installed; a program
    with its own handler keeps it untouched.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _Held.depth == 0:
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            yield  # the program's own handler (or none): leave it alone
            return
        _Held.previous = signal.signal(signal.SIGINT, _held_handler)
        _Held.pending = 0
    _Held.depth += 1
    _Held.strict += bool(strict)
    try:
        yield
    finally:
        _Held.depth -= 1
        _Held.strict -= bool(strict)
        if _Held.depth == 0:
            signal.signal(signal.SIGINT, _Held.previous)
            if _Held.pending:
                _Held.pending = 0
                raise KeyboardInterrupt


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
        limits = {"clipnorm": clipnorm, "clipvalue": clipvalue}
        limits.update(global_clipnorm=global_clipnorm, weight_decay=weight_decay)
        for arg, v in limits.items():
            if v is not None and not (np.isfinite(v) and v >= 0):
                raise ValueError(f"{arg} must be a number >= 0 or None, got {v!r}")
        self.clipnorm, self.clipvalue = clipnorm, clipvalue
        self.global_clipnorm, self.weight_decay = global_clipnorm, weight_decay
        self.name = name or type(self).__name__.lower()
        self.iterations = 0
        self.slots: dict[str, dict[str, np.ndarray]] = {}

    @property
    def learning_rate(self) -> float:
        return self._lr

    @learning_rate.setter
    def learning_rate(self, value) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"learning_rate must be a float, got {value!r}")
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"learning_rate must be a finite number > 0, got {value!r}")
        self._lr = float(value)

    def _slot(self, var, name: str) -> np.ndarray:
        slots = self.slots.setdefault(var.name, {})
        if name not in slots:
            slots[name] = np.zeros_like(var.value)
        return slots[name]

    def apply(self, variables) -> None:
        """One update of every variable in ``variables`` that has a gradient.

        Clipping scales the ``.grad`` arrays in place (they belong to this step). Ctrl-C is
        held until the update is complete (see ``hold_interrupts``).
        """
        with hold_interrupts():
            self._apply(variables)

    def _apply(self, variables) -> None:
        pairs = [(v, v.grad) for v in variables if v.grad is not None]
        if self.global_clipnorm is not None:
            norm = np.sqrt(sum(float(np.square(g, dtype=np.float64).sum()) for _, g in pairs))
            if norm > self.global_clipnorm:
                for _, g in pairs:
                    g *= np.float32(self.global_clipnorm / norm)
        self.iterations += 1
        lr = np.float32(self._lr)
        for var, g in pairs:
            if self.clipnorm is not None:
                norm = float(np.sqrt(np.square(g, dtype=np.float64).sum()))
                if norm > self.clipnorm:
                    g *= np.float32(self.clipnorm / norm)
            if self.clipvalue is not None:
                np.clip(g, -self.clipvalue, self.clipvalue, out=g)
            if self.weight_decay:  # decoupled (AdamW-style), as Keras 3
                var.value -= (lr * np.float32(self.weight_decay)) * var.value
            self._update(var, g, lr)

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
        if not 0 <= momentum < 1:  # 1 would never forget a gradient: divergence
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def _update(self, var, g, lr):
        if not self.momentum:
            var.value -= lr * g
            return
        m = self._slot(var, "momentum")
        mu = np.float32(self.momentum)
        m *= mu
        m -= lr * g
        if self.nesterov:
            var.value += mu * m - lr * g
        else:
            var.value += m

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam (Kingma & Ba) with Keras's bias correction folded into the step size."""

    def __init__(
        self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, **kwargs
    ):
        super().__init__(learning_rate, **kwargs)
        for arg, v in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0 <= v < 1:
                raise ValueError(f"{arg} must be in [0, 1), got {v!r}")
        self.beta_1, self.beta_2 = float(beta_1), float(beta_2)
        self.epsilon, self.amsgrad = float(epsilon), bool(amsgrad)

    def _update(self, var, g, lr):
        t = self.iterations
        b1, b2 = self.beta_1, self.beta_2
        step = np.float32(lr * np.sqrt(1 - b2**t) / (1 - b1**t))
        m, v = self._slot(var, "m"), self._slot(var, "v")
        vhat = self._slot(var, "vhat") if self.amsgrad else None
        # one fused pass in the core (values and slots are C-contiguous float32 by design)
        g = np.ascontiguousarray(g, np.float32)
        _core.adam_update(var.value, g, m, v, vhat, float(step), b1, b2, self.epsilon)

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
        if not 0 <= rho < 1:
            raise ValueError(f"rho must be in [0, 1), got {rho!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.rho, self.momentum = float(rho), float(momentum)
        self.epsilon, self.centered = float(epsilon), bool(centered)

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
        var.value -= inc

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
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    if isinstance(identifier, dict) and identifier.get("class_name") in _BY_CLASS:
        return _BY_CLASS[identifier["class_name"]].from_config(identifier.get("config", {}))
    raise ValueError(
        f"unknown optimizer {identifier!r}; use 'sgd', 'adam', 'rmsprop' or an Optimizer"
    )


def serialize(opt: Optimizer) -> dict:
    return {"class_name": type(opt).__name__, "config": opt.get_config()}
