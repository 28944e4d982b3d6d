"""The lecture's hand-made kernels on a real image: identity, edge detection, Sobel, sharpen,
box blur and Gaussian blur, applied with pyconv's conv2d.

As in the lecture: load a cat, make it black and white, apply each filter. The cat is the first
CIFAR-10 test image, read from ``--data-dir``, ``$PYCONV_DATA`` or the cache (put the CIFAR-10
files there, or download them once with ``python -c "import pyconv;
pyconv.datasets.load_cifar10()"``). ``--mnist`` uses the first digit of the MNIST sample
shipped with pyconv instead; where CIFAR-10 is missing, the example says so and uses the digit.

    python examples/classic_kernels.py            # writes kernels_applied.png
    python examples/classic_kernels.py --out examples/classic_kernels.png   # the README's

"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from pyconv import datasets, viz


def cifar_cat(data_dir) -> np.ndarray:
    """The first CIFAR-10 test image (a cat), uint8 (32, 32, 3); DatasetError where absent."""
    x, y = datasets.load_cifar10(data_dir, download=False, subset="test", option_name="--data-dir")
    if datasets.CLASS_NAMES["cifar10"][y[0]] != "cat":
        raise datasets.DatasetError("the first CIFAR-10 test image should be a cat")
    return x[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist", action="store_true", help="use an MNIST digit, not the cat")
    parser.add_argument("--data-dir", help="folder with the CIFAR-10 files")
    parser.add_argument("--out", default="kernels_applied.png", help="PNG to write")
    args = parser.parse_args()

    rgb = None
    if not args.mnist:
        try:
            rgb = cifar_cat(args.data_dir)
        except datasets.DatasetError as e:
            if args.data_dir:  # the user named a folder: an error, not a different picture
                raise
            first_line = str(e).splitlines()[0]
            print(
                f"CIFAR-10 not found ({first_line}); using an MNIST digit instead (--mnist)",
                file=sys.stderr,
            )
    if rgb is not None:
        # black and white (ITU-R 601 luma), scaled to [0, 1]
        image = rgb.astype(np.float32) @ np.float32([0.299, 0.587, 0.114]) / 255
        what = "CIFAR-10 test image 0 (cat), greyscale"
    else:
        (x, y), _ = datasets.load_mnist_sample()
        image = x[0, :, :, 0].astype(np.float32) / 255
        what = f"MNIST sample digit 0 (a {y[0]})"

    for name, kernel in viz.classic_kernels().items():
        out = viz.apply_kernel(image, kernel)
        lo, hi = out.min(), out.max()
        print(f"{name:>17}: {kernel.shape} -> {out.shape}, range [{lo:+.2f}, {hi:+.2f}]")
    fig = viz.plot_kernels(image)
    fig.suptitle(what, fontsize=10, y=1.02)
    viz.save_figure(fig, args.out)  # the format the name says
    print(f"wrote {args.out}")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, OSError, ImportError) as e:  # a bad file or option: one line, no traceback
        raise SystemExit(f"error: {e}") from None
