"""Weight gradient of conv2d, pyconv against PyTorch, measured side by side (issue 16).

Each shape's pyconv and PyTorch (NCHW and channels_last, the better counts) calls alternate
for a few rounds and each side keeps its best time, so a noisy machine hurts both alike:

    flock /tmp/bench.lock python bench/wgrad_bench.py [--threads 2] [--shapes PREFIX,...]

On a machine shared with other jobs, `--threads 1 --cpu-time` compares the kernels by the
CPU time they use (a descheduled thread costs nothing).
"""

from __future__ import annotations

import argparse
import math
import time

import bench  # first: it imports PyTorch before pyconv (train_bench explains why)
import numpy as np

import pyconv
from pyconv import functional as F

torch = bench.torch

# (name, N, C, H, W, O, k, stride, pad): bench/bench.py's table, and ResNet-18's layers in a
# 224 px batch-8 training step.
SHAPES = [
    *bench.SHAPES,
    ("r18b8 conv1 7x7", 8, 3, 224, 224, 64, 7, 2, 3),
    ("r18b8 64@56", 8, 64, 56, 56, 64, 3, 1, 1),
    ("r18b8 128@28", 8, 128, 28, 28, 128, 3, 1, 1),
    ("r18b8 256@14", 8, 256, 14, 14, 256, 3, 1, 1),
    ("r18b8 512@7", 8, 512, 7, 7, 512, 3, 1, 1),
    ("r18b8 64->128 s2", 8, 64, 56, 56, 128, 3, 2, 1),
    ("r18b8 128->256 s2", 8, 128, 28, 28, 256, 3, 2, 1),
    ("r18b8 256->512 s2", 8, 256, 14, 14, 512, 3, 2, 1),
]


CLOCK = time.perf_counter


def once(fn) -> float:
    t0 = CLOCK()
    fn()
    return CLOCK() - t0


def bench(shape, threads, rounds):
    name, n, c, h, w, o, k, s, p = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, h, w, c), dtype=np.float32)
    wk = rng.standard_normal((k, k, c, o), dtype=np.float32) / math.sqrt(c * k * k)
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    gy = rng.standard_normal((n, oh, ow, o), dtype=np.float32)
    flops = 2.0 * n * o * oh * ow * c * k * k
    kw = dict(stride=s, padding=p, data_format="NHWC", weight_format="HWIO")

    def ours():
        return F.conv2d_backward(gy, x, wk, **kw, grad_input=False, grad_bias=False)

    fns = {"pyconv": ours}
    if torch is not None:
        torch.set_num_threads(threads)
        xt = torch.from_numpy(x).permute(0, 3, 1, 2)  # channels_last views
        gyt = torch.from_numpy(gy).permute(0, 3, 1, 2)
        wt = torch.from_numpy(np.ascontiguousarray(wk.transpose(3, 2, 0, 1)))
        for lay, (a, g, b) in {
            "NCHW": (xt.contiguous(), gyt.contiguous(), wt),
            "channels_last": (xt, gyt, wt.contiguous(memory_format=torch.channels_last)),
        }.items():
            fns[f"torch {lay}"] = lambda a=a, g=g, b=b: torch.ops.aten.convolution_backward(
                g, a, b, None, (s, s), (p, p), (1, 1), False, (0, 0), 1, (False, True, False)
            )
        ref = fns["torch NCHW"]()[1].numpy().transpose(2, 3, 1, 0)
        got = ours()[1]
        err = float(np.abs(got - ref).max()) / max(1.0, float(np.abs(ref).max()))
        assert err < 1e-3, f"{name}: pyconv and PyTorch disagree ({err:.3g})"
    best = dict.fromkeys(fns, math.inf)
    for f in fns.values():
        f()
    for _ in range(rounds):
        for key, f in fns.items():
            best[key] = min(best[key], once(f))
    gf = {key: flops / t / 1e9 for key, t in best.items()}
    tgf = max((v, key) for key, v in gf.items() if key != "pyconv") if torch else (math.nan, "-")
    return gf["pyconv"], tgf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=pyconv.get_num_threads())
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--shapes", default=None, help="comma-separated name prefixes")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time by the process's CPU time (with --threads 1: robust on a busy machine)",
    )
    args = parser.parse_args()
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
    pyconv.set_num_threads(args.threads)
    shapes = SHAPES
    if args.shapes:
        prefixes = [q.strip() for q in args.shapes.split(",")]
        shapes = [sh for sh in SHAPES if any(sh[0].startswith(q) for q in prefixes)]
    peak = pyconv._core.peak_gflops(0.2) * args.threads
    print(f"{pyconv.get_isa()}, {args.threads} threads, measured FMA peak {peak:.0f} GFLOP/s")
    print(f"{'shape':28s} {'pyconv':>8s} {'%peak':>6s} {'torch':>8s} {'ratio':>6s}")
    for shape in shapes:
        ours, (theirs, lay) = bench(shape, args.threads, args.rounds)
        print(
            f"{shape[0]:28s} {ours:8.1f} {100 * ours / peak:5.0f}% {theirs:8.1f} "
            f"{ours / theirs:5.2f}x  ({lay})",
            flush=True,
        )


if __name__ == "__main__":
    main()
