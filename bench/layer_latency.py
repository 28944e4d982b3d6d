"""Batch-1 inference time of a zoo network, layer by layer (fastest of many calls).

python bench/layer_latency.py mnist_cnn [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import pyconv
from pyconv import zoo


def best_us(fn, reps=200):
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=sorted(zoo.BUILDERS))
    parser.add_argument("--threads", type=int, default=pyconv.get_num_threads())
    args = parser.parse_args()
    pyconv.set_num_threads(args.threads)
    model = zoo.build(args.model)
    x = np.random.default_rng(0).random((1, *model.input_shape[1:]), dtype=np.float32)
    print(f"{args.model}, batch 1, {args.threads} threads, isa {pyconv.get_isa()}")
    print(f"whole model (predict_on_batch) {best_us(lambda: model.predict_on_batch(x)):8.1f} us")
    for layer in model.layers:
        t = best_us(lambda layer=layer, x=x: layer.forward(x, False))
        print(f"  {layer.name:24s} input {str(x.shape):20s} {t:8.1f} us")
        x = layer.forward(x, False)[0]


if __name__ == "__main__":
    main()
