"""The weight gradient's ways of reading gy (csrc/conv_plan.cpp plan_conv_weight_grad): in
place, packed pixel-major, or packed tile-major with L1 blocks of rows; and of writing gw:
through a workspace, or accumulated in place in a dense HWIO gw. Each against the float64
reference on every ISA, and bit-identical for 1 and 2 threads."""

from __future__ import annotations

import numpy as np
import pytest
import ref64
from conftest import assert_close

import pyconv
from pyconv import functional as F

# (N, C, H, W, O, kernel, stride, padding, groups): which gy layout each gets depends on the
# ISA's tile width (AVX-512: 64 output channels a tile; AVX2: 16; generic: 4 or 8).
CASES = [
    (2, 48, 7, 6, 160, 3, 1, 1, 2),  # 2 groups of 80 outputs, 36+ row blocks: tile-major
    (2, 48, 9, 9, 128, 3, 2, 1, 1),  # stride 2, several channel tiles: tile-major
    (3, 40, 5, 5, 64, 1, 1, 0, 1),  # 1x1, few row blocks: gy read in place (NHWC)
    (2, 64, 4, 5, 70, 3, 1, 1, 1),  # 70 outputs: padded tiles, pixel-major
    (1, 32, 3, 17, 96, 3, 1, 1, 1),  # a single image, rows longer than an L1 block
]


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
@pytest.mark.parametrize("wfmt", ["OIHW", "HWIO"])
def test_weight_gradient_matches_reference_on_every_layout(case, fmt, wfmt, isa, rng):
    n, c, h, w, o, k, s, p, g = case
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((o, c // g, k, k)).astype(np.float32)
    y = ref64.conv2d(x, wt, None, (s, s), (p,) * 4, (1, 1), g)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    _, gw_ref, gb_ref = ref64.conv2d_backward(gy, x, wt, (s, s), (p,) * 4, (1, 1), g)
    if fmt == "NHWC":
        x, gy = (np.ascontiguousarray(a.transpose(0, 2, 3, 1)) for a in (x, gy))
    w_in = wt.transpose(2, 3, 1, 0) if wfmt == "HWIO" else wt
    runs = []
    for threads in (1, 2):
        pyconv.set_num_threads(threads)
        runs.append(
            F.conv2d_backward(
                gy,
                x,
                w_in,
                stride=s,
                padding=p,
                groups=g,
                data_format=fmt,
                weight_format=wfmt,
                grad_input=False,
            )
        )
    _, gw, gb = runs[0]
    assert_close(gw.transpose(3, 2, 0, 1) if wfmt == "HWIO" else gw, gw_ref)
    assert_close(gb, gb_ref)
    np.testing.assert_array_equal(runs[1][1], gw)
    np.testing.assert_array_equal(runs[1][2], gb)
