"""The ``pyconv`` command (``python -m pyconv``): train, evaluate, predict, gradcam, info.

pyconv train                      # the Keras MNIST CNN on the embedded MNIST sample
pyconv train --model mnist_cnn --dataset mnist --augment --out mnist_cnn.pyconv
pyconv train ... --resume         # continue the run from its checkpoint (after Ctrl-C)
pyconv evaluate --model mnist_cnn.pyconv
pyconv predict --model mnist_cnn.pyconv digit.png
pyconv gradcam --model mnist_cnn.pyconv --image digit.png --out cam.png

Exit codes: 0 done, 1 failed (a file or data set that cannot be read or written, or an
image predict could not read), 2 a wrong command line, 130 interrupted (Ctrl-C).
User errors are one line on stderr (``pyconv COMMAND: message``), never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import inspect
import io
import math
import os
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C'd program

DEFAULT_MODEL = "mnist_cnn"
MAX_DISPLAY_SIDE = 2048  # Grad-CAM pictures: longest side, bounds the work on huge images


class UsageError(Exception):
    """A command line that cannot work, found after parsing (exit 2, as argparse's errors)."""


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _info(args) -> int:
    import pyconv

    from . import _core

    print(f"pyconv {pyconv.__version__}")
    print(f"isa: {pyconv.get_isa()} (available: {', '.join(pyconv.available_isas())})")
    print(f"threads: {pyconv.get_num_threads()}")
    print(f"single-core peak: {_core.peak_gflops(0.2):.1f} GFLOP/s")
    return 0


# --- argument types: argparse turns their errors into a usage message and exit 2 ---------------


def _int_in(low: int, high: int | None = None):
    """argparse type: an int in [low, high] (no upper bound when high is None)."""
    allowed = f">= {low}" if high is None else f"in [{low}, {high}]"

    def parse(text: str) -> int:
        value = int(text)  # a ValueError here: argparse says "invalid int value"
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def _float_in(low: float, high: float | None = None, *, low_open=False, high_open=False):
    """argparse type: a finite float between low and high (open or closed ends)."""
    if high is None:
        allowed = f"{'>' if low_open else '>='} {low:g}"
    else:
        allowed = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        value = float(text)
        above = value > low if low_open else value >= low
        below = high is None or (value < high if high_open else value <= high)
        if not (math.isfinite(value) and above and below):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


def _dataset_name_type(text: str) -> str:
    return text.lower().replace("-", "_")  # "fashion-mnist" is fashion_mnist


def _check_output_path(path, option: str) -> None:
    """Fail before any work when an output cannot be written there: its folder does not exist
    (naming that folder), or the name is a folder itself."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{option} {path}: the folder {folder} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"{option} {path} is a folder; give a file name")


def _check_option(check, value, option: str) -> None:
    """Refuse up front, as a usage error, a value ``check`` raises ValueError for (a picture
    name whose extension is no format we can write, an unknown colormap)."""
    try:
        check(value)
    except ImportError:
        pass  # no matplotlib / Pillow: said where the picture would be made
    except ValueError as err:
        raise UsageError(f"{option}: {err}") from None


# --- data ------------------------------------------------------------------------------------


def _prepare(x: np.ndarray, flatten: bool) -> np.ndarray:
    """uint8 images -> float32 in [0, 1] (the preprocessing saved with the model)."""
    x = x.astype(np.float32)
    x *= np.float32(1 / 255)
    return x.reshape(len(x), -1) if flatten else x


def _load_data(name: str, data_dir, flatten: bool, subset=None):
    """The data set as model inputs and int64 labels: both splits, or only ``subset``."""
    from . import datasets

    data = datasets.load(name, data_dir=data_dir, subset=subset, option_name="--data-dir")
    splits = [data] if subset else data
    prepared = [(_prepare(x, flatten), y.astype(np.int64)) for x, y in splits]
    return prepared[0] if subset else tuple(prepared)


def _class_names(dataset: str):
    from . import datasets

    return datasets.CLASS_NAMES.get(dataset.replace("_sample", ""))


# --- train -------------------------------------------------------------------------------------


def _default_settings(recipe, sample: bool) -> dict:
    """What changes the numbers training computes, with its defaults. Each is an option whose
    argparse default is None ("not given"): a resumed run takes it from the checkpoint, and
    refuses one given differently (the learning-rate schedule, the data order and the split
    depend on them)."""
    return {"epochs": 5 if sample else recipe.epochs, "batch_size": recipe.batch_size,
            "learning_rate": recipe.learning_rate, "augment": False, "validation_split": 0.1,
            "limit": None, "seed": 0}  # fmt: skip


def _option(key: str, value) -> str:
    """How the command line writes a setting: ``--epochs 4``, ``--no-augment``."""
    if isinstance(value, bool):
        return f"--{'' if value else 'no-'}{key.replace('_', '-')}"
    return f"--{key.replace('_', '-')} {'(all)' if value is None else value}"


def _settings(args, defaults: dict, saved: dict | None = None, checkpoint=None) -> dict:
    """The run's settings: given on the command line, else the checkpoint's, else defaults."""
    settings = {}
    for key, default in defaults.items():
        given = getattr(args, key)
        if saved is None or key not in saved:  # a new run (or a checkpoint without the key)
            settings[key] = default if given is None else given
        elif given is None or given == saved[key]:
            settings[key] = saved[key]
        else:
            why = " (the learning-rate schedule spans the whole run)" if key == "epochs" else ""
            raise UsageError(
                f"{_option(key, given)} does not match the checkpoint {checkpoint}, saved with "
                f"{_option(key, saved[key])}{why}: leave it out to continue that run, or train "
                "anew without --resume"
            )
    return settings


def _dataset_name(args, recipe) -> str:
    dataset = args.dataset or recipe.dataset
    if not dataset:
        raise UsageError(f"{args.model} has no standard data set; pass --dataset")
    if dataset == "mnist" and args.dataset is None:
        dataset = "mnist_sample"
        print("Training on the MNIST sample shipped with pyconv (5,000 training and 1,000 test "
              "digits); --dataset mnist uses all 70,000.")  # fmt: skip
    return dataset


def _train_paths(args) -> argparse.Namespace:
    """Where the run writes: the model, its checkpoint, CSV log and curves (folders checked)."""
    from . import utils, viz

    out = Path(args.out or f"{args.model}.pyconv")
    paths = argparse.Namespace(
        out=out,
        checkpoint=Path(args.checkpoint or out.with_name(out.stem + ".ckpt.pyconv")),
        log=Path(args.log or out.with_name(out.stem + ".log.csv")),
        plot=Path(args.plot or out.with_name(out.stem + "_history.png")),
    )
    for option, path in vars(paths).items():
        _check_output_path(path, f"--{option}")
    for option in ("out", "checkpoint"):  # model files: refused as Keras names before training
        path = getattr(paths, option)
        _check_option(lambda p: utils.check_not_keras_path(p, "a model file"), path, f"--{option}")
    _check_option(viz.figure_format, paths.plot, "--plot")
    return paths


def _command(argv) -> str:
    return "pyconv " + shlex.join(argv)


def _new_run(args, recipe) -> dict:
    """The run record saved with the checkpoints and the model (its ``metadata``)."""
    import pyconv

    dataset = _dataset_name(args, recipe)
    settings = _settings(args, _default_settings(recipe, dataset == "mnist_sample"))
    return {"model": args.model, "dataset": dataset, "class_names": _class_names(dataset),
            "preprocessing": {"scale": 1 / 255, "flatten": recipe.flatten_input}, **settings,
            "command": _command(args.argv), "threads": pyconv.get_num_threads(), "epoch": 0,
            "history": {}}  # fmt: skip


def _resume(args, recipe, paths):
    """The checkpointed model and its run record, checked against the command line."""
    import pyconv

    ckpt = paths.checkpoint
    if not ckpt.exists():
        raise UsageError(
            f"--resume: no checkpoint at {ckpt} (train without --resume to start a new run)"
        )
    model = pyconv.load_model(ckpt)
    saved = dict(model.metadata)
    if not {"model", "dataset", "epoch"} <= saved.keys():
        raise UsageError(f"{ckpt} is not a checkpoint of pyconv train (no run record in it)")
    dataset = saved["dataset"]
    if saved["model"] != args.model or args.dataset not in (None, dataset):
        raise UsageError(
            f"{ckpt} is a checkpoint of {saved['model']} on {dataset}, not "
            f"{args.model} on {args.dataset or dataset}"
        )
    defaults = _default_settings(recipe, dataset == "mnist_sample")
    run = {**saved, **_settings(args, defaults, saved, ckpt)}
    run.update(threads=pyconv.get_num_threads(), history=saved.get("history", {}))
    run["epoch"] = int(saved.get("epoch", 0))
    what = f"{args.model} on {dataset}"
    if run["epoch"] < run["epochs"]:
        print(f"Resuming {what} from {ckpt} after epoch {run['epoch']} of {run['epochs']}")
    else:
        print(f"{ckpt}: {what} has completed all {run['epochs']} epochs; evaluating it and "
              f"saving {paths.out}")  # fmt: skip
    return model, run


def _write_log(path, history: dict) -> None:
    """The per-epoch CSV log, rewritten from the run's history (so it always matches the
    checkpoint, however often the run was interrupted and resumed)."""
    from . import saving

    keys = sorted(history)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for epoch, row in enumerate(zip(*(history[k] for k in keys))):
        writer.writerow([epoch, *row])
    saving.atomic_write(path, lambda f: f.write(text.getvalue().encode()))


def _train_callbacks(recipe, run, paths):
    """LR schedule; at each epoch's end the checkpoint (model + optimizer + run record)."""
    from . import callbacks as cbks
    from .utils import hold_interrupts

    class EpochEnd(cbks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs["epoch_seconds"] = time.perf_counter() - self.t0
            history = {k: [*run["history"].get(k, []), float(v)] for k, v in logs.items()}
            # Ctrl-C waits until the checkpoint and the log both hold this epoch, and the run
            # record says so only then: what the interrupt message reports is on disk.
            with hold_interrupts():
                self.model.metadata = {**run, "history": history, "epoch": epoch + 1}
                self.model.save(paths.checkpoint)
                _write_log(paths.log, history)
                run.update(history=history, epoch=epoch + 1)

    schedule = cbks.LearningRateScheduler(
        lambda epoch, lr: recipe.learning_rate_at(epoch, run["epochs"], run["learning_rate"])
    )
    return [schedule, EpochEnd()]


def _split_validation(x, y, fraction: float):
    """The last ``fraction`` of the training data held out for validation (as fit does)."""
    if not fraction:
        return (x, y), None
    split = int(len(x) * (1 - fraction))
    if split < 1 or split == len(x):
        raise UsageError(
            f"--validation-split {fraction} of {_plural(len(x), 'training image')} leaves no "
            "training or validation data"
        )
    return (x[:split], y[:split]), (x[split:], y[split:])


def _end_progress_line() -> None:
    if sys.stdout.isatty():
        print(flush=True)  # a progress bar may have been drawing on this line


def _interrupted(args, run, paths) -> int:
    _end_progress_line()
    if run["epoch"]:
        resume = args.argv if "--resume" in args.argv else [*args.argv, "--resume"]
        print(f"pyconv train: interrupted; the checkpoint {paths.checkpoint} holds epoch "
              f"{run['epoch']} of {run['epochs']}. Resume with:\n  {_command(resume)}",
              file=sys.stderr)  # fmt: skip
    else:
        print("pyconv train: interrupted before the first epoch ended (no checkpoint yet). "
              f"Start again with:\n  {_command(args.argv)}", file=sys.stderr)  # fmt: skip
    return EXIT_INTERRUPTED


def _train(args) -> int:
    import pyconv

    from . import optimizers, zoo

    if args.model not in zoo.BUILDERS:
        raise UsageError(f"unknown model {args.model!r}; choose from {', '.join(zoo.BUILDERS)}")
    recipe = zoo.RECIPES[args.model]
    paths = _train_paths(args)
    if args.threads:
        try:
            pyconv.set_num_threads(args.threads)
        except RuntimeError as err:  # the threads cannot start here (a memory/process limit)
            raise UsageError(f"--threads {args.threads}: {err}") from None
    model, run = _resume(args, recipe, paths) if args.resume else (None, _new_run(args, recipe))
    pyconv.set_random_seed(run["seed"])
    (xtr, ytr), (xte, yte) = _load_data(run["dataset"], args.data_dir, recipe.flatten_input)
    if run["limit"]:
        xtr, ytr = xtr[: run["limit"]], ytr[: run["limit"]]
    (xtr, ytr), validation = _split_validation(xtr, ytr, run["validation_split"])
    if model is None:
        model = _build(args.model, xtr.shape[1:], int(ytr.max()) + 1)
        opt = optimizers.get(recipe.optimizer)
        opt.learning_rate = run["learning_rate"]
        model.compile(opt, recipe.loss, ["accuracy"])
    if args.verbose:
        model.summary()
    try:
        if run["epoch"] < run["epochs"]:
            model.fit(
                xtr, ytr, batch_size=run["batch_size"], epochs=run["epochs"],
                initial_epoch=run["epoch"], validation_data=validation, verbose=args.verbose,
                augment=recipe.augmenter(seed=run["seed"]) if run["augment"] else None,
                callbacks=_train_callbacks(recipe, run, paths),
            )  # fmt: skip
        _finish_training(model, run, paths, (xte, yte), len(xtr))
    except KeyboardInterrupt:
        return _interrupted(args, run, paths)
    return 0


def _finish_training(model, run, paths, test, n_trained: int) -> None:
    """Test, save the model with its run record, report, and plot the curves."""
    import pyconv

    xte, yte = test
    loss, acc = model.evaluate(xte, yte, batch_size=256, verbose=0)
    run.update(test_loss=float(loss), test_accuracy=float(acc))
    model.metadata = run
    model.save(paths.out)
    print(f"test accuracy: {acc:.4f} (loss {loss:.4f}) on {len(xte):,} {run['dataset']} "
          "test images")  # fmt: skip
    secs = run["history"].get("epoch_seconds", [])
    if secs:
        threads = _plural(pyconv.get_num_threads(), "thread")
        print(f"mean epoch time: {np.mean(secs):.1f} s ({_plural(n_trained, 'training image')}, "
              f"batch {run['batch_size']}, {threads})")  # fmt: skip
    print(f"saved model: {paths.out}")
    try:
        from . import viz

        title = f"{run['model']} on {run['dataset']}"
        viz.plot_history(run["history"], paths.plot, title=title)
        print(f"training curves: {paths.plot}")
    except ImportError as e:
        print(f"(no training-curve plot: {e})")


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


# --- evaluate -----------------------------------------------------------------------------------


def _evaluate(args) -> int:
    import pyconv

    model = pyconv.load_model(args.model)
    meta = model.metadata
    dataset = args.dataset or meta.get("dataset")
    if not dataset:
        raise UsageError("the model file does not say its data set; pass --dataset")
    flatten = meta.get("preprocessing", {}).get("flatten", False)
    xte, yte = _load_data(dataset, args.data_dir, flatten, subset="test")
    results = model.evaluate(xte, yte, batch_size=args.batch_size, verbose=0, return_dict=True)
    results["loss"] = results.pop("loss")  # the metrics (accuracy, ...) first, then the loss
    values = ", ".join(f"{name} {value:.4f}" for name, value in results.items())
    print(f"{dataset} test: {values} ({len(xte):,} images)")
    return 0


# --- images --------------------------------------------------------------------------------------


def _pil():
    from .utils import optional_module

    return optional_module("PIL.Image", "reading images needs Pillow", "viz")


def _unreadable(path, err: BaseException) -> ValueError:
    Image = _pil()
    if isinstance(err, Image.UnidentifiedImageError):
        why = "not an image format Pillow can read"
    elif isinstance(err, OSError) and err.strerror:
        why = err.strerror  # "No such file or directory", without repeating the path
    elif isinstance(err, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        why = f"too large for Pillow ({err})"
    else:
        why = str(err) or type(err).__name__
    return ValueError(f"cannot read image {path}: {why}")


@contextlib.contextmanager
def _open_image(path):
    """The decoded image file as a PIL Image; any failure to read it (missing, not an image,
    truncated, over Pillow's decompression-bomb limit) is a ValueError naming the file."""
    Image = _pil()
    im = None
    try:
        with warnings.catch_warnings():
            # Pillow only warns up to twice its pixel limit: refuse those too (gigabytes)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
            im.load()  # decode now, so a truncated file fails here, named
    except Exception as err:  # Pillow's decoders raise many kinds for malformed files
        if im is not None:
            im.close()
        raise _unreadable(path, err) from None
    with im:
        yield im


def _model_input(im, shape, invert="auto") -> np.ndarray:
    h, w, c = shape
    im = im.convert("L" if c == 1 else "RGB").resize((w, h), _pil().BILINEAR)
    a = (np.asarray(im, np.float32) / 255).reshape(h, w, c)
    if c == 1 and (invert == "yes" or (invert == "auto" and a.mean() > 0.5)):
        a = 1 - a
    return a


def load_image(path, shape, invert="auto") -> np.ndarray:
    """An image file as the model's input: resized to (H, W), greyscale or RGB by C, in
    [0, 1]; with invert="auto" a greyscale image on a light background is inverted (the
    digit data sets are light on dark). A file that cannot be read: ValueError naming it."""
    with _open_image(path) as im:
        return _model_input(im, shape, invert)


def display_size(width: int, height: int, min_size: int, max_side: int = MAX_DISPLAY_SIDE):
    """(width, height) to show a picture at: a small one enlarged by a whole factor until its
    shorter side reaches min_size, as far as its longer side stays within max_side; one
    larger than max_side shrunk to it (so the work is bounded, whatever the file's size)."""
    longest = max(width, height)
    if longest > max_side:
        return max(1, round(width * max_side / longest)), max(1, round(height * max_side / longest))
    scale = max(1, min(-(-min_size // min(width, height)), max_side // longest))
    return width * scale, height * scale


def _display_picture(im, min_size: int) -> np.ndarray:
    """The image as uint8 RGB at its display size (nearest when enlarging: sharp pixels)."""
    Image = _pil()
    size = display_size(im.width, im.height, min_size)
    enlarge = size[0] >= im.width
    im = im.convert("RGB").resize(size, Image.NEAREST if enlarge else Image.BILINEAR)
    return np.asarray(im, np.uint8)


# --- predict / gradcam -----------------------------------------------------------------------


def _image_input_shape(model, what: str) -> tuple[tuple, bool]:
    """(H, W, C) of the images the model reads, and whether it takes them flattened."""
    flatten = model.metadata.get("preprocessing", {}).get("flatten", False)
    shape = model.input_shape[1:]
    img_shape = (28, 28, 1) if flatten else shape
    if len(img_shape) != 3:
        raise UsageError(f"{what} needs a model of images; its input {shape} is not an image")
    return img_shape, flatten


def _class_count(model) -> int:
    shape = model.output_shape
    if not isinstance(shape, tuple) or len(shape) != 2:
        raise UsageError(
            f"the model's output {shape} is not one score per class (a (N, classes) output)"
        )
    return shape[1]


def _labeller(model):
    names = model.metadata.get("class_names")
    return lambda k: names[k] if names and k < len(names) else str(k)


def _ranking(scores: np.ndarray, label, top: int) -> str:
    """The top classes with their probabilities (or raw scores, for a model whose output is
    not a probability distribution, e.g. logits)."""
    if len(scores) == 1:  # one sigmoid unit: the probability of class 1
        scores = np.array([1 - scores[0], scores[0]])
    is_distribution = bool(np.all((scores >= 0) & (scores <= 1)) and abs(scores.sum() - 1) < 1e-3)
    value = "{:.3f}" if is_distribution else "score {:.4g}"
    best = np.argsort(scores)[::-1][:top]
    return ", ".join(f"{label(k)} ({value.format(scores[k])})" for k in best)


def _predict(args) -> int:
    import pyconv

    model = pyconv.load_model(args.model)
    shape, flatten = _image_input_shape(model, "predict")
    _class_count(model)  # refuse, before reading images, a model with no per-class output
    label = _labeller(model)
    failed = 0
    for path in args.images:
        try:
            x = load_image(path, shape, args.invert)[None]
        except ValueError as err:  # report it and go on with the other files
            print(f"pyconv predict: {err}", file=sys.stderr)
            failed += 1
            continue
        scores = model.predict(x.reshape(1, -1) if flatten else x)[0]
        print(f"{path}: {_ranking(scores, label, args.top)}")
    if failed:
        print(f"pyconv predict: {failed} of {_plural(len(args.images), 'image')} could not be "
              "read", file=sys.stderr)  # fmt: skip
    return EXIT_FAILED if failed else 0


def _gradcam(args) -> int:
    import pyconv
    from pyconv import gradcam

    _check_output_path(args.out, "--out")
    _check_option(gradcam.image_format, args.out, "--out")
    _check_option(gradcam.get_colormap, args.colormap, "--colormap")
    model = pyconv.load_model(args.model)
    shape, flatten = _image_input_shape(model, "Grad-CAM")
    if flatten:
        raise UsageError("Grad-CAM needs a convolutional model; this one takes flat vectors")
    classes = _class_count(model)
    cls = args.class_index
    if cls is not None and cls >= classes:
        raise UsageError(f"--class must be in [0, {classes - 1}] (the model has {classes} "
                         f"class{'' if classes == 1 else 'es'}), got {cls}")  # fmt: skip
    with _open_image(args.image) as im:
        x = _model_input(im, shape, args.invert)[None]
        picture = _display_picture(im, args.min_size)
    heat, probs = gradcam.grad_cam(model, x, layer=args.layer, class_index=cls, method=args.method)
    probs = probs[0]
    predicted = int(probs.argmax())
    k = predicted if cls is None else cls
    rgb = gradcam.overlay(picture, heat[0], alpha=args.alpha, colormap=args.colormap)
    gradcam.save_image(rgb, args.out)
    layer = args.layer or gradcam.last_conv_layer(model).name
    label = _labeller(model)
    print(f"{args.image}: class {label(k)} (p={probs[k]:.3f}, predicted {label(predicted)}); "
          f"{args.method} of layer {layer} -> {args.out}")  # fmt: skip
    return 0


# --- entry point -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    import pyconv

    from . import zoo

    positive = _int_in(1)
    datasets = (*pyconv.datasets.LOADERS, "mnist_sample")
    parser = argparse.ArgumentParser(
        prog="pyconv",
        description="Fast, exact CNNs on the CPU (C++ core, Keras-style API).",
        epilog="exit status: 0 done, 1 failed, 2 wrong command line, 130 interrupted (Ctrl-C)",
    )
    parser.add_argument("--version", action="version", version=f"pyconv {pyconv.__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("info", help="show the build: ISA in use, ISAs available, threads, peak")

    t = sub.add_parser("train", help="train a network of the zoo on a data set")
    t.add_argument("--model", default=DEFAULT_MODEL, help=f"one of {', '.join(zoo.BUILDERS)}")
    t.add_argument(
        "--dataset", type=_dataset_name_type, choices=datasets, help="default: the model's"
    )
    # The recipe's settings default to None: "not given", so --resume can take the checkpoint's.
    t.add_argument("--epochs", type=positive, help="default: the recipe's (5 on the MNIST sample)")
    t.add_argument("--batch-size", type=positive, help="default: the recipe's")
    t.add_argument(
        "--learning-rate", type=_float_in(0, low_open=True), help="initial rate (cosine decay)"
    )
    t.add_argument(
        "--data-dir", help="folder with the data files (else PYCONV_DATA, the cache, ...)"
    )
    t.add_argument(
        "--augment", action=argparse.BooleanOptionalAction, help="random flips/rotations/shifts"
    )
    t.add_argument("--validation-split", type=_float_in(0, 1, high_open=True), help="default: 0.1")
    t.add_argument("--out", help="saved model (default: MODEL.pyconv)")
    t.add_argument("--checkpoint", help="saved after every epoch (default: OUT.ckpt.pyconv)")
    t.add_argument(
        "--resume", action="store_true", help="continue the checkpoint's run (with its settings)"
    )
    t.add_argument("--log", help="per-epoch CSV log (default: OUT.log.csv)")
    t.add_argument("--plot", help="training curves (default: OUT_history.png; .svg, .pdf, ...)")
    t.add_argument("--limit", type=positive, help="use only the first N training images")
    t.add_argument("--seed", type=_int_in(0), help="default: 0")
    t.add_argument("--threads", type=_int_in(1, pyconv.MAX_THREADS))
    t.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))

    e = sub.add_parser("evaluate", help="test accuracy of a saved model")
    e.add_argument("--model", required=True)
    e.add_argument(
        "--dataset", type=_dataset_name_type, choices=datasets, help="default: the model's"
    )
    e.add_argument("--data-dir")
    e.add_argument("--batch-size", type=positive, default=256)

    p = sub.add_parser("predict", help="classify image files (PNG, JPEG, ...)")
    p.add_argument("--model", required=True)
    p.add_argument("images", nargs="+")
    p.add_argument("--invert", choices=("auto", "yes", "no"), default="auto")
    p.add_argument("--top", type=positive, default=3)

    g = sub.add_parser("gradcam", help="Grad-CAM heatmap of an image file, overlaid")
    g.add_argument("--model", required=True)
    g.add_argument("--image", required=True)
    g.add_argument("--layer", help="conv layer name (default: the last Conv2D)")
    g.add_argument(
        "--class", dest="class_index", type=_int_in(0), help="default: the predicted class"
    )
    g.add_argument("--method", choices=("gradcam", "gradcam++"), default="gradcam")
    g.add_argument("--alpha", type=_float_in(0, 1), default=0.5, help="heatmap opacity in [0, 1]")
    g.add_argument("--colormap", default="jet", help="a matplotlib colormap name")
    g.add_argument(
        "--min-size",
        type=positive,
        default=224,
        help=f"enlarge smaller images to this (the longer side stays <= {MAX_DISPLAY_SIDE})",
    )
    g.add_argument("--invert", choices=("auto", "yes", "no"), default="auto")
    g.add_argument("--out", default="cam.png", help="PNG, JPEG, ... by the extension")
    return parser


HANDLERS = {
    None: _info,
    "info": _info,
    "train": _train,
    "evaluate": _evaluate,
    "predict": _predict,
    "gradcam": _gradcam,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    command = f"pyconv {args.command or 'info'}"
    try:
        return HANDLERS[args.command](args)
    except UsageError as err:
        print(f"{command}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        _end_progress_line()
        print(f"{command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    # user-facing errors (a file, a data set, a value; ModelFileError and DatasetError are
    # ValueErrors): one line, no traceback. Other exceptions are bugs and keep theirs.
    except (OSError, ValueError, ImportError) as err:
        print(f"{command}: {err}", file=sys.stderr)
        return EXIT_FAILED
