"""The lecture's hand-made kernels on a real image: identity, edge detection, Sobel, sharpen,
box blur and Gaussian blur, applied with pyconv's conv2d.

As in the lecture: load a cat, make it black and white, apply each filter. The cat is the first
CIFAR-10 test image, read from ``$PYCONV_DATA`` or ``../shared/data`` beside the checkout; where
CIFAR-10 is not there, the first digit of the MNIST sample shipped with pyconv is used.

    python examples/classic_kernels.py            # writes examples/classic_kernels.png
    python examples/classic_kernels.py --mnist --out digit_kernels.png
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from pyconv import datasets, viz

HERE = Path(__file__).resolve().parent


def cifar_cat() -> np.ndarray | None:
    """The first CIFAR-10 test image (a cat), uint8 (32, 32, 3), or None where it is absent."""
    roots = [os.environ.get("PYCONV_DATA"), HERE.parent.parent / "shared" / "data"]
    for root in filter(None, roots):
        for sub in ("", "cifar10", "cifar-10-batches-bin"):
            path = Path(root) / sub / "test_batch.bin"
            if path.is_file():
                x, y = datasets.read_cifar_bin(path)
                assert y[0] == datasets.CLASS_NAMES["cifar10"].index("cat")
                return x[0]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist", action="store_true", help="use an MNIST digit, not the cat")
    parser.add_argument("--out", default=str(HERE / "classic_kernels.png"), help="PNG to write")
    args = parser.parse_args()

    rgb = None if args.mnist else cifar_cat()
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
    viz.save_png(fig, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
