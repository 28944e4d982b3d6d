"""Seeding and small helpers shared across pyconv's modules: the float32 conversion every
array goes through on its way to the core, holding Ctrl-C around multi-array changes, the
lookup behind every ``get(identifier)`` registry, automatic names.

Every random draw in pyconv (initializers, dropout masks, shuffling, validation splits) comes
from a generator spawned off one global ``numpy.random.SeedSequence``. ``set_random_seed(s)``
resets it, so the same script on the same machine and thread count is bit-for-bit repeatable.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading

import numpy as np

from ._shapes import CHECK_MEMORY_FROM, MEMORY_BYTES, as_int, check_memory, check_size

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


_FLOAT32 = np.dtype(np.float32)


def real_array(a, name: str, kinds: str = "biuf") -> np.ndarray:
    """``a`` as an ndarray whose dtype kind is one of ``kinds`` (default: bool, ints, floats;
    never complex, object, str, datetime/timedelta or records), else a TypeError naming it."""
    if a is None or isinstance(a, (str, bytes, dict, set)):
        raise TypeError(f"{name} must be an array, got {type(a).__name__}")
    try:
        arr = np.asarray(a)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be an array of numbers: {e}") from None
    if arr.dtype.kind not in kinds:
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


def as_float32(a, name: str) -> np.ndarray:
    """Any real numeric array-like -> float32 ndarray (views kept when already float32)."""
    if type(a) is np.ndarray and a.dtype == _FLOAT32:
        flags = a.flags
        if flags.c_contiguous and flags.aligned:
            return a  # the common case, checked first: a layer's calls are ~2 us of Python each
    arr = real_array(a, name)
    # A (broadcast) view larger than the RAM: the copy below, or the core's packed copy of
    # it, could never be made.
    if arr.size * 4 > MEMORY_BYTES:
        check_size(arr.size, f"{name} of shape {arr.shape}")
    if arr.dtype != _FLOAT32 and arr.size * 4 >= CHECK_MEMORY_FROM:
        check_memory(arr.size * 4, f"the float32 copy of {name} (shape {arr.shape})")
    arr = arr.astype(np.float32, copy=False)
    if any(s % arr.itemsize for s in arr.strides) or not arr.flags.aligned:
        # the core reads whole, aligned floats (ascontiguousarray would hand back a
        # contiguous but misaligned array as it is)
        arr = np.array(arr, order="C", copy=True)
    return arr


class _Held:
    """State of the main thread's hold_interrupts blocks (only the main thread touches it)."""

    depth = 0  # nesting of blocks
    strict = 0  # nesting of strict blocks
    pending = 0  # SIGINTs received while held
    previous = None  # the handler to put back


def _held_handler(signum, frame):
    _Held.pending += 1
    # pressed again inside a non-strict block: stop now (nothing half-done). Never outside a
    # block: signal.signal() runs pending handlers before it swaps them, so this one can run
    # while the outermost block restores the previous handler, and must not raise there.
    if _Held.pending >= 2 and _Held.depth and not _Held.strict:
        _Held.pending = 0
        raise KeyboardInterrupt


@contextlib.contextmanager
def hold_interrupts(strict: bool = True):
    """Hold Ctrl-C (SIGINT) until the block ends, then raise the KeyboardInterrupt there.

    Makes a multi-array change (an optimizer step, a weight load, a training step) atomic
    with respect to Ctrl-C. With ``strict=False`` a second Ctrl-C raises at once, unless a
    strict block inside is running. Acts only in the main thread (the only one Python
    delivers signals to) while Python's default SIGINT handler is installed; a program
    with its own handler keeps it untouched. No press is lost: one that comes before the
    handler is in place raises at the block's start (the default handler), one held raises
    at its end, and one after the default handler is back raises where it lands.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    strict = bool(strict)  # no call (where a signal may run) between the state changes below
    outer = _Held.depth == 0
    if outer and signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield  # the program's own handler (or none): leave it alone
        return
    # The state is ready before the handler goes in (a press the handler takes from then on
    # counts), and the block is open (depth) before the install, so the finally always runs.
    _Held.depth += 1
    _Held.strict += strict
    try:
        if outer:
            _Held.pending = 0
            # a press pending from before raises here, from the default handler: delivered
            _Held.previous = signal.signal(signal.SIGINT, _held_handler)
        yield
    finally:
        _Held.depth -= 1
        _Held.strict -= strict
        if outer and signal.getsignal(signal.SIGINT) is _held_handler:
            # presses pending now are counted by our handler before the swap (depth is 0:
            # it only counts); later ones go to the previous handler
            signal.signal(signal.SIGINT, _Held.previous)
            if _Held.pending:
                _Held.pending = 0
                raise KeyboardInterrupt


def optional_module(name: str, what: str, extra: str):
    """Module ``name`` of an optional dependency, imported where first needed (``import
    pyconv`` never needs one); else ImportError: ``what`` needs it, and the pip extra that
    brings it (``what``: "reading images needs Pillow")."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ImportError(f"{what}: pip install 'pyconv[{extra}]'") from None


def snake_case(name: str) -> str:
    """``MaxPooling2D`` -> ``max_pooling2d`` (Keras's default layer names)."""
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()


def unique_name(prefix: str) -> str:
    """``conv2d``, ``conv2d_1``, ... as Keras names layers and models."""
    n = _name_counts.get(prefix, 0)
    _name_counts[prefix] = n + 1
    return prefix if n == 0 else f"{prefix}_{n}"


def reserve_name(name: str) -> None:
    """Advance the automatic names past ``name`` (a layer read from a file, such as an ONNX
    node named ``dense_3``): a later ``Dense()`` in this process is not named like it, which
    would clash in a new model."""
    m = re.fullmatch(r"(.+?)(?:_(\d+))?", name)
    prefix, n = m.group(1), int(m.group(2) or 0)
    _name_counts[prefix] = max(_name_counts.get(prefix, 0), n + 1)


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


def from_registry(
    identifier, base: type, by_name: dict, by_class: dict, what: str, key="class_name"
):
    """What every ``get(identifier)`` (activations, initializers, losses, optimizers,
    regularizers) returns: ``identifier`` itself when it is a ``base`` instance, else an object
    from a lower-case name ("he_normal") or a config dict ``{key: class name, "config": {...}}``
    (how they are given and saved); ValueError listing the names for anything else."""
    if isinstance(identifier, base):
        return identifier
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
    article = "an" if base.__name__[0] in "AEIOU" else "a"
    raise ValueError(
        f"unknown {what} {identifier!r}; use one of {', '.join(sorted(by_name))} or {article} "
        f"{base.__name__} instance"
    )


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
