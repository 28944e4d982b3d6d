"""pyconv benchmark: conv2d forward / backward-data / backward-weight and pooling against
NumPy im2col + matmul and PyTorch's CPU backend (when importable), in one run.

    python bench/bench.py [--quick] [--threads N] [--out bench/README.md] [--plots]

Every number is the fastest of several repeats after a warm-up call (on a shared, noisy
machine the minimum is the least-disturbed estimate; every library gets the same rule).
GFLOP/s counts 2 * N * O * OH * OW * (C / groups) * KH * KW for each of the three conv
passes. Peers get the same thread count. Outputs are checked against pyconv's once per shape
before timing, so all columns do the same work. This is a benchmark, not a test: nothing
here asserts a speed.
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import peers
import train_bench

import pyconv
from pyconv import functional as F

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # PyTorch is an optional peer
    torch = None

# name, N, C, H, W, O, k, stride, pad
SHAPES = [
    ("mnist conv1", 128, 1, 28, 28, 32, 3, 1, 0),
    ("mnist conv2", 128, 32, 26, 26, 64, 3, 1, 0),
    ("lenet c1 5x5", 64, 1, 32, 32, 6, 5, 1, 0),
    ("lenet c3 5x5", 64, 6, 14, 14, 16, 5, 1, 0),
    ("cifar conv1", 64, 3, 32, 32, 32, 3, 1, 1),
    ("cifar 32ch", 64, 32, 32, 32, 32, 3, 1, 1),
    ("cifar 64ch", 64, 64, 16, 16, 64, 3, 1, 1),
    ("cifar 128ch", 64, 128, 8, 8, 128, 3, 1, 1),
    ("resnet18 64@56 b1", 1, 64, 56, 56, 64, 3, 1, 1),
    ("resnet18 128@28 b1", 1, 128, 28, 28, 128, 3, 1, 1),
    ("resnet18 256@14 b1", 1, 256, 14, 14, 256, 3, 1, 1),
    ("resnet18 512@7 b1", 1, 512, 7, 7, 512, 3, 1, 1),
    ("resnet18 64@56 b16", 16, 64, 56, 56, 64, 3, 1, 1),
    ("resnet18 128@28 b32", 32, 128, 28, 28, 128, 3, 1, 1),
    ("resnet18 256@14 b64", 64, 256, 14, 14, 256, 3, 1, 1),
    ("resnet18 512@7 b64", 64, 512, 7, 7, 512, 3, 1, 1),
    ("stride-2 down 64->128", 16, 64, 56, 56, 128, 3, 2, 1),
    ("1x1 256->256", 16, 256, 14, 14, 256, 1, 1, 0),
]
NOTES = [
    "3x3 stride-1 layers with 32-128 channels run Winograd (F(2x2,3x3) forward and "
    "backward-data, F(3x3,2x2) weight gradient; GFLOP/s above count the direct method's "
    "FLOPs, hence > 100% of peak). Wider layers keep the direct kernel: their transformed "
    "weights (16*C*O floats) no longer fit in L2 and are re-read for every block of tiles; a "
    "Winograd blocked over channels is the next step, and where PyTorch wins on 256-512 "
    "channels it is by such an algorithm, not by a faster direct kernel.",
    "Batch 1 on 512@7x7 (and other layers where weights outweigh activations): every call "
    "repacks the layer's 9.4 MB of weights into the kernel's tile layout, about as long as "
    "the convolution itself; layers that cache their packed weights would remove it.",
    "Direct weight gradient (shapes without Winograd): 40-60% of one core's peak on AVX2 "
    "for batches, about 22% on 512@7 at batch 1 (python bench/one_core.py); its inner loop "
    "is clean but every row tile re-streams the chunk of gy from L2.",
    "First layers: 1-6 output channels fill few of the vector lanes, and 3 input channels "
    "give a short reduction; PyTorch uses dedicated kernels for these.",
    "Batch-1 latency: the MNIST CNN's dense layer must read its 4.7 MB of weights for each "
    "image (about 0.1 ms at 45-50 GB/s), and each layer costs 5-8 us of Python and binding "
    "(a softmax head 20 us) over 8 to 23 layers (python bench/layer_latency.py mnist_cnn); "
    "PyTorch's per-op overhead is similar, so a 2x margin needs fused inference graphs (not "
    "built).",
    "On AVX2 (16 registers) the direct kernel runs chunks of pixel tiles through every "
    "channel tile (input in L1/L2, weights streamed); AVX-512 keeps pixel tiles fastest. "
    "The AVX-512 numbers of an earlier run are in bench/results/.",
]
QUICK = ["mnist conv2", "cifar 64ch", "resnet18 256@14 b1", "stride-2 down 64->128"]
PASSES = ("forward", "backward-data", "backward-weight")


def timeit(fn, budget=0.3, min_reps=3, max_reps=50):
    """Fastest seconds of fn() after one warm-up call; repeats until `budget` s are spent."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < budget and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def settle(seconds=0.3):
    """Let other libraries' spinning worker threads go idle before timing the next one."""
    time.sleep(seconds)


def measure_peak(threads, seconds=0.3):
    """(single-core, all-threads) fp32 FMA peak in GFLOP/s, measured with pyconv's FMA loop."""
    single = pyconv._core.peak_gflops(seconds)
    results = [0.0] * threads

    def run(i):
        results[i] = pyconv._core.peak_gflops(seconds)  # releases the GIL

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return single, sum(results)


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def check(name, ours, theirs):
    ours = np.asarray(ours, np.float64)
    theirs = np.asarray(theirs, np.float64)
    scale = max(1.0, float(np.abs(theirs).max()))
    err = float(np.abs(ours - theirs).max())
    if err > 1e-3 * scale:
        raise AssertionError(f"{name}: peers disagree (max abs err {err:.3g}, scale {scale:.3g})")


def bench_conv(shape, threads):
    """Times every pass of one shape for pyconv, NumPy and (optionally) PyTorch."""
    name, n, c, h, w, o, k, s, p = shape
    rng = np.random.default_rng(0)
    x_nchw = rng.standard_normal((n, c, h, w), dtype=np.float32)
    w_oihw = rng.standard_normal((o, c, k, k), dtype=np.float32) / math.sqrt(c * k * k)
    x = np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))  # NHWC
    w_hwio = np.ascontiguousarray(w_oihw.transpose(2, 3, 1, 0))
    kw = dict(stride=s, padding=p, data_format="NHWC", weight_format="HWIO")
    y = F.conv2d(x, w_hwio, **kw)
    oh, ow = y.shape[1:3]
    gy = rng.standard_normal(y.shape, dtype=np.float32)
    flops = 2.0 * n * o * oh * ow * c * k * k
    row = {"shape": shape, "flops": flops}

    gx, gw, _ = F.conv2d_backward(gy, x, w_hwio, **kw, grad_bias=False)
    check(f"{name} numpy fwd", y, peers.conv2d_forward(x, w_hwio, s, p))
    check(f"{name} numpy bwd-data", gx, peers.conv2d_backward_data(gy, w_hwio, x.shape, s, p))
    check(f"{name} numpy bwd-weight", gw, peers.conv2d_backward_weight(gy, x, k, s, p))

    ours = {
        "forward": lambda: F.conv2d(x, w_hwio, **kw),
        "backward-data": lambda: F.conv2d_backward(
            gy, x, w_hwio, **kw, grad_weight=False, grad_bias=False
        ),
        "backward-weight": lambda: F.conv2d_backward(
            gy, x, w_hwio, **kw, grad_input=False, grad_bias=False
        ),
    }
    numpy_fns = {
        "forward": lambda: peers.conv2d_forward(x, w_hwio, s, p),
        "backward-data": lambda: peers.conv2d_backward_data(gy, w_hwio, x.shape, s, p),
        "backward-weight": lambda: peers.conv2d_backward_weight(gy, x, k, s, p),
    }
    # Each library's thread pool keeps spinning for a moment after it finishes (OpenBLAS,
    # and each OpenMP runtime), so every library is timed in its own block and the pools
    # get a pause to go idle before the next library runs.
    settle()
    for ps in PASSES:
        row[("pyconv", ps)] = flops / timeit(ours[ps]) / 1e9
    row[("pyconv", "forward NCHW")] = (
        flops / timeit(lambda: F.conv2d(x_nchw, w_oihw, stride=s, padding=p)) / 1e9
    )
    settle()
    for ps in PASSES:
        row[("numpy", ps)] = flops / timeit(numpy_fns[ps]) / 1e9
    settle()

    if torch is not None:
        torch.set_num_threads(threads)
        gy_nchw = np.ascontiguousarray(gy.transpose(0, 3, 1, 2))
        with torch.no_grad():
            xt, wt, gyt = (torch.from_numpy(a) for a in (x_nchw, w_oihw, gy_nchw))
            check(f"{name} torch fwd", y.transpose(0, 3, 1, 2), TF.conv2d(xt, wt, None, s, p))
            layouts = {
                "NCHW": (xt, wt, gyt),
                "channels_last": tuple(
                    t.contiguous(memory_format=torch.channels_last) for t in (xt, wt, gyt)
                ),
            }

            def tfwd(a, b, _):
                return lambda: TF.conv2d(a, b, None, s, p)

            def tbwd(mask):
                def make(a, b, g):
                    return lambda: torch.ops.aten.convolution_backward(
                        g, a, b, None, (s, s), (p, p), (1, 1), False, (0, 0), 1, mask
                    )

                return make

            makers = {
                "forward": tfwd,
                "backward-data": tbwd((True, False, False)),
                "backward-weight": tbwd((False, True, False)),
            }
            for ps in PASSES:
                best = max(
                    (flops / timeit(makers[ps](*tensors)) / 1e9, lay)
                    for lay, tensors in layouts.items()
                )
                row[("torch", ps)] = best[0]
                row[("torch layout", ps)] = best[1]
    return row


def bench_pool(threads):
    """Pooling on (64, 32, 32, 64) NHWC: GB/s of input read, ratio to peers."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 32, 32, 64), dtype=np.float32)
    rows = []
    cases = [
        (
            "max 2x2/2 fwd",
            lambda: F.max_pool2d(x, 2, data_format="NHWC"),
            lambda: peers.max_pool_2x2(x),
            ("max", 2, 2, 0, "fwd"),
        ),
        (
            "max 3x3/2 p1 fwd",
            lambda: F.max_pool2d(x, 3, 2, 1, data_format="NHWC"),
            None,
            ("max", 3, 2, 1, "fwd"),
        ),
        (
            "avg 2x2/2 fwd",
            lambda: F.avg_pool2d(x, 2, data_format="NHWC"),
            lambda: x.reshape(64, 16, 2, 16, 2, 64).mean(axis=(2, 4)),
            ("avg", 2, 2, 0, "fwd"),
        ),
    ]
    y2 = F.max_pool2d(x, 2, data_format="NHWC")
    cases.append(
        (
            "max 2x2/2 bwd",
            lambda: F.max_pool2d_backward(y2, x, 2, data_format="NHWC"),
            None,
            ("max", 2, 2, 0, "bwd"),
        )
    )
    cases.append(
        (
            "avg 2x2/2 bwd",
            lambda: F.avg_pool2d_backward(y2, x, 2, data_format="NHWC"),
            None,
            ("avg", 2, 2, 0, "bwd"),
        )
    )
    check("numpy max pool", F.max_pool2d(x, 2, data_format="NHWC"), peers.max_pool_2x2(x))
    gbytes = x.nbytes / 1e9
    for name, ours, numpy_fn, (kind, k, s, p, direction) in cases:
        r = {"name": name, "pyconv": gbytes / timeit(ours)}
        r["numpy"] = gbytes / timeit(numpy_fn) if numpy_fn else None
        if torch is not None:
            xt = torch.from_numpy(x).permute(0, 3, 1, 2)  # channels_last view, as ours
            xt.requires_grad_(direction == "bwd")
            op = TF.max_pool2d if kind == "max" else TF.avg_pool2d
            if direction == "fwd":
                with torch.no_grad():
                    r["torch"] = gbytes / timeit(
                        lambda op=op, xt=xt, k=k, s=s, p=p: op(xt, k, s, p)
                    )
            else:
                yt = op(xt, k, s, p)
                g = torch.ones_like(yt)
                r["torch"] = gbytes / timeit(
                    lambda yt=yt, xt=xt, g=g: torch.autograd.grad(yt, xt, g, retain_graph=True)
                )
        rows.append(r)
    return rows


def geomean(values):
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def fmt_ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def render(rows, pools, scaling, peak, threads, command, nets=None):
    single, total = peak
    lines = [
        "# pyconv benchmark",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.date.today().isoformat()}",
        f"- Machine: {cpu_name()}, {threads} threads used; pyconv ISA `{pyconv.get_isa()}`",
        f"- NumPy {np.__version__}"
        + (f", PyTorch {torch.__version__} (CPU)" if torch is not None else ", PyTorch absent"),
        f"- Measured fp32 FMA peak: {single:.1f} GFLOP/s on one core, {total:.1f} GFLOP/s on "
        f"{threads} threads (pyconv's FMA loop). '% peak' is against the {threads}-thread number.",
        "- GFLOP/s = 2*N*O*OH*OW*C*KH*KW / fastest of the repeats. "
        "Shapes: (N, C, H, W) -> O, k, stride, pad.",
        "- pyconv runs channels-last (NHWC, its native layout); 'fwd NCHW' is the same forward on "
        "NCHW arrays, conversions included. PyTorch: the faster of NCHW and channels_last.",
        "",
    ]
    for ps in PASSES:
        lines += [f"## conv2d {ps}", ""]
        head = "| shape | N,C,H,W -> O k/s/p | pyconv GFLOP/s | % peak |"
        if ps == "forward":
            head += " pyconv NCHW |"
        head += " NumPy | pyconv/NumPy |"
        if torch is not None:
            head += " PyTorch (layout) | pyconv/PyTorch |"
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        for r in rows:
            name, n, c, h, w, o, k, s, p = r["shape"]
            ours, npv = r[("pyconv", ps)], r[("numpy", ps)]
            line = f"| {name} | {n},{c},{h},{w} -> {o} {k}/{s}/{p} | {ours:.1f} | "
            line += f"{100 * ours / total:.0f}% |"
            if ps == "forward":
                line += f" {r[('pyconv', 'forward NCHW')]:.1f} |"
            line += f" {npv:.1f} | {fmt_ratio(ours, npv)} |"
            if torch is not None:
                tv = r[("torch", ps)]
                line += f" {tv:.1f} ({r[('torch layout', ps)]}) | {fmt_ratio(ours, tv)} |"
            lines.append(line)
        lines.append("")

    lines += ["## Targets (issue 6), from the tables of this run", ""]
    big = [r for r in rows if r["shape"][6] == 3 and r["shape"][2] >= 32 and r["shape"][5] >= 32]
    wide = [r for r in big if r["shape"][2] >= 64 and r["shape"][5] >= 64]
    first = [r for r in rows if r["shape"][2] <= 3 or r["shape"][6] == 1]

    def verdict(ok):
        return "**met**" if ok else "**not met**"

    if torch is not None:
        goals = (("forward", 1.2), ("backward-data", 1.0), ("backward-weight", 1.0))
        for ps, goal in goals if big else ():  # --quick may leave a group of shapes empty
            vs_t = [r[("pyconv", ps)] / r[("torch", ps)] for r in big]
            low = [f"{r['shape'][0]} {v:.2f}x" for r, v in zip(big, vs_t) if v < 0.9]
            ok = geomean(vs_t) >= goal and (ps != "forward" or not low)
            line = (
                f"- {ps}, 3x3 shapes with >= 32 channels: geometric mean "
                f"{geomean(vs_t):.2f}x PyTorch (target >= {goal}x"
                + (", none below 0.9x" if ps == "forward" else "")
                + f"): {verdict(ok)}"
            )
            if low:
                line += "; below 0.9x: " + ", ".join(low)
            lines.append(line)
        below = [r for r in wide if r[("pyconv", "forward")] / total < 0.7]
        lines.append(
            f"- forward >= 70% of the measured peak on 3x3 shapes with >= 64 channels: "
            f"{verdict(not below)}"
            + (
                ""
                if not below
                else "; below: "
                + ", ".join(
                    f"{r['shape'][0]} {100 * r[('pyconv', 'forward')] / total:.0f}%" for r in below
                )
            )
        )
        for ps in PASSES if first else ():
            vs_t = [r[("pyconv", ps)] / r[("torch", ps)] for r in first]
            lines.append(
                f"- first layers (1-3 input channels) and 1x1, {ps}: "
                + ", ".join(f"{r['shape'][0]} {v:.2f}x" for r, v in zip(first, vs_t))
                + f" (target >= 1.0x): {verdict(min(vs_t) >= 1.0)}"
            )
    if nets:
        for name, (ours, theirs) in nets["train"].items():
            if theirs:
                lines.append(
                    f"- training {name}, batch {nets['batch']}: {ours / theirs:.2f}x "
                    f"PyTorch (target >= 1.5x): {verdict(ours / theirs >= 1.5)}"
                )
        for name, (ours, theirs) in nets["latency"].items():
            if theirs:
                lines.append(
                    f"- batch-1 latency {name}: {theirs / ours:.2f}x better than "
                    f"PyTorch (target >= 2x): {verdict(theirs / ours >= 2)}"
                )
        mem = nets["memory"]
        if "torch" in mem:
            lines.append(
                f"- peak memory of a CIFAR-10 training step, batch {nets['batch']}: "
                f"{mem['pyconv'] / 1024:.0f} MiB vs PyTorch {mem['torch'] / 1024:.0f} MiB "
                f"(target <= PyTorch): {verdict(mem['pyconv'] <= mem['torch'])}"
            )
    lines += ["", "Why the misses (measured while building these kernels; see the git log):", ""]
    lines += [f"- {note}" for note in NOTES]
    lines.append("")

    if nets:
        lines += [
            f"## The lectures' networks (batch {nets['batch']} training, batch 1 inference)",
            "",
            "| network | training img/s pyconv | PyTorch | ratio | latency ms pyconv | "
            "PyTorch | ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in nets["train"]:
            (to, tt), (lo, lt) = nets["train"][name], nets["latency"][name]
            lines.append(
                f"| {name} | {to:.0f} | {tt or 0:.0f} | {fmt_ratio(to, tt)} | {lo:.3f} | "
                f"{lt or 0:.3f} | {fmt_ratio(lt, lo)} |"
            )
        mem = nets["memory"]
        lines += [
            "",
            f"Peak memory of a CIFAR-10 CNN training step at batch {nets['batch']} "
            f"(RSS high-water mark above set-up, fresh process each): pyconv "
            f"{mem['pyconv'] / 1024:.0f} MiB"
            + (f", PyTorch {mem['torch'] / 1024:.0f} MiB." if "torch" in mem else "."),
            "",
        ]

    if pools:
        lines += ["## Pooling, (64, 32, 32, 64) NHWC, GB/s of input", ""]
        head = "| op | pyconv | NumPy | pyconv/NumPy |"
        if torch is not None:
            head += " PyTorch | pyconv/PyTorch |"
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        for r in pools:
            npv = f"{r['numpy']:.1f}" if r["numpy"] else "-"
            ratio = fmt_ratio(r["pyconv"], r["numpy"])
            line = f"| {r['name']} | {r['pyconv']:.1f} | {npv} | {ratio} |"
            if torch is not None:
                line += f" {r['torch']:.1f} | {fmt_ratio(r['pyconv'], r['torch'])} |"
            lines.append(line)
        lines.append("")

    if scaling:
        lines += ["## Thread scaling, conv2d forward GFLOP/s", ""]
        lines += ["| shape | threads | pyconv | PyTorch |", "|---|---|---|---|"]
        for name, nt, ours, theirs in scaling:
            tv = f"{theirs:.1f}" if theirs else "-"
            lines.append(f"| {name} | {nt} | {ours:.1f} | {tv} |")
        lines.append("")
    return "\n".join(lines)


def bench_nets(threads, batch=128):
    """Training img/s and batch-1 latency of the lectures' CNNs, and a CIFAR step's memory."""
    import argparse as _argparse

    args = _argparse.Namespace(batch=batch, steps=10, repeats=5)
    rng = np.random.default_rng(0)
    out = {"batch": batch, "train": {}, "latency": {}}
    for name, (_, _, shape) in train_bench.NETS.items():
        x = rng.random((batch, *shape), dtype=np.float32)
        y = rng.integers(0, 10, batch)
        settle()
        out["train"][name] = train_bench.training_rates(name, x, y, args)
        settle()
        out["latency"][name] = train_bench.latency(name)
        print(f"{name}: training {out['train'][name]}, latency {out['latency'][name]}", flush=True)
    out["memory"] = train_bench.step_memory("cifar10_cnn", batch, threads)
    return out


def thread_scaling(shapes, threads):
    out = []
    for shape in shapes:
        name, n, c, h, w, o, k, s, p = shape
        x = np.random.default_rng(2).standard_normal((n, h, w, c), dtype=np.float32)
        wt = np.ones((k, k, c, o), np.float32)
        flops = (
            2.0 * n * o * (((h + 2 * p - k) // s) + 1) * (((w + 2 * p - k) // s) + 1) * c * k * k
        )
        for nt in sorted({1, threads}):
            pyconv.set_num_threads(nt)
            ours = (
                flops
                / timeit(
                    lambda x=x, wt=wt, s=s, p=p: F.conv2d(
                        x, wt, stride=s, padding=p, data_format="NHWC", weight_format="HWIO"
                    )
                )
                / 1e9
            )
            theirs = None
            if torch is not None:
                torch.set_num_threads(nt)
                xt = torch.from_numpy(x).permute(0, 3, 1, 2)
                wtt = torch.from_numpy(wt).permute(3, 2, 0, 1)
                with torch.no_grad():
                    theirs = (
                        flops
                        / timeit(lambda a=xt, b=wtt, s=s, p=p: TF.conv2d(a, b, None, s, p))
                        / 1e9
                    )
            out.append((name, nt, ours, theirs))
    pyconv.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    return out


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["shape"][0] for r in rows]
    series = [("pyconv", "pyconv"), ("numpy", "NumPy im2col+matmul")]
    if torch is not None:
        series.append(("torch", "PyTorch"))
    fig, ax = plt.subplots(figsize=(12, 5))
    width = 0.8 / len(series)
    for i, (key, label) in enumerate(series):
        ax.bar(
            [j + i * width for j in range(len(rows))],
            [r[(key, "forward")] for r in rows],
            width,
            label=label,
        )
    ax.set_xticks([j + width for j in range(len(rows))], names, rotation=60, ha="right")
    ax.set_ylabel("GFLOP/s")
    ax.set_title("conv2d forward")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 shapes, for a smoke run")
    parser.add_argument("--threads", type=int, default=pyconv.get_num_threads())
    parser.add_argument(
        "--shapes", default=None, help="only these table rows: comma-separated name prefixes"
    )
    parser.add_argument("--out", default=None, help="write the markdown report here")
    parser.add_argument("--plots", action="store_true", help="save bench/conv_forward.png")
    args = parser.parse_args(argv)
    pyconv.set_num_threads(args.threads)
    command = "python bench/bench.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    shapes = [s for s in SHAPES if not args.quick or s[0] in QUICK]
    if args.shapes:
        prefixes = [p.strip() for p in args.shapes.split(",")]
        shapes = [s for s in shapes if any(s[0].startswith(p) for p in prefixes)]
        args.quick = True  # a partial table: no pooling, scaling or network sections

    peak = measure_peak(args.threads)
    print(f"peak: {peak[0]:.1f} GFLOP/s/core, {peak[1]:.1f} GFLOP/s on {args.threads} threads")
    rows = []
    for shape in shapes:
        row = bench_conv(shape, args.threads)
        rows.append(row)
        msg = "  ".join(f"{ps} {row[('pyconv', ps)]:.0f}" for ps in PASSES)
        print(f"{shape[0]:24s} pyconv GFLOP/s: {msg}", flush=True)
    pools = [] if args.quick else bench_pool(args.threads)
    scaling = (
        []
        if args.quick
        else thread_scaling(
            [s for s in SHAPES if s[0] in ("cifar 64ch", "resnet18 256@14 b1")], args.threads
        )
    )
    nets = None if args.quick else bench_nets(args.threads)
    report = render(rows, pools, scaling, peak, args.threads, command, nets)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")
    if args.plots:
        plot(rows, Path(__file__).with_name("conv_forward.png"))


if __name__ == "__main__":
    main()
