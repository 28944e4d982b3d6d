"""Transfer learning through ONNX: train on CIFAR-10 classes 0-4, export, re-import, reuse.

    python examples/transfer_learning.py --data-dir ../shared/data     # about 3-4 min, 2 cores

1. Train a small CNN on the source task: CIFAR-10 classes 0-4 (airplane, automobile, bird,
   cat, deer), all 25,000 training images.
2. Export it with ``pyconv.onnx.export`` and build it again with ``pyconv.onnx.load``: the
   re-imported model has the same test accuracy (the same predictions).
3. Freeze the re-imported base (``layer.trainable = False``) and replace its head: a new
   ``Dense(5)`` on the tensor the old head read, ``pyconv.Model(base.input, head(tensor))``.
4. Fine-tune the new head on the target task, classes 5-9 (dog, frog, horse, ship, truck),
   from a small labelled set (``--target-per-class``, default 1,000 images a class).
5. For reference, the same network trained from scratch on that same target set with the
   same budget (epochs, batch size, optimizer).

Test accuracies are on the official test images of each task's classes (5,000 each;
``--test-per-class`` takes fewer). CIFAR-10 is read from ``--data-dir``, else ``$PYCONV_DATA``,
the cache, or downloaded (about 170 MB, ``pyconv.datasets.load_cifar10``). Needs
``pip install pyconv[onnx]``. A quick check of the whole path (seconds, not meaningful
accuracies): ``--source-per-class 50 --target-per-class 20 --test-per-class 20
--source-epochs 1 --target-epochs 1``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

import pyconv
import pyconv.onnx
from pyconv import datasets
from pyconv import layers as L


def small_cnn(num_classes: int) -> pyconv.Sequential:
    """Three conv stages (16, 32, 64 filters) with batch norm, a 128-unit dense layer."""
    return pyconv.Sequential(
        [
            L.Input((32, 32, 3)),
            L.Conv2D(16, 3, padding="same", activation="relu"),
            L.BatchNormalization(),
            L.Conv2D(16, 3, padding="same", activation="relu"),
            L.BatchNormalization(),
            L.MaxPooling2D(2),
            L.Conv2D(32, 3, padding="same", activation="relu"),
            L.BatchNormalization(),
            L.Conv2D(32, 3, padding="same", activation="relu"),
            L.BatchNormalization(),
            L.MaxPooling2D(2),
            L.Conv2D(64, 3, padding="same", activation="relu"),
            L.BatchNormalization(),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dense(128, activation="relu"),
            L.Dropout(0.5),
            L.Dense(num_classes, activation="softmax"),
        ],
        name="small_cnn",
    )


def task(x, y, classes, per_class=None, seed=0):
    """Images of ``classes`` (scaled to [0, 1]) and labels renumbered 0..len(classes)-1;
    with ``per_class``, that many random images of each class (at most all of them)."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in classes:
        idx = np.flatnonzero(y == c)
        if per_class is not None and per_class < len(idx):
            idx = rng.choice(idx, per_class, replace=False)
        keep.append(idx)
    keep = np.sort(np.concatenate(keep))
    labels = np.searchsorted(np.asarray(classes), y[keep]).astype(np.int64)
    return x[keep].astype(np.float32) / np.float32(255.0), labels


def accuracy(model, x, y) -> float:
    return float(np.mean(model.predict(x, batch_size=500, verbose=0).argmax(-1) == y))


def compiled(model):
    model.compile(
        optimizer=pyconv.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder with the CIFAR-10 files")
    parser.add_argument("--source-epochs", type=int, default=8)
    parser.add_argument("--target-epochs", type=int, default=10)
    parser.add_argument("--source-per-class", type=int, help="default: all 5,000 images a class")
    parser.add_argument("--target-per-class", type=int, default=1000)
    parser.add_argument("--test-per-class", type=int, help="default: all 1,000 images a class")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--onnx", default=None, help="where to write the ONNX file (a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for option in ("source_epochs", "target_epochs", "batch_size", "source_per_class",
                   "target_per_class", "test_per_class"):  # fmt: skip
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1, got {value}")
    start = time.perf_counter()

    def stamp(what: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {what}", flush=True)

    (x_train, y_train), (x_test, y_test) = datasets.load_cifar10(
        args.data_dir, option_name="--data-dir"
    )
    y_train, y_test = y_train.astype(np.int64), y_test.astype(np.int64)
    source, target = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
    xs_train, ys_train = task(x_train, y_train, source, args.source_per_class, args.seed)
    xs_test, ys_test = task(x_test, y_test, source, args.test_per_class, args.seed)
    xt_train, yt_train = task(x_train, y_train, target, args.target_per_class, args.seed)
    xt_test, yt_test = task(x_test, y_test, target, args.test_per_class, args.seed)
    names = datasets.CLASS_NAMES["cifar10"]
    stamp(
        f"source task {[names[c] for c in source]}: {len(xs_train)} training images; "
        f"target task {[names[c] for c in target]}: {len(xt_train)}"
    )

    # 1. the source model
    pyconv.set_random_seed(args.seed)
    model = compiled(small_cnn(len(source)))
    model.fit(xs_train, ys_train, batch_size=args.batch_size, epochs=args.source_epochs,
              verbose=2)  # fmt: skip
    acc_source = accuracy(model, xs_test, ys_test)
    stamp(f"source task, test accuracy: {acc_source:.4f}")

    # 2. through ONNX and back
    tmp = None
    path = args.onnx
    if path is None:
        tmp = tempfile.TemporaryDirectory()
        path = os.path.join(tmp.name, "source_cnn.onnx")
    pyconv.onnx.export(model, path)
    base = pyconv.onnx.load(path)
    acc_reimported = accuracy(base, xs_test, ys_test)
    same = np.array_equal(
        model.predict(xs_test[:1000], verbose=0).argmax(-1),
        base.predict(xs_test[:1000], verbose=0).argmax(-1),
    )
    stamp(
        f"exported to {os.path.getsize(path) / 1e6:.2f} MB ONNX and re-imported: source test "
        f"accuracy {acc_reimported:.4f} ({'equal' if acc_reimported == acc_source else 'DIFFERS'}"
        f", same predictions: {same})"
    )
    if acc_reimported != acc_source:
        raise SystemExit("the re-imported model does not reproduce the source model")

    # 3. freeze the base, replace the head: a new Dense on the tensor the old head read
    for layer in base.layers:
        layer.trainable = False
    old_head = base.layers[-1]
    features = base.layers[-2].output  # Dense(128)'s output (Dropout is not exported)
    head = L.Dense(len(target), activation="softmax", name="target_head")
    transfer = compiled(pyconv.Model(base.input, head(features), name="transfer"))
    print(f"replaced {old_head.name!r} on {features}: "
          f"{sum(v.value.size for v in transfer.trainable_weights):,} trainable parameters "
          f"of {transfer.count_params():,}")  # fmt: skip
    acc_new_head = accuracy(transfer, xt_test, yt_test)
    stamp(f"target task, frozen base + new head before training: {acc_new_head:.4f} (chance 0.2)")

    # 4. fine-tune the head on the target task
    transfer.fit(xt_train, yt_train, batch_size=args.batch_size, epochs=args.target_epochs,
                 verbose=2)  # fmt: skip
    acc_transfer = accuracy(transfer, xt_test, yt_test)
    stamp(f"target task, frozen base + fine-tuned head: {acc_transfer:.4f}")

    # 5. the same network from scratch on the same target data, same budget
    pyconv.set_random_seed(args.seed + 1)
    scratch = compiled(small_cnn(len(target)))
    scratch.fit(xt_train, yt_train, batch_size=args.batch_size, epochs=args.target_epochs,
                verbose=2)  # fmt: skip
    acc_scratch = accuracy(scratch, xt_test, yt_test)
    stamp(f"target task, the same network from scratch: {acc_scratch:.4f}")

    print()
    print(f"source task (classes 0-4), test accuracy       {acc_source:.4f}")
    print(f"  after ONNX export + re-import                {acc_reimported:.4f}")
    print(f"target task (classes 5-9, {len(xt_train)} training images), test accuracy")
    print(f"  frozen base + new head, untrained            {acc_new_head:.4f}")
    print(f"  frozen base + head fine-tuned ({args.target_epochs} epochs)    {acc_transfer:.4f}")
    print(f"  from scratch ({args.target_epochs} epochs)                     {acc_scratch:.4f}")
    print(f"wall time {time.perf_counter() - start:.0f} s")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    try:
        main()
    except (ValueError, OSError, ImportError) as e:  # a bad file or option: one line, no traceback
        raise SystemExit(f"error: {e}") from None
