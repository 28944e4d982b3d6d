"""Data sets in their canonical files: MNIST's IDX format (more loaders in later versions).

``load_mnist(data_dir)`` looks in ``data_dir``, then ``$PYCONV_DATA/mnist`` and
``$PYCONV_DATA``, and returns ``(x_train, y_train), (x_test, y_test)`` as uint8 arrays
(N, 28, 28) and labels, like ``keras.datasets.mnist.load_data()``.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def read_idx(path) -> np.ndarray:
    """Read an IDX file (optionally gzipped); a truncated or malformed file is an error."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read ({e}); the file is corrupted or truncated") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{path}: {len(data)} bytes, expected {expected} for shape {tuple(dims)}; "
            "truncated or corrupted"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find(files, data_dir, subdir: str) -> Path:
    candidates = []
    if data_dir is not None:
        candidates += [Path(data_dir), Path(data_dir) / subdir]
    env = os.environ.get("PYCONV_DATA")
    if env:
        candidates += [Path(env) / subdir, Path(env)]
    for c in candidates:
        if all((c / f).is_file() for f in files):
            return c
    where = ", ".join(str(c) for c in candidates) or "(no data_dir given and PYCONV_DATA unset)"
    raise FileNotFoundError(f"{subdir} files {', '.join(files)} not found; looked in: {where}")


def load_mnist(data_dir=None):
    """((x_train, y_train), (x_test, y_test)): uint8 images (N, 28, 28), uint8 labels."""
    d = _find(MNIST_FILES, data_dir, "mnist")
    xtr, ytr, xte, yte = (read_idx(d / f) for f in MNIST_FILES)
    return (xtr, ytr), (xte, yte)
