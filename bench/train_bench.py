"""Training-step throughput of the lectures' networks: pyconv vs the same architecture in
PyTorch's CPU backend (when importable), same batch, same threads, one run.

    python bench/train_bench.py [--batch 128] [--steps 10] [--threads N]

A step is forward + loss + backward + Adam update on random data of the real shapes. Each
library's number is its best of ``--repeats`` timings of ``--steps`` steps after warm-up
steps. Images/s; higher is better. A benchmark, not a test: nothing asserts a speed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import pyconv
from pyconv import zoo

try:
    import torch
    import torch.nn as tnn
except ImportError:
    torch = None


def torch_mnist_cnn():
    return tnn.Sequential(
        tnn.Conv2d(1, 32, 3), tnn.ReLU(), tnn.Conv2d(32, 64, 3), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Dropout(0.25), tnn.Flatten(), tnn.Linear(9216, 128), tnn.ReLU(), tnn.Dropout(0.5),
        tnn.Linear(128, 10),
    )  # fmt: skip


def torch_cifar_cnn():
    mods, c = [], 3
    for filters, rate in ((32, 0.2), (64, 0.3), (128, 0.4)):
        mods += [tnn.Conv2d(c, filters, 3, padding=1), tnn.ReLU(), tnn.BatchNorm2d(filters),
                 tnn.Conv2d(filters, filters, 3, padding=1), tnn.ReLU(), tnn.BatchNorm2d(filters),
                 tnn.MaxPool2d(2), tnn.Dropout(rate)]  # fmt: skip
        c = filters
    mods += [tnn.Flatten(), tnn.Linear(2048, 512), tnn.ReLU(), tnn.BatchNorm1d(512),
             tnn.Dropout(0.5), tnn.Linear(512, 10)]  # fmt: skip
    return tnn.Sequential(*mods)


NETS = {"mnist_cnn": (zoo.mnist_cnn, torch_mnist_cnn, (28, 28, 1)),
        "cifar10_cnn": (zoo.cifar10_cnn, torch_cifar_cnn, (32, 32, 3))}  # fmt: skip


def best_rate(step, batch, steps, repeats):
    for _ in range(2):
        step()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, time.perf_counter() - t)
    return batch * steps / best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=pyconv.get_num_threads())
    args = ap.parse_args(argv)
    pyconv.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"batch {args.batch}, {args.threads} threads; images/s "
          f"(best of {args.repeats} x {args.steps} steps)")  # fmt: skip
    print(f"{'network':<14}{'pyconv':>10}{'pytorch':>10}{'ratio':>8}")
    for name, (ours, theirs, shape) in NETS.items():
        x = rng.random((args.batch, *shape), dtype=np.float32)
        y = rng.integers(0, 10, args.batch)
        print(bench_network(name, ours, theirs, x, y, args))


def bench_network(name, ours, theirs, x, y, args) -> str:
    """One table row: pyconv's and (if importable) PyTorch's training images/s."""
    model = ours()
    model.compile("adam", "sparse_categorical_crossentropy")
    ours_rate = best_rate(lambda: model.train_on_batch(x, y), args.batch, args.steps, args.repeats)
    line = f"{name:<14}{ours_rate:>10.0f}"
    if torch is None:
        return line
    net = theirs()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    yt = torch.from_numpy(y)

    def torch_step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()

    theirs_rate = best_rate(torch_step, args.batch, args.steps, args.repeats)
    return line + f"{theirs_rate:>10.0f}{ours_rate / theirs_rate:>7.2f}x"


if __name__ == "__main__":
    main()
