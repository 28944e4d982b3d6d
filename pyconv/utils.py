"""Seeding and small helpers shared by layers, models and optimizers.

Every random draw in pyconv (initializers, dropout masks, shuffling, validation splits) comes
from a generator spawned off one global ``numpy.random.SeedSequence``. ``set_random_seed(s)``
resets it, so the same script on the same machine and thread count is bit-for-bit repeatable.
"""

from __future__ import annotations

import re

import numpy as np

_seed_seq = np.random.SeedSequence()
_global_rng = np.random.default_rng(_seed_seq.spawn(1)[0])
_name_counts: dict[str, int] = {}


def set_random_seed(seed: int) -> None:
    """Seed every later random draw in pyconv (weights, dropout, shuffling)."""
    global _seed_seq, _global_rng
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    _seed_seq = np.random.SeedSequence(int(seed))
    _global_rng = np.random.default_rng(_seed_seq.spawn(1)[0])


def global_rng() -> np.random.Generator:
    """The generator initializers draw from."""
    return _global_rng


def new_rng(seed: int | None = None) -> np.random.Generator:
    """An independent generator: from ``seed`` if given, else the next child of the global seed."""
    if seed is not None:
        return np.random.default_rng(int(seed))
    return np.random.default_rng(_seed_seq.spawn(1)[0])


def snake_case(name: str) -> str:
    """``MaxPooling2D`` -> ``max_pooling2d`` (Keras's default layer names)."""
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()


def unique_name(prefix: str) -> str:
    """``conv2d``, ``conv2d_1``, ... as Keras names layers and models."""
    n = _name_counts.get(prefix, 0)
    _name_counts[prefix] = n + 1
    return prefix if n == 0 else f"{prefix}_{n}"


def clear_session() -> None:
    """Restart automatic layer and model names from ``conv2d``, ``sequential``, ..."""
    _name_counts.clear()


def shape_str(shape) -> str:
    """``(None, 28, 28, 1)``: a shape as Keras prints it."""
    return (
        "("
        + ", ".join("None" if d is None else str(d) for d in shape)
        + ("," if len(shape) == 1 else "")
        + ")"
    )


def from_registry(identifier, by_name: dict, by_class: dict, what: str, key="class_name"):
    """An object from a lower-case name ("he_normal") or a config dict
    ``{key: class name, "config": {...}}`` (how initializers, regularizers and activations
    are given and saved); None when ``identifier`` is neither (the caller says what to use)."""
    if isinstance(identifier, str) and identifier.lower() in by_name:
        return by_name[identifier.lower()]()
    if (
        isinstance(identifier, dict)
        and isinstance(identifier.get(key), str)
        and identifier[key] in by_class
    ):
        config = identifier.get("config", {})
        if not isinstance(config, dict):
            raise TypeError(f"{what} config must be a dict, got {config!r}")
        return by_class[identifier[key]](**config)
    return None
