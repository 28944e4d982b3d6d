"""Grad-CAM and Grad-CAM++ of a trained model on test images: where it looked, per class.

    pyconv train                                  # writes mnist_cnn.pyconv (MNIST sample)
    python examples/gradcam_example.py            # reads mnist_cnn.pyconv, writes gradcam_grid.png

The README's picture, from the full-MNIST model of ``runs/run_all.sh``:

    pyconv train --model mnist_cnn --dataset mnist --augment --epochs 12 \
        --out runs/mnist_cnn.pyconv
    python examples/gradcam_example.py --model runs/mnist_cnn.pyconv --out examples/gradcam.png

The test images come from the data set the model was trained on (stored in the model file):
the MNIST sample shipped with pyconv, or the data set's files from ``--data-dir``,
``$PYCONV_DATA`` or the cache. Row 1: the images with the predicted class; rows 2-3: Grad-CAM
and Grad-CAM++ of the last conv layer for that class, overlaid with the jet colormap.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import pyconv
from pyconv import datasets, gradcam, viz

MODEL_HINT = "make it with `pyconv train` (writes mnist_cnn.pyconv), or pass --model FILE"


def test_images(dataset: str | None, data_dir):
    """(uint8 test images (N, H, W, C), labels) of the model's data set."""
    if dataset in ("mnist_sample", None):
        return datasets.load_mnist_sample(subset="test")
    return datasets.load(dataset, data_dir, download=False, subset="test", option_name="--data-dir")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mnist_cnn.pyconv", help=f"a saved model; {MODEL_HINT}")
    parser.add_argument("--data-dir", help="folder with the model's data set files")
    parser.add_argument("--count", type=int, default=8, help="how many test images")
    parser.add_argument("--start", type=int, default=0, help="index of the first test image")
    parser.add_argument("--layer", help="default: the last Conv2D layer")
    parser.add_argument("--out", default="gradcam_grid.png", help="PNG to write")
    args = parser.parse_args()
    if args.count < 1 or args.start < 0:
        parser.error("--count must be >= 1 and --start >= 0")
    if not Path(args.model).is_file():
        raise SystemExit(f"error: model file {args.model} not found: {MODEL_HINT}")
    model = pyconv.load_model(args.model)
    dataset = model.metadata.get("dataset")
    names = model.metadata.get("class_names")
    images, labels = test_images(dataset, args.data_dir)
    images, labels = images[args.start : args.start + args.count], labels[args.start :]
    if not len(images):
        raise SystemExit(f"error: --start {args.start} is past the {dataset} test images")
    x = images.astype(np.float32) / 255  # the preprocessing pyconv train uses
    layer = args.layer or gradcam.last_conv_layer(model).name

    plt = viz._pyplot()
    fig, axes = plt.subplots(3, len(x), figsize=(1.7 * len(x), 5.6), squeeze=False)
    for row, method in enumerate(("image", *gradcam.METHODS)):
        if method != "image":
            heat, probs = gradcam.grad_cam(model, x, layer=layer, method=method)
        for i, ax in enumerate(axes[row]):
            big = np.kron(images[i], np.ones((8, 8, 1), np.uint8))  # nearest, 8x
            if method == "image":
                ax.imshow(big.squeeze(), cmap="gray" if big.shape[2] == 1 else None)
                k = int(model.predict(x[i : i + 1], verbose=0)[0].argmax())
                name = lambda c: names[c] if names else str(c)  # noqa: E731
                mark = "" if k == labels[i] else f" (true {name(labels[i])})"
                ax.set_title(f"{name(k)}{mark}", fontsize=9)
            else:
                ax.imshow(gradcam.overlay(big, heat[i], alpha=0.45))
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row][0].set_ylabel(
            {"image": "test image", "gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}[method]
        )
    fig.suptitle(f"{model.name} ({dataset}): layer {layer}, predicted class", fontsize=10)
    fig.tight_layout()
    viz.save_figure(fig, args.out)  # the format the name says
    print(f"wrote {args.out}")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, OSError, ImportError) as e:  # a bad file or option: one line, no traceback
        raise SystemExit(f"error: {e}") from None
