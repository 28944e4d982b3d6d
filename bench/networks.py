"""Whole classic networks: ResNet-18 and ResNet-50 (224 px, batch 32) and VGG-16 (224 px,
batch 8) from pyconv.zoo against the same architectures in PyTorch (bench/torch_nets.py)
and pyconv's own ONNX export in ONNX Runtime, plus batch-1 latency rows (the lecture CNNs
and ResNet-18), all in one run with the same thread count.

    python bench/networks.py [--networks resnet18,resnet50,vgg16] [--batch 16 | resnet50=16]
                             [--steps 2] [--repeats 3] [--quick] [--threads N]

- training img/s: full steps (forward, sparse categorical cross-entropy, backward, SGD with
  momentum 0.9) on random data; pyconv ``model.train_on_batch``, PyTorch the faster of NCHW
  and channels_last.
- inference img/s at the same batch: pyconv ``model.predict_on_batch``, PyTorch eval mode
  under no_grad (faster layout), ONNX Runtime on ``pyconv.onnx.export(model)`` with
  ``intra_op_num_threads`` = the thread count (its output checked against pyconv's).
- peak memory of training steps per library, each in a fresh process
  (train_bench.step_memory: the high-water RSS above the set-up's).
Each number is the best of ``--repeats`` rounds of ``--steps`` calls; the rounds interleave
the libraries, with a pause between them for the previous one's threads to go idle; PyTorch's
slower layout of the first round is not timed again. Memory: 2 steps (the first allocates
the momentum slots, the second runs with them).
``--quick`` (112 px, batch 4 / 2, one round of one step, no memory runs) is a smoke run.
A benchmark, not a test: nothing asserts a speed.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time

import numpy as np
import train_bench
from train_bench import TORCH_LAYOUTS, settle, summarise, torch

import pyconv

NETWORKS = {"resnet18": 32, "resnet50": 32, "vgg16": 8}  # name: batch
QUICK_BATCH, QUICK_SIZE = {"resnet18": 4, "resnet50": 4, "vgg16": 2}, 112  # --quick


def interleaved(fns, calls, repeats, alternatives=()):
    """{label: fastest seconds of ``calls`` consecutive calls}: one warm-up call each, then
    ``repeats`` rounds that time every library in turn. ``alternatives``: labels of which
    only the fastest in the first round is timed in the later ones (PyTorch's two layouts:
    the slower one keeps its first-round time; a third of the time saved at 3 rounds)."""
    for fn in fns.values():
        settle()
        fn()
    best = dict.fromkeys(fns, float("inf"))
    active, alternatives = list(fns), [label for label in alternatives if label in fns]
    for round_ in range(repeats):
        for label in active:
            settle()
            t = time.perf_counter()
            for _ in range(calls):
                fns[label]()
            best[label] = min(best[label], time.perf_counter() - t)
        if round_ == 0 and len(alternatives) > 1:
            keep = min(alternatives, key=best.__getitem__)
            active = [label for label in active if label == keep or label not in alternatives]
    return best


TORCH_LABELS = tuple(f"torch {lay}" for lay in TORCH_LAYOUTS)


def training(name, x, y, steps, repeats, image_size=None):
    """Training images/s per library (summarise's keys)."""
    libs = [("pyconv", "NCHW")]
    if torch is not None:
        libs += [("torch", lay) for lay in TORCH_LAYOUTS]
    fns = {
        lib if lib == "pyconv" else f"torch {lay}": train_bench.train_steps(
            lib, name, x, y, "sgd", lay, image_size
        )
        for lib, lay in libs
    }
    best = interleaved(fns, steps, repeats, TORCH_LABELS)
    del fns
    gc.collect()
    return summarise({k: len(x) * steps / v for k, v in best.items()}, max)


def inference(name, x, steps, repeats, threads, image_size=None):
    """Inference images/s per library; ONNX Runtime's output is checked against pyconv's."""
    model = train_bench.build_pyconv(name, image_size)
    fns = {"pyconv": lambda: model.predict_on_batch(x)}
    if torch is not None:
        for lay in TORCH_LAYOUTS:
            net = train_bench.build_torch(name, lay, image_size).eval()
            xt = train_bench.to_torch(x, lay)
            fns[f"torch {lay}"] = lambda net=net, xt=xt: train_bench._torch_infer(net, xt)
    with tempfile.TemporaryDirectory() as tmp:
        if train_bench.ort is not None:
            run = train_bench.ort_session(model, threads, tmp)
            train_bench.check_same(f"{name} onnxruntime", run(x), model.predict_on_batch(x))
            fns["ort"] = lambda: run(x)
        best = interleaved(fns, steps, repeats, TORCH_LABELS)
    return summarise({k: len(x) * steps / v for k, v in best.items()}, max)


def bench_network(name, batch, threads, steps, repeats, memory=True, image_size=None):
    """One row of the whole-network table."""
    rng = np.random.default_rng(0)
    size = image_size or 224
    x = rng.random((batch, size, size, 3), dtype=np.float32)
    y = rng.integers(0, 1000, batch)
    row = {"name": name, "batch": batch, "size": size, "seconds": {}}
    t = time.perf_counter()
    row["train"] = training(name, x, y, steps, repeats, image_size)
    row["seconds"]["train"], t = time.perf_counter() - t, time.perf_counter()
    row["infer"] = inference(name, x, steps, repeats, threads, image_size)
    row["seconds"]["infer"], t = time.perf_counter() - t, time.perf_counter()
    if memory:
        layout = row["train"]["torch layout"] or "NCHW"
        # 2 steps: the first allocates the momentum slots, the second runs with them
        row["memory"] = train_bench.step_memory(
            name, batch, threads, "sgd", layout, image_size, steps=2
        )
        row["seconds"]["memory"] = time.perf_counter() - t
    return row


def run(names, batches, threads, steps, repeats, memory=True, latency=True, image_size=None,
        latency_budget=1.0, log=print):  # fmt: skip
    """{"rows": whole-network rows, "latency": {name: train_bench.latency result}}."""
    pyconv.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    out = {"rows": [], "latency": {}, "steps": steps, "repeats": repeats}
    for name in names:
        t = time.perf_counter()
        row = bench_network(name, batches[name], threads, steps, repeats, memory, image_size)
        out["rows"].append(row)
        took = ", ".join(f"{k} {v:.0f} s" for k, v in row["seconds"].items())
        log(f"{name} batch {row['batch']}: training {_short(row['train'])}; inference "
            f"{_short(row['infer'])} ({took}; {time.perf_counter() - t:.0f} s)")  # fmt: skip
    if latency:
        t = time.perf_counter()
        for name in train_bench.LATENCY_NETS:
            out["latency"][name] = train_bench.latency(
                name, threads, repeats=max(repeats, 2), budget=latency_budget
            )
            log(f"{name} batch-1 latency ms: {_short(out['latency'][name], '.3f')}")
        log(f"batch-1 latency rows: {time.perf_counter() - t:.0f} s")
    return out


def _short(r, spec=".1f"):
    return ", ".join(
        f"{k} {v:{spec}}" for k, v in r.items() if v is not None and k != "torch layout"
    )


def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def _num(v, spec):
    return "-" if v is None else f"{v:{spec}}"


def _lay(r):
    return f" ({r['torch layout']})" if r["torch layout"] else ""


def render(res):
    """Markdown lines: the whole-network table, its memory columns and the latency table."""
    lines = []
    if res["rows"]:
        lines += [
            "| network | batch | train img/s pyconv | PyTorch (layout) | ratio | "
            "infer img/s pyconv | PyTorch (layout) | ratio | ONNX Runtime | ratio | "
            "step peak MiB pyconv | PyTorch |",
            "|" + "---|" * 12,
        ]
        for r in res["rows"]:
            tr, inf, mem = r["train"], r["infer"], r.get("memory", {})
            mib = {k: v / 1024 for k, v in mem.items()}
            lines.append(
                f"| {r['name']} {r['size']}px | {r['batch']} | {tr['pyconv']:.1f} | "
                f"{_num(tr['torch'], '.1f')}{_lay(tr)} | {ratio(tr['pyconv'], tr['torch'])} | "
                f"{inf['pyconv']:.1f} | {_num(inf['torch'], '.1f')}{_lay(inf)} | "
                f"{ratio(inf['pyconv'], inf['torch'])} | {_num(inf['ort'], '.1f')} | "
                f"{ratio(inf['pyconv'], inf['ort'])} | {_num(mib.get('pyconv'), '.0f')} | "
                f"{_num(mib.get('torch'), '.0f')} |"
            )
        lines.append("")
    if res["latency"]:
        lines += [
            "Batch-1 inference latency, ms (ratio = peer's ms / pyconv's ms):",
            "",
            "| network | pyconv | PyTorch (layout) | ratio | ONNX Runtime | ratio |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in res["latency"].items():
            lines.append(
                f"| {name} | {r['pyconv']:.3f} | {_num(r['torch'], '.3f')}{_lay(r)} | "
                f"{ratio(r['torch'], r['pyconv'])} | {_num(r['ort'], '.3f')} | "
                f"{ratio(r['ort'], r['pyconv'])} |"
            )
        lines.append("")
    return lines


def plot(res, path):
    """Bars of training and inference img/s per network and library (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["rows"]
    panels = [("train", "training img/s", ("pyconv", "torch")),
              ("infer", "inference img/s", ("pyconv", "torch", "ort"))]  # fmt: skip
    labels = {"pyconv": "pyconv", "torch": "PyTorch", "ort": "ONNX Runtime"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (key, title, libs) in zip(axes, panels):
        width = 0.8 / len(libs)
        for i, lib in enumerate(libs):
            ax.bar(
                [j + i * width for j in range(len(rows))],
                [r[key][lib] or 0 for r in rows],
                width,
                label=labels[lib],
            )
        ax.set_xticks(
            [j + width * (len(libs) - 1) / 2 for j in range(len(rows))],
            [f"{r['name']} {r['size']}px\nbatch {r['batch']}" for r in rows],
        )
        ax.set_yscale("log")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def parse_batches(text, names):
    """--batch: "16" for every network, or "resnet50=16,vgg16=4" for some."""
    out = {name: NETWORKS[name] for name in names}
    if not text:
        return out
    for item in text.split(","):
        name, _, value = item.rpartition("=")
        targets = [name] if name else names
        for target in targets:
            if target not in NETWORKS:
                raise SystemExit(f"--batch: unknown network {target!r}")
            out[target] = int(value)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--networks", default=",".join(NETWORKS), help="comma-separated")
    ap.add_argument("--batch", default=None, help='N for all, or "name=N,..."')
    ap.add_argument("--steps", type=int, default=2, help="calls per timed sample")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds (best-of)")
    ap.add_argument("--threads", type=int, default=pyconv.get_num_threads())
    ap.add_argument("--quick", action="store_true", help="small batches, 1 round, no memory")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    ap.add_argument("--no-latency", action="store_true", help="skip the batch-1 latency rows")
    ap.add_argument("--image-size", type=int, default=None, help="instead of 224 (smoke tests)")
    ap.add_argument("--plot", default=None, help="save the bar chart here (needs matplotlib)")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.networks.split(",") if n.strip()]
    for name in names:
        if name not in NETWORKS:
            ap.error(f"unknown network {name!r}; choose from {', '.join(NETWORKS)}")
    batches = parse_batches(args.batch, names)
    if args.quick:
        batches = {n: QUICK_BATCH[n] if not args.batch else batches[n] for n in names}
        args.steps, args.repeats, args.no_memory = 1, 1, True
        args.image_size = args.image_size or QUICK_SIZE
    res = run(names, batches, args.threads, args.steps, args.repeats,
              memory=not args.no_memory, latency=not args.no_latency,
              image_size=args.image_size, latency_budget=0.3 if args.quick else 1.0)  # fmt: skip
    print(f"\n{args.threads} threads, best of {args.repeats} interleaved rounds of "
          f"{args.steps} calls\n")  # fmt: skip
    print("\n".join(render(res)))
    if args.plot:
        plot(res, args.plot)
    return res


if __name__ == "__main__":
    main()
