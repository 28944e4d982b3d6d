"""Write src/pyconv/data/mnist_sample.npz: the first 5,000 training and first 1,000 test digits
of the canonical MNIST (verified by SHA-256 while loading).

    python tools/make_mnist_sample.py ../shared/data/mnist
"""

from __future__ import annotations

import sys
from pathlib import Path

from pyconv import datasets


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    (xtr, ytr), (xte, yte) = datasets.load_mnist(argv[0] if argv else None, download=False)
    out = Path(datasets.__file__).with_name("data") / "mnist_sample.npz"
    out.write_bytes(datasets._sample_bytes(xtr[:5000], ytr[:5000], xte[:1000], yte[:1000]))
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
