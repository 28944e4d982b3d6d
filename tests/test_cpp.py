"""The core's own C++ unit tests (plans, packing, kernel tables), and its convolution plans
checked from Python: the algorithm each geometry gets, and that the plan is what runs."""

import threading

import numpy as np
import pytest

from pyconv import _core

ISAS = _core.available_isas()


def test_native_tests_pass():
    """csrc/native_tests*.cpp: planning rules, workspace sizes, the plan cache, the kernel
    tables' completeness, and layout/weight packing round trips on every supported ISA."""
    assert _core._run_native_tests() == []


def plan(x_shape, w_shape, stride=1, pad=0, dil=1, groups=1, **kw):
    return _core._plan_conv(
        x_shape, w_shape, stride, stride, pad, pad, pad, pad, dil, dil, groups, **kw
    )


# (x NCHW, w OIHW, stride, pad, dilation, groups, algorithm) -> the method pyconv has always
# chosen, on every ISA
RULE_TABLE = [
    ((8, 64, 32, 32), (64, 64, 3, 3), 1, 1, 1, 1, "auto", "winograd"),
    ((32, 128, 8, 8), (128, 128, 3, 3), 1, 1, 1, 1, "auto", "winograd"),
    ((8, 32, 16, 16), (32, 32, 3, 3), 1, 1, 1, 1, "auto", "winograd"),
    ((8, 16, 32, 32), (64, 16, 3, 3), 1, 1, 1, 1, "auto", "direct"),  # few channels
    ((8, 256, 16, 16), (256, 256, 3, 3), 1, 1, 1, 1, "auto", "direct"),  # big C*O
    ((1, 64, 16, 16), (64, 64, 3, 3), 1, 1, 1, 1, "auto", "direct"),  # 64 tiles
    ((8, 64, 32, 32), (64, 64, 3, 3), 2, 1, 1, 1, "auto", "direct"),  # stride 2
    ((8, 64, 32, 32), (64, 64, 3, 3), 1, 2, 2, 1, "auto", "direct"),  # dilation 2
    ((8, 64, 32, 32), (64, 32, 3, 3), 1, 1, 1, 2, "auto", "direct"),  # groups
    ((8, 64, 32, 32), (64, 64, 3, 3), 1, 1, 1, 1, "direct", "direct"),
    ((1, 3, 8, 8), (4, 3, 3, 3), 1, 1, 1, 1, "winograd", "winograd"),
    ((1, 3, 3, 8), (4, 3, 3, 3), 1, 0, 1, 1, "winograd", "direct"),  # one output row
    ((1, 9216, 1, 1), (128, 9216, 1, 1), 1, 0, 1, 1, "auto", "small_matmul"),
    ((2, 100, 1, 1), (10, 100, 1, 1), 1, 0, 1, 1, "auto", "small_matmul"),
    ((3, 100, 1, 1), (10, 100, 1, 1), 1, 0, 1, 1, "auto", "direct"),
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("xs, ws, stride, pad, dil, groups, algo, want", RULE_TABLE)
def test_algorithm_rule(isa, xs, ws, stride, pad, dil, groups, algo, want):
    got = plan(xs, ws, stride, pad, dil, groups, isa=isa, algorithm=algo, threads=4)
    assert got["method"] == want
    assert ("winograd" in got) == (want == "winograd")


# With the weights cached (inference), Winograd from 32 tiles up to 256x256 channels.
CACHED_RULE_TABLE = [
    ((1, 128, 28, 28), (128, 128, 3, 3), "winograd"),
    ((1, 256, 14, 14), (256, 256, 3, 3), "winograd"),
    ((64, 256, 14, 14), (256, 256, 3, 3), "winograd"),
    ((1, 512, 7, 7), (512, 512, 3, 3), "direct"),  # U: 16 MB for 16 tiles
    ((1, 64, 10, 10), (64, 64, 3, 3), "direct"),  # 25 tiles
    ((1, 16, 28, 28), (64, 16, 3, 3), "direct"),  # few channels
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("xs, ws, want", CACHED_RULE_TABLE)
def test_algorithm_rule_with_cached_weights(isa, xs, ws, want):
    cached = plan(xs, ws, 1, 1, isa=isa, algorithm="auto", threads=2, weights_cached=True)
    assert cached["method"] == want
    uncached = plan(xs, ws, 1, 1, isa=isa, algorithm="auto", threads=2)
    if xs[0] == 1:
        assert uncached["method"] == "direct"


@pytest.mark.parametrize("isa", ISAS)
def test_task_order_rule(isa):
    """AVX2 (16 registers) runs chunks of pixel tiles through every channel tile, except for
    first layers (T * C < 64); AVX-512 always runs pixel tiles fastest."""
    mid = plan((8, 64, 16, 16), (64, 64, 3, 3), 1, 1, isa=isa, algorithm="direct", threads=4)
    first = plan((8, 3, 32, 32), (32, 3, 3, 3), 1, 1, isa=isa, threads=4)
    assert first["direct"]["chunk"] == 1
    assert mid["direct"]["chunk"] == (1 if isa == "avx512" else 8)
    tiny = plan((1, 4, 4, 4), (4, 4, 3, 3), 1, 1, isa=isa, threads=4)
    assert tiny["direct"]["threads"] == 1
    assert mid["direct"]["threads"] == 4


def test_workspace_sizes():
    got = plan(
        (2, 6, 10, 12),
        (20, 3, 3, 3),
        2,
        1,
        1,
        2,
        isa=ISAS[-1],
        w_dense_hwio=False,
        x_dense_nhwc=False,
        y_dense_nhwc=False,
    )
    d = got["direct"]
    assert got["output_size"] == (5, 6)
    assert d["input_floats"] == 2 * 12 * 14 * 6  # padded NHWC input
    nt, ntl = d["tiling"]["channels"], d["tiling"]["tiles"]
    assert d["weight_floats"] == 2 * ntl * 9 * 3 * nt  # [g][tile][tap][c][NT]
    assert d["out_floats"] == 2 * 5 * 6 * 20  # NCHW output: written through a workspace
    unpadded = plan((2, 6, 10, 12), (20, 6, 1, 1), isa=ISAS[-1])
    assert unpadded["direct"]["input_floats"] == unpadded["direct"]["out_floats"] == 0


def run_conv(x, w, pad=1):
    """conv2d_forward of NHWC x with HWIO w (both as logical views), stride 1."""
    y = np.zeros((x.shape[0], x.shape[1], x.shape[2], w.shape[3]), np.float32)
    args = (1, 1, pad, pad, pad, pad, 1, 1, 1)
    xv, wv, yv = x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), y.transpose(0, 3, 1, 2)
    _core.conv2d_forward(xv, wv, None, yv, *args)
    return y


@pytest.mark.parametrize("isa", ISAS)
def test_the_plan_is_what_runs(isa):
    """Under "auto", a geometry planned as Winograd gives the forced-Winograd result bit for
    bit, and one planned as direct the forced-direct result (the two differ by rounding)."""
    rng = np.random.default_rng(0)
    before_isa, before_algo = _core.get_isa(), _core.get_conv_algorithm()
    try:
        _core.set_isa(isa)
        for c, n, want in [(64, 8, "winograd"), (16, 8, "direct")]:
            x = rng.standard_normal((n, 16, 16, c)).astype(np.float32)  # NHWC
            w = rng.standard_normal((3, 3, c, 64)).astype(np.float32)  # HWIO
            got = plan((n, c, 16, 16), (64, c, 3, 3), 1, 1, algorithm="auto")
            assert got["method"] == want
            out = {}
            for algo in ("auto", "direct", "winograd"):
                _core.set_conv_algorithm(algo)
                out[algo] = run_conv(x, w)
            assert np.array_equal(out["auto"], out[want])
            assert not np.array_equal(out["direct"], out["winograd"])
    finally:
        _core.set_isa(before_isa)
        _core.set_conv_algorithm(before_algo)


def test_workspace_holds_the_plan():
    """A fresh thread's workspaces after one forward hold at least the plan's workspace."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 16, 16, 64)).astype(np.float32)
    w = rng.standard_normal((3, 3, 64, 64)).astype(np.float32)
    expected = plan((4, 64, 16, 16), (64, 64, 3, 3), 1, 1)["workspace_bytes"]
    held = []

    def work():
        run_conv(x, w)
        held.append(_core.workspace_bytes())
        _core.release_workspace()

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert held[0] >= expected > 0


def test_row_taps_merge_rule():
    """A kernel row's taps run as one tap of KW*C channels with one group and no column
    dilation (tests/test_conv2d.py checks the values of every case)."""
    assert plan((1, 3, 64, 64), (64, 3, 7, 7), 2, 3)["direct"]["merge_row_taps"]
    assert not plan((1, 4, 16, 16), (8, 2, 3, 3), 1, 1, groups=2)["direct"]["merge_row_taps"]
    assert not plan((1, 4, 16, 16), (8, 4, 3, 3), 1, 2, dil=2)["direct"]["merge_row_taps"]
