"""The lectures' networks end to end: pyconv vs the same architecture in PyTorch's CPU
backend (when importable), same batch, same threads, one run.

    python bench/train_bench.py [--batch 128] [--steps 10] [--threads N] [--latency] [--memory]

- Training: a step is forward + loss + backward + Adam update on random data of the real
  shapes; each library's number is its best of ``--repeats`` timings of ``--steps`` steps
  after warm-up steps, in images/s.
- ``--latency``: inference on one image (pyconv ``model.predict``, PyTorch ``net(x)`` in
  eval mode under no_grad), fastest of repeated calls, in ms.
- ``--memory``: peak memory of training steps at the batch size, each library in a fresh
  process: the high-water RSS (VmHWM) after 3 steps minus the RSS once model and data exist.
A benchmark, not a test: nothing asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
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


def train_steps(library, name, x, y):
    """A function running one full training step (forward, loss, backward, Adam) of the
    network in pyconv or PyTorch on the batch x (NHWC), y."""
    ours, theirs, _ = NETS[name]
    if library == "pyconv":
        model = ours()
        model.compile("adam", "sparse_categorical_crossentropy")
        return lambda: model.train_on_batch(x, y)
    net = theirs()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    yt = torch.from_numpy(y)

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()

    return step


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


def fastest_ms(fn, budget=0.5, min_reps=5):
    fn()
    times, start = [], time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < budget:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * min(times)


def latency(name):
    """(pyconv ms, PyTorch ms or None) for one image through the network in inference mode."""
    ours, theirs, shape = NETS[name]
    x = np.random.default_rng(1).random((1, *shape), dtype=np.float32)
    model = ours()
    model.predict(x, verbose=0)
    ours_ms = fastest_ms(lambda: model.predict(x, verbose=0))
    if torch is None:
        return ours_ms, None
    net = theirs().eval()
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        theirs_ms = fastest_ms(lambda: net(xt))
    return ours_ms, theirs_ms


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (resource.getpagesize() // 1024)


def _memory_child(library, name, batch, threads):
    """Runs in a fresh process: prints the step's peak memory above the set-up, in KiB."""
    shape = NETS[name][2]
    rng = np.random.default_rng(0)
    x = rng.random((batch, *shape), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    pyconv.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    step = train_steps(library, name, x, y)
    base = _rss_kib()
    for _ in range(3):
        step()
    # VmHWM, not ru_maxrss: the latter survives exec, so a child of a big parent reports the
    # parent's peak.
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print(json.dumps({"kib": hwm - base}))


def step_memory(name, batch, threads):
    """{library: peak KiB of a training step above set-up}, each from a fresh process."""
    out = {}
    for library in ("pyconv", "torch") if torch is not None else ("pyconv",):
        res = subprocess.run(
            [sys.executable, __file__, "--memory-child", library, name, str(batch), str(threads)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        out[library] = json.loads(res.stdout.strip().splitlines()[-1])["kib"]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=pyconv.get_num_threads())
    ap.add_argument("--latency", action="store_true", help="batch-1 inference latency too")
    ap.add_argument("--memory", action="store_true", help="peak memory of a training step too")
    ap.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        library, name, batch, threads = args.memory_child
        _memory_child(library, name, int(batch), int(threads))
        return
    pyconv.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"batch {args.batch}, {args.threads} threads; images/s "
          f"(best of {args.repeats} x {args.steps} steps)")  # fmt: skip
    print(f"{'network':<14}{'pyconv':>10}{'pytorch':>10}{'ratio':>8}")
    for name, (_, _, shape) in NETS.items():
        x = rng.random((args.batch, *shape), dtype=np.float32)
        y = rng.integers(0, 10, args.batch)
        print(bench_network(name, x, y, args))
    if args.latency:
        print("batch-1 inference latency, ms (fastest call)")
        for name in NETS:
            ours_ms, theirs_ms = latency(name)
            tail = "" if theirs_ms is None else f"{theirs_ms:>10.3f}{theirs_ms / ours_ms:>7.2f}x"
            print(f"{name:<14}{ours_ms:>10.3f}{tail}")
    if args.memory:
        print(f"peak memory of a training step at batch {args.batch}, MiB above set-up")
        for name in NETS:
            mem = step_memory(name, args.batch, args.threads)
            print(f"{name:<14}" + "".join(f"{v / 1024:>10.1f}" for v in mem.values()))


def training_rates(name, x, y, args):
    """(pyconv images/s, PyTorch images/s or None) of full training steps."""
    rate = lambda lib: best_rate(train_steps(lib, name, x, y), args.batch, args.steps, args.repeats)  # noqa: E731
    return rate("pyconv"), (rate("torch") if torch is not None else None)


def bench_network(name, x, y, args) -> str:
    """One table row: pyconv's and (if importable) PyTorch's training images/s."""
    ours_rate, theirs_rate = training_rates(name, x, y, args)
    line = f"{name:<14}{ours_rate:>10.0f}"
    if theirs_rate is None:
        return line
    return line + f"{theirs_rate:>10.0f}{ours_rate / theirs_rate:>7.2f}x"


if __name__ == "__main__":
    main()
