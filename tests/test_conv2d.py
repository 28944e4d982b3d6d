"""conv2d forward and backward against the float64 reference, on every ISA, both layouts,
both weight formats, 1 and 2 threads."""

from __future__ import annotations

import numpy as np
import pytest
import ref64
from conftest import assert_close

import pyconv
from pyconv import functional as F

# (N, C, H, W, O, kernel, stride, padding, dilation, groups)
CASES = [
    (1, 1, 5, 5, 1, 3, 1, 0, 1, 1),
    (2, 3, 9, 7, 5, 3, 1, 1, 1, 1),
    (2, 3, 8, 8, 32, 1, 1, 0, 1, 1),
    (1, 16, 8, 8, 32, 3, 1, "same", 1, 1),
    (2, 17, 11, 10, 33, 3, 2, 1, 1, 1),
    (1, 8, 12, 12, 8, 5, 2, 2, 2, 1),
    (1, 6, 7, 9, 4, 1, 2, 0, 1, 2),
    (2, 8, 9, 9, 8, 3, 1, 1, 1, 8),  # depthwise
    (1, 64, 6, 6, 64, 3, 1, 1, 1, 1),
    (1, 4, 5, 5, 70, 7, 3, 3, 1, 1),
    (2, 3, 10, 9, 6, 3, 2, "same", 1, 1),  # asymmetric TF padding at stride 2
    (1, 5, 8, 11, 7, (2, 3), (1, 2), ((0, 1), (2, 0)), (2, 1), 1),
    (5, 2, 4, 4, 3, 4, 1, "valid", 1, 1),
]


def _pads(case):
    n, c, h, w, o, k, s, p, d, g = case
    k = (k, k) if isinstance(k, int) else k
    s = (s, s) if isinstance(s, int) else s
    d = (d, d) if isinstance(d, int) else d
    if p == "same":
        pads = (*ref64.resolve_same(h, k[0], s[0], d[0]), *ref64.resolve_same(w, k[1], s[1], d[1]))
    elif p == "valid":
        pads = (0, 0, 0, 0)
    elif isinstance(p, int):
        pads = (p, p, p, p)
    else:
        pads = (*p[0], *p[1])
    return k, s, d, pads


def _data(case, rng):
    n, c, h, w, o, k, s, p, d, g = case
    k, s, d, pads = _pads(case)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((o, c // g, *k)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    y = ref64.conv2d(x, wt, b, s, pads, d, g)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    return x, wt, b, y, gy, ref64.conv2d_backward(gy, x, wt, s, pads, d, g)


def _to(fmt, a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)) if fmt == "NHWC" else a


def _from(fmt, a):
    return a.transpose(0, 3, 1, 2) if fmt == "NHWC" else a


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_conv2d_matches_reference(case, fmt, isa, threads, conv_algo, rng):
    n, c, h, w, o, k, s, p, d, g = case
    x, wt, b, y_ref, gy, (gx_ref, gw_ref, gb_ref) = _data(case, rng)
    kw = dict(stride=s, padding=p, dilation=d, groups=g, data_format=fmt)
    y = F.conv2d(_to(fmt, x), wt, b, **kw)
    assert y.dtype == np.float32 and y.flags.c_contiguous
    assert_close(_from(fmt, y), y_ref, name="y")
    gx, gw, gb = F.conv2d_backward(_to(fmt, gy), _to(fmt, x), wt, **kw)
    assert_close(_from(fmt, gx), gx_ref, name="grad_x")
    assert_close(gw, gw_ref, name="grad_w")
    assert_close(gb, gb_ref, name="grad_bias")


@pytest.mark.parametrize("case", CASES[:6], ids=[str(i) for i in range(6)])
def test_hwio_weights_and_channels_last(case, isa, rng):
    """Keras layout: NHWC activations with HWIO kernels, no transposes by the caller."""
    n, c, h, w, o, k, s, p, d, g = case
    x, wt, b, y_ref, gy, (gx_ref, gw_ref, _) = _data(case, rng)
    w_hwio = np.ascontiguousarray(wt.transpose(2, 3, 1, 0))
    kw = dict(
        stride=s, padding=p, dilation=d, groups=g, data_format="channels_last", weight_format="HWIO"
    )
    y = F.conv2d(_to("NHWC", x), w_hwio, b, **kw)
    assert_close(_from("NHWC", y), y_ref)
    gx, gw, gb = F.conv2d_backward(_to("NHWC", gy), _to("NHWC", x), w_hwio, **kw)
    assert gw.shape == w_hwio.shape
    assert_close(gw.transpose(3, 2, 0, 1), gw_ref)
    assert_close(_from("NHWC", gx), gx_ref)


@pytest.mark.parametrize("case", [CASES[1], CASES[4], CASES[7]])
def test_each_gradient_alone_equals_combined(case, isa, rng):
    n, c, h, w, o, k, s, p, d, g = case
    x, wt, b, _, gy, _ = _data(case, rng)
    kw = dict(stride=s, padding=p, dilation=d, groups=g)
    gx, gw, gb = F.conv2d_backward(gy, x, wt, **kw)
    only_x = F.conv2d_backward(gy, x, wt, **kw, grad_weight=False, grad_bias=False)
    only_w = F.conv2d_backward(gy, x, wt, **kw, grad_input=False, grad_bias=False)
    only_b = F.conv2d_backward(gy, x, wt, **kw, grad_input=False, grad_weight=False)
    assert only_x[1] is None and only_x[2] is None
    assert only_w[0] is None and only_w[2] is None
    assert only_b[0] is None and only_b[1] is None
    np.testing.assert_array_equal(only_x[0], gx)
    np.testing.assert_array_equal(only_w[1], gw)
    np.testing.assert_array_equal(only_b[2], gb)


def test_views_and_dtypes_are_read_correctly(isa, rng):
    base = rng.standard_normal((3, 4, 14, 12))
    w = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    views = {
        "step2": base[::2, :, ::2, 1::2],
        "negative": base[:, ::-1, ::-1, :],
        "transposed": np.asfortranarray(base),
        "float64": base,
        "int": (base * 10).astype(np.int32),
        "bool": base > 0,
    }
    for name, v in views.items():
        want = ref64.conv2d(np.asarray(v, np.float32), w, None, (1, 1), (1, 1, 1, 1))
        assert_close(F.conv2d(v, w, padding=1), want, name=name)
        # and channels-last views of the same data
        nhwc = np.asarray(v).transpose(0, 2, 3, 1)
        assert_close(
            F.conv2d(nhwc, w, padding=1, data_format="NHWC").transpose(0, 3, 1, 2),
            want,
            name=name + "-nhwc",
        )


def test_results_identical_across_calls_and_thread_counts(isa, rng):
    x = rng.standard_normal((4, 16, 12, 12)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    runs = []
    for n in (1, 2, 1):
        pyconv.set_num_threads(n)
        y = F.conv2d(x, w, padding=1)
        runs.append((y, *F.conv2d_backward(np.ones_like(y), x, w, padding=1)))
    pyconv.set_num_threads(2)
    for a, b in zip(runs[0], runs[1], strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(runs[0], runs[2], strict=True):
        np.testing.assert_array_equal(a, b)


def test_nan_propagates_without_crash(isa):
    x = np.ones((1, 2, 5, 5), np.float32)
    x[0, 0, 2, 2] = np.nan
    y = F.conv2d(x, np.ones((3, 2, 3, 3), np.float32), padding=1)
    assert np.isnan(y[0, :, 1:4, 1:4]).all() and not np.isnan(y[0, :, 0, 0]).any()


def test_bias_only_and_large_batch_channels(isa, rng):
    """A wide layer (more channels than one register tile) with bias, batch 1 and 9."""
    for n in (1, 9):
        x = rng.standard_normal((n, 40, 6, 5)).astype(np.float32)
        w = rng.standard_normal((100, 40, 3, 3)).astype(np.float32)
        b = rng.standard_normal(100).astype(np.float32)
        assert_close(
            F.conv2d(x, w, b, padding="same"),
            ref64.conv2d(x, w, b, (1, 1), (1, 1, 1, 1)),
            rtol=2e-5,
        )


@pytest.mark.parametrize("case", CASES[:6], ids=[str(i) for i in range(6)])
@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_fused_relu_equals_relu_of_the_convolution(case, fmt, isa, rng):
    """activation="relu" is applied as tiles are stored: bit-identical to max(conv, 0), and a
    NaN stays NaN (as np.maximum)."""
    n, c, h, w, o, k, s, p, d, g = case
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    x[0, 0, 0, 0] = np.nan
    if fmt == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    kk = (k, k) if isinstance(k, int) else k
    wt = rng.standard_normal((o, c // g, *kk)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    args = dict(stride=s, padding=p, dilation=d, groups=g, data_format=fmt)
    plain = F.conv2d(x, wt, b, **args)
    fused = F.conv2d(x, wt, b, **args, activation="relu")
    np.testing.assert_array_equal(fused, np.maximum(plain, 0))
    assert np.isnan(fused).sum() == np.isnan(plain).sum() > 0
    with pytest.raises(ValueError, match="activation"):
        F.conv2d(x, wt, b, **args, activation="tanh")


WINOGRAD_CASES = [  # (N, C, H, W, O, padding): channel tails, odd sizes, 'valid' and 'same'
    (2, 32, 9, 7, 32, 1),
    (1, 17, 6, 11, 33, 0),
    (3, 40, 5, 5, 70, "same"),
    (2, 64, 12, 12, 48, 1),
    (1, 3, 4, 4, 5, 0),
]


@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=[str(i) for i in range(5)])
def test_winograd_matches_reference_and_direct(case, isa, rng):
    """Winograd forward and backward-data (F(2x2, 3x3)) and backward-weight (F(3x3, 2x2)):
    against float64, forward within a few ulps of the direct kernel, bias and fused ReLU
    included, identical for 1 and 2 threads."""
    n, c, h, w, o, p = case
    kk = (n, c, h, w, o, 3, 1, p, 1, 1)
    x, wt, b, y_ref, gy, (gx_ref, gw_ref, _) = _data(kk, rng)
    kw = dict(padding=p, data_format="NHWC")
    previous, previous_threads = pyconv.get_conv_algorithm(), pyconv.get_num_threads()
    try:
        pyconv.set_conv_algorithm("direct")
        y_direct = F.conv2d(_to("NHWC", x), wt, b, **kw)
        pyconv.set_conv_algorithm("winograd")
        outs = []
        for threads in (1, 2):
            pyconv.set_num_threads(threads)
            y = F.conv2d(_to("NHWC", x), wt, b, **kw)
            gx, gw, _ = F.conv2d_backward(_to("NHWC", gy), _to("NHWC", x), wt, **kw)
            outs.append((y, gx, gw))
        for one_thread, two_threads in zip(outs[0], outs[1]):
            np.testing.assert_array_equal(one_thread, two_threads)
        y, gx, gw = outs[1]
        assert_close(_from("NHWC", y), y_ref, name="y")
        assert_close(_from("NHWC", gx), gx_ref, name="grad_x")
        assert_close(gw, gw_ref, name="grad_w")
        scale = np.abs(y_direct).max()
        assert np.abs(y - y_direct).max() <= 4e-6 * scale
        relu = F.conv2d(_to("NHWC", x), wt, b, **kw, activation="relu")
        np.testing.assert_array_equal(relu, np.maximum(y, 0))
    finally:
        pyconv.set_conv_algorithm(previous)
        pyconv.set_num_threads(previous_threads)


def test_auto_uses_winograd_only_where_it_pays(rng):
    x = rng.standard_normal((8, 16, 16, 32)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    small = rng.standard_normal((8, 16, 16, 8)).astype(np.float32)
    ws = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    previous = pyconv.get_conv_algorithm()
    try:
        runs = {}
        for algo in ("auto", "direct", "winograd"):
            pyconv.set_conv_algorithm(algo)
            runs[algo] = (F.conv2d(x, w, padding=1, data_format="NHWC"),
                          F.conv2d(small, ws, padding=1, data_format="NHWC"))  # fmt: skip
        np.testing.assert_array_equal(runs["auto"][0], runs["winograd"][0])  # 32 channels
        np.testing.assert_array_equal(runs["auto"][1], runs["direct"][1])  # 8 channels
        assert not np.array_equal(runs["direct"][0], runs["winograd"][0])  # really differ
        with pytest.raises(ValueError, match="algorithm"):
            pyconv.set_conv_algorithm("fft")
    finally:
        pyconv.set_conv_algorithm(previous)


@pytest.mark.parametrize("m_shape", [(1, 1, 1), (2, 1, 1), (1, 1, 2)], ids=["n1", "n2", "w2"])
@pytest.mark.parametrize("c,o", [(9216, 128), (300, 10), (7, 257), (1, 1)])
def test_small_m_matmul_path(m_shape, c, o, isa, rng):
    """A Dense layer at batch 1 or 2 (1x1 conv over <= 2 pixels, NHWC, HWIO) takes the
    row-blocked matmul: bias, fused ReLU, NaN kept, column tails, any thread count."""
    n, h, w = m_shape
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    wt = rng.standard_normal((1, 1, c, o)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    want = np.einsum("nhwc,co->nhwo", x.astype(np.float64), wt[0, 0].astype(np.float64)) + b
    kw = dict(data_format="NHWC", weight_format="HWIO")
    results = []
    for threads in (1, 2):
        pyconv.set_num_threads(threads)
        y = F.conv2d(x, wt, b, **kw)
        assert_close(y, want, rtol=2e-5)
        yr = F.conv2d(x, wt, b, activation="relu", **kw)
        np.testing.assert_array_equal(yr, np.maximum(y, 0))
        results.append(y)
    pyconv.set_num_threads(2)
    np.testing.assert_array_equal(results[0], results[1])
    xn = x.copy()
    xn.flat[0] = np.nan  # pixel 0, channel 0: every output of pixel 0 is NaN, relu or not
    yn = F.conv2d(xn, wt, b, activation="relu", **kw)
    assert np.isnan(yn[0, 0, 0]).all()
    assert not np.isnan(yn.reshape(-1, o)[1:]).any()


def test_geometry_cache_keeps_validating(rng):
    """Geometries are memoized per argument values and types: a float stride is rejected
    even after the same int stride was accepted, and a bad padding after a good one."""
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    for _ in range(2):
        assert F.conv2d(x, w, stride=2).shape == (1, 3, 2, 2)
        with pytest.raises((TypeError, ValueError), match="stride"):
            F.conv2d(x, w, stride=2.0)
        with pytest.raises(ValueError, match="stride"):
            F.conv2d(x, w, stride=0)
        with pytest.raises((TypeError, ValueError), match="padding"):
            F.conv2d(x, w, padding=(1.0, 1))
        assert F.conv2d(x, w, padding=[1, 1]).shape == (1, 3, 6, 6)  # unhashable: no cache
