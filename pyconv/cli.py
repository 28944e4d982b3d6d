"""The ``pyconv`` command (``python -m pyconv``): train, evaluate, predict, gradcam, info.

pyconv train                      # the Keras MNIST CNN on the embedded MNIST sample
pyconv train --model mnist_cnn --dataset mnist --augment --out mnist_cnn.pyconv
pyconv evaluate --model mnist_cnn.pyconv
pyconv predict --model mnist_cnn.pyconv digit.png
pyconv gradcam --model mnist_cnn.pyconv --image digit.png --out cam.png
"""

from __future__ import annotations

import argparse
import inspect
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np


def _info(args) -> int:
    import pyconv

    from . import _core

    print(f"pyconv {pyconv.__version__}")
    print(f"isa: {pyconv.get_isa()} (available: {', '.join(pyconv.available_isas())})")
    print(f"threads: {pyconv.get_num_threads()}")
    print(f"single-core peak: {_core.peak_gflops(0.2):.1f} GFLOP/s")
    return 0


# --- data ------------------------------------------------------------------------------------


def _prepare(x: np.ndarray, flatten: bool) -> np.ndarray:
    """uint8 images -> float32 in [0, 1] (the preprocessing saved with the model)."""
    x = x.astype(np.float32)
    x *= np.float32(1 / 255)
    return x.reshape(len(x), -1) if flatten else x


def _load_data(name: str, data_dir, flatten: bool):
    from . import datasets

    (xtr, ytr), (xte, yte) = datasets.load(name, data_dir=data_dir)
    return (_prepare(xtr, flatten), ytr.astype(np.int64)), (
        _prepare(xte, flatten),
        yte.astype(np.int64),
    )


def _class_names(dataset: str):
    from . import datasets

    return datasets.CLASS_NAMES.get(dataset.replace("_sample", ""))


# --- train -------------------------------------------------------------------------------------


def _build(name: str, input_shape, num_classes: int):
    from . import zoo

    builder = zoo.BUILDERS[name]
    params = inspect.signature(builder).parameters
    kwargs = {}
    if "input_shape" in params:
        kwargs["input_shape"] = tuple(input_shape)
    if "num_classes" in params:
        kwargs["num_classes"] = num_classes
    return builder(**kwargs)


def _train_callbacks(args, recipe, epochs, run):
    """Checkpoint (model + optimizer + run state) each epoch, CSV log, LR schedule, timing."""
    from . import callbacks as cbks

    class EpochState(cbks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs["epoch_seconds"] = time.perf_counter() - self.t0
            for k, v in logs.items():
                run["history"].setdefault(k, []).append(float(v))
            run["epoch"] = epoch + 1
            if args.checkpoint:
                self.model.metadata = dict(run)
                self.model.save(args.checkpoint)

    schedule = cbks.LearningRateScheduler(
        lambda epoch, lr: recipe.learning_rate_at(epoch, epochs, args.learning_rate)
    )
    out = [schedule, EpochState()]
    if args.log:
        out.append(cbks.CSVLogger(args.log, append=args.resume))
    return out


def _train(args) -> int:
    import pyconv

    from . import optimizers, zoo

    if args.model not in zoo.BUILDERS:
        print(
            f"unknown model {args.model!r}; choose from {', '.join(zoo.BUILDERS)}", file=sys.stderr
        )
        return 2
    recipe = zoo.RECIPES[args.model]
    dataset = args.dataset or recipe.dataset
    if not dataset:
        print(f"{args.model} has no standard data set; pass --dataset", file=sys.stderr)
        return 2
    if dataset == "mnist" and args.dataset is None:
        dataset = "mnist_sample"
        print("Training on the MNIST sample shipped with pyconv (5,000 training and 1,000 test "
              "digits); --dataset mnist uses all 70,000.")  # fmt: skip
    dataset = dataset.replace("-", "_")
    sample = dataset == "mnist_sample"
    epochs = args.epochs or (5 if sample else recipe.epochs)
    batch = args.batch_size or recipe.batch_size
    out = Path(args.out or f"{args.model}.pyconv")
    args.checkpoint = args.checkpoint or str(out.with_name(out.stem + ".ckpt.pyconv"))
    args.log = args.log or str(out.with_name(out.stem + ".log.csv"))
    plot = args.plot or str(out.with_name(out.stem + "_history.png"))
    if args.threads:
        pyconv.set_num_threads(args.threads)
    pyconv.set_random_seed(args.seed)

    (xtr, ytr), (xte, yte) = _load_data(dataset, args.data_dir, recipe.flatten_input)
    if args.limit:
        xtr, ytr = xtr[: args.limit], ytr[: args.limit]
    run = {"model": args.model, "dataset": dataset, "class_names": _class_names(dataset),
           "preprocessing": {"scale": 1 / 255, "flatten": recipe.flatten_input},
           "epochs": epochs, "batch_size": batch, "augment": bool(args.augment),
           "command": "pyconv " + shlex.join(sys.argv[1:] if args.argv is None else args.argv),
           "threads": pyconv.get_num_threads(), "epoch": 0, "history": {}}  # fmt: skip
    initial_epoch = 0
    if args.resume and os.path.exists(args.checkpoint):
        model = pyconv.load_model(args.checkpoint)
        saved = model.metadata
        if saved.get("model") != args.model or saved.get("dataset") != dataset:
            what = f"{saved.get('model')} on {saved.get('dataset')}"
            print(f"{args.checkpoint} is a checkpoint of {what}, not {args.model} on {dataset}",
                  file=sys.stderr)  # fmt: skip
            return 2
        initial_epoch = int(saved.get("epoch", 0))
        run["history"] = saved.get("history", {})
        run["epoch"] = initial_epoch
        print(f"Resuming from {args.checkpoint} after epoch {initial_epoch}")
    else:
        model = _build(args.model, xtr.shape[1:], int(ytr.max()) + 1)
        opt = optimizers.get(recipe.optimizer)
        opt.learning_rate = args.learning_rate or recipe.learning_rate
        model.compile(opt, recipe.loss, ["accuracy"])
    if args.verbose:
        model.summary()
    augment = recipe.augmenter(seed=args.seed) if args.augment else None
    if initial_epoch < epochs:
        model.fit(
            xtr, ytr, batch_size=batch, epochs=epochs, initial_epoch=initial_epoch,
            validation_split=args.validation_split, augment=augment, verbose=args.verbose,
            callbacks=_train_callbacks(args, recipe, epochs, run),
        )  # fmt: skip
    loss, acc = model.evaluate(xte, yte, batch_size=256, verbose=0)
    secs = run["history"].get("epoch_seconds", [])
    run.update(test_loss=float(loss), test_accuracy=float(acc))
    model.metadata = run
    model.save(out)
    print(f"test accuracy: {acc:.4f} (loss {loss:.4f}) on {len(xte):,} {dataset} test images")
    if secs:
        print(f"mean epoch time: {np.mean(secs):.1f} s ({len(xtr):,} training images, "
              f"batch {batch}, {pyconv.get_num_threads()} threads)")  # fmt: skip
    print(f"saved model: {out}")
    try:
        from . import viz

        viz.plot_history(run["history"], plot, title=f"{args.model} on {dataset}")
        print(f"training curves: {plot}")
    except ImportError as e:
        print(f"(no training-curve plot: {e})")
    return 0


# --- evaluate / predict --------------------------------------------------------------------


def _evaluate(args) -> int:
    import pyconv

    model = pyconv.load_model(args.model)
    meta = model.metadata
    dataset = args.dataset or meta.get("dataset")
    if not dataset:
        print("the model file does not say its data set; pass --dataset", file=sys.stderr)
        return 2
    flatten = meta.get("preprocessing", {}).get("flatten", False)
    _, (xte, yte) = _load_data(dataset, args.data_dir, flatten)
    loss, acc = model.evaluate(xte, yte, batch_size=args.batch_size, verbose=0)
    print(f"{dataset} test: accuracy {acc:.4f}, loss {loss:.4f} ({len(xte):,} images)")
    return 0


def load_image(path, shape, invert="auto") -> np.ndarray:
    """An image file as the model's input: resized to (H, W), greyscale or RGB by C, in
    [0, 1]; with invert="auto" a greyscale image on a light background is inverted (the
    digit data sets are light on dark)."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading images needs Pillow: pip install 'pyconv[viz]'") from None
    h, w, c = shape
    with Image.open(path) as im:
        im = im.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
        a = np.asarray(im, np.float32) / 255
    a = a.reshape(h, w, c)
    if c == 1 and (invert == "yes" or (invert == "auto" and a.mean() > 0.5)):
        a = 1 - a
    return a


def _predict(args) -> int:
    import pyconv

    model = pyconv.load_model(args.model)
    meta = model.metadata
    shape = model.input_shape[1:]
    flatten = meta.get("preprocessing", {}).get("flatten", False)
    img_shape = (28, 28, 1) if flatten else shape
    if len(img_shape) != 3:
        print(f"model input {shape} is not an image", file=sys.stderr)
        return 2
    names = meta.get("class_names")
    for path in args.images:
        x = load_image(path, img_shape, args.invert)[None]
        probs = model.predict(x.reshape(1, -1) if flatten else x)[0]
        top = np.argsort(probs)[::-1][: args.top]
        label = lambda k: names[k] if names and k < len(names) else str(k)  # noqa: E731
        print(f"{path}: " + ", ".join(f"{label(k)} ({probs[k]:.3f})" for k in top))
    return 0


def _gradcam(args) -> int:
    from PIL import Image

    import pyconv
    from pyconv import gradcam

    model = pyconv.load_model(args.model)
    meta = model.metadata
    shape = model.input_shape[1:]
    if meta.get("preprocessing", {}).get("flatten", False) or len(shape) != 3:
        print(
            f"Grad-CAM needs a convolutional model; input {shape} is not an image", file=sys.stderr
        )
        return 2
    x = load_image(args.image, shape, args.invert)[None]
    cls = None if args.class_index is None else args.class_index
    heat, probs = gradcam.grad_cam(model, x, layer=args.layer, class_index=cls, method=args.method)
    probs = probs[0]
    k = int(probs.argmax()) if cls is None else cls
    names = meta.get("class_names")
    label = names[k] if names and k < len(names) else str(k)
    # Shown over the file's own picture, enlarged (nearest) when small so the map is visible.
    with Image.open(args.image) as im:
        im = im.convert("RGB")
        scale = max(1, -(-args.min_size // min(im.size)))
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
        picture = np.asarray(im)
    rgb = gradcam.overlay(picture, heat[0], alpha=args.alpha, colormap=args.colormap)
    gradcam.save_image(rgb, args.out)
    layer = args.layer or gradcam.last_conv_layer(model).name
    print(
        f"{args.image}: class {label} (p={probs[k]:.3f}, predicted "
        f"{int(probs.argmax())}); {args.method} of layer {layer} -> {args.out}"
    )
    return 0


# --- entry point -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    import pyconv

    from . import zoo

    parser = argparse.ArgumentParser(
        prog="pyconv", description="Fast, exact CNNs on the CPU (C++ core, Keras-style API)."
    )
    parser.add_argument("--version", action="version", version=f"pyconv {pyconv.__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("info", help="show the build: ISA in use, ISAs available, threads, peak")

    t = sub.add_parser("train", help="train a network of the zoo on a data set")
    t.add_argument("--model", default="mnist_cnn", help=f"one of {', '.join(zoo.BUILDERS)}")
    t.add_argument(
        "--dataset", help="mnist, mnist_sample, fashion_mnist, cifar10 (default: the model's)"
    )
    t.add_argument("--epochs", type=int, help="default: the model's recipe (5 on the MNIST sample)")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--learning-rate", type=float, help="initial rate (cosine decay per epoch)")
    t.add_argument(
        "--data-dir", help="folder with the data files (else PYCONV_DATA, the cache, ...)"
    )
    t.add_argument("--augment", action="store_true", help="random flips/rotations/shifts/zooms")
    t.add_argument("--validation-split", type=float, default=0.1)
    t.add_argument("--out", help="saved model (default: MODEL.pyconv)")
    t.add_argument("--checkpoint", help="saved after every epoch (default: OUT.ckpt.pyconv)")
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    t.add_argument("--log", help="per-epoch CSV log (default: OUT.log.csv)")
    t.add_argument("--plot", help="training curves PNG (default: OUT_history.png)")
    t.add_argument("--limit", type=int, help="use only the first N training images")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int)
    t.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))

    e = sub.add_parser("evaluate", help="test accuracy of a saved model")
    e.add_argument("--model", required=True)
    e.add_argument("--dataset")
    e.add_argument("--data-dir")
    e.add_argument("--batch-size", type=int, default=256)

    p = sub.add_parser("predict", help="classify image files (PNG, JPEG, ...)")
    p.add_argument("--model", required=True)
    p.add_argument("images", nargs="+")
    p.add_argument("--invert", choices=("auto", "yes", "no"), default="auto")
    p.add_argument("--top", type=int, default=3)

    g = sub.add_parser("gradcam", help="Grad-CAM heatmap of an image file, overlaid, as PNG")
    g.add_argument("--model", required=True)
    g.add_argument("--image", required=True)
    g.add_argument("--layer", help="conv layer name (default: the last Conv2D)")
    g.add_argument("--class", dest="class_index", type=int, help="default: the predicted class")
    g.add_argument("--method", choices=("gradcam", "gradcam++"), default="gradcam")
    g.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity in [0, 1]")
    g.add_argument("--colormap", default="jet", help="a matplotlib colormap name")
    g.add_argument("--min-size", type=int, default=224, help="enlarge smaller images to this")
    g.add_argument("--invert", choices=("auto", "yes", "no"), default="auto")
    g.add_argument("--out", default="cam.png")

    args = parser.parse_args(argv)
    args.argv = argv
    handlers = {
        None: _info,
        "info": _info,
        "train": _train,
        "evaluate": _evaluate,
        "predict": _predict,
        "gradcam": _gradcam,
    }
    try:
        return handlers[args.command](args)
    except (OSError, ValueError, ImportError) as err:  # user-facing, no traceback
        print(f"pyconv {args.command}: {err}", file=sys.stderr)
        return 1
