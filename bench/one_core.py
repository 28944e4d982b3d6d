"""GFLOP/s of one convolution pass on one thread, direct algorithm (how a kernel change is
judged against the single-core FMA peak, without the second core's noise).

    python bench/one_core.py                    # the wide, stride-2 and 1x1 shapes
    python bench/one_core.py --shape 64,256,14,256,1,3 --shape 1,512,7,512,1,3
Shapes: N,C,H,O,stride,k (NHWC input H x H, HWIO kernel, padding k // 2).
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np

import pyconv
from pyconv import functional as F

DEFAULT = ["64,256,14,256,1,3", "1,512,7,512,1,3", "1,256,14,256,1,3", "16,64,56,128,2,3",
           "16,256,14,256,1,1", "64,512,7,512,1,3"]  # fmt: skip


def best_seconds(fn, budget=0.4):
    fn()
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < budget or best == float("inf"):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", action="append", help="N,C,H,O,stride,k (repeatable)")
    args = parser.parse_args()
    pyconv.set_num_threads(1)
    pyconv.set_conv_algorithm("direct")
    peak = pyconv._core.peak_gflops(0.3)
    print(f"isa {pyconv.get_isa()}, one thread, FMA peak {peak:.1f} GFLOP/s")
    rng = np.random.default_rng(0)
    for spec in args.shape or DEFAULT:
        n, c, h, o, s, k = (int(v) for v in spec.split(","))
        x = rng.random((n, h, h, c), dtype=np.float32)
        w = rng.random((k, k, c, o), dtype=np.float32)
        kw = dict(padding=k // 2, stride=s, data_format="NHWC", weight_format="HWIO")
        y = F.conv2d(x, w, **kw)
        gy = rng.random(y.shape, dtype=np.float32)
        flops = 2 * n * o * c * k * k * y.shape[1] * y.shape[2]
        bwd = partial(F.conv2d_backward, gy, x, w, **kw, grad_bias=False)
        passes = {
            "forward": partial(F.conv2d, x, w, **kw),
            "backward-data": partial(bwd, grad_weight=False),
            "backward-weight": partial(bwd, grad_input=False),
        }
        cells = []
        for name, fn in passes.items():
            g = flops / best_seconds(fn) / 1e9
            cells.append(f"{name} {g:6.1f} ({100 * g / peak:3.0f}%)")
        print(f"{spec:20s} " + "  ".join(cells))


if __name__ == "__main__":
    main()
