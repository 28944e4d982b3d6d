"""Hypothesis: random shapes, strides, paddings, dilations, groups, layouts, every ISA."""

from __future__ import annotations

import numpy as np
import pytest
import ref64
from conftest import assert_close
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyconv
from pyconv import functional as F

SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def conv_problems(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg = draw(st.integers(1, 6))
    og = draw(st.integers(1, 7)) * draw(st.sampled_from([1, 1, 5]))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    padding = draw(
        st.one_of(
            st.sampled_from(["same", "valid"]),
            st.integers(0, 2),
            st.tuples(
                st.tuples(st.integers(0, 2), st.integers(0, 2)),
                st.tuples(st.integers(0, 2), st.integers(0, 2)),
            ),
        )
    )
    h = draw(st.integers((kh - 1) * dh + 1, (kh - 1) * dh + 9))
    w = draw(st.integers((kw - 1) * dw + 1, (kw - 1) * dw + 9))
    n = draw(st.integers(1, 3))
    fmt = draw(st.sampled_from(["NCHW", "NHWC"]))
    isa = draw(st.sampled_from(pyconv.available_isas()))
    seed = draw(st.integers(0, 2**31))
    return groups, cg, og, (kh, kw), (sh, sw), (dh, dw), padding, (n, h, w), fmt, isa, seed


def _pads(padding, h, w, k, s, d):
    if padding == "same":
        return (*ref64.resolve_same(h, k[0], s[0], d[0]), *ref64.resolve_same(w, k[1], s[1], d[1]))
    if padding == "valid":
        return (0, 0, 0, 0)
    if isinstance(padding, int):
        return (padding,) * 4
    return (*padding[0], *padding[1])


@SETTINGS
@given(conv_problems())
def test_conv2d_all_passes_match_reference(problem):
    groups, cg, og, k, s, d, padding, (n, h, w), fmt, isa, seed = problem
    rng = np.random.default_rng(seed)
    pyconv.set_isa(isa)
    try:
        x = rng.standard_normal((n, cg * groups, h, w)).astype(np.float32)
        wt = rng.standard_normal((og * groups, cg, *k)).astype(np.float32)
        b = rng.standard_normal(og * groups).astype(np.float32)
        pads = _pads(padding, h, w, k, s, d)
        y_ref = ref64.conv2d(x, wt, b, s, pads, d, groups)
        gy = rng.standard_normal(y_ref.shape).astype(np.float32)
        gx_ref, gw_ref, gb_ref = ref64.conv2d_backward(gy, x, wt, s, pads, d, groups)
        to = (lambda a: a.transpose(0, 2, 3, 1)) if fmt == "NHWC" else (lambda a: a)
        back = (lambda a: a.transpose(0, 3, 1, 2)) if fmt == "NHWC" else (lambda a: a)
        kw = dict(stride=s, padding=padding, dilation=d, groups=groups, data_format=fmt)
        assert_close(back(F.conv2d(to(x), wt, b, **kw)), y_ref, name="y")
        gx, gw, gb = F.conv2d_backward(to(gy), to(x), wt, **kw)
        assert_close(back(gx), gx_ref, name="grad_x")
        assert_close(gw, gw_ref, name="grad_w")
        assert_close(gb, gb_ref, name="grad_b")
    finally:
        pyconv.set_isa(pyconv.available_isas()[0])


@SETTINGS
@given(
    k=st.integers(1, 4),
    s=st.integers(1, 3),
    p=st.integers(0, 2),
    ceil_mode=st.booleans(),
    cip=st.booleans(),
    n=st.integers(1, 2),
    c=st.integers(1, 20),
    h=st.integers(4, 10),
    w=st.integers(4, 10),
    fmt=st.sampled_from(["NCHW", "NHWC"]),
    isa=st.sampled_from(pyconv.available_isas()),
    seed=st.integers(0, 2**31),
)
def test_pools_match_reference(k, s, p, ceil_mode, cip, n, c, h, w, fmt, isa, seed):
    p = min(p, k // 2)
    rng = np.random.default_rng(seed)
    pyconv.set_isa(isa)
    try:
        x = (rng.permutation(n * c * h * w).reshape(n, c, h, w) / 3).astype(np.float32)
        pads = (p,) * 4
        to = (lambda a: a.transpose(0, 2, 3, 1)) if fmt == "NHWC" else (lambda a: a)
        back = (lambda a: a.transpose(0, 3, 1, 2)) if fmt == "NHWC" else (lambda a: a)
        ym = ref64.max_pool2d(x, (k, k), (s, s), pads, ceil_mode)
        gy = rng.standard_normal(ym.shape).astype(np.float32)
        kw = dict(stride=s, padding=p, ceil_mode=ceil_mode, data_format=fmt)
        assert_close(back(F.max_pool2d(to(x), k, **kw)), ym)
        assert_close(
            back(F.max_pool2d_backward(to(gy), to(x), k, **kw)),
            ref64.max_pool2d_backward(gy, x, (k, k), (s, s), pads, ceil_mode),
        )
        ya = ref64.avg_pool2d(x, (k, k), (s, s), pads, ceil_mode, cip)
        assert_close(back(F.avg_pool2d(to(x), k, count_include_pad=cip, **kw)), ya)
        assert_close(
            back(F.avg_pool2d_backward(to(gy), to(x), k, count_include_pad=cip, **kw)),
            ref64.avg_pool2d_backward(gy, x, (k, k), (s, s), pads, ceil_mode, cip),
        )
    finally:
        pyconv.set_isa(pyconv.available_isas()[0])


@pytest.mark.parametrize("size,k,s,p,d", [(32, 5, 1, 2, 1), (28, 3, 1, 0, 1), (7, 3, 2, 1, 2)])
def test_output_size_agrees_with_the_op(size, k, s, p, d):
    x = np.zeros((1, 1, size, size), np.float32)
    y = F.conv2d(x, np.zeros((1, 1, k, k), np.float32), stride=s, padding=p, dilation=d)
    assert y.shape[2] == F.conv_output_size(size, k, s, p, d)
