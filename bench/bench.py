"""pyconv benchmark: conv2d forward / backward-data / backward-weight and pooling against
NumPy im2col + matmul and PyTorch's CPU backend (when importable); whole networks (ResNet-18,
ResNet-50, VGG-16: training, inference, step memory) and batch-1 latency against PyTorch and
ONNX Runtime on pyconv's own export (bench/networks.py); thread scaling; in one run.

    python bench/bench.py [--quick] [--threads N] [--out bench/README.md] [--plots]

Every number is the fastest of several repeats after a warm-up call (on a shared, noisy
machine the minimum is the least-disturbed estimate; every library gets the same rule).
GFLOP/s counts 2 * N * O * OH * OW * (C / groups) * KH * KW for each of the three conv
passes. Peers get the same thread count. Outputs are checked against pyconv's once per shape
before timing, so all columns do the same work. The report ends each target of issue 16 with
met / not met and the misses. This is a benchmark, not a test: nothing here asserts a speed.
``--quick``: 6 shapes and the networks at small batches (a smoke run of every section but
pooling, thread scaling and memory).
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

import networks
import numpy as np
import peers
import train_bench
from train_bench import check_same as check
from train_bench import settle

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
    # ResNet-50 (v1.5) bottleneck layers: 1x1 expand and reduce, the stride-2 3x3 and the
    # stride-2 1x1 projection shortcut of stage 2, at batch 16 / 32 (1.6-3.7 GFLOP a pass)
    ("r50 1x1 64->256 @56", 16, 64, 56, 56, 256, 1, 1, 0),
    ("r50 3x3 s2 128 @56", 16, 128, 56, 56, 128, 3, 2, 1),
    ("r50 1x1 s2 proj 256->512", 16, 256, 56, 56, 512, 1, 2, 0),
    ("r50 1x1 1024->256 @14", 32, 1024, 14, 14, 256, 1, 1, 0),
    ("r50 1x1 2048->512 @7", 32, 2048, 7, 7, 512, 1, 1, 0),
    # VGG-16 at 224 px: small batches keep each pass at 1.4-15 GFLOP (< ~0.3 s for NumPy)
    ("vgg 3->64 @224", 8, 3, 224, 224, 64, 3, 1, 1),
    ("vgg 64->64 @224", 2, 64, 224, 224, 64, 3, 1, 1),
    ("vgg 128->128 @112", 4, 128, 112, 112, 128, 3, 1, 1),
    ("vgg 256->256 @56", 4, 256, 56, 56, 256, 3, 1, 1),
    ("vgg 512->512 @28", 4, 512, 28, 28, 512, 3, 1, 1),
    ("vgg 512->512 @14", 8, 512, 14, 14, 512, 3, 1, 1),
    # AlexNet's first layer: 11x11 stride 4 pad 2, 224 -> 55
    ("alexnet 11x11/4 3->64", 16, 3, 224, 224, 64, 11, 4, 2),
]
NOTES = [
    "Winograd F(2x2,3x3) (forward, backward-data; F(3x3,2x2) weight gradient) runs 3x3 "
    "stride-1 layers of 32-128 channels; with cached weights (inference) up to 256x256 "
    "channels, as its weight transform is then paid once per weight version (GFLOP/s count "
    "the direct method's FLOPs, hence > 100% of peak). 512-channel layers and uncached "
    "256-channel ones keep the direct kernel, whose transformed weights would not stay in L2; "
    "a Winograd blocked over channels (not built) is what the batch-64 256-512 rows still "
    "need, and where PyTorch wins there it is by such an algorithm.",
    "Packed weights: a Conv2D or Dense layer keeps its kernel packed between inference calls "
    "(the 'weights cached' column), so batch-1 inference no longer repacks 9.4 MB per "
    "512@7x7 call; training packs per call (the weights change every step), and "
    "backward-data still packs the transposed weights per call, which is what the batch-1 "
    "backward-data rows show (only training at batch 1 pays it).",
    "Direct weight gradient: gy read in place, groups of tiles passing over L1-sized blocks "
    "of rows, accumulation straight into a dense HWIO gradient; one core, CPU time: 66-80% "
    "of peak on 256-512 channels, 512@7 batch 1 from 22% to 73% (python "
    "bench/wgrad_bench.py --threads 1 --cpu-time).",
    "First layers (1-3 input channels): a kernel row's taps run as one tap of KW*C "
    "channels, but 1-6 output channels still fill few vector lanes (lenet c1); PyTorch has "
    "dedicated kernels for these. Stride-2 layers still copy the padded input.",
    "Batch-1 latency against ONNX Runtime: the lecture CNNs' convolutions take about 70% of "
    "pyconv's time (81 of 120 us for the MNIST CNN) and each functional.conv2d call spends "
    "about 4 us in Python argument checks (python bench/layer_latency.py mnist_cnn); ONNX "
    "Runtime runs a pre-validated static graph. pyconv's default wait policy (threads sleep "
    "while they wait, for shared machines) adds a wake-up per parallel region; these tables "
    "ran with libgomp's spinning default (see the header line).",
    "On AVX2 (16 registers) the direct kernel runs chunks of pixel tiles through every "
    "channel tile (input in L1/L2, weights streamed); AVX-512 keeps pixel tiles fastest. "
    "Numbers of earlier runs are in bench/results/.",
]
QUICK = ["mnist conv2", "cifar 64ch", "resnet18 256@14 b1", "stride-2 down 64->128",
         "r50 1x1 2048->512 @7", "alexnet 11x11/4 3->64"]  # fmt: skip
NET_STEPS, NET_REPEATS = 2, 3  # whole networks: calls per timed sample, interleaved rounds
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


def wait_policy_line() -> str:
    """How the OpenMP threads of this run waited (train_bench imports PyTorch first)."""
    info = pyconv.thread_info()
    if info["wait_source"] == "runtime loaded before pyconv":
        return (
            "libgomp's default (spinning) for both libraries: PyTorch loaded the runtime "
            "first and pyconv shares it, as on a dedicated machine. pyconv's own default "
            "(OMP_WAIT_POLICY=passive) costs batch-1 latency and wins under load: see "
            "bench/contention.py"
        )
    return f"{info['wait_source']} {info['wait_settings']} (both libraries share this runtime)"


def measure_peak(threads, seconds=0.3, tries=3):
    """(single-core, all-threads) fp32 FMA peak in GFLOP/s, measured with pyconv's FMA loop:
    the best of ``tries`` (another process on a core can only lower a try)."""
    single = max(pyconv._core.peak_gflops(seconds) for _ in range(tries))
    best = 0.0
    for _ in range(tries):
        results = [0.0] * threads

        def run(i, results=results):
            results[i] = pyconv._core.peak_gflops(seconds)  # releases the GIL

        workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        best = max(best, sum(results))
    return single, best


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
    # As a Conv2D layer runs in inference: its packed weights kept between calls
    cache = F.WeightCache()
    cached = F.conv2d(x, w_hwio, **kw, weight_cache=cache, weight_version=0)
    check(f"{name} cached fwd", cached, y)
    row[("pyconv", "forward cached")] = (
        flops
        / timeit(lambda: F.conv2d(x, w_hwio, **kw, weight_cache=cache, weight_version=0))
        / 1e9
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


def verdict(ok):
    return "**met**" if ok else "**not met**"


def shape_targets(rows, total):
    """Issue 16's per-shape targets, one markdown line each, from the conv tables."""
    lines = []
    if torch is not None:
        for ps in (*PASSES, "forward cached"):
            vs_t = [(r["shape"][0], r[("pyconv", ps)] / r[("torch", ps.split()[0])]) for r in rows]
            low = [f"{n} {v:.2f}x" for n, v in vs_t if v < 0.9]
            near = [f"{n} {v:.2f}x" for n, v in vs_t if 0.9 <= v < 1.0]
            gm = geomean([v for _, v in vs_t])
            line = (
                f"- {ps.replace(' cached', ' with cached weights (inference)')}, every shape: "
                f"geometric mean {gm:.2f}x PyTorch (target >= 1.0x, none "
                f"below 0.9x): {verdict(gm >= 1.0 and not low)}"
            )
            if low:
                line += "; below 0.9x: " + ", ".join(low)
            if near:
                line += "; 0.9-1.0x: " + ", ".join(near)
            lines.append(line)
    # >= 64 channels in and out, batch >= 16: the shapes where the kernels can reach peak
    wide = [r for r in rows if r["shape"][6] == 3 and min(r["shape"][2], r["shape"][5]) >= 64
            and r["shape"][1] >= 16]  # fmt: skip
    for ps, goal in (("forward", 0.8), ("backward-data", 0.7), ("backward-weight", 0.7)):
        if not wide:  # --quick or --shapes may leave the group empty
            break
        below = [f"{r['shape'][0]} {100 * r[('pyconv', ps)] / total:.0f}%" for r in wide
                 if r[("pyconv", ps)] / total < goal]  # fmt: skip
        lines.append(
            f"- {ps} >= {100 * goal:.0f}% of the measured peak on 3x3 shapes with >= 64 "
            f"channels at batch >= 16 ({len(wide)} shapes): {verdict(not below)}"
            + ("; below: " + ", ".join(below) if below else "")
        )
    big = [r for r in rows if r["shape"][6] == 3 and min(r["shape"][2], r["shape"][5]) >= 32]
    if big:
        gms = {ps: geomean([r[("pyconv", ps)] / r[("numpy", ps)] for r in big]) for ps in PASSES}
        lines.append(
            f"- vs NumPy im2col+matmul, 3x3 shapes with >= 32 channels ({len(big)} shapes), "
            "geometric mean: "
            + ", ".join(f"{ps} {v:.2f}x" for ps, v in gms.items())
            + f" (target >= 2x each): {verdict(min(gms.values()) >= 2)}"
        )
    return lines


def network_targets(nets):
    """Issue 16's whole-network, batch-1 and memory targets, one markdown line each."""
    lines = []
    net = nets.get("networks") or {"rows": [], "latency": {}}
    for r in net["rows"]:
        tr, inf, label = r["train"], r["infer"], f"{r['name']} batch {r['batch']}"
        if tr["torch"]:
            v = tr["pyconv"] / tr["torch"]
            lines.append(
                f"- training {label}: {v:.2f}x PyTorch (target >= 1.3x): {verdict(v >= 1.3)}"
            )
        if inf["torch"] or inf["ort"]:
            parts, ok = [], True
            for key, peer, goal in (("torch", "PyTorch", 1.3), ("ort", "ONNX Runtime", 1.1)):
                if inf[key]:
                    v = inf["pyconv"] / inf[key]
                    parts.append(f"{v:.2f}x {peer} (target >= {goal}x)")
                    ok = ok and v >= goal
            lines.append(f"- inference {label}: " + ", ".join(parts) + f": {verdict(ok)}")
        mem = r.get("memory", {})
        if "torch" in mem:
            lines.append(
                f"- peak memory of a {label} training step: {mem['pyconv'] / 1024:.0f} MiB vs "
                f"PyTorch {mem['torch'] / 1024:.0f} MiB (target <= PyTorch): "
                f"{verdict(mem['pyconv'] <= mem['torch'])}"
            )
    for name, r in net["latency"].items():
        goals = {"torch": 1.2, "ort": 1.0} if name == "resnet18" else {"torch": 2.0, "ort": 1.3}
        parts, ok = [], True
        for key, peer in (("torch", "PyTorch"), ("ort", "ONNX Runtime")):
            if r[key]:
                v = r[key] / r["pyconv"]
                parts.append(f"{v:.2f}x {peer} (target >= {goals[key]}x)")
                ok = ok and v >= goals[key]
        if parts:
            lines.append(
                f"- batch-1 latency {name}: {r['pyconv']:.3f} ms, better than "
                + ", ".join(parts)
                + f": {verdict(ok)}"
            )
    lecture = nets.get("lecture")
    if lecture:
        mem = lecture["memory"]
        if "torch" in mem:
            lines.append(
                f"- peak memory of a CIFAR-10 CNN training step, batch {lecture['batch']}: "
                f"{mem['pyconv'] / 1024:.0f} MiB vs PyTorch {mem['torch'] / 1024:.0f} MiB "
                f"(target <= PyTorch): {verdict(mem['pyconv'] <= mem['torch'])}"
            )
        for name, (ours, theirs) in lecture["train"].items():
            if theirs:
                v = ours / theirs
                lines.append(
                    f"- (issue 6, kept) training {name}, batch {lecture['batch']}: {v:.2f}x "
                    f"PyTorch (target >= 1.5x): {verdict(v >= 1.5)}"
                )
    return lines


def render(rows, pools, scaling, peak, threads, command, nets=None, note=None, plots=False):
    single, total = peak
    lines = [
        "# pyconv benchmark",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.date.today().isoformat()}",
        f"- Machine: {cpu_name()}, {threads} threads used; pyconv ISA `{pyconv.get_isa()}`",
        f"- Waiting threads: {wait_policy_line()}",
        f"- NumPy {np.__version__}"
        + (f", PyTorch {torch.__version__} (CPU)" if torch is not None else ", PyTorch absent"),
        f"- Measured fp32 FMA peak: {single:.1f} GFLOP/s on one core, {total:.1f} GFLOP/s on "
        f"{threads} threads (pyconv's FMA loop). '% peak' is against the {threads}-thread number.",
        "- GFLOP/s = 2*N*O*OH*OW*C*KH*KW / fastest of the repeats. "
        "Shapes: (N, C, H, W) -> O, k, stride, pad.",
        "- pyconv runs channels-last (NHWC, its native layout); 'fwd NCHW' is the same forward on "
        "NCHW arrays, conversions included; 'weights cached' is the forward as a Conv2D layer "
        "runs it in inference (its packed weights kept between calls, `weight_cache=`; the "
        "other columns pack per call, as training does). PyTorch: the faster of NCHW and "
        "channels_last.",
        "",
    ]
    for ps in PASSES:
        lines += [f"## conv2d {ps}", ""]
        head = "| shape | N,C,H,W -> O k/s/p | pyconv GFLOP/s | % peak |"
        if ps == "forward":
            head += " pyconv NCHW | pyconv, weights cached |"
        head += " NumPy | pyconv/NumPy |"
        if torch is not None:
            head += " PyTorch (layout) | pyconv/PyTorch |"
            if ps == "forward":
                head += " cached/PyTorch |"
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        for r in rows:
            name, n, c, h, w, o, k, s, p = r["shape"]
            ours, npv = r[("pyconv", ps)], r[("numpy", ps)]
            line = f"| {name} | {n},{c},{h},{w} -> {o} {k}/{s}/{p} | {ours:.1f} | "
            line += f"{100 * ours / total:.0f}% |"
            if ps == "forward":
                line += f" {r[('pyconv', 'forward NCHW')]:.1f} |"
                line += f" {r[('pyconv', 'forward cached')]:.1f} |"
            line += f" {npv:.1f} | {fmt_ratio(ours, npv)} |"
            if torch is not None:
                tv = r[("torch", ps)]
                line += f" {tv:.1f} ({r[('torch layout', ps)]}) | {fmt_ratio(ours, tv)} |"
                if ps == "forward":
                    line += f" {fmt_ratio(r[('pyconv', 'forward cached')], tv)} |"
            lines.append(line)
        lines.append("")
        if plots and ps == "forward":
            lines += ["![conv2d forward GFLOP/s](conv_forward.png)", ""]

    lines += ["## Targets (issue 16), from the tables of this run", ""]
    lines += shape_targets(rows, total)
    if nets:
        lines += network_targets(nets)
    lines += ["", "Why the misses (measured while building these kernels; see the git log):", ""]
    lines += [f"- {note}" for note in NOTES]
    lines.append("")

    if nets and nets.get("networks"):
        net = nets["networks"]
        lines += [
            "## Whole networks and batch-1 latency",
            "",
            "Training: full steps (forward, sparse categorical cross-entropy, backward, SGD with "
            "momentum 0.9) on random data, pyconv `train_on_batch`; inference at the same batch, "
            "pyconv `predict_on_batch`, PyTorch eval mode under no_grad, ONNX Runtime on "
            "pyconv's own export (`pyconv.onnx.export`) with as many intra-op threads. PyTorch: "
            "the faster of NCHW and channels_last (bench/torch_nets.py, the same "
            "architectures and parameter counts). Step peak memory: the RSS high-water mark of "
            "2 training steps above the set-up's, each library in a fresh process (PyTorch in "
            f"its faster layout). Best of {net['repeats']} interleaved rounds of "
            f"{net['steps']} calls (python bench/networks.py).",
            "",
        ]
        lines += networks.render(net)
        if plots and net["rows"]:
            lines += ["![whole networks, img/s](networks.png)", ""]
    lecture = nets.get("lecture") if nets else None
    if lecture:
        lines += [
            f"## The lectures' networks, training at batch {lecture['batch']} (Adam)",
            "",
            "| network | training img/s pyconv | PyTorch | ratio |",
            "|---|---|---|---|",
        ]
        for name, (to, tt) in lecture["train"].items():
            lines.append(f"| {name} | {to:.0f} | {tt or 0:.0f} | {fmt_ratio(to, tt)} |")
        mem = lecture["memory"]
        lines += [
            "",
            f"Peak memory of a CIFAR-10 CNN training step at batch {lecture['batch']} "
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
    lines += note or []
    return "\n".join(lines)


def bench_lecture(threads, batch=128, steps=10, repeats=5):
    """Training img/s of the lectures' CNNs (Adam, interleaved rounds) and the peak memory of
    a CIFAR-10 CNN training step."""
    rng = np.random.default_rng(0)
    out = {"batch": batch, "train": {}}
    for name, shape in train_bench.NETS.items():
        x = rng.random((batch, *shape), dtype=np.float32)
        y = rng.integers(0, 10, batch)
        fns = {"pyconv": train_bench.train_steps("pyconv", name, x, y)}
        if torch is not None:
            fns["torch"] = train_bench.train_steps("torch", name, x, y)
        best = networks.interleaved(fns, steps, repeats)
        rate = {k: batch * steps / v for k, v in best.items()}
        out["train"][name] = (rate["pyconv"], rate.get("torch"))
        print(f"{name}: training img/s {out['train'][name]}", flush=True)
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


def cache_sizes():
    """{"L1d"/"L2"/"L3": (bytes, CPUs sharing it)} of CPU 0, from Linux's sysfs ({} elsewhere)."""
    out = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
            cpus = (index / "shared_cpu_list").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        mult = {"K": 1024, "M": 1024**2}.get(size[-1], 1)
        count = sum(
            int(b) - int(a) + 1 if "-" in part else 1
            for part in cpus.split(",")
            for a, _, b in [part.partition("-")]
        )
        out[f"L{level}" + ("d" if level == "1" else "")] = (int(size.rstrip("KM")) * mult, count)
    return out


def copy_bandwidth(threads, mib=128, reps=5):
    """{thread count: GB/s} of NumPy array copies (bytes read + written) on 1 and ``threads``
    threads, each copying its own ``mib`` MiB arrays (the copy releases the GIL); fastest of
    ``reps``."""
    arrays = [(np.ones(mib << 18, np.float32), np.empty(mib << 18, np.float32))
              for _ in range(threads)]  # fmt: skip
    out = {}
    for nt in sorted({1, threads}):
        best = float("inf")
        for _ in range(reps):
            workers = [threading.Thread(target=np.copyto, args=(dst, src))
                       for src, dst in arrays[:nt]]  # fmt: skip
            t = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            best = min(best, time.perf_counter() - t)
        out[nt] = nt * 2 * (mib << 20) / best / 1e9
    return out


SCALING_NOTE_SHAPES = (
    "cifar 64ch",
    "resnet18 256@14 b1",
    "resnet18 512@7 b1",
    "resnet18 256@14 b64",
    "r50 1x1 2048->512 @7",
    "vgg 64->64 @224",
)


def scaling_note(peak, threads, bandwidth, caches):
    """Markdown lines: what this machine's numbers say about running on 16-64 cores."""
    single = peak[0]
    per_core = bandwidth[threads] / threads
    l2 = caches.get("L2", (0, 1))[0]
    lines = [
        "### What changes at 16-64 cores (from what can be measured here)",
        "",
        f"- Copy bandwidth (NumPy, bytes read + written): {bandwidth[1]:.1f} GB/s on 1 "
        f"thread, {bandwidth[threads]:.1f} GB/s on {threads} ({per_core:.1f} GB/s per core). "
        + ", ".join(f"{k} {v[0] >> 10} KiB shared by {v[1]} CPU(s)" for k, v in caches.items())
        + ".",
        f"- One core's FMA peak ({single:.0f} GFLOP/s) over that per-core bandwidth: a pass "
        f"must do >= {single / per_core:.1f} FLOP per byte it moves from memory to stay "
        "compute-bound at this machine's bandwidth per core.",
        "- Split over P cores, a pass's batch is divided but every core still reads the whole "
        "weight tensor (at least once per call; from L3 when it fits there). FLOP per byte per "
        "core = (FLOPs / P) / (weights + N / P * (input + output per image)); the bandwidth "
        "each core would need at one core's peak follows. Layers whose weights exceed the "
        f"{l2 >> 10} KiB L2 re-read them from L3 or memory for every block of work.",
        "",
        "| shape | weights KiB | in+out KiB per image | FLOP/byte per core, P = 2 / 16 / 64 | "
        "GB/s per core at peak, P = 64 |",
        "|---|---|---|---|---|",
    ]
    for shape in SHAPES:
        if shape[0] not in SCALING_NOTE_SHAPES:
            continue
        name, n, c, h, w, o, k, s, p = shape
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        flops = 2.0 * n * o * oh * ow * c * k * k
        wbytes, io = 4.0 * k * k * c * o, 4.0 * (h * w * c + oh * ow * o)
        per = {P: (flops / P) / (wbytes + n / P * io) for P in (2, 16, 64)}
        lines.append(
            f"| {name} | {wbytes / 1024:.0f}{' (> L2)' if l2 and wbytes > l2 else ''} | "
            f"{io / 1024:.0f} | "
            + " / ".join(f"{v:.{0 if v >= 10 else 1}f}" for v in per.values())
            + " | "
            f"{single / per[64]:.1f} |"
        )
    lines.append("")
    return lines


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["shape"][0] for r in rows]
    series = [("pyconv", "pyconv"), ("numpy", "NumPy im2col+matmul")]
    if torch is not None:
        series.append(("torch", "PyTorch"))
    fig, ax = plt.subplots(figsize=(max(12, 0.45 * len(rows)), 5))
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
    parser.add_argument(
        "--quick", action="store_true", help="6 shapes and small networks, for a smoke run"
    )
    parser.add_argument("--threads", type=int, default=pyconv.get_num_threads())
    parser.add_argument(
        "--shapes", default=None, help="only these table rows: comma-separated name prefixes"
    )
    parser.add_argument("--no-networks", action="store_true", help="skip the network sections")
    parser.add_argument("--net-steps", type=int, default=NET_STEPS, help="calls per sample")
    parser.add_argument("--net-repeats", type=int, default=NET_REPEATS, help="rounds, best-of")
    parser.add_argument("--out", default=None, help="write the markdown report here")
    parser.add_argument(
        "--plots", action="store_true", help="save bench/conv_forward.png and bench/networks.png"
    )
    args = parser.parse_args(argv)
    pyconv.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    command = "python bench/bench.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    shapes = [s for s in SHAPES if not args.quick or s[0] in QUICK]
    if args.shapes:
        prefixes = [p.strip() for p in args.shapes.split(",")]
        shapes = [s for s in shapes if any(s[0].startswith(p) for p in prefixes)]
        args.quick, args.no_networks = True, True  # a partial table: conv rows only

    t0 = time.perf_counter()
    peak = measure_peak(args.threads)
    print(f"peak: {peak[0]:.1f} GFLOP/s/core, {peak[1]:.1f} GFLOP/s on {args.threads} threads")
    rows = []
    for shape in shapes:
        row = bench_conv(shape, args.threads)
        rows.append(row)
        msg = "  ".join(f"{ps} {row[('pyconv', ps)]:.0f}" for ps in PASSES)
        print(f"{shape[0]:24s} pyconv GFLOP/s: {msg}", flush=True)
    print(f"conv tables: {time.perf_counter() - t0:.0f} s", flush=True)
    pools = [] if args.quick else bench_pool(args.threads)
    scaling, note = [], []
    if not args.quick:
        scaling = thread_scaling(
            [s for s in SHAPES if s[0] in ("cifar 64ch", "resnet18 256@14 b1")], args.threads
        )
        note = scaling_note(peak, args.threads, copy_bandwidth(args.threads), cache_sizes())
    nets = None
    if not args.no_networks:
        t1 = time.perf_counter()
        names = list(networks.NETWORKS)
        if args.quick:  # 112 px, small batches, one round, no memory runs
            batches, steps, repeats = networks.QUICK_BATCH, 1, 1
            size = networks.QUICK_SIZE
        else:
            batches, steps, repeats = networks.NETWORKS, args.net_steps, args.net_repeats
            size = None
        nets = {
            "networks": networks.run(
                names, batches, args.threads, steps, repeats, memory=not args.quick,
                image_size=size, latency_budget=0.3 if args.quick else 1.0,
            )
        }  # fmt: skip
        if not args.quick:
            nets["lecture"] = bench_lecture(args.threads)
        print(f"network sections: {time.perf_counter() - t1:.0f} s", flush=True)
    report = render(rows, pools, scaling, peak, args.threads, command, nets, note, args.plots)
    print(report)
    print(f"total: {time.perf_counter() - t0:.0f} s")
    if args.out:
        Path(args.out).write_text(report + "\n")
    if args.plots:
        plot(rows, Path(__file__).with_name("conv_forward.png"))
        if nets and nets["networks"]["rows"]:
            networks.plot(nets["networks"], Path(__file__).with_name("networks.png"))


if __name__ == "__main__":
    main()
