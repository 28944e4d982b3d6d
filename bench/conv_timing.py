"""One 3x3 convolution's forward and weight gradient, one thread, minimum of repeated calls:
for comparing two builds of the core (bench/build_rev.sh), e.g. the cost of the Winograd
value check (README Design):

    bash bench/build_rev.sh REV_A /tmp/a && bash bench/build_rev.sh REV_B /tmp/b
    for i in 1 2 3; do for d in /tmp/a /tmp/b; do
        PYTHONPATH=$d/pkg python bench/conv_timing.py; done; done
"""

from __future__ import annotations

import sys
import time

import numpy as np

import pyconv
from pyconv import functional as F


def best_ms(fn, repeats=40) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def main() -> None:
    n, c, hw, o = 64, 32, 32, 32  # a lecture CIFAR layer (Winograd's range)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, hw, hw, c), dtype=np.float32)
    w = rng.standard_normal((3, 3, c, o), dtype=np.float32)
    gy = rng.standard_normal((n, hw, hw, o), dtype=np.float32)
    pyconv.set_num_threads(1)
    pyconv.set_conv_algorithm("winograd")
    kw = dict(padding=1, data_format="NHWC", weight_format="HWIO")
    fwd = best_ms(lambda: F.conv2d(x, w, **kw))
    wgrad = best_ms(lambda: F.conv2d_backward(gy, x, w, grad_input=False, grad_bias=False, **kw))
    print(f"{pyconv.__file__}: {pyconv.get_isa()}, forward {fwd:.2f} ms, "
          f"weight gradient {wgrad:.2f} ms", file=sys.stdout)  # fmt: skip


if __name__ == "__main__":
    main()
