"""MNIST, Fashion-MNIST and CIFAR-10 from their canonical files, like ``keras.datasets``.

Each ``load_*`` returns ``(x_train, y_train), (x_test, y_test)``: uint8 images (N, H, W, C)
and uint8 labels; ``CLASS_NAMES[name]`` lists the class names.

Where the files are looked for: ``data_dir`` alone when it is given (the folder itself, or its
``<dataset>/`` subfolder; nothing else is searched then, and downloads go there); otherwise,
in order,
``$PYCONV_DATA`` (same two), the user cache
(``$XDG_CACHE_HOME/pyconv/<dataset>``, default ``~/.cache/pyconv/<dataset>``), and for
Fashion-MNIST Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``).
When none has them and ``download=True`` (the default), they are downloaded into the cache from
the canonical sources (``$PYCONV_DATA_MIRROR`` overrides the base URL) and verified before use.

Every file is checked against the SHA-256 of its *decompressed* content (so a faithful
re-compression, such as Debian's, passes; CIFAR-10's python-format batches against their
published MD5): a truncated, corrupted or different file is an error naming the file, never
silently wrong data. ``subset="train"``/``"test"`` reads (and needs) only one split's files.
``load_mnist_sample()`` needs no files at all: it reads a 5,000 + 1,000 digit slice of the
real MNIST shipped inside the package.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import pickle
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from . import saving

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
# MD5 of the python-format batches, as torchvision checks them (the data set's page,
# https://www.cs.toronto.edu/~kriz/cifar.html, lists the tarballs' MD5s). The binary tarball
# itself is not checked: each batch taken from it is, so a faithful repack passes.
_CIFAR_PY_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
_IDX_FILES = tuple(_IDX_SHA256["mnist"])
_CIFAR_BIN = tuple(_CIFAR_SHA256)
_CIFAR_PY = tuple(_CIFAR_PY_MD5)
_CIFAR_BATCH = 10_000  # images in every CIFAR-10 batch
# The files of each split: (train, test), in the order the loaders read them.
_SPLITS = {
    "idx": (_IDX_FILES[:2], _IDX_FILES[2:]),
    "cifar_bin": (_CIFAR_BIN[:5], _CIFAR_BIN[5:]),
    "cifar_py": (_CIFAR_PY[:5], _CIFAR_PY[5:]),
}
# No canonical file decompresses to more (MNIST's training images: 47 MB): a larger stream is
# a different file or a decompression bomb, refused before it fills the memory.
_MAX_CANONICAL_BYTES = 64 * 2**20
# The largest download is CIFAR-10's binary tarball (170 MB).
_MAX_DOWNLOAD_BYTES = 256 * 2**20
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


def _check_regular(path: Path) -> None:
    if path.exists() and not path.is_file():  # a device or FIFO would be read forever
        raise DatasetError(f"{path}: not a regular file")


def _read_bytes(path: Path, limit: int | None = None) -> bytes:
    """The (decompressed) content of ``path``; more than ``limit`` bytes is an error."""
    opener = gzip.open if path.suffix == ".gz" else open
    _check_regular(path)
    try:
        with opener(path, "rb") as f:
            data = f.read(-1 if limit is None else limit + 1)
    except (OSError, EOFError, zlib.error) as e:  # truncated/corrupted gzip streams
        raise DatasetError(
            f"{path}: cannot read ({type(e).__name__}: {e}); the file is truncated or corrupted"
        ) from None
    if limit is not None and len(data) > limit:
        raise DatasetError(
            f"{path}: holds more than {limit:,} bytes, larger than any file of this data set; "
            "not the expected file"
        )
    return data


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
    expected = header + math.prod(dims) * dtype.itemsize  # exact: no int64 wrap-around
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
    data = _read_bytes(path, _MAX_CANONICAL_BYTES if sha256 else None)
    _check_sha256(path, data, sha256)
    return parse_idx(data, str(path))


def read_cifar_bin(path, sha256: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch: records of 1 label byte + 3x1024 plane bytes."""
    path = Path(path)
    data = _read_bytes(path, _MAX_CANONICAL_BYTES if sha256 else None)
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


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e})") from None
    return digest.hexdigest()


def _check_md5(path: Path, expected: str | None) -> None:
    if expected is not None and _md5(path) != expected:
        raise DatasetError(
            f"{path}: content does not match the canonical file's MD5 (truncated, corrupted "
            "or a different file); delete it and load again to re-download"
        )


def read_cifar_pickle(path, md5: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch (``data_batch_1`` ...): a pickled dict with data/labels.

    With ``md5`` the file must have that digest, and hold exactly 10,000 images."""
    path = Path(path)
    _check_regular(path)
    _check_md5(path, md5)
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
    try:  # (no direct uint8 cast: -1 would raise OverflowError or wrap to 255)
        labels = np.asarray(labels)
    except (TypeError, ValueError):
        labels = np.asarray(None)
    if (
        labels.dtype.kind not in "iu"
        or labels.ndim != 1
        or data.shape != (len(labels), 3072)
        or not np.all((labels >= 0) & (labels <= 9))
    ):
        raise DatasetError(f"{path}: 'data' must be (N, 3072) with N integer labels in 0-9")
    if md5 is not None and len(labels) != _CIFAR_BATCH:
        raise DatasetError(f"{path}: holds {len(labels)} images, a CIFAR-10 batch has 10,000")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.uint8)


# --- finding and downloading ---------------------------------------------------------------


def cache_dir() -> Path:
    """Where downloads go: $XDG_CACHE_HOME/pyconv or ~/.cache/pyconv."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pyconv"


def _candidates(name: str, data_dir) -> list[Path]:
    """The folders searched, in order. A ``data_dir`` given by the caller is the only place
    looked at: files found elsewhere would silently stand in for the ones the caller named."""
    roots = [data_dir] if data_dir is not None else [os.environ.get("PYCONV_DATA") or None]
    out = []
    for root in roots:
        if root is not None:
            root = Path(root)
            out += [root, root / name]
            if name == "cifar10":
                out.append(root / "cifar-10-batches-bin")
                out.append(root / "cifar-10-batches-py")
    if data_dir is not None:
        return out
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
    """Fetch url into dest atomically (``saving.atomic_write``: a temp file renamed into
    place, and what a killed download left behind removed by the next one)."""
    dest.parent.mkdir(parents=True, exist_ok=True)

    def write(out):
        with urllib.request.urlopen(url, timeout=60) as resp:
            copied = 0
            for block in iter(lambda: resp.read(1 << 20), b""):
                copied += len(block)
                if copied > _MAX_DOWNLOAD_BYTES:  # an endless or wrong stream: not our file
                    raise DatasetError(
                        f"{url}: more than {_MAX_DOWNLOAD_BYTES:,} bytes, larger than any "
                        "file of the data sets; not the expected file"
                    )
                out.write(block)

    saving.atomic_write(dest, write)


def _mirrors(name: str) -> list[str]:
    mirror = os.environ.get("PYCONV_DATA_MIRROR")
    if mirror:
        return [mirror.rstrip("/") + "/" + name + "/"]
    return _SOURCES[name]


def _download_dir(name: str, data_dir) -> Path:
    """Where downloads go: the caller's ``data_dir`` (as torchvision's ``root``), else the cache."""
    return Path(data_dir) if data_dir is not None else cache_dir() / name


def _fetch(name: str, files, verify, target: Path) -> Path:
    """Download ``files`` of data set ``name`` into ``target``, verifying each; return it."""
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


def _offline_hint(name: str, option_name: str) -> str:
    """Where to get the files without the network, for the data sets that have a way."""
    if name == "mnist":
        sample = "--dataset mnist_sample" if option_name.startswith("-") else "load_mnist_sample()"
        return (
            f"\nOffline, {sample} gives the 5,000 + 1,000-digit MNIST slice shipped with "
            "pyconv (no files needed)."
        )
    if name == "fashion_mnist":
        return (
            "\nOn Debian/Ubuntu, `apt-get install dataset-fashion-mnist` installs the files "
            f"into {_DEBIAN_FASHION}, where they are found."
        )
    return ""


def _not_found(name: str, files, data_dir, why: str = "", option_name="data_dir") -> DatasetError:
    where = "\n  ".join(str(c) for c in _candidates(name, data_dir))
    how = f"{option_name} DIR" if option_name.startswith("-") else f"{option_name}=..."
    return DatasetError(
        f"{name} files not found. Put {', '.join(files)} in one of:\n  {where}\n"
        f"(or pass {how}, or set PYCONV_DATA){why}{_offline_hint(name, option_name)}"
    )


def _locate(name, files, data_dir, download, verify, option_name, fetch_files=None) -> Path:
    found = _find(name, files, data_dir)
    if found is not None:
        return found
    if not download:
        raise _not_found(name, files, data_dir, option_name=option_name)
    try:
        return _fetch(name, fetch_files or files, verify, _download_dir(name, data_dir))
    except DatasetError as e:
        why = f"\nAutomatic download failed: {e}"
        raise _not_found(name, files, data_dir, why, option_name) from None


def _splits(subset, option_name) -> tuple[int, ...]:
    """Which splits to read (0 train, 1 test) for ``subset``; checks the arguments."""
    if not isinstance(option_name, str) or not option_name:
        raise TypeError(f"option_name must be a non-empty str, got {option_name!r}")
    if subset is None:
        return (0, 1)
    if subset in ("train", "test"):
        return (0,) if subset == "train" else (1,)
    raise ValueError(f"subset must be None, 'train' or 'test', got {subset!r}")


def _result(parts: list, subset):
    """((x_train, y_train), (x_test, y_test)), or the one split ``subset`` asked for."""
    return parts[0] if subset is not None else tuple(parts)


# --- the data sets -----------------------------------------------------------------------


def _load_idx_set(name: str, data_dir, download: bool, subset, option_name):
    splits = _splits(subset, option_name)
    sums = _IDX_SHA256[name]

    def verify(path: Path):
        read_idx(path, sums[path.name])

    parts = []
    for split in splits:
        files = _SPLITS["idx"][split]
        d = _locate(name, files, data_dir, download, verify, option_name)
        x, y = (read_idx(d / f, sums[f]) for f in files)
        parts.append((x[..., None], y))
    return _result(parts, subset)


def load_mnist(data_dir=None, download=True, *, subset=None, option_name="data_dir"):
    """MNIST: 60,000 + 10,000 greyscale digits, x uint8 (N, 28, 28, 1), y uint8 0-9.

    ``subset="train"`` or ``"test"`` returns only that split's ``(x, y)`` (and needs only
    its files); ``option_name`` is how error messages name the ``data_dir`` argument."""
    return _load_idx_set("mnist", data_dir, download, subset, option_name)


def load_fashion_mnist(data_dir=None, download=True, *, subset=None, option_name="data_dir"):
    """Fashion-MNIST: 60,000 + 10,000 greyscale clothes, x uint8 (N, 28, 28, 1), y uint8.

    ``subset`` and ``option_name`` as for ``load_mnist``."""
    return _load_idx_set("fashion_mnist", data_dir, download, subset, option_name)


def load_cifar10(data_dir=None, download=True, *, subset=None, option_name="data_dir"):
    """CIFAR-10: 50,000 + 10,000 colour images, x uint8 (N, 32, 32, 3), y uint8 0-9.

    Reads the binary batches (``data_batch_1.bin`` ...; SHA-256 checked) or, if only those
    are present, the python batches (``data_batch_1`` ...; MD5 checked, unpickled with NumPy
    arrays allowed and nothing else). ``subset`` and ``option_name`` as for ``load_mnist``.
    """
    splits = _splits(subset, option_name)

    def verify(path: Path):
        if path.name != _CIFAR_TARBALL:  # (the tarball's batches are checked one by one)
            read_cifar_bin(path, _CIFAR_SHA256[path.name])

    parts = []
    for split in splits:
        bin_files, py_files = _SPLITS["cifar_bin"][split], _SPLITS["cifar_py"][split]
        py_dir = _find("cifar10", py_files, data_dir)
        d = _find("cifar10", bin_files, data_dir)
        if d is None and py_dir is not None:
            batches = [read_cifar_pickle(py_dir / f, _CIFAR_PY_MD5[f]) for f in py_files]
        else:
            if d is None:
                if not download:
                    raise _not_found("cifar10", bin_files, data_dir, option_name=option_name)
                d = _fetch_cifar(data_dir, verify, option_name)
            batches = [read_cifar_bin(d / f, _CIFAR_SHA256[f]) for f in bin_files]
        parts.append(
            (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))
        )
    return _result(parts, subset)


def _fetch_cifar(data_dir, verify, option_name="data_dir") -> Path:
    target = _download_dir("cifar10", data_dir)
    try:
        tar_dir = _fetch("cifar10", [_CIFAR_TARBALL], verify, target)
        with tarfile.open(tar_dir / _CIFAR_TARBALL) as tf:
            for member in tf.getmembers():
                base = os.path.basename(member.name)
                if base in _CIFAR_SHA256 and member.isfile():
                    if member.size != _CIFAR_BATCH * 3073:  # checked before it is read
                        raise DatasetError(f"{member.name}: {member.size} bytes, not a batch")
                    data = tf.extractfile(member).read()
                    _check_sha256(Path(member.name), data, _CIFAR_SHA256[base])
                    saving.atomic_write(target / base, lambda f, data=data: f.write(data))
        (tar_dir / _CIFAR_TARBALL).unlink()
    except (DatasetError, tarfile.TarError, OSError) as e:
        why = f"\nAutomatic download failed: {e}"
        raise _not_found("cifar10", _CIFAR_BIN, data_dir, why, option_name) from None
    if _find("cifar10", _CIFAR_BIN, target) is None:
        why = "\nThe downloaded archive lacks batches"
        raise _not_found("cifar10", _CIFAR_BIN, data_dir, why, option_name)
    return target


_SAMPLE = Path(__file__).with_name("data") / "mnist_sample.npz"


def load_mnist_sample(*, subset=None):
    """The MNIST slice shipped with pyconv (no files, no network): the first 5,000 training
    and the first 1,000 test digits of the real MNIST, same format as load_mnist()."""
    splits = _splits(subset, "data_dir")
    with np.load(_SAMPLE, allow_pickle=False) as z:
        parts = [(z[f"x_{s}"], z[f"y_{s}"]) for s in ("train", "test")]
    return _result([parts[i] for i in splits], subset)


LOADERS = {
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
}


def load(name: str, data_dir=None, download=True, *, subset=None, option_name="data_dir"):
    """``load("mnist")`` etc.; also "mnist_sample" (the embedded slice). ``subset`` and
    ``option_name`` as for ``load_mnist``."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a data set name (str), got {type(name).__name__}")
    key = name.lower().replace("-", "_")
    if key == "mnist_sample":
        _splits(subset, option_name)
        return load_mnist_sample(subset=subset)
    if key not in LOADERS:
        raise ValueError(
            f"unknown data set {name!r}; use one of {', '.join([*LOADERS, 'mnist_sample'])}"
        )
    return LOADERS[key](
        data_dir=data_dir, download=download, subset=subset, option_name=option_name
    )


def _sample_bytes(x_train, y_train, x_test, y_test) -> bytes:  # used by tools/make_mnist_sample.py
    buf = io.BytesIO()
    np.savez_compressed(buf, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return buf.getvalue()
