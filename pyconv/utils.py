"""Seeding and small helpers shared by layers, models and optimizers.

Every random draw in pyconv (initializers, dropout masks, shuffling, validation splits) comes
from a generator spawned off one global ``numpy.random.SeedSequence``. ``set_random_seed(s)``
resets it, so the same script on the same machine and thread count is bit-for-bit repeatable.
"""

from __future__ import annotations

import os
import re

import numpy as np

from ._shapes import as_int

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


# Keras's own formats: pyconv does not write them, and a pyconv zip under such a name would
# mislead every tool (and person) that trusts the extension.
KERAS_EXTENSIONS = (".keras", ".h5", ".hdf5")


def check_not_keras_path(filepath, what: str) -> None:
    """Refuse a path ending in .keras/.h5/.hdf5 for a file pyconv writes (``what``: the call)."""
    try:
        name = os.fspath(filepath)
    except TypeError:
        return  # not a path: the writer says what it needs
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    if name.lower().endswith(KERAS_EXTENSIONS):
        raise ValueError(
            f"{what}: {name!r} names a Keras file, but pyconv writes its own format (a zip of a "
            "JSON manifest and .npy arrays), not Keras's .keras/.h5; use the .pyconv extension "
            "(e.g. 'model.pyconv') and pyconv.load_model / load_weights to read it back"
        )


def to_categorical(y, num_classes=None, dtype="float32") -> np.ndarray:
    """One-hot rows from integer class indices, as ``keras.utils.to_categorical``: shape
    ``y.shape + (num_classes,)`` (a trailing axis of 1 dropped); num_classes defaults to
    max(y) + 1."""
    y = np.asarray(y)
    if y.dtype.kind not in "iuf" and y.dtype != np.bool_:
        raise TypeError(f"y must hold integer class indices, got dtype {y.dtype}")
    if y.dtype.kind == "f":
        if not np.all(np.mod(y, 1) == 0):  # NaN and infinity fail this too
            raise ValueError("y must hold integer class indices, got non-integer values")
    y = y.astype(np.int64)
    if y.ndim and y.shape[-1] == 1 and y.ndim > 1:
        y = y[..., 0]
    if y.size and y.min() < 0:
        raise ValueError(f"class indices must be >= 0, got {y.min()}")
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
        if num_classes == 0:
            raise ValueError("y is empty: give num_classes")
    num_classes = as_int(num_classes, "num_classes")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if y.size and y.max() >= num_classes:
        raise ValueError(f"class indices must be < num_classes={num_classes}, got {y.max()}")
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be a NumPy dtype, got {dtype!r}") from None
    out = np.zeros((*y.shape, num_classes), dtype=dtype)
    np.put_along_axis(out, y[..., None], 1, axis=-1)
    return out
