"""MNIST, Fashion-MNIST and CIFAR-10 from their canonical files, like ``keras.datasets``.

Each ``load_*`` returns ``(x_train, y_train), (x_test, y_test)``: uint8 images (N, H, W, C)
and uint8 labels; ``CLASS_NAMES[name]`` lists the class names.

Where the files are looked for, in order: ``data_dir`` (the folder itself, or its
``<dataset>/`` subfolder), ``$PYCONV_DATA`` (same two), the user cache
(``$XDG_CACHE_HOME/pyconv/<dataset>``, default ``~/.cache/pyconv/<dataset>``), and for
Fashion-MNIST Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``).
When none has them and ``download=True`` (the default), they are downloaded into the cache from
the canonical sources (``$PYCONV_DATA_MIRROR`` overrides the base URL) and verified before use.

Every file is checked against the SHA-256 of its *decompressed* content (so a faithful
re-compression, such as Debian's, passes): a truncated, corrupted or different file is an error
naming the file, never silently wrong data. ``load_mnist_sample()`` needs no files at all: it
reads a 5,000 + 1,000 digit slice of the real MNIST shipped inside the package.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],  # fmt: skip
    "cifar10": [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ],  # fmt: skip
}

# SHA-256 of the decompressed content of each canonical file: data set, file, digest.
_IDX_SHA256_TABLE = """
mnist train-images-idx3-ubyte.gz ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
mnist train-labels-idx1-ubyte.gz 65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
mnist t10k-images-idx3-ubyte.gz 0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
mnist t10k-labels-idx1-ubyte.gz ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
fashion train-images-idx3-ubyte.gz c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888
fashion train-labels-idx1-ubyte.gz bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9
fashion t10k-images-idx3-ubyte.gz 5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b
fashion t10k-labels-idx1-ubyte.gz 0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34
"""
_IDX_SHA256: dict[str, dict[str, str]] = {}
for _line in _IDX_SHA256_TABLE.split("\n"):
    if _line:
        _set, _file, _digest = _line.split()
        _set = "fashion_mnist" if _set == "fashion" else _set
        _IDX_SHA256.setdefault(_set, {})[_file] = _digest
_CIFAR_SHA256 = {
    "data_batch_1.bin": "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
    "data_batch_2.bin": "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
    "data_batch_3.bin": "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
    "data_batch_4.bin": "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
    "data_batch_5.bin": "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
    "test_batch.bin": "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
}
_IDX_FILES = tuple(_IDX_SHA256["mnist"])
_CIFAR_BIN = tuple(_CIFAR_SHA256)
_CIFAR_PY = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
             "test_batch")  # fmt: skip
_SOURCES = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/"],
    "fashion_mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    "cifar10": ["https://www.cs.toronto.edu/~kriz/"],
}  # fmt: skip
_CIFAR_TARBALL = "cifar-10-binary.tar.gz"
_DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DatasetError(ValueError):
    """A data file that is missing, truncated, corrupted or not the expected one."""


# --- reading -----------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as e:  # gzip raises these on truncated/corrupted streams
        raise DatasetError(
            f"{path}: cannot read ({e}); the file is truncated or corrupted"
        ) from None


def _check_sha256(path: Path, data: bytes, expected: str | None) -> None:
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise DatasetError(
            f"{path}: content does not match the canonical file's SHA-256 (truncated, "
            "corrupted or a different file); delete it and load again to re-download"
        )


def parse_idx(data: bytes, name="IDX data") -> np.ndarray:
    """An IDX array (MNIST's format: big-endian header, row-major payload) from bytes."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DatasetError(f"{name}: not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{name}: truncated IDX header")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise DatasetError(
            f"{name}: {len(data)} bytes, expected {expected} for shape {tuple(dims)}; "
            "truncated or corrupted"
        )
    arr = np.frombuffer(data, dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def read_idx(path, sha256: str | None = None) -> np.ndarray:
    """Read an IDX file (optionally gzipped), checking its content's SHA-256 if given."""
    path = Path(path)
    data = _read_bytes(path)
    _check_sha256(path, data, sha256)
    return parse_idx(data, str(path))


def read_cifar_bin(path, sha256: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch: records of 1 label byte + 3x1024 plane bytes."""
    path = Path(path)
    data = _read_bytes(path)
    _check_sha256(path, data, sha256)
    if len(data) == 0 or len(data) % 3073:
        raise DatasetError(f"{path}: {len(data)} bytes is not a whole number of 3073-byte records")
    rec = np.frombuffer(data, np.uint8).reshape(-1, 3073)
    labels = rec[:, 0].copy()
    if labels.max() > 9:
        raise DatasetError(f"{path}: labels above 9; not a CIFAR-10 batch")
    images = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # planes -> NHWC
    return np.ascontiguousarray(images), labels


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR python batches (dicts of bytes, lists and NumPy arrays) and refuses
    every other global, so a hostile file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
    }  # fmt: skip

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise DatasetError(f"refusing to unpickle {module}.{name}: not a CIFAR-10 batch")


def read_cifar_pickle(path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch (``data_batch_1`` ...): a pickled dict with data/labels."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            d = _ArraysOnlyUnpickler(f, encoding="bytes").load()
    except DatasetError as e:
        raise DatasetError(f"{path}: {e}") from None
    except Exception as e:  # truncated pickles raise a zoo of errors
        raise DatasetError(f"{path}: cannot read as a CIFAR-10 python batch ({e})") from None
    if not isinstance(d, dict):
        raise DatasetError(f"{path}: not a CIFAR-10 python batch")
    data, labels = d.get(b"data"), d.get(b"labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DatasetError(f"{path}: missing or malformed 'data' array")
    labels = np.asarray(labels, np.uint8) if labels is not None else None
    if labels is None or data.shape != (len(labels), 3072) or labels.max(initial=0) > 9:
        raise DatasetError(f"{path}: 'data' must be (N, 3072) with N labels in 0-9")
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)), labels


# --- finding and downloading ---------------------------------------------------------------


def cache_dir() -> Path:
    """Where downloads go: $XDG_CACHE_HOME/pyconv or ~/.cache/pyconv."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pyconv"


def _candidates(name: str, data_dir) -> list[Path]:
    out = []
    for root in (data_dir, os.environ.get("PYCONV_DATA") or None):
        if root is not None:
            root = Path(root)
            out += [root, root / name]
            if name == "cifar10":
                out.append(root / "cifar-10-batches-bin")
                out.append(root / "cifar-10-batches-py")
    out.append(cache_dir() / name)
    if name == "fashion_mnist":
        out.append(_DEBIAN_FASHION)
    return out


def _find(name: str, files, data_dir) -> Path | None:
    for d in _candidates(name, data_dir):
        if all((d / f).is_file() for f in files):
            return d
    return None


def _download(url: str, dest: Path) -> None:
    """Fetch url into dest atomically (a temp file renamed into place)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix="." + dest.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            shutil.copyfileobj(resp, out)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _mirrors(name: str) -> list[str]:
    mirror = os.environ.get("PYCONV_DATA_MIRROR")
    if mirror:
        return [mirror.rstrip("/") + "/" + name + "/"]
    return _SOURCES[name]


def _fetch(name: str, files, verify) -> Path:
    """Download ``files`` of data set ``name`` into the cache, verifying each; return the dir."""
    target = cache_dir() / name
    errors = []
    for base in _mirrors(name):
        try:
            for f in files:
                if not (target / f).is_file():
                    _download(base + f, target / f)
                verify(target / f)
            return target
        except (urllib.error.URLError, OSError, DatasetError) as e:
            errors.append(f"{base}: {e}")
            for f in files:  # a bad file must not be found next time
                if (target / f).is_file():
                    try:
                        verify(target / f)
                    except DatasetError:
                        (target / f).unlink()
    raise DatasetError("download failed: " + "; ".join(errors))


def _not_found(name: str, files, data_dir, why: str = "") -> DatasetError:
    where = "\n  ".join(str(c) for c in _candidates(name, data_dir))
    return DatasetError(
        f"{name} files not found. Put {', '.join(files)} in one of:\n  {where}\n"
        f"(or pass data_dir=..., or set PYCONV_DATA){why}"
    )


def _locate(name: str, files, data_dir, download: bool, verify, fetch_files=None) -> Path:
    found = _find(name, files, data_dir)
    if found is not None:
        return found
    if not download:
        raise _not_found(name, files, data_dir)
    try:
        return _fetch(name, fetch_files or files, verify)
    except DatasetError as e:
        raise _not_found(name, files, data_dir, f"\nAutomatic download failed: {e}") from None


# --- the data sets -----------------------------------------------------------------------


def _load_idx_set(name: str, data_dir, download: bool):
    sums = _IDX_SHA256[name]

    def verify(path: Path):
        read_idx(path, sums[path.name])

    d = _locate(name, _IDX_FILES, data_dir, download, verify)
    xtr, ytr, xte, yte = (read_idx(d / f, sums[f]) for f in _IDX_FILES)
    return (xtr[..., None], ytr), (xte[..., None], yte)


def load_mnist(data_dir=None, download=True):
    """MNIST: 60,000 + 10,000 greyscale digits, x uint8 (N, 28, 28, 1), y uint8 0-9."""
    return _load_idx_set("mnist", data_dir, download)


def load_fashion_mnist(data_dir=None, download=True):
    """Fashion-MNIST: 60,000 + 10,000 greyscale clothes, x uint8 (N, 28, 28, 1), y uint8."""
    return _load_idx_set("fashion_mnist", data_dir, download)


def load_cifar10(data_dir=None, download=True):
    """CIFAR-10: 50,000 + 10,000 colour images, x uint8 (N, 32, 32, 3), y uint8 0-9.

    Reads the binary batches (``data_batch_1.bin`` ...) or, if only those are present, the
    python batches (``data_batch_1`` ..., unpickled with NumPy arrays allowed and nothing else).
    """
    py_dir = _find("cifar10", _CIFAR_PY, data_dir)
    if _find("cifar10", _CIFAR_BIN, data_dir) is None and py_dir is not None:
        parts = [read_cifar_pickle(py_dir / f) for f in _CIFAR_PY]
    else:

        def verify(path: Path):
            if path.name == _CIFAR_TARBALL:
                return
            read_cifar_bin(path, _CIFAR_SHA256[path.name])

        d = _find("cifar10", _CIFAR_BIN, data_dir)
        if d is None:
            if not download:
                raise _not_found("cifar10", _CIFAR_BIN, data_dir)
            d = _fetch_cifar(data_dir, verify)
        parts = [read_cifar_bin(d / f, _CIFAR_SHA256[f]) for f in _CIFAR_BIN]
    xtr = np.concatenate([p[0] for p in parts[:5]])
    ytr = np.concatenate([p[1] for p in parts[:5]])
    return (xtr, ytr), parts[5]


def _fetch_cifar(data_dir, verify) -> Path:
    target = cache_dir() / "cifar10"
    try:
        tar_dir = _fetch("cifar10", [_CIFAR_TARBALL], verify)
        with tarfile.open(tar_dir / _CIFAR_TARBALL) as tf:
            for member in tf.getmembers():
                base = os.path.basename(member.name)
                if base in _CIFAR_SHA256 and member.isfile():
                    data = tf.extractfile(member).read()
                    _check_sha256(Path(member.name), data, _CIFAR_SHA256[base])
                    (target / base).write_bytes(data)
        (tar_dir / _CIFAR_TARBALL).unlink()
    except (DatasetError, tarfile.TarError, OSError) as e:
        raise _not_found(
            "cifar10", _CIFAR_BIN, data_dir, f"\nAutomatic download failed: {e}"
        ) from None
    if _find("cifar10", _CIFAR_BIN, target) is None:
        raise _not_found("cifar10", _CIFAR_BIN, data_dir, "\nThe downloaded archive lacks batches")
    return target


_SAMPLE = Path(__file__).with_name("data") / "mnist_sample.npz"


def load_mnist_sample():
    """The MNIST slice shipped with pyconv (no files, no network): the first 5,000 training
    and the first 1,000 test digits of the real MNIST, same format as load_mnist()."""
    with np.load(_SAMPLE, allow_pickle=False) as z:
        return (z["x_train"], z["y_train"]), (z["x_test"], z["y_test"])


LOADERS = {
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
}


def load(name: str, data_dir=None, download=True):
    """``load("mnist")`` etc.; also "mnist_sample" (the embedded slice)."""
    key = name.lower().replace("-", "_")
    if key == "mnist_sample":
        return load_mnist_sample()
    if key not in LOADERS:
        raise ValueError(
            f"unknown data set {name!r}; use one of {', '.join([*LOADERS, 'mnist_sample'])}"
        )
    return LOADERS[key](data_dir=data_dir, download=download)


def _sample_bytes(x_train, y_train, x_test, y_test) -> bytes:  # used by tools/make_mnist_sample.py
    buf = io.BytesIO()
    np.savez_compressed(buf, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return buf.getvalue()
