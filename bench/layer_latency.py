"""Batch-1 inference time of a zoo network: the whole call, layer by layer, and step by step
of its inference plan (fastest of many calls).

python bench/layer_latency.py mnist_cnn [--threads 2] [--size 224] [--batch 1] [--reps 200]

Whole model: predict, predict_on_batch and model(x) with the inference plan (pyconv.inference:
batch norm folded, ReLU fused, Dropout skipped) and without it (the layers one by one, as
the training forward pass runs them); the gap between the plan's steps and the whole call
is the per-call Python cost. Layers: each layer's forward alone (a layer graph's nodes in
order); plan: each step alone (the layers it stands for joined by '+').
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import pyconv
from pyconv import inference, zoo


def best_us(fn, reps=200, setup=None):
    """Fastest of ``reps`` calls of fn (fn(setup()) when setup is given; setup untimed)."""
    arg = setup() if setup else None
    fn(arg) if setup else fn()
    best = float("inf")
    for _ in range(reps):
        arg = setup() if setup else None
        t0 = time.perf_counter()
        fn(arg) if setup else fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e6


def layer_calls(model, x):
    """[(layer, its input(s))] in the order the model runs them, from one forward pass."""
    if hasattr(model, "_nodes"):  # a layer graph: its nodes in topological order
        values = {id(n): x for n in model._input_nodes}
        calls = []
        for node in model._nodes:
            if not node.inbound:
                continue
            ins = [values[id(t.node)] for t in node.inbound]
            ins = ins if node.multi else ins[0]
            calls.append((node.layer, ins))
            values[id(node)] = node.layer.forward(ins, False)[0]
        return calls
    calls = []
    for layer in model.layers:
        calls.append((layer, x))
        x = layer.forward(x, False)[0]
    return calls


def plan_calls(plan, x):
    """[(step, its input(s))] of one run of the plan (inputs copied: steps may write them)."""
    values = [None] * plan.n_slots
    values[0] = x
    calls = []
    for step in plan.steps:
        ins = [values[i] for i in step.ins]
        ins = ins if step.multi else ins[0]
        copy = [a.copy() for a in ins] if step.multi else ins.copy()
        calls.append((step, copy))
        values[step.out] = step.run(ins)
    return calls


def fresh(ins):
    return (lambda: [a.copy() for a in ins]) if isinstance(ins, list) else (lambda: ins.copy())


def shape_of(ins) -> str:
    return str([a.shape for a in ins] if isinstance(ins, list) else ins.shape)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=sorted([*zoo.BUILDERS, *zoo.CLASSIC]))
    parser.add_argument("--threads", type=int, default=pyconv.get_num_threads())
    parser.add_argument("--size", type=int, help="input height and width (default: the zoo's)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args()
    pyconv.set_num_threads(args.threads)
    kwargs = {}
    if args.size:
        channels = 1 if args.model in ("mnist_cnn", "fashion_cnn", "lenet5", "smiley_cnn") else 3
        kwargs["input_shape"] = (args.size, args.size, channels)
    model = zoo.build(args.model, **kwargs)
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, *model.input_shape[1:]), dtype=np.float32)
    reps = args.reps
    print(
        f"{args.model}, input {x.shape}, {args.threads} threads, isa {pyconv.get_isa()}, "
        f"conv algorithm {pyconv.get_conv_algorithm()}"
    )
    for fusion in (True, False):
        model.inference_fusion = fusion
        times = [
            best_us(lambda: model.predict(x), reps),
            best_us(lambda: model.predict_on_batch(x), reps),
            best_us(lambda: model(x), reps),
        ]
        print(
            f"whole model, plan {'on ' if fusion else 'off'}: predict {times[0]:9.1f} us   "
            f"predict_on_batch {times[1]:9.1f} us   model(x) {times[2]:9.1f} us"
        )
    model.inference_fusion = True
    print("layers (each forward alone):")
    total = 0.0
    for layer, ins in layer_calls(model, x):
        t = best_us(lambda a, layer=layer: layer.forward(a, False), reps, fresh(ins))
        total += t
        print(f"  {layer.name:34s} {type(layer).__name__:20s} {shape_of(ins):28s} {t:9.1f} us")
    print(f"  sum of layers {total:9.1f} us")
    plan = inference.plan_for(model)
    print(f"inference plan ({len(plan.steps)} steps for {len(model.layers)} layers):")
    total = 0.0
    for step, ins in plan_calls(plan, x):
        t = best_us(lambda a, step=step: step.run(a), reps, fresh(ins))
        total += t
        print(f"  {step.label[:34]:34s} {type(step).__name__:20s} {shape_of(ins):28s} {t:9.1f} us")
    print(f"  sum of steps {total:9.1f} us")


if __name__ == "__main__":
    main()
