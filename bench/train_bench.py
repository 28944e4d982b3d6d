"""The lectures' networks end to end: pyconv vs the same architecture in PyTorch's CPU
backend and (for inference) pyconv's own ONNX export in ONNX Runtime, when importable; same
batch, same threads, one run.

    python bench/train_bench.py [--batch 128] [--steps 10] [--threads N] [--latency] [--memory]

- Training: a step is forward + loss + backward + Adam update on random data of the real
  shapes; each library's number is its best of ``--repeats`` timings of ``--steps`` steps
  after warm-up steps, in images/s.
- ``--latency``: inference on one image through the lecture CNNs and ResNet-18 at 224 px
  (pyconv ``model.predict``; PyTorch ``net(x)`` in eval mode under no_grad, the faster of
  NCHW and channels_last; ONNX Runtime on ``pyconv.onnx.export(model)`` with as many
  intra-op threads), libraries interleaved, fastest call, in ms.
- ``--memory``: peak memory of training steps at the batch size, each library in a fresh
  process: the high-water RSS (VmHWM, reset once model and data exist) during 3 steps minus
  the RSS at that point.
A benchmark, not a test: nothing asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

# PyTorch before pyconv: PyTorch's libgomp (pyconv then shares it: same file name) keeps
# libgomp's default wait, spinning, which is what both libraries do on a dedicated machine.
# pyconv's own default (threads sleep while they wait, for shared machines) is measured
# against PyTorch's under load by bench/contention.py; the README header says which ran.
try:
    import torch
except ImportError:
    torch = None

import pyconv
from pyconv import zoo

if torch is not None:
    import torch_nets
try:
    import onnxruntime as ort
except ImportError:  # ONNX Runtime is an optional peer
    ort = None

NETS = {"mnist_cnn": (28, 28, 1), "cifar10_cnn": (32, 32, 3)}  # trained at --batch
LATENCY_NETS = ("mnist_cnn", "cifar10_cnn", "resnet18")  # batch 1, the zoo's input size
TORCH_LAYOUTS = ("NCHW", "channels_last")


SETTLE_S = 0.3  # pause between libraries (the smoke tests set 0)


def settle(seconds=None):
    """Let the previous library's spinning worker threads go idle before timing the next."""
    time.sleep(SETTLE_S if seconds is None else seconds)


def build_pyconv(name, image_size=None):
    """The zoo network; ``image_size`` overrides the 224 px input of the classic ones."""
    if image_size is None:
        return zoo.build(name)
    return zoo.build(name, input_shape=(image_size, image_size, 3))


def build_torch(name, layout="NCHW", image_size=None):
    """torch_nets' copy of the network, its parameters in ``layout``."""
    kwargs = {"image_size": image_size} if name == "vgg16" and image_size else {}
    net = torch_nets.BUILDERS[name](**kwargs)
    return net.to(memory_format=torch.channels_last) if layout == "channels_last" else net


def to_torch(x, layout="NCHW"):
    """NHWC array -> NCHW tensor in ``layout`` (channels_last: the NHWC data as it is)."""
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    return xt.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else xt


def train_steps(library, name, x, y, optimizer="adam", layout="NCHW", image_size=None):
    """A function running one full training step (forward, loss, backward, update) of the
    network in pyconv or PyTorch on the batch x (NHWC), y. ``optimizer``: "adam" (lr 1e-3)
    or "sgd" (lr 0.01, momentum 0.9), the same in both libraries."""
    if library == "pyconv":
        model = build_pyconv(name, image_size)
        opt = pyconv.optimizers.SGD(0.01, momentum=0.9) if optimizer == "sgd" else "adam"
        model.compile(opt, "sparse_categorical_crossentropy")
        return lambda: model.train_on_batch(x, y)
    net = build_torch(name, layout, image_size)
    if optimizer == "sgd":
        opt = torch.optim.SGD(net.parameters(), 0.01, momentum=0.9)
    else:
        opt = torch.optim.Adam(net.parameters(), 1e-3)
    xt, yt = to_torch(x, layout), torch.from_numpy(y)

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


def ort_session(model, threads, directory):
    """An ONNX Runtime session on pyconv's own export of ``model`` (NHWC input), with
    ``threads`` intra-op threads and the default (full) graph optimisation."""
    path = os.path.join(directory, f"{model.name}.onnx")
    pyconv.onnx.export(model, path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    input_name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {input_name: x})[0]


def check_same(what, ours, theirs, tol=1e-3):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    err = float(np.abs(ours - theirs).max())
    if err > tol * max(1.0, float(np.abs(theirs).max())):
        raise AssertionError(f"{what}: outputs disagree (max abs err {err:.3g})")


def interleaved_best(fns, repeats, budget):
    """{label: fastest seconds of one call} for each zero-argument function in ``fns``:
    ``repeats`` rounds, each timing every library for ``budget / repeats`` s in turn (after
    a pause for the previous one's threads), so a noisy moment hits all libraries alike."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for label, fn in fns.items():
            settle()
            start = time.perf_counter()
            while True:
                t = time.perf_counter()
                fn()
                now = time.perf_counter()
                best[label] = min(best[label], now - t)
                if now - start >= budget / repeats:
                    break
    return best


def latency(name, threads, repeats=5, budget=1.0):
    """Batch-1 inference of the zoo network: {"pyconv", "torch", "ort": ms or None,
    "torch layout": the faster PyTorch layout}."""
    model = build_pyconv(name)
    x = np.random.default_rng(1).random((1, *model.input_shape[1:]), dtype=np.float32)
    ref = model.predict(x, verbose=0)
    fns = {"pyconv": lambda: model.predict(x, verbose=0)}
    if torch is not None:
        for layout in TORCH_LAYOUTS:
            net, xt = build_torch(name, layout).eval(), to_torch(x, layout)
            fns["torch " + layout] = lambda net=net, xt=xt: _torch_infer(net, xt)
    with tempfile.TemporaryDirectory() as tmp:
        if ort is not None:
            run = ort_session(model, threads, tmp)
            check_same(f"{name} onnxruntime", run(x), ref)
            fns["ort"] = lambda: run(x)
        best = interleaved_best(fns, repeats, budget)
    return summarise({k: 1e3 * v for k, v in best.items()}, min)


def _torch_infer(net, xt):
    with torch.no_grad():
        return net(xt)


def summarise(values, pick):
    """{"pyconv", "torch", "torch layout", "ort"} from per-label numbers: PyTorch's value is
    ``pick`` (min for times, max for rates) over its layouts."""
    out = {"pyconv": values["pyconv"], "torch": None, "torch layout": None,
           "ort": values.get("ort")}  # fmt: skip
    layouts = [lay for lay in TORCH_LAYOUTS if "torch " + lay in values]
    if layouts:
        lay = pick(layouts, key=lambda lay: values["torch " + lay])
        out["torch"], out["torch layout"] = values["torch " + lay], lay
    return out


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (resource.getpagesize() // 1024)


def _hwm_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def step_peak_kib(step, steps=3):
    """Peak RSS above the current one while running ``step`` ``steps`` times, in KiB. The
    high-water mark is reset first (Linux's clear_refs 5), so the set-up's own peak (weight
    initialisation) does not hide the steps'; VmHWM rather than ru_maxrss, which survives
    exec and reports a parent's peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # older kernels: the peak since the process started
        pass
    base = _rss_kib()
    for _ in range(steps):
        step()
    return _hwm_kib() - base


def _memory_child(library, name, batch, threads, optimizer, layout, image_size, steps):
    """Runs in a fresh process: prints the steps' peak memory above the set-up, in KiB."""
    pyconv.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    model = build_pyconv(name, image_size)
    rng = np.random.default_rng(0)
    x = rng.random((batch, *model.input_shape[1:]), dtype=np.float32)
    y = rng.integers(0, model.output_shape[-1], batch)
    del model
    step = train_steps(library, name, x, y, optimizer, layout, image_size)
    print(json.dumps({"kib": step_peak_kib(step, steps)}))


def step_memory(
    name, batch, threads, optimizer="adam", torch_layout="NCHW", image_size=None, steps=3
):
    """{library: peak KiB of ``steps`` training steps above set-up}, each library in a fresh
    process."""
    out = {}
    for library in ("pyconv", "torch") if torch is not None else ("pyconv",):
        res = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--memory-child", library, name,
             str(batch), str(threads), optimizer, torch_layout, str(image_size or 0),
             str(steps)],
            capture_output=True, text=True,
        )  # fmt: skip
        if res.returncode:
            raise RuntimeError(f"memory run of {library} {name} failed:\n{res.stderr}")
        out[library] = json.loads(res.stdout.strip().splitlines()[-1])["kib"]
    return out


def training_rates(name, x, y, args):
    """(pyconv images/s, PyTorch images/s or None) of full Adam training steps."""
    rate = lambda lib: best_rate(train_steps(lib, name, x, y), args.batch, args.steps, args.repeats)  # noqa: E731
    return rate("pyconv"), (rate("torch") if torch is not None else None)


def bench_network(name, x, y, args) -> str:
    """One table row: pyconv's and (if importable) PyTorch's training images/s."""
    ours_rate, theirs_rate = training_rates(name, x, y, args)
    line = f"{name:<14}{ours_rate:>10.0f}"
    if theirs_rate is None:
        return line
    return line + f"{theirs_rate:>10.0f}{ours_rate / theirs_rate:>7.2f}x"


def fmt_ms(ms, ours):
    return f"{'-':>10}{'':>7}" if ms is None else f"{ms:>10.3f}{ms / ours:>6.2f}x"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=pyconv.get_num_threads())
    ap.add_argument("--latency", action="store_true", help="batch-1 inference latency too")
    ap.add_argument("--memory", action="store_true", help="peak memory of a training step too")
    ap.add_argument("--memory-child", nargs=8, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        library, name, batch, threads, optimizer, layout, size, steps = args.memory_child
        _memory_child(library, name, int(batch), int(threads), optimizer, layout,
                      int(size) or None, int(steps))  # fmt: skip
        return
    pyconv.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"batch {args.batch}, {args.threads} threads; images/s "
          f"(best of {args.repeats} x {args.steps} steps)")  # fmt: skip
    print(f"{'network':<14}{'pyconv':>10}{'pytorch':>10}{'ratio':>8}")
    for name, shape in NETS.items():
        x = rng.random((args.batch, *shape), dtype=np.float32)
        y = rng.integers(0, 10, args.batch)
        print(bench_network(name, x, y, args))
    if args.latency:
        print("batch-1 inference latency, ms (fastest call); ratio = peer ms / pyconv ms")
        print(f"{'network':<14}{'pyconv':>10}{'pytorch':>10}{'ratio':>7}{'onnxrt':>10}{'ratio':>7}")
        for name in LATENCY_NETS:
            r = latency(name, args.threads)
            ours = r["pyconv"]
            print(f"{name:<14}{ours:>10.3f}{fmt_ms(r['torch'], ours)}{fmt_ms(r['ort'], ours)}")
    if args.memory:
        print(f"peak memory of a training step at batch {args.batch}, MiB above set-up")
        for name in NETS:
            mem = step_memory(name, args.batch, args.threads)
            print(f"{name:<14}" + "".join(f"{v / 1024:>10.1f}" for v in mem.values()))


if __name__ == "__main__":
    main()
