"""Fuzzing: every public function of pyconv.functional, every layer and the runtime controls,
called with random and hostile arguments.

The contract asserted for every call: it either returns the right result (against the float64
references of ref64.py and the formulas below; for NaN/inf inputs, the right shape) or raises
TypeError/ValueError whose message names the offending argument. Anything else is a bug: a
crash of the interpreter above all, but also IndexError, AttributeError, ZeroDivisionError,
OverflowError, MemoryError (for requests that could never fit: 2**40 elements must be refused,
not allocated), pybind11's "incompatible function arguments", or NumPy's own messages
leaking out ("could not convert string to float", "operands could not be broadcast", ...).

Bounded: each hypothesis test runs PYCONV_FUZZ_EXAMPLES examples (default 30, well under 20 s
for the file); a campaign runs e.g. PYCONV_FUZZ_EXAMPLES=500. Add --hypothesis-seed=N to
replay a run. Inputs that once failed are kept at the end as plain regression tests.
"""

from __future__ import annotations

import contextlib
import math
import operator
import os
import re

import numpy as np
import pytest
import ref64
from conftest import assert_close
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import pyconv
from pyconv import functional as F
from pyconv import layers as L

EXAMPLES = int(os.environ.get("PYCONV_FUZZ_EXAMPLES", "30"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
ISAS = st.sampled_from(pyconv.available_isas())
# NaN/inf inputs make NumPy warn (in the references and in the activations): expected here.
pytestmark = [
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
    # hypothesis's report of a failing (or xfail) example imports libcst, which warns
    pytest.mark.filterwarnings("ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"),
]

# --- the contract ----------------------------------------------------------------------------

# Text of errors that are not pyconv's own: internals leaking out instead of a clear message.
FOREIGN = (
    "incompatible function arguments",
    "std::",
    "bad_alloc",
    "could not convert",
    "unhashable",
    "not iterable",
    "not supported between",
    "ufunc",
    "values to unpack",
    "invalid literal",
    "could not be broadcast",
    "cannot reshape array",
    "has no attribute",
    "argument after **",
    "only 0-dimensional",
    "only length-1",
    "Unable to allocate",
    "float() argument",
    "int() argument",
    "bad operand type",
    "object cannot be interpreted",
    "index out of range",
)


class Raised:
    """What attempt() returns when the call raised a clear error."""

    def __init__(self, err):
        self.err = err


def _mentions(name: str, msg: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", msg) is not None


def check_clear(err: BaseException, names) -> None:
    """err is TypeError/ValueError with our own message naming one of ``names``."""
    assert isinstance(err, (TypeError, ValueError)), f"{type(err).__name__}: {err}"
    msg = str(err)
    assert msg, f"{type(err).__name__} without a message"
    for bad in FOREIGN:
        assert bad not in msg, f"unclear {type(err).__name__} ({bad!r}): {msg}"
    assert any(_mentions(n, msg) for n in names), (
        f"{type(err).__name__} names none of {sorted(set(names))}: {msg}"
    )


def attempt(names, fn, *args, **kwargs):
    """fn(*args, **kwargs), or Raised(error) after a clear TypeError/ValueError naming one of
    ``names``; any other exception propagates and fails the test."""
    try:
        return fn(*args, **kwargs)
    except (TypeError, ValueError) as e:
        check_clear(e, names)
        return Raised(e)


@contextlib.contextmanager
def on_isa(isa):
    previous = pyconv.get_isa()
    pyconv.set_isa(isa)
    try:
        yield
    finally:
        pyconv.set_isa(previous)


# --- hostile values --------------------------------------------------------------------------

HUGE_INTS = [2**31 - 1, 2**31, 2**40, 2**62, 2**63 - 1, 2**63, 2**64, 2**70, -(2**63), -(2**70)]
HOSTILE = [
    None, "", "1", "same", "valid", "NCHW", "relu", b"1", 1.0, 1.5, -0.5, float("nan"),
    float("inf"), -float("inf"), True, False, 1j, [], [1], [1, 2, 3], (), (1, 2, 3), ((1, 2),),
    ((1, 2), (3,)), ((1, 2), 3), ("1", 2), (None, 1), (1.5, 1), {}, {"a": 1}, set(), object(),
    slice(1), np.float64(1.0), np.float32(2.5), np.bool_(True), np.array([1, 2]), np.array(2.0),
    np.array([[1, 2], [3, 4]]), np.int64(-1), np.uint64(2**64 - 1), np.array(["a"]), 0, -1, 2, 3,
    *HUGE_INTS,
]  # fmt: skip
hostile = st.one_of(
    st.sampled_from(HOSTILE),
    st.integers(-4, 9),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.lists(st.integers(-2, 4), max_size=3),
)


class Garbage(Exception):
    """The test cannot read a value pyconv accepted: pyconv accepted garbage."""


def n_int(v) -> int:
    if isinstance(v, (bool, np.bool_)):
        raise Garbage(v)
    try:
        return operator.index(v)
    except TypeError:
        raise Garbage(v) from None


def n_pair(v) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise Garbage(v)
        return n_int(v[0]), n_int(v[1])
    return (n_int(v),) * 2


def n_flag(v) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise Garbage(v)
    return bool(v)


def n_real(v) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise Garbage(v)
    return float(v)


def n_fmt(v) -> str:
    spellings = {"NCHW": "NCHW", "CHANNELS_FIRST": "NCHW", "NHWC": "NHWC", "CHANNELS_LAST": "NHWC"}
    if not isinstance(v, str) or v.upper() not in spellings:
        raise Garbage(v)
    return spellings[v.upper()]


def n_wfmt(v) -> str:
    if not isinstance(v, str) or v.upper() not in ("OIHW", "HWIO"):
        raise Garbage(v)
    return v.upper()


def n_pads(p, hw, k, s, d, nested=True) -> tuple[int, int, int, int]:
    """int | pair | ((t, b), (l, r)) | "same" | "valid" -> (t, b, l, r)."""
    if isinstance(p, str):
        if p.lower() == "valid":
            return (0, 0, 0, 0)
        if p.lower() == "same":
            return (*ref64.resolve_same(hw[0], k[0], s[0], d[0]),
                    *ref64.resolve_same(hw[1], k[1], s[1], d[1]))  # fmt: skip
        raise Garbage(p)
    if nested and isinstance(p, (tuple, list)) and len(p) == 2:
        if all(isinstance(q, (tuple, list)) for q in p):
            return (*n_pair(p[0]), *n_pair(p[1]))
    ph, pw = n_pair(p)
    return (ph, ph, pw, pw)


def n_array(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float64)


def _n_padding(v):
    return n_pads(v, (1, 1), (1, 1), (1, 1), (1, 1))


def _n_choice(*options):
    def check(v):
        if not (v is None or isinstance(v, str)) or v not in options:
            raise Garbage(v)
        return v

    return check


# What a valid value of each scalar argument looks like (whatever it then means for the call).
VALIDATORS = {
    "stride": lambda v: None if v is None else n_pair(v),
    "dilation": n_pair, "kernel_size": n_pair, "padding": _n_padding, "groups": n_int,
    "size": n_int, "key": n_int, "data_format": n_fmt, "weight_format": n_wfmt,
    "ceil_mode": n_flag, "count_include_pad": n_flag, "keepdims": n_flag, "grad_input": n_flag,
    "grad_weight": n_flag, "grad_bias": n_flag, "batch_stats": n_flag, "epsilon": n_real,
    "rate": n_real, "fill_value": n_real, "activation": _n_choice(None, "linear", "relu"),
    "fill_mode": _n_choice("constant", "nearest", "reflect"),
}  # fmt: skip


def well_formed(name, value) -> bool:
    """value has the form of a valid ``name`` (it may still not fit this call)."""
    try:
        VALIDATORS[name](value)
        return True
    except (Garbage, KeyError):
        return False


# Equivalent spellings of a valid argument value (each must give the same result).
def int_forms(v):
    forms = [v, np.int64(v), np.int32(v), np.array(v)]
    return forms + ([np.uint8(v)] if 0 <= v < 256 else [])


def pair_forms(v):
    a, b = v
    forms = [(a, b), [a, b], (np.int64(a), np.int16(b)), np.array([a, b]).tolist()]
    return forms + (int_forms(a) if a == b else [])


def pad_forms(p, nested=True):
    if isinstance(p, str):
        return [p, p.upper(), p.title()]
    if isinstance(p, int):
        return [*int_forms(p), (p, p), [p, p]] + ([((p, p), (p, p))] if nested else [])
    if isinstance(p[0], int):
        return [*pair_forms(p)] + ([((p[0], p[0]), [p[1], p[1]])] if nested else [])
    return [p, [list(p[0]), list(p[1])], (tuple(map(np.int64, p[0])), p[1])]


def fmt_forms(f):
    return {"NCHW": ["NCHW", "nchw", "channels_first", "Channels_First"],
            "NHWC": ["NHWC", "nhwc", "channels_last", "CHANNELS_LAST"]}[f]  # fmt: skip


def flag_forms(b):
    return [b, np.bool_(b)]


def real_forms(v):
    return [v, np.float64(v), np.float32(v)]


def scalar_variants(forms):
    """(value, "same") for an equivalent spelling, or (a hostile value, "other")."""
    return st.one_of(
        st.sampled_from(forms).map(lambda v: (v, "same")),
        hostile.map(lambda v: (v, "other")),
    )


# --- hostile arrays --------------------------------------------------------------------------


def _unaligned(a):
    out = np.ndarray(a.shape, np.float32, buffer=bytearray(a.size * 4 + 1), offset=1)
    out[...] = a
    return out


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _strided(a):
    big = np.zeros(tuple(2 * s for s in a.shape), np.float32)
    view = big[tuple(slice(None, None, 2) for _ in a.shape)]
    view[...] = a
    return view


def _flipped(a):
    axes = tuple(range(a.ndim))
    return np.flip(np.flip(a, axes).copy(), axes)  # a view with negative strides


def _nonfinite(a, values):
    b = a.astype(np.float32, copy=True)
    flat = b.reshape(-1)
    flat[:: max(1, flat.size // 3)] = values[0]
    flat[-1] = values[-1]
    return b


def _empty_axis(a):
    shape = list(a.shape)
    shape[len(shape) // 2] = 0
    return np.zeros(shape, np.float32)


def _huge(a):
    """A broadcast view of 2**40 elements (no memory), of a's ndim."""
    nd = max(a.ndim, 1)
    per = [40 // nd + (i < 40 % nd) for i in range(nd)]
    return np.broadcast_to(np.float32(1), tuple(2**p for p in per))


# name -> (kind, builder). Kinds: "same" (an equivalent array: must give the same result as the
# float64 values it holds), "nonfinite" (NaN/inf/overflowing values: right shape, no other
# error), "bad" (no real-number array: must raise), "shape" (another shape: raises, or succeeds
# where any shape is fine), "huge" (2**40 elements: must raise ValueError, not allocate).
ARRAY_FORMS = {
    "float32": ("same", lambda a: a),
    "float64": ("same", lambda a: a.astype(np.float64)),
    "float16": ("same", lambda a: a.astype(np.float16)),
    "longdouble": ("same", lambda a: a.astype(np.longdouble)),
    "int32": ("same", lambda a: np.round(a * 3).astype(np.int32)),
    "uint8": ("same", lambda a: np.abs(np.round(a * 3)).astype(np.uint8)),
    "bool": ("same", lambda a: a > 0),
    "list": ("same", lambda a: a.tolist()),
    "strided": ("same", _strided),
    "negative_strides": ("same", _flipped),
    "fortran": ("same", np.asfortranarray),
    "readonly": ("same", _readonly),
    "broadcast": ("same", lambda a: np.broadcast_to(a.reshape(-1)[:1].reshape((1,) * a.ndim), a.shape)),
    "big_endian": ("same", lambda a: a.astype(">f4")),
    "unaligned": ("same", _unaligned),
    "masked": ("same", lambda a: np.ma.masked_array(a, mask=a > 1)),
    "nan": ("nonfinite", lambda a: _nonfinite(a, [np.nan])),
    "inf": ("nonfinite", lambda a: _nonfinite(a, [np.inf, -np.inf])),
    "mixed": ("nonfinite", lambda a: _nonfinite(a, [np.inf, np.nan, -np.inf])),
    "overflowing": ("nonfinite", lambda a: (a * 3e38).astype(np.float32)),
    "float64_beyond_float32": ("nonfinite", lambda a: a.astype(np.float64) * 1e300),
    "complex": ("bad", lambda a: a.astype(np.complex64)),
    "object": ("bad", lambda a: a.astype(object)),
    "str": ("bad", lambda a: a.astype(str)),
    "bytes": ("bad", lambda a: a.astype("S4")),
    "datetime": ("bad", lambda a: np.zeros(a.shape, "datetime64[s]")),
    "timedelta": ("bad", lambda a: np.zeros(a.shape, "timedelta64[s]")),
    "structured": ("bad", lambda a: np.zeros(a.shape, [("v", "f4")])),
    "None": ("bad", lambda a: None),
    "text": ("bad", lambda a: "abc"),
    "dict": ("bad", lambda a: {"x": a}),
    "object()": ("bad", lambda a: object()),
    "ragged": ("bad", lambda a: [[1.0, 2.0], [3.0]]),
    "set": ("bad", lambda a: {1.0, 2.0}),
    "extra_axis": ("shape", lambda a: a[None]),
    "drop_axis": ("shape", lambda a: a[0]),
    "flat": ("shape", lambda a: a.reshape(-1)),
    "empty_axis": ("shape", _empty_axis),
    "numpy_scalar": ("shape", lambda a: np.float32(1.5)),
    "python_scalar": ("shape", lambda a: 2.0),
    "huge": ("huge", _huge),
}  # fmt: skip


def _variant(a, form):
    kind, make = ARRAY_FORMS[form]
    value = make(a)
    if kind == "shape" and np.shape(value) == a.shape:  # flattening a 1-D array
        kind = "same"
    return value, kind, form


def array_variants(a):
    """(value, kind, form) for the valid array a."""
    return st.sampled_from(sorted(ARRAY_FORMS)).map(lambda f: _variant(a, f))


def _snapshot(v):
    if isinstance(v, np.ndarray) and v.dtype.kind in "biuf" and v.size <= 2**16:
        return v, np.array(v, copy=True)
    return None


def _finite(v) -> bool:
    """Finite once converted to float32 (1e300 in float64 is not)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.asarray(v, np.float64).astype(np.float32)).all())


def _layout(a, fmt):
    """NCHW array -> the caller's layout."""
    return a.transpose(0, 2, 3, 1) if fmt == "NHWC" else a


def _nchw(a, fmt):
    return a.transpose(0, 3, 1, 2) if fmt == "NHWC" else a


# --- the functions and their references -------------------------------------------------------


class Spec:
    """One public function: a strategy of valid problems (keyword arguments), its array and
    scalar arguments, the equivalent spellings of each scalar, and a float64 reference of
    its outputs from normalized arguments (arrays as float64, the rest via n_*)."""

    def __init__(
        self, fn, problem, arrays, scalars, reference, also=(), any_shape=False, optional=()
    ):
        self.fn, self.problem, self.arrays, self.scalars = fn, problem, arrays, scalars
        self.reference, self.also, self.any_shape = reference, tuple(also), any_shape
        self.optional = optional  # array arguments that may be None

    def __repr__(self):
        return self.fn.__name__


def _seeded(draw):
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


def _padding_strategy(nested):
    pads = [st.sampled_from(["same", "valid"]), st.integers(0, 2),
            st.tuples(st.integers(0, 2), st.integers(0, 2))]  # fmt: skip
    if nested:
        pads.append(st.tuples(st.tuples(st.integers(0, 2), st.integers(0, 2)),
                              st.tuples(st.integers(0, 2), st.integers(0, 2))))  # fmt: skip
    return st.one_of(*pads)


@st.composite
def conv_problem(draw, backward=False):
    rng = _seeded(draw)
    groups = draw(st.sampled_from([1, 1, 2]))
    cg, og = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = draw(_padding_strategy(nested=True))
    h = draw(st.integers((k[0] - 1) * d[0] + 1, (k[0] - 1) * d[0] + 5))
    w = draw(st.integers((k[1] - 1) * d[1] + 1, (k[1] - 1) * d[1] + 5))
    n = draw(st.integers(1, 2))
    fmt, wfmt = draw(st.sampled_from(["NCHW", "NHWC"])), draw(st.sampled_from(["OIHW", "HWIO"]))
    x = rng.standard_normal((n, cg * groups, h, w)).astype(np.float32)
    wt = rng.standard_normal((og * groups, cg, *k)).astype(np.float32)
    kw = dict(
        x=_layout(x, fmt),
        w=wt.transpose(2, 3, 1, 0) if wfmt == "HWIO" else wt,
        stride=s, padding=padding, dilation=d, groups=groups,
        data_format=fmt, weight_format=wfmt,
    )  # fmt: skip
    if backward:
        pads = n_pads(padding, (h, w), k, s, d)
        oshape = ref64.conv2d(x, wt, None, s, pads, d, groups).shape
        kw["grad_out"] = _layout(rng.standard_normal(oshape).astype(np.float32), fmt)
        for name in ("grad_input", "grad_weight", "grad_bias"):
            kw[name] = draw(st.booleans())
    else:
        kw["bias"] = draw(st.sampled_from([None, rng.standard_normal(og * groups)]))
        if kw["bias"] is not None:
            kw["bias"] = kw["bias"].astype(np.float32)
        kw["activation"] = draw(st.sampled_from([None, "linear", "relu"]))
    return kw


def _conv_geometry(kw):
    fmt, wfmt = n_fmt(kw["data_format"]), n_wfmt(kw["weight_format"])
    x = _nchw(n_array(kw["x"]), fmt)
    w = n_array(kw["w"])
    if w.ndim == 4 and wfmt == "HWIO":
        w = w.transpose(3, 2, 0, 1)
    s, d, g = n_pair(kw["stride"]), n_pair(kw["dilation"]), n_int(kw["groups"])
    pads = n_pads(kw["padding"], x.shape[2:], w.shape[2:], s, d)
    return fmt, wfmt, x, w, s, d, g, pads


def conv2d_reference(kw):
    fmt, _, x, w, s, d, g, pads = _conv_geometry(kw)
    b = None if kw["bias"] is None else n_array(kw["bias"])
    y = ref64.conv2d(x, w, b, s, pads, d, g)
    if kw["activation"] == "relu":
        y = np.maximum(y, 0)
    elif kw["activation"] not in (None, "linear"):
        raise Garbage(kw["activation"])
    return (_layout(y, fmt),)


def conv2d_backward_reference(kw):
    fmt, wfmt, x, w, s, d, g, pads = _conv_geometry(kw)
    gy = _nchw(n_array(kw["grad_out"]), fmt)
    gx, gw, gb = ref64.conv2d_backward(gy, x, w, s, pads, d, g)
    if wfmt == "HWIO":
        gw = gw.transpose(2, 3, 1, 0)
    flags = [n_flag(kw[k]) for k in ("grad_input", "grad_weight", "grad_bias")]
    return tuple(v if f else None for v, f in zip((_layout(gx, fmt), gw, gb), flags))


CONV_SCALARS = {
    "stride": pair_forms,
    "dilation": pair_forms,
    "padding": pad_forms,
    "groups": int_forms,
    "data_format": fmt_forms,
    "weight_format": lambda f: [f, f.lower()],
}


@st.composite
def pool_problem(draw, backward=False, avg=False):
    rng = _seeded(draw)
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    padding = draw(
        st.one_of(
            st.sampled_from(["same", "valid"]),
            st.tuples(st.integers(0, k[0] // 2), st.integers(0, k[1] // 2)),
        )
    )
    ceil_mode = draw(st.booleans())
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    h, w = draw(st.integers(k[0], k[0] + 5)), draw(st.integers(k[1], k[1] + 5))
    fmt = draw(st.sampled_from(["NCHW", "NHWC"]))
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    kw = dict(x=_layout(x, fmt), kernel_size=k, stride=stride, padding=padding,
              ceil_mode=ceil_mode, data_format=fmt)  # fmt: skip
    if avg:
        kw["count_include_pad"] = draw(st.booleans())
    if backward:
        s = k if stride is None else stride
        pads = n_pads(padding, (h, w), k, s, (1, 1), nested=False)
        oshape = ref64.max_pool2d(x, k, s, pads, ceil_mode).shape
        kw["grad_out"] = _layout(rng.standard_normal(oshape).astype(np.float32), fmt)
    return kw


def _pool_geometry(kw):
    fmt = n_fmt(kw["data_format"])
    x = _nchw(n_array(kw["x"]), fmt)
    k = n_pair(kw["kernel_size"])
    s = k if kw["stride"] is None else n_pair(kw["stride"])
    pads = n_pads(kw["padding"], x.shape[2:], k, s, (1, 1), nested=False)
    return fmt, x, k, s, pads, n_flag(kw["ceil_mode"])


def pool_reference(kind, backward):
    def reference(kw):
        fmt, x, k, s, pads, ceil = _pool_geometry(kw)
        extra = (n_flag(kw["count_include_pad"]),) if kind == "avg" else ()
        if backward:
            gy = _nchw(n_array(kw["grad_out"]), fmt)
            f = ref64.max_pool2d_backward if kind == "max" else ref64.avg_pool2d_backward
            return (_layout(f(gy, x, k, s, pads, ceil, *extra), fmt),)
        f = ref64.max_pool2d if kind == "max" else ref64.avg_pool2d
        return (_layout(f(x, k, s, pads, ceil, *extra), fmt),)

    return reference


POOL_SCALARS = {
    "kernel_size": pair_forms,
    "stride": lambda s: [None] if s is None else pair_forms(s),
    "padding": lambda p: pad_forms(p, nested=False),
    "ceil_mode": flag_forms,
    "data_format": fmt_forms,
}


@st.composite
def global_problem(draw, backward=False):
    rng = _seeded(draw)
    n, c, h, w = (draw(st.integers(1, 3)) for _ in range(4))
    fmt = draw(st.sampled_from(["NCHW", "NHWC"]))
    kw = dict(x=_layout(rng.standard_normal((n, c, h, w)).astype(np.float32), fmt), data_format=fmt)
    if backward:
        kw["grad_out"] = rng.standard_normal((n, c)).astype(np.float32)
    else:
        kw["keepdims"] = draw(st.booleans())
    return kw


def global_reference(kw):
    fmt = n_fmt(kw["data_format"])
    x = _nchw(n_array(kw["x"]), fmt)
    y = x.mean(axis=(2, 3), keepdims=True)
    return (_layout(y, fmt) if n_flag(kw["keepdims"]) else y[:, :, 0, 0],)


def global_backward_reference(kw):
    fmt = n_fmt(kw["data_format"])
    x = _nchw(n_array(kw["x"]), fmt)
    gy = n_array(kw["grad_out"])
    if gy.shape != x.shape[:2]:  # the keepdims spellings
        gy = gy.reshape(x.shape[:2])
    return (
        _layout(np.broadcast_to(gy[:, :, None, None] / (x.shape[2] * x.shape[3]), x.shape), fmt),
    )


@st.composite
def bn_problem(draw, backward=False):
    rng = _seeded(draw)
    m, c = draw(st.integers(2, 6)), draw(st.integers(1, 4))
    # rows apart (variance >= 1/16): with var ~ 0 the float32 results lose digits legitimately
    x = (rng.standard_normal((m, c)) + 0.5 * np.arange(m)[:, None]).astype(np.float32)
    kw = dict(x=x, epsilon=draw(st.sampled_from([1e-3, 1e-5, 0.5])))
    gamma = rng.standard_normal(c).astype(np.float32) + 1
    kw["gamma"] = draw(st.sampled_from([None, gamma]))
    if backward:
        kw["grad_out"] = rng.standard_normal((m, c)).astype(np.float32)
        kw["mean"] = x.astype(np.float64).mean(0).astype(np.float32)
        kw["var"] = x.astype(np.float64).var(0).astype(np.float32)
        kw["batch_stats"], kw["grad_input"] = draw(st.booleans()), draw(st.booleans())
    else:
        kw["beta"] = draw(st.sampled_from([None, rng.standard_normal(c).astype(np.float32)]))
    return kw


def bn_reference(kw):
    x, eps = n_array(kw["x"]), n_real(kw["epsilon"])
    mean, var = x.mean(0), x.var(0)
    y = (x - mean) / np.sqrt(var + eps)
    if kw["gamma"] is not None:
        y = y * n_array(kw["gamma"])
    if kw["beta"] is not None:
        y = y + n_array(kw["beta"])
    return y, mean, var


def bn_backward_reference(kw):
    x, gy, eps = n_array(kw["x"]), n_array(kw["grad_out"]), n_real(kw["epsilon"])
    mean, var = n_array(kw["mean"]), n_array(kw["var"])
    g = 1.0 if kw["gamma"] is None else n_array(kw["gamma"])
    inv = 1 / np.sqrt(var + eps)
    xhat = (x - mean) * inv
    if n_flag(kw["batch_stats"]):
        dx = g * inv * (gy - gy.mean(0) - xhat * (gy * xhat).mean(0))
    else:
        dx = g * inv * gy
    return (dx if n_flag(kw["grad_input"]) else None), (gy * xhat).sum(0), gy.sum(0)


@st.composite
def affine_problem(draw):
    rng = _seeded(draw)
    m, c = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    return dict(x=rng.standard_normal((m, c)).astype(np.float32),
                scale=rng.standard_normal(c).astype(np.float32),
                shift=rng.standard_normal(c).astype(np.float32))  # fmt: skip


@st.composite
def relu_problem(draw):
    rng = _seeded(draw)
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)))
    return dict(grad_out=rng.standard_normal(shape).astype(np.float32),
                y=np.maximum(rng.standard_normal(shape), 0).astype(np.float32))  # fmt: skip


@st.composite
def dropout_problem(draw):
    rng = _seeded(draw)
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
    return dict(x=rng.standard_normal(shape).astype(np.float32),
                rate=draw(st.sampled_from([0.0, 0.1, 0.5, 0.9])),
                key=draw(st.integers(0, 2**64 - 1)))  # fmt: skip


def dropout_check(kw, y):
    """No float reference: every output is 0 or x / (1 - rate), and the mask is a function
    of (shape, rate, key) alone."""
    x, rate = n_array(kw["x"]), n_real(kw["rate"])
    key = n_int(kw["key"])
    assert y.shape == x.shape
    if _finite(x):
        kept = y != 0
        assert_close(np.where(kept, y, 0), np.where(kept, x / (1 - rate), 0), rtol=1e-6)
        if rate == 0:
            assert_close(y, x, rtol=0)
    np.testing.assert_array_equal(F.dropout(np.ones(x.shape), rate, key) != 0,
                                  F.dropout(np.ones(x.shape), rate, key) != 0)  # fmt: skip


@st.composite
def warp_problem(draw):
    rng = _seeded(draw)
    n, h, w, c = draw(st.integers(1, 2)), draw(st.integers(1, 5)), draw(st.integers(1, 5)), 2
    m = np.concatenate([rng.uniform(-2, 2, (n, 2, 2)), rng.uniform(-6, 6, (n, 2, 1))], axis=2)
    return dict(x=rng.standard_normal((n, h, w, c)).astype(np.float32),
                matrices=m.astype(np.float32),
                fill_mode=draw(st.sampled_from(["constant", "nearest", "reflect"])),
                fill_value=draw(st.sampled_from([0.0, -1.5, 2.0])))  # fmt: skip


def warp_reference(kw):
    """Bilinear sampling at matrices[n] @ (col, row, 1); outside points per fill_mode."""
    x, m = n_array(kw["x"]), n_array(kw["matrices"])
    mode, fill = kw["fill_mode"], n_real(kw["fill_value"])
    if mode not in ("constant", "nearest", "reflect"):
        raise Garbage(mode)
    n, h, w, c = x.shape
    rows, cols = np.mgrid[0:h, 0:w]
    out = np.zeros(x.shape)

    def fold(i, size):
        if mode == "nearest":
            return np.clip(i, 0, size - 1), np.ones(i.shape, bool)
        if mode == "reflect":
            r = np.mod(i, 2 * size)
            return np.where(r < size, r, 2 * size - 1 - r), np.ones(i.shape, bool)
        inside = (i >= 0) & (i < size)
        return np.clip(i, 0, size - 1), inside

    for k in range(n):
        sx = m[k, 0, 0] * cols + m[k, 0, 1] * rows + m[k, 0, 2]
        sy = m[k, 1, 0] * cols + m[k, 1, 1] * rows + m[k, 1, 2]
        x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
        ax, ay = (sx - x0)[..., None], (sy - y0)[..., None]
        for dy_, wy in ((0, 1 - ay), (1, ay)):
            for dx_, wx in ((0, 1 - ax), (1, ax)):
                (yy, iny), (xx, inx) = fold(y0 + dy_, h), fold(x0 + dx_, w)
                val = np.where((iny & inx)[..., None], x[k][yy, xx], fill)
                out[k] += wy * wx * val
    return (out,)


@st.composite
def output_size_problem(draw):
    k, s, d = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(st.one_of(st.integers(0, 3), st.tuples(st.integers(0, 3), st.integers(0, 3))))
    return dict(size=draw(st.integers(0, 40)), kernel_size=k, stride=s, padding=padding, dilation=d)


def output_size_reference(kw):
    size, k, s, d = (n_int(kw[a]) for a in ("size", "kernel_size", "stride", "dilation"))
    lo, hi = n_pair(kw["padding"])
    if size < 0 or k < 1 or s < 1 or d < 1 or lo < 0 or hi < 0:
        raise Garbage(kw)
    return (size + lo + hi - d * (k - 1) - 1) // s + 1


SPECS = [
    Spec(F.conv2d, conv_problem(), ["x", "w", "bias"],
         {**CONV_SCALARS, "activation": lambda a: [None, "linear"] if a in (None, "linear") else [a]},
         conv2d_reference, also=["kernel", "padded"], optional=["bias"]),
    Spec(F.conv2d_backward, conv_problem(backward=True), ["grad_out", "x", "w"],
         {**CONV_SCALARS, "grad_input": flag_forms, "grad_weight": flag_forms,
          "grad_bias": flag_forms},
         conv2d_backward_reference, also=["grad_out", "kernel", "padded"]),
    Spec(F.max_pool2d, pool_problem(), ["x"], POOL_SCALARS, pool_reference("max", False)),
    Spec(F.max_pool2d_backward, pool_problem(backward=True), ["grad_out", "x"], POOL_SCALARS,
         pool_reference("max", True), also=["grad_out"]),
    Spec(F.avg_pool2d, pool_problem(avg=True), ["x"],
         {**POOL_SCALARS, "count_include_pad": flag_forms}, pool_reference("avg", False)),
    Spec(F.avg_pool2d_backward, pool_problem(backward=True, avg=True), ["grad_out", "x"],
         {**POOL_SCALARS, "count_include_pad": flag_forms}, pool_reference("avg", True),
         also=["grad_out"]),
    Spec(F.global_avg_pool2d, global_problem(), ["x"],
         {"data_format": fmt_forms, "keepdims": flag_forms}, global_reference),
    Spec(F.global_avg_pool2d_backward, global_problem(backward=True), ["grad_out", "x"],
         {"data_format": fmt_forms}, global_backward_reference, also=["grad_out"]),
    Spec(F.batch_norm, bn_problem(), ["x", "gamma", "beta"], {"epsilon": real_forms},
         bn_reference, optional=["gamma", "beta"]),
    Spec(F.batch_norm_backward, bn_problem(backward=True), ["grad_out", "x", "mean", "var", "gamma"],
         {"epsilon": real_forms, "batch_stats": flag_forms, "grad_input": flag_forms},
         bn_backward_reference, also=["grad_out"], optional=["gamma"]),
    Spec(F.channel_affine, affine_problem(), ["x", "scale", "shift"], {},
         lambda kw: (n_array(kw["x"]) * n_array(kw["scale"]) + n_array(kw["shift"]),)),
    Spec(F.relu_backward, relu_problem(), ["grad_out", "y"], {},
         lambda kw: (n_array(kw["grad_out"]) * (n_array(kw["y"]) > 0),), also=["grad_out"]),
    Spec(F.dropout, dropout_problem(), ["x"],
         {"rate": lambda r: [r, np.float64(r)],
          "key": lambda k: [k, np.uint64(k)] + ([np.int64(k)] if k < 2**63 else [])},
         None, any_shape=True),
    Spec(F.affine_warp, warp_problem(), ["x", "matrices"],
         {"fill_mode": lambda f: [f], "fill_value": real_forms}, warp_reference),
    Spec(F.conv_output_size, output_size_problem(), [],
         {"size": int_forms, "kernel_size": int_forms, "stride": int_forms,
          "dilation": int_forms, "padding": lambda p: pair_forms(p) if isinstance(p, tuple) else int_forms(p)},
         output_size_reference),
]  # fmt: skip


def test_every_public_function_is_fuzzed():
    """A new public function of pyconv.functional must get a Spec here."""
    fuzzed = {spec.fn.__name__ for spec in SPECS}
    public = {
        name
        for name in dir(F)
        if not name.startswith("_")
        and callable(getattr(F, name))
        and getattr(getattr(F, name), "__module__", "") == F.__name__
    }
    assert public <= fuzzed, f"not fuzzed: {sorted(public - fuzzed)}"


def _check_outputs(spec, kw, out, finite):
    ref = spec.reference(kw)
    if spec.fn is F.conv_output_size:
        assert isinstance(out, int) and out == ref, (out, ref)
        return
    outs = out if isinstance(out, tuple) else (out,)
    assert len(outs) == len(ref)
    for i, (o, r) in enumerate(zip(outs, ref)):
        if r is None:
            assert o is None, f"output {i}: not asked for, got {type(o).__name__}"
            continue
        assert isinstance(o, np.ndarray) and o.dtype == np.float32, f"output {i}: {o!r:.80}"
        assert o.flags.c_contiguous, f"output {i} is not C-contiguous"
        assert o.shape == r.shape, f"output {i}: shape {o.shape}, expected {r.shape}"
        if finite:
            assert_close(o, r, rtol=1e-4, name=f"{spec!r} output {i}")


@pytest.mark.parametrize("spec", SPECS, ids=repr)
@FUZZ
@given(data=st.data())
def test_functional_one_hostile_argument(spec, data):
    """One argument of a valid call replaced by an equivalent spelling (must give the same
    result), or by a hostile value (right result or a clear error naming it)."""
    kw = data.draw(spec.problem, label="problem")
    target = data.draw(st.sampled_from(spec.arrays + sorted(spec.scalars)), label="target")
    if target in spec.arrays and kw[target] is not None:
        value, kind, form = data.draw(array_variants(np.asarray(kw[target])), label=target)
    elif target in spec.arrays:  # an optional array left out (bias=None)
        value, kind = data.draw(scalar_variants([None]), label=target)
        form = kind
    else:
        value, kind = data.draw(scalar_variants(spec.scalars[target](kw[target])), label=target)
        form = kind
    if value is None and target in spec.optional:
        kind = "other"
    kw[target] = value
    snapshots = [s for s in map(_snapshot, kw.values()) if s is not None]
    # a well-formed other value (stride 1 for 2, "NCHW" for "NHWC") changes the meaning of
    # the call: then the error may be about any argument
    names = [target, *spec.also]
    if kind == "other" and target not in spec.arrays and well_formed(target, value):
        names += list(kw)
    with on_isa(data.draw(ISAS, label="isa")):
        out = attempt(names, spec.fn, **kw)
    for arr, before in snapshots:  # inputs are read, never written
        np.testing.assert_array_equal(arr, before, err_msg="an input was modified")
    if isinstance(out, Raised):
        assert kind != "same", f"{target} as {form} ({value!r:.60}) was rejected: {out.err}"
        assert kind != "huge" or isinstance(out.err, ValueError), out.err
        return
    assert kind not in ("bad", "huge"), f"accepted {target} as {form}: {value!r:.80}"
    if kind == "shape" and not spec.any_shape and spec.fn is not F.conv_output_size:
        pytest.fail(f"accepted {target} with shape {np.shape(value)} ({form})")
    # values near float32's limits overflow inside float32 compute: shapes only, as for inf
    finite = kind != "nonfinite" and all(
        _finite(v) for k, v in kw.items() if k in spec.arrays and v is not None
    )
    if isinstance(value, (float, np.floating)) and not abs(value) <= 1e30:
        finite = False  # e.g. fill_value=3.4e38: sums of it overflow float32
    try:
        if spec.reference is None:
            dropout_check(kw, out)
        else:
            _check_outputs(spec, kw, out, finite)
    except Garbage as g:
        pytest.fail(f"{spec!r} accepted {target}={g.args[0]!r:.80}")


@pytest.mark.parametrize("spec", [s for s in SPECS if s.arrays], ids=repr)
@settings(FUZZ, max_examples=max(2, EXAMPLES // 10))
@given(data=st.data())
def test_huge_arrays_are_refused_without_allocating(spec, data):
    """2**40-element broadcast views (no memory of their own) are refused by every function,
    for every array argument, before anything of the view's size is allocated."""
    problem = data.draw(spec.problem, label="problem")
    for target in spec.arrays:
        kw = dict(problem)
        kw[target] = _huge(np.asarray(kw[target]))
        with pytest.raises(ValueError, match=rf"{target} of shape \(") as info:
            spec.fn(**kw)
        check_clear(info.value, [target])


geometry_int = st.sampled_from([1, 1, 2, 2, 3, 1, 2, 3, 0, -1, 4, 7, 2**31 - 1]).flatmap(
    lambda v: st.sampled_from(HUGE_INTS) if v == 7 else st.just(v)  # 1 in 13: a huge one
)
geometry = st.one_of(geometry_int, st.tuples(geometry_int, geometry_int))
_dim = st.sampled_from([1, 2, 3, 4, 5, 2, 3, 4, 1, 0])  # now and then an empty axis


@st.composite
def random_geometry_call(draw):
    """conv2d / pooling (and their gradients) with every geometric argument drawn at once
    from a wide range (0, negative, larger than the input, 2**31 .. 2**70), on inputs of
    any small shape, dimensions of 0 included."""
    rng = _seeded(draw)
    op = draw(st.sampled_from(["conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward",
                               "avg_pool2d", "avg_pool2d_backward"]))  # fmt: skip
    fmt = draw(st.sampled_from(["NCHW", "NHWC"]))
    xshape = tuple(draw(_dim) for _ in range(4))
    x = rng.standard_normal(xshape).astype(np.float32)
    kw = dict(x=x, data_format=fmt, stride=draw(geometry))
    if op.startswith("conv"):
        groups = draw(st.one_of(st.just(1), st.just(2), geometry_int))
        c = xshape[3] if fmt == "NHWC" else xshape[1]
        if draw(st.integers(0, 3)) and isinstance(groups, int) and 0 < groups <= c:
            wshape = (groups * draw(_dim), c // groups, draw(_dim), draw(_dim))
        else:
            wshape = tuple(draw(_dim) for _ in range(4))
        kw.update(w=rng.standard_normal(wshape).astype(np.float32), dilation=draw(geometry),
                  groups=groups,
                  padding=draw(st.one_of(geometry, st.sampled_from(["same", "valid"]))))  # fmt: skip
    else:
        kw.update(kernel_size=draw(geometry), ceil_mode=draw(st.booleans()),
                  padding=draw(st.one_of(geometry, st.sampled_from(["same", "valid"]))))  # fmt: skip
        if draw(st.booleans()):
            kw["stride"] = None
    if op.endswith("backward"):
        # the right grad_out shape where the geometry is valid (found from the forward),
        # else a random one
        forward = getattr(F, op.replace("_backward", ""))
        try:
            shape = forward(**kw).shape
        except (TypeError, ValueError):
            shape = tuple(draw(_dim) for _ in range(4))
        if draw(st.integers(0, 3)) == 0:
            shape = tuple(draw(_dim) for _ in range(4))
        kw["grad_out"] = rng.standard_normal(shape).astype(np.float32)
    return op, kw


@FUZZ
@given(call=random_geometry_call(), isa=ISAS)
def test_functional_random_geometry(call, isa):
    """Every combination of geometric arguments is either computed right or refused with a
    clear error naming one of them."""
    op, kw = call
    fn = getattr(F, op)
    names = [*kw, "kernel", "padded", "channel"]
    with on_isa(isa):
        out = attempt(names, fn, **kw)
    event(f"{op}: {'refused' if isinstance(out, Raised) else 'computed'}")
    if isinstance(out, Raised):
        return
    spec = next(s for s in SPECS if s.fn is fn)
    if op.startswith("avg"):
        kw["count_include_pad"] = True
    if op.startswith("conv2d"):
        kw.setdefault("weight_format", "OIHW")
        kw.setdefault("bias", None)
        kw.setdefault("activation", None)
        for flag in ("grad_input", "grad_weight", "grad_bias"):
            kw.setdefault(flag, True)
    try:
        _check_outputs(spec, kw, out, finite=True)
    except Garbage as g:
        pytest.fail(f"{op} accepted {g.args[0]!r:.80}")


# --- layers -----------------------------------------------------------------------------------

ACTIVATIONS = ["relu", "linear", None, "tanh", "sigmoid", "softmax", "elu", "leaky_relu",
               "softplus", {"name": "relu", "config": {"max_value": 2.0}}]  # fmt: skip
INITIALIZERS = ["glorot_uniform", "zeros", "ones", "he_normal", "lecun_normal",
                {"class_name": "RandomUniform", "config": {"minval": -1, "maxval": 1}}]  # fmt: skip
REGULARIZERS = [None, "l2", "l1", {"class_name": "L1L2", "config": {"l1": 0.01, "l2": 0.01}}]
DATA_FORMATS = [None, "channels_last", "channels_first"]

# Layer class -> (valid constructor arguments (strategies), kind of input).
LAYERS = {
    L.Conv2D: (dict(filters=st.integers(1, 4), kernel_size=st.sampled_from([1, 2, 3, (1, 2), [3, 1]]),
                    strides=st.sampled_from([1, 2, (1, 2)]), padding=st.sampled_from(["valid", "same", "SAME"]),
                    data_format=st.sampled_from(DATA_FORMATS), dilation_rate=st.sampled_from([1, 2, (1, 2)]),
                    groups=st.sampled_from([1, 1, 2]), activation=st.sampled_from(ACTIVATIONS),
                    use_bias=st.booleans(), kernel_initializer=st.sampled_from(INITIALIZERS),
                    bias_initializer=st.sampled_from(INITIALIZERS),
                    kernel_regularizer=st.sampled_from(REGULARIZERS),
                    bias_regularizer=st.sampled_from(REGULARIZERS),
                    activity_regularizer=st.sampled_from(REGULARIZERS)), "image"),
    L.Dense: (dict(units=st.integers(1, 5), activation=st.sampled_from(ACTIVATIONS),
                   use_bias=st.booleans(), kernel_initializer=st.sampled_from(INITIALIZERS),
                   kernel_regularizer=st.sampled_from(REGULARIZERS)), "features"),
    L.MaxPooling2D: (dict(pool_size=st.sampled_from([1, 2, 3, (2, 1)]),
                          strides=st.sampled_from([None, 1, 2, (1, 2)]),
                          padding=st.sampled_from(["valid", "same"]),
                          data_format=st.sampled_from(DATA_FORMATS)), "image"),
    L.AveragePooling2D: (dict(pool_size=st.sampled_from([1, 2, 3, (2, 1)]),
                              strides=st.sampled_from([None, 1, 2, (1, 2)]),
                              padding=st.sampled_from(["valid", "same"]),
                              data_format=st.sampled_from(DATA_FORMATS)), "image"),
    L.GlobalAveragePooling2D: (dict(data_format=st.sampled_from(DATA_FORMATS), keepdims=st.booleans()), "image"),
    L.GlobalMaxPooling2D: (dict(data_format=st.sampled_from(DATA_FORMATS), keepdims=st.booleans()), "image"),
    L.BatchNormalization: (dict(axis=st.sampled_from([-1, 1, -2, 3]), momentum=st.sampled_from([0.0, 0.5, 0.99]),
                                epsilon=st.sampled_from([1e-3, 1e-5, 1.0]), center=st.booleans(),
                                scale=st.booleans(), gamma_initializer=st.sampled_from(INITIALIZERS),
                                beta_regularizer=st.sampled_from(REGULARIZERS)), "any"),
    L.Dropout: (dict(rate=st.sampled_from([0.0, 0.3, 0.9]), seed=st.sampled_from([None, 0, 7, 2**40]),
                     noise_shape=st.sampled_from([None, "ones"])), "any"),
    L.Flatten: (dict(data_format=st.sampled_from(DATA_FORMATS)), "any"),
    L.Reshape: (dict(target_shape=st.sampled_from([(-1,), "size", "split"])), "any"),
    L.Activation: (dict(activation=st.sampled_from(ACTIVATIONS)), "any"),
    L.ReLU: (dict(max_value=st.sampled_from([None, 1.0, 6]), negative_slope=st.sampled_from([0.0, 0.1, 2])), "any"),
    L.LeakyReLU: (dict(negative_slope=st.sampled_from([0.0, 0.3, 1])), "any"),
    L.ELU: (dict(alpha=st.sampled_from([1.0, 0.5, 2])), "any"),
    L.Softmax: (dict(axis=st.sampled_from([-1, np.int64(-1)])), "any"),
    L.RandomFlip: (dict(mode=st.sampled_from(["horizontal", "vertical", "horizontal_and_vertical"]),
                        seed=st.sampled_from([None, 3])), "nhwc"),
    L.RandomRotation: (dict(factor=st.sampled_from([0.1, (-0.2, 0.2), 0]),
                            fill_mode=st.sampled_from(["reflect", "constant", "nearest"]),
                            fill_value=st.sampled_from([0.0, 1, -2.5]), seed=st.sampled_from([None, 1])), "nhwc"),
    L.RandomTranslation: (dict(height_factor=st.sampled_from([0.1, 0.5, 0]), width_factor=st.sampled_from([0.2, 0]),
                               fill_mode=st.sampled_from(["reflect", "constant"]), seed=st.sampled_from([None, 2])), "nhwc"),
    L.RandomZoom: (dict(height_factor=st.sampled_from([0.1, (-0.5, 0.3), 0]), seed=st.sampled_from([None, 5])), "nhwc"),
    L.InputLayer: (dict(shape=st.sampled_from(["input"])), "any"),
}  # fmt: skip

COMMON = dict(name=st.sampled_from([None, "fuzzed"]), trainable=st.booleans(),
              dtype=st.sampled_from([None, "float32", np.float32]))  # fmt: skip


def _multi_input(cls) -> bool:
    """Layers over a list of inputs (Add, Concatenate, ...): fuzzed by their own test."""
    return cls.__module__.endswith(".merge")


def test_every_layer_class_is_fuzzed():
    """A new (single-input) layer class must get an entry in LAYERS."""
    missing = {n for n, c in L.LAYER_CLASSES.items() if c not in LAYERS and not _multi_input(c)}
    assert not missing, f"not fuzzed: {sorted(missing)}"


@st.composite
def layer_input(draw, kind, cls, cfg):
    """A batch for the layer: random shape of the right kind; the layer-specific
    arguments that depend on it (Reshape's target, Dropout's noise_shape, InputLayer's
    shape) are filled in."""
    rng = _seeded(draw)
    n = draw(st.integers(1, 3))
    if kind in ("image", "nhwc"):
        h, w, c = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 4))
        if cfg.get("groups") == 2:
            c = 2 * c
        shape = (n, c, h, w) if cfg.get("data_format") == "channels_first" else (n, h, w, c)
    elif kind == "features":
        shape = (n, *draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)))
    else:
        shape = (n, *draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    x = rng.standard_normal(shape).astype(np.float32)
    if cfg.get("target_shape") == "size":
        cfg["target_shape"] = (math.prod(shape[1:]),)
    elif cfg.get("target_shape") == "split":
        cfg["target_shape"] = (shape[-1], -1)
    if cfg.get("noise_shape") == "ones":
        cfg["noise_shape"] = (None, *([1] * (len(shape) - 2)), shape[-1])
    if cfg.get("shape") == "input":
        cfg["shape"] = shape[1:]
    return x


@FUZZ
@given(data=st.data())
def test_layer_construction_call_forward_backward(data):
    """Construct a layer with valid arguments, or with one hostile argument; call it on a
    batch (maybe hostile), run forward and backward (dy maybe hostile). Every step either
    works (right output shape, finite outputs for finite inputs, dx shaped like x) or raises
    a clear TypeError/ValueError naming an argument."""
    cls = data.draw(st.sampled_from(sorted(LAYERS, key=lambda c: c.__name__)), label="layer")
    args, kind = LAYERS[cls]
    strategies = {**args, **(COMMON if cls is not L.InputLayer else {"name": COMMON["name"]})}
    cfg = {k: data.draw(s, label=k) for k, s in strategies.items() if data.draw(st.booleans())}
    for required in ("filters", "kernel_size", "units", "rate", "target_shape", "activation",
                     "factor", "height_factor", "width_factor", "shape"):  # fmt: skip
        if required in args and required not in cfg:
            cfg[required] = data.draw(args[required], label=required)
    x = data.draw(layer_input(kind, cls, cfg), label="x")
    hostile_arg = None
    if data.draw(st.integers(0, 2), label="hostile?") == 0:
        hostile_arg = data.draw(st.sampled_from(sorted({*cfg, "name", "trainable", "input_shape",
                                                        "dtype", "bogus"})))  # fmt: skip
        cfg[hostile_arg] = data.draw(hostile, label=hostile_arg)
    names = [*cfg, "x", "dy", "input shape", "input_shape", "layer", cls.__name__]
    layer = attempt(names, cls, **cfg)
    if isinstance(layer, Raised):
        return
    assert hostile_arg != "bogus", "an unknown keyword argument was accepted"
    if data.draw(st.booleans(), label="hostile x?"):
        x, xkind, _ = data.draw(array_variants(x), label="x form")
    else:
        xkind = "same"
    training = data.draw(st.booleans(), label="training")
    y = attempt(names, layer, x, training=training)
    if isinstance(y, Raised):
        # legitimately: "valid" windows larger than x, a batch-norm axis x does not have
        legit = (L.Conv2D, L.MaxPooling2D, L.AveragePooling2D, L.BatchNormalization)
        assert xkind != "same" or hostile_arg is not None or cls in legit, (
            f"{cls.__name__}({cfg}) rejected a valid batch of shape {np.shape(x)}: {y.err}"
        )
        return
    assert xkind not in ("bad", "huge"), f"{cls.__name__} accepted x {x!r:.80}"
    xa = np.asarray(x, np.float64)
    assert isinstance(y, np.ndarray) and y.shape == (len(xa), *layer.output_shape), (
        f"{cls.__name__}: output {np.shape(y)} for x {xa.shape}, expected "
        f"{(len(xa), *layer.output_shape)}"
    )
    if _finite(xa) and xkind == "same":
        assert np.isfinite(y).all(), f"{cls.__name__}({cfg}): non-finite output"
    y, ctx = layer.forward(x, training)
    dy_form = data.draw(st.sampled_from(["right", "right", "hostile"]), label="dy")
    rng = np.random.default_rng(0)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dykind = "same"
    if dy_form == "hostile":
        dy, dykind, _ = data.draw(array_variants(dy), label="dy form")
    try:
        dx = attempt(names, layer.backward, ctx, dy)
    except NotImplementedError as e:  # documented: augmentation has no gradient in training
        assert cls.__name__.startswith("Random") and training, e
        return
    if isinstance(dx, Raised):
        assert dykind != "same", f"{cls.__name__}: backward rejected dy: {dx.err}"
        return
    assert dykind not in ("bad", "huge"), f"{cls.__name__}: backward accepted dy {dy!r:.80}"
    assert isinstance(dx, np.ndarray) and dx.shape == xa.shape, (np.shape(dx), xa.shape)


@pytest.mark.parametrize("cls", [L.Conv2D, L.Dense], ids=lambda c: c.__name__)
@FUZZ
@given(data=st.data())
def test_kernel_layers_match_the_reference_for_any_input_form(cls, data):
    """Conv2D/Dense outputs equal the float64 reference whatever equivalent form x takes."""
    rng = _seeded(data.draw)
    form = data.draw(st.sampled_from([f for f, (k, _) in ARRAY_FORMS.items() if k == "same"]))
    n, c, units = (
        data.draw(st.integers(1, 3)),
        data.draw(st.integers(1, 3)),
        data.draw(st.integers(1, 3)),
    )
    if cls is L.Conv2D:
        h, w = data.draw(st.integers(3, 6)), data.draw(st.integers(3, 6))
        layer = L.Conv2D(units, 3, padding=data.draw(st.sampled_from(["valid", "same"])))
        x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    else:
        layer = L.Dense(units)
        x = rng.standard_normal((n, c)).astype(np.float32)
    xv = ARRAY_FORMS[form][1](x)
    with on_isa(data.draw(ISAS)):
        y = layer(xv)
    xf = np.asarray(xv, np.float64)
    kernel, bias = layer.kernel.value, layer.bias.value
    if cls is L.Conv2D:
        pads = (0, 0, 0, 0) if layer.padding == "valid" else (1, 1, 1, 1)
        ref = ref64.conv2d(
            xf.transpose(0, 3, 1, 2), kernel.transpose(3, 2, 0, 1), bias, (1, 1), pads
        )
        ref = ref.transpose(0, 2, 3, 1)
    else:
        ref = xf @ kernel + bias
    assert_close(y, ref, rtol=1e-4)


MULTI_INPUT = sorted(
    (c for c in L.LAYER_CLASSES.values() if _multi_input(c)), key=lambda c: c.__name__
)


@pytest.mark.skipif(not MULTI_INPUT, reason="no multi-input layers in this version")
@FUZZ
@given(data=st.data())
def test_multi_input_layers(data):
    """Add, Subtract, Multiply, Concatenate, EuclideanDistance: constructor arguments, the
    list of inputs and dy, each maybe hostile; same contract as for the other layers."""
    cls = data.draw(st.sampled_from(MULTI_INPUT), label="layer")
    rng = _seeded(data.draw)
    cfg = {}
    if cls.__name__ == "Concatenate":
        cfg["axis"] = data.draw(st.one_of(st.sampled_from([-1, 1, 2]), hostile), label="axis")
    if cls.__name__ == "EuclideanDistance":
        cfg["epsilon"] = data.draw(st.one_of(st.sampled_from([1e-7, 1]), hostile), label="eps")
    names = [*cfg, "x", "dy", "input", "inputs", "input_shape", "layer", cls.__name__]
    layer = attempt(names, cls, **cfg)
    if isinstance(layer, Raised):
        return
    shape = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)), 2)
    xs = [
        rng.standard_normal(shape).astype(np.float32) for _ in range(data.draw(st.integers(1, 3)))
    ]
    kinds = ["same"] * len(xs)
    if data.draw(st.booleans(), label="hostile input?"):
        i = data.draw(st.integers(0, len(xs) - 1))
        xs[i], kinds[i], _ = data.draw(array_variants(xs[i]), label="x form")
    y = attempt(names, layer, xs)
    if isinstance(y, Raised):
        return
    assert not {"bad", "huge"} & set(kinds), f"{cls.__name__} accepted {xs!r:.100}"
    y, ctx = layer.forward(xs)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dykind = "same"
    if data.draw(st.booleans(), label="hostile dy?"):
        dy, dykind, _ = data.draw(array_variants(dy), label="dy form")
    dxs = attempt(names, layer.backward, ctx, dy)
    if isinstance(dxs, Raised):
        assert dykind != "same", f"{cls.__name__}: backward rejected dy: {dxs.err}"
        return
    assert dykind not in ("bad", "huge"), f"{cls.__name__}: backward accepted dy {dy!r:.80}"
    assert [np.shape(d) for d in dxs] == [np.shape(x) for x in xs]


# --- runtime controls -------------------------------------------------------------------------


CONTROLS = {
    "set_num_threads": (pyconv.set_num_threads, pyconv.get_num_threads, [1, 2, 3, np.int64(2)]),
    "set_isa": (pyconv.set_isa, pyconv.get_isa, pyconv.available_isas()),
    "set_conv_algorithm": (pyconv.set_conv_algorithm, pyconv.get_conv_algorithm,
                           ["auto", "direct", "winograd"]),
    "set_buffer_cache_limit": (pyconv.set_buffer_cache_limit,
                               lambda: pyconv.buffer_cache_info()["limit"],
                               [0, 1, 2**20, 2**30, np.int64(2**31), 2**63 - 1, 2**64, 2**70]),
}  # fmt: skip


@FUZZ
@given(data=st.data())
def test_runtime_controls(data):
    """Each setter takes its valid values (and reads back) or raises a clear error naming
    the setting; afterwards the ops still compute the right result."""
    name = data.draw(st.sampled_from(sorted(CONTROLS)), label="control")
    setter, getter, valid = CONTROLS[name]
    value = data.draw(st.one_of(st.sampled_from(valid), hostile), label="value")
    saved = (pyconv.get_num_threads(), pyconv.get_isa(), pyconv.get_conv_algorithm(),
             pyconv.buffer_cache_info()["limit"])  # fmt: skip
    names = ["num_threads", "isa", "algorithm", "nbytes", "name"]
    try:
        if isinstance(attempt(names, setter, value), Raised):
            assert not any(value is v for v in valid), f"{name}({value!r}) was rejected"
        else:
            if name == "set_num_threads":
                assert 1 <= n_int(value) <= 1024, f"set_num_threads accepted {value!r}"
                assert getter() == n_int(value)
            elif name == "set_buffer_cache_limit":
                assert getter() == min(n_int(value), 2**63 - 1)
            else:
                assert isinstance(value, str) and getter() == value, value
            rng = np.random.default_rng(1)
            x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
            w = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
            assert_close(F.conv2d(x, w, padding=1), ref64.conv2d(x, w, None, (1, 1), (1,) * 4))
    finally:
        pyconv.set_num_threads(saved[0])
        pyconv.set_isa(saved[1])
        pyconv.set_conv_algorithm(saved[2])
        pyconv.set_buffer_cache_limit(saved[3])


# --- regression tests: inputs that once failed -------------------------------------------------

X = np.zeros((2, 3, 8, 8), np.float32)
W = np.zeros((4, 3, 3, 3), np.float32)
R = np.ones((5, 3), np.float32)
V = np.ones(3, np.float32)
NHWC = np.ones((2, 5, 5, 3), np.float32)
HUGE4 = np.broadcast_to(np.float32(1), (1, 1, 2**20, 2**20))  # 2**40 elements, no memory
IDENTITY = np.tile(np.eye(2, 3, dtype=np.float32), (2, 1, 1))


def _built(layer, x):
    layer(x)
    return layer


def _backward_with(layer, x, dy):
    y, ctx = _built(layer, x).forward(x, True)
    return layer.backward(ctx, dy)


# (call, exception, message pattern); the comment says what happened before the fix.
REGRESSIONS = [
    # pybind11 "incompatible function arguments" (TypeError) for ints beyond int64
    pytest.param(lambda: F.conv2d(X, W, stride=2**70), ValueError, "stride must be <=", id="conv-stride-2**70"),
    pytest.param(lambda: F.conv2d(X, W[:, :, :1, :1], dilation=2**70), ValueError, "dilation must be <=", id="conv-dilation-2**70"),
    pytest.param(lambda: F.max_pool2d(X, 2, stride=2**70), ValueError, "stride must be <=", id="pool-stride-2**70"),
    pytest.param(lambda: F.conv2d(X, W, padding=2**62), ValueError, "padding must be <=", id="conv-padding-2**62"),
    # MemoryError("std::bad_alloc") after trying to allocate TiBs for an absurd padding
    pytest.param(lambda: F.conv2d(X, W, padding=2**20), ValueError, "padding=1048576", id="conv-padding-2**20"),
    pytest.param(lambda: F.conv2d(X[:1, :1, :1, :1], W[:1, :1, :1, :1], padding=2**20, stride=2**21),
                 ValueError, "padded input", id="conv-padded-input-2**42"),
    # MemoryError("std::bad_alloc"): the core packed a 2**40-element broadcast view
    pytest.param(lambda: F.conv2d(HUGE4, W[:1, :1, :1, :1], stride=2**20), ValueError, "x of shape", id="conv-huge-view"),
    pytest.param(lambda: F.max_pool2d_backward(np.ones((1, 1, 1, 1)), HUGE4, 1, stride=2**20), ValueError, "x of shape", id="pool-backward-huge-view"),
    # NumPy's MemoryError "Unable to allocate 4.00 TiB"
    pytest.param(lambda: F.dropout(HUGE4[0, 0], 0.5, 1), ValueError, "x of shape", id="dropout-huge-view"),
    pytest.param(lambda: F.relu_backward(HUGE4, HUGE4), ValueError, "grad_out of shape", id="relu-backward-huge-view"),
    # "too many values to unpack (expected 2)"; size -5 gave -6
    pytest.param(lambda: F.conv_output_size(3, 1, padding=(1, 2, 3)), ValueError, "padding must be", id="output-size-padding-triple"),
    pytest.param(lambda: F.conv_output_size(-5, 3), ValueError, "size must be >= 0", id="output-size-negative"),
    # "could not convert string to float" / "float() argument must be ... 'NoneType'"
    pytest.param(lambda: F.batch_norm(R, epsilon="a"), TypeError, "epsilon", id="bn-epsilon-str"),
    pytest.param(lambda: F.batch_norm(R, epsilon=None), TypeError, "epsilon", id="bn-epsilon-None"),
    pytest.param(lambda: F.batch_norm_backward(R, R, V, V, epsilon=np.array([1.0, 2.0])), TypeError, "epsilon", id="bn-backward-epsilon-array"),
    pytest.param(lambda: F.affine_warp(NHWC, IDENTITY, fill_value="a"), TypeError, "fill_value", id="warp-fill-value-str"),
    pytest.param(lambda: F.affine_warp(NHWC, IDENTITY, fill_value=None), TypeError, "fill_value", id="warp-fill-value-None"),
    # "unhashable type: 'list'"
    pytest.param(lambda: F.affine_warp(NHWC, IDENTITY, fill_mode=[]), ValueError, "fill_mode", id="warp-fill-mode-list"),
    # strings taken as True
    pytest.param(lambda: F.conv2d_backward(np.ones((2, 4, 6, 6)), X, W, grad_input="no"), TypeError, "grad_input must be a bool", id="conv-backward-flag-str"),
    pytest.param(lambda: F.avg_pool2d(X, 2, count_include_pad="no"), TypeError, "count_include_pad", id="avg-pool-flag-str"),
    pytest.param(lambda: F.global_avg_pool2d(X, keepdims="no"), TypeError, "keepdims", id="gap-keepdims-str"),
    pytest.param(lambda: F.batch_norm_backward(R, R, V, V, batch_stats="no"), TypeError, "batch_stats", id="bn-batch-stats-str"),
    # accepted: timedelta64 is a NumPy integer type; a 0-d gamma was read as shape (1,)
    pytest.param(lambda: F.conv2d(X.astype("m8[s]"), W), TypeError, "real numbers", id="conv-timedelta"),
    pytest.param(lambda: F.batch_norm(np.ones((3, 1)), gamma=np.float32(2)), ValueError, r"gamma must have shape \(1,\)", id="bn-gamma-0d"),
    # runtime controls: pybind11 TypeError; a thread count OpenMP cannot start kills the process
    pytest.param(lambda: pyconv.set_num_threads(2**40), ValueError, "num_threads must be <=", id="threads-2**40"),
    pytest.param(lambda: pyconv.set_num_threads(100_000), ValueError, "num_threads must be <=", id="threads-100000"),
    pytest.param(lambda: pyconv.set_isa("generic\0junk"), ValueError, "isa must be one of", id="isa-nul"),
    # layers: pybind11 TypeError at the first call
    pytest.param(lambda: L.Conv2D(2, 1, strides=2**70), ValueError, "strides must be <=", id="Conv2D-strides-2**70"),
    pytest.param(lambda: L.Conv2D(2, 1, dilation_rate=2**70), ValueError, "dilation_rate must be <=", id="Conv2D-dilation-2**70"),
    # NumPy's MemoryError "Unable to allocate 24.0 TiB" in the initializer
    pytest.param(lambda: L.Dense(2**40)(np.ones((2, 3))), ValueError, "units", id="Dense-units-2**40"),
    pytest.param(lambda: L.Conv2D(2**40, 3)(NHWC), ValueError, "filters", id="Conv2D-filters-2**40"),
    # AttributeError: 'Conv2D' object has no attribute 'bias'
    pytest.param(lambda: L.Conv2D(2, 3).forward(NHWC), ValueError, "not built", id="Conv2D-forward-unbuilt"),
    pytest.param(lambda: L.Reshape((3,)).forward(R), ValueError, "not built", id="Reshape-forward-unbuilt"),
    # AttributeError: 'str' object has no attribute ...; "could not convert string to float"
    pytest.param(lambda: L.Flatten().forward("abc"), TypeError, "x must be an array", id="Flatten-forward-str"),
    pytest.param(lambda: L.Softmax().forward("abc"), TypeError, "x must be an array", id="Softmax-forward-str"),
    pytest.param(lambda: L.Conv2D(2, 1)("abc"), TypeError, "x must be an array", id="Conv2D-call-str"),
    # ComplexWarning, then the imaginary part silently dropped
    pytest.param(lambda: L.Conv2D(2, 1)(NHWC.astype(complex)), TypeError, "real numbers", id="Conv2D-call-complex"),
    pytest.param(lambda: _built(L.Dense(2), R).set_weights([np.ones((3, 2)) * 1j, np.zeros(2)]), TypeError, "real numbers", id="set-weights-complex"),
    pytest.param(lambda: _built(L.Dense(2), R).set_weights(None), TypeError, "weights must be a list", id="set-weights-None"),
    # OverflowError: cannot convert float infinity to integer; 2.5 and True silently taken as ints
    pytest.param(lambda: L.Dense(2, input_shape=(float("inf"),)), TypeError, "input_shape", id="input-shape-inf"),
    pytest.param(lambda: L.Dense(2, input_shape=(2.5, 3)), TypeError, "input_shape", id="input-shape-float"),
    pytest.param(lambda: L.Dense(2, input_shape=(True,)), TypeError, "input_shape", id="input-shape-bool"),
    # "'int' object is not iterable"
    pytest.param(lambda: L.Reshape(4), TypeError, "target_shape", id="Reshape-int"),
    pytest.param(lambda: L.Reshape(None), TypeError, "target_shape", id="Reshape-None"),
    pytest.param(lambda: L.Dropout(0.5, noise_shape=3), TypeError, "noise_shape", id="Dropout-noise-shape-int"),
    # "invalid literal for int()", numpy's "expected non-negative integer"; 1.5 taken as 1
    pytest.param(lambda: L.Dropout(0.5, seed="abc"), TypeError, "seed", id="Dropout-seed-str"),
    pytest.param(lambda: L.Dropout(0.5, seed=-1), ValueError, "seed", id="Dropout-seed-negative"),
    pytest.param(lambda: L.Dropout(0.5, seed=1.5), TypeError, "seed", id="Dropout-seed-float"),
    pytest.param(lambda: L.RandomFlip(seed="a"), TypeError, "seed", id="RandomFlip-seed-str"),
    # noise_shape: an extra entry silently ignored; "operands could not be broadcast";
    # MemoryError for 2**40
    pytest.param(lambda: L.Dropout(0.5, noise_shape=(None, 1, 1))(R, training=True), ValueError, "noise_shape", id="Dropout-noise-shape-long"),
    pytest.param(lambda: L.Dropout(0.5, noise_shape=(None, 2))(R, training=True), ValueError, "noise_shape", id="Dropout-noise-shape-mismatch"),
    pytest.param(lambda: L.Dropout(0.5, noise_shape=(None, 2**40)), ValueError, "noise_shape", id="Dropout-noise-shape-2**40"),
    # backward with dy of the wrong shape: a silently wrong mask; "operands could not be
    # broadcast"; "cannot reshape array"; a message about axis
    pytest.param(lambda: _backward_with(L.Dropout(0.5), R, np.ones((4, 3))), ValueError, "dy must have", id="Dropout-backward-dy"),
    pytest.param(lambda: _backward_with(L.Activation("tanh"), R, np.ones((4, 3))), ValueError, "dy must have", id="Activation-backward-dy"),
    pytest.param(lambda: _backward_with(L.GlobalMaxPooling2D(), NHWC, np.ones((2, 4))), ValueError, "dy must have", id="GlobalMaxPooling2D-backward-dy"),
    pytest.param(lambda: _backward_with(L.BatchNormalization(), R, np.ones(5)), ValueError, "dy must have", id="BatchNormalization-backward-dy"),
    pytest.param(lambda: _backward_with(L.Flatten(), NHWC, np.ones((3, 75))), ValueError, "dy must have", id="Flatten-backward-dy"),
    # "cannot reshape array of size 8 into shape (2,3)"; "gamma must have shape" (not passed)
    pytest.param(lambda: _built(L.Reshape((3,)), R).forward(np.ones((2, 4))), ValueError, "Reshape", id="Reshape-forward-other-size"),
    pytest.param(lambda: _built(L.BatchNormalization(), R).forward(np.ones((2, 4)), True), ValueError, "was built for 3 features", id="BatchNormalization-other-features"),
    # "'<=' not supported", ufunc 'isfinite', "'>' not supported", "could not convert"
    pytest.param(lambda: L.BatchNormalization(momentum="a"), TypeError, "momentum", id="BatchNormalization-momentum-str"),
    pytest.param(lambda: L.ReLU(negative_slope="a"), TypeError, "negative_slope", id="ReLU-negative-slope-str"),
    pytest.param(lambda: L.ReLU(max_value="a"), TypeError, "max_value", id="ReLU-max-value-str"),
    pytest.param(lambda: L.LeakyReLU(None), TypeError, "negative_slope", id="LeakyReLU-None"),
    pytest.param(lambda: L.ELU("a"), TypeError, "alpha", id="ELU-alpha-str"),
    pytest.param(lambda: L.ELU(float("nan")), ValueError, "alpha", id="ELU-alpha-nan"),
    pytest.param(lambda: L.Conv2D(2, 1, kernel_regularizer={"class_name": "L2", "config": {"l2": "a"}}), TypeError, "l2", id="regularizer-config-str"),
    pytest.param(lambda: L.Conv2D(2, 1, activation={"name": "relu", "config": "x"}), TypeError, "activation config", id="activation-config-str"),
    pytest.param(lambda: L.Conv2D(2, 1, activation={"name": []}), ValueError, "unknown activation", id="activation-name-list"),
    pytest.param(lambda: L.Conv2D(2, 1, kernel_initializer={"class_name": []}), ValueError, "unknown initializer", id="initializer-name-list"),
    # strings taken as True
    pytest.param(lambda: L.Dense(2, use_bias="no"), TypeError, "use_bias", id="Dense-use-bias-str"),
    pytest.param(lambda: L.Dense(2, trainable="no"), TypeError, "trainable", id="trainable-str"),
    pytest.param(lambda: L.BatchNormalization(center="no"), TypeError, "center", id="BatchNormalization-center-str"),
    pytest.param(lambda: L.GlobalAveragePooling2D(keepdims="no"), TypeError, "keepdims", id="GlobalAveragePooling2D-keepdims-str"),
    # "bad operand type for unary -"; OverflowError "high - low range exceeds valid bounds";
    # "could not convert"; "too many values to unpack"; "'NoneType' object is not iterable";
    # "unhashable type"; IndexError "tuple index out of range"
    pytest.param(lambda: L.RandomRotation("a"), TypeError, "factor", id="RandomRotation-factor-str"),
    pytest.param(lambda: L.RandomRotation(1e306), ValueError, "factor", id="RandomRotation-factor-1e306"),
    pytest.param(lambda: L.RandomTranslation(1e306, 0), ValueError, "height_factor", id="RandomTranslation-factor-1e306"),
    pytest.param(lambda: L.RandomTranslation("a", 0), TypeError, "height_factor", id="RandomTranslation-factor-str"),
    pytest.param(lambda: L.RandomZoom((0.1, 0.2, 0.3)), ValueError, "height_factor", id="RandomZoom-factor-triple"),
    pytest.param(lambda: L.RandomZoom(None), TypeError, "height_factor", id="RandomZoom-factor-None"),
    pytest.param(lambda: L.RandomFlip(fill_mode=[]), ValueError, "fill_mode", id="RandomFlip-fill-mode-list"),
    pytest.param(lambda: L.RandomFlip().forward(R, True), ValueError, r"\(N, H, W, C\)", id="RandomFlip-forward-2d"),
    # an array where a str/int was expected: "The truth value of an array ... is ambiguous"
    pytest.param(lambda: F.conv2d(X, W, activation=np.array([1, 2])), ValueError, "activation", id="conv-activation-array"),
    pytest.param(lambda: L.Flatten(data_format=np.array([1, 2])), ValueError, "data_format", id="Flatten-data-format-array"),
    pytest.param(lambda: L.Conv2D(2, 1, data_format=np.array([1, 2])), ValueError, "data_format", id="Conv2D-data-format-array"),
    pytest.param(lambda: L.MaxPooling2D(data_format=np.array([1, 2])), ValueError, "data_format", id="MaxPooling2D-data-format-array"),
    pytest.param(lambda: L.Dense(2, dtype=np.array([1, 2])), ValueError, "dtype", id="dtype-array"),
    pytest.param(lambda: L.Softmax(axis=np.array([-1, -1])), ValueError, "axis", id="Softmax-axis-array"),
    pytest.param(lambda: L.RandomFlip(mode=np.array([1, 2])), ValueError, "mode", id="RandomFlip-mode-array"),
    # epsilon=1e-50 > 0 became 0 in the core's float32: division by zero for a constant column
    pytest.param(lambda: F.batch_norm(R, epsilon=1e-50), ValueError, "epsilon", id="bn-epsilon-1e-50"),
    pytest.param(lambda: L.BatchNormalization(epsilon=1e-50), ValueError, "epsilon", id="BatchNormalization-epsilon-1e-50"),
    # "unknown regularizer ''" without saying which argument
    pytest.param(lambda: L.BatchNormalization(beta_regularizer=""), ValueError, "beta_regularizer", id="regularizer-argument-named"),
]  # fmt: skip


@pytest.mark.parametrize("call,exc,match", REGRESSIONS)
def test_regression_raises_clearly(call, exc, match):
    """Each input once crashed, leaked an internal error or was silently misread; now it
    raises ``exc`` with a message naming the argument (``match``), nothing foreign in it."""
    with pytest.raises(exc, match=match) as info:
        call()
    for bad in FOREIGN:
        assert bad not in str(info.value), str(info.value)


def test_regression_results(isa):
    """Inputs that once gave a wrong result (or needed a fix to give the right one)."""
    # 0-d inputs came back with shape (1,) (np.ascontiguousarray makes 0-d arrays 1-d)
    assert F.relu_backward(1.0, 2.0).shape == ()
    assert F.relu_backward(np.float32(-1), np.float32(2)) == -1
    assert F.dropout(np.float32(3), 0.0, 1) == 3
    # huge (but valid) strides and dilations: an output of 1, no int64 overflow
    y = F.conv2d(np.ones((1, 1, 5, 5), np.float32), np.ones((1, 1, 1, 1), np.float32),
                 stride=2**31 - 1, dilation=2**31 - 1)  # fmt: skip
    assert y.shape == (1, 1, 1, 1) and y[0, 0, 0, 0] == 1
    # unaligned, big-endian and broadcast inputs are read correctly
    x = np.arange(2 * 3 * 6 * 6, dtype=np.float32).reshape(2, 3, 6, 6) / 50
    w = np.linspace(-1, 1, 4 * 3 * 9, dtype=np.float32).reshape(4, 3, 3, 3)
    ref = ref64.conv2d(x, w, None, (1, 1), (1, 1, 1, 1))
    for form in ("unaligned", "big_endian", "negative_strides", "strided", "readonly"):
        assert_close(F.conv2d(ARRAY_FORMS[form][1](x), w, padding=1), ref, name=form)
    # a buffer-cache limit beyond int64 means no limit (was pybind11's TypeError)
    before = pyconv.buffer_cache_info()["limit"]
    try:
        pyconv.set_buffer_cache_limit(2**70)
        assert pyconv.buffer_cache_info()["limit"] == 2**63 - 1
    finally:
        pyconv.set_buffer_cache_limit(before)
    # the shape arithmetic of Reshape no longer allocates the input's size (1 PiB here)
    assert L.Reshape((-1,)).build_for((2**20, 2**20, 2**10)) == (2**50,)
    # an empty batch through Flatten ("cannot reshape array of size 0")
    assert L.Flatten()(np.ones((0, 3, 2))).shape == (0, 6)
