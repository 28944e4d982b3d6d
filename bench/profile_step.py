"""Where a training step's time goes: per layer forward and backward, loss, optimizer.

    python bench/profile_step.py [--model mnist_cnn] [--batch 128] [--steps 20]

Runs the step the way Model.train_on_batch does (forward over the tape, loss, backward,
optimizer update), timing each piece; prints the median over ``--steps`` steps after warm-up.
A profiling aid for issue 6, not a benchmark: compare the shares, not the absolute times.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

import pyconv
from pyconv import zoo
from pyconv.models import TapeEntry, backprop_layer


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mnist_cnn", choices=("mnist_cnn", "cifar10_cnn"))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)

    shape = (28, 28, 1) if args.model == "mnist_cnn" else (32, 32, 3)
    pyconv.set_random_seed(0)
    model = zoo.BUILDERS[args.model]()
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, *shape), dtype=np.float32)
    y = rng.integers(0, 10, args.batch)
    model.train_on_batch(x, y)
    opt, layers = model.optimizer, model.layers
    times = defaultdict(list)

    def timed(key, fn, *a):
        t = time.perf_counter()
        out = fn(*a)
        times[key].append(time.perf_counter() - t)
        return out

    for step in range(args.steps + 3):
        t0 = time.perf_counter()
        tape, h = [], x
        for layer in layers:
            h, ctx = timed(f"{layer.name} fwd", layer.forward, h, True)
            tape.append(TapeEntry(layer, ctx))
        # the loss marks the last ctx when it folds the softmax into its gradient
        _, dy = timed("loss", model._loss_and_grad, y, h, tape, None)
        for i in range(len(tape) - 1, -1, -1):
            dy = timed(f"{tape[i].layer.name} bwd", backprop_layer, tape[i], dy, i > 0)
        variables = model.trainable_weights
        timed("optimizer", opt.apply, variables)
        for v in variables:
            v.grad = None
        times["step"].append(time.perf_counter() - t0)
        if step < 3:
            for v in times.values():
                v.clear()
    med = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    total = med.pop("step")
    rate = args.batch / total * 1e3
    print(f"{args.model}, batch {args.batch}, {pyconv.get_num_threads()} threads: step "
          f"{total:.1f} ms ({rate:.0f} img/s), median of {args.steps}")  # fmt: skip
    for k, v in sorted(med.items(), key=lambda kv: -kv[1]):
        print(f"  {k:28s} {v:7.2f} ms  {100 * v / total:5.1f}%")


if __name__ == "__main__":
    main()
