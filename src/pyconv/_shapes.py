"""Shape arithmetic, in one place: integer arguments, padding rules and output sizes."""

from __future__ import annotations

import math
import operator
import os

import numpy as np

# (top, bottom, left, right)
Pads = tuple[int, int, int, int]

# The largest stride, kernel size, dilation or padding accepted: every index the C++ core
# computes from them then fits easily in its int64 arithmetic.
MAX_DIM = 2**31 - 1


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: no known bound
        return 2**48


# An array (or workspace) larger than the machine's RAM cannot be computed on: such a
# request (a huge broadcast view, an absurd padding) is refused before anything is allocated.
MEMORY_BYTES = _physical_memory()


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.3g} GiB"


def check_size(count: int, what: str) -> None:
    """Raise ValueError if ``count`` float32 values (described by ``what``) exceed the RAM."""
    if count * 4 > MEMORY_BYTES:
        raise ValueError(
            f"{what} would need {count} float32 values ({_gib(count * 4)}), more than this "
            f"machine's memory ({_gib(MEMORY_BYTES)})"
        )


def available_memory() -> int | None:
    """Bytes the system can hand out now without swapping (Linux's MemAvailable), read afresh
    on each call (about 30 us); None where /proc/meminfo is not there."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# Ops whose buffers together need less than this are not checked against the available
# memory: for them the 30 us read would cost more than it could save.
CHECK_MEMORY_FROM = 64 * 2**20


def check_memory(nbytes: int, what: str) -> None:
    """Raise MemoryError if an op's new buffers, ``nbytes`` together, exceed the memory
    available now.

    Linux overcommits: the allocations themselves would succeed, and the first touch of
    pages that are not there gets the process killed. Idle cached op outputs and this
    thread's kernel workspaces count as available, since the op reuses them.
    """
    if nbytes < CHECK_MEMORY_FROM:
        return
    available = available_memory()
    if available is None:
        return
    from . import _core

    available += _core.buffer_cache_bytes() + _core.workspace_bytes()
    if nbytes > available:
        raise MemoryError(
            f"{what} needs {_gib(nbytes)} of buffers together, more than the {_gib(available)} "
            f"of memory available now"
        )


def size_of(shape) -> int:
    return math.prod(int(d) for d in shape)


def as_int(value, name: str) -> int:
    """An integer argument (Python or NumPy int, not bool)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None


def flag(value, name: str) -> bool:
    """A boolean argument: True/False (or NumPy's); a str such as "no" is an error, not True."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


def real(value, name: str) -> float:
    """A real-number argument (Python or NumPy int/float, not bool, str or complex)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:  # an int beyond float range
        raise ValueError(f"{name} is too large, got {value!r}") from None


def pair(value, name: str, minimum: int, maximum: int = MAX_DIM) -> tuple[int, int]:
    """An int or a pair of ints, each in [minimum, maximum]."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        out = (as_int(value[0], name), as_int(value[1], name))
    else:
        v = as_int(value, name)
        out = (v, v)
    if min(out) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if max(out) > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
    return out


def conv_output_size(size, kernel_size, stride=1, padding=0, dilation=1) -> int:
    """floor((size + pad_lo + pad_hi - dilation*(k-1) - 1) / stride) + 1.

    ``padding`` is an int (both sides) or a (lo, hi) pair. This is the lectures' formula
    (W - F + 2P)/S + 1, extended with dilation.
    """
    size, k = as_int(size, "size"), as_int(kernel_size, "kernel_size")
    s, d = as_int(stride, "stride"), as_int(dilation, "dilation")
    if isinstance(padding, (tuple, list)):
        if len(padding) != 2:
            raise ValueError(f"padding must be an int or a (lo, hi) pair, got {padding!r}")
        lo, hi = (as_int(p, "padding") for p in padding)
    else:
        lo = hi = as_int(padding, "padding")
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    if k < 1 or s < 1 or d < 1 or lo < 0 or hi < 0:
        raise ValueError(
            f"kernel_size, stride and dilation must be >= 1 and padding >= 0, got "
            f"kernel_size={k}, stride={s}, dilation={d}, padding={padding!r}"
        )
    return (size + lo + hi - d * (k - 1) - 1) // s + 1


def same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TF 'same': output ceil(size/s); extra odd padding goes to the bottom/right."""
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def window_centres(pad_lo: int, k: int, s: int, d: int) -> tuple[float, float]:
    """(scale, offset): output cell i's window is centred on input position offset + i*scale
    (pixel centres at integers) -- how a feature map lines up with the image under it."""
    return float(s), (d * (k - 1)) / 2 - pad_lo


def resolve_padding(padding, hw, kernel, stride, dilation) -> Pads:
    """int | (ph, pw) | ((top, bottom), (left, right)) | "valid" | "same" -> 4 pads."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0, 0, 0)
        if mode == "same":
            t, b = same_pads(hw[0], kernel[0], stride[0], dilation[0])
            l, r = same_pads(hw[1], kernel[1], stride[1], dilation[1])
            return (t, b, l, r)
        raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    if (
        isinstance(padding, (tuple, list))
        and len(padding) == 2
        and all(isinstance(p, (tuple, list)) for p in padding)
    ):
        (t, b), (l, r) = (pair(p, "padding", 0) for p in padding)
        return (t, b, l, r)
    ph, pw = pair(padding, "padding", 0)
    return (ph, ph, pw, pw)


def pool_output_size(size: int, k: int, s: int, lo: int, hi: int, ceil_mode: bool) -> int:
    """PyTorch's pooling size rule; with ceil_mode the last window must start inside the
    input or its leading padding."""
    span = size + lo + hi - k  # may be negative: with ceil_mode a window larger than the
    out = (-(-span // s) if ceil_mode else span // s) + 1  # input by < stride still counts
    if ceil_mode and (out - 1) * s >= size + lo:
        out -= 1
    return out
