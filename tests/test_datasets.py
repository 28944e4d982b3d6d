"""Data set loaders: canonical files found where documented, checksums enforced, truncated or
foreign files rejected with the file's name, downloads verified, the embedded MNIST sample."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil

import numpy as np
import pytest
from conftest import data_dir

from pyconv import datasets
from pyconv.datasets import DatasetError


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """No test reads or writes the user's real cache or PYCONV_DATA."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("PYCONV_DATA", raising=False)
    monkeypatch.delenv("PYCONV_DATA_MIRROR", raising=False)


def mnist_dir():
    return data_dir("mnist")


def test_mnist_from_a_data_dir():
    (xtr, ytr), (xte, yte) = datasets.load_mnist(mnist_dir(), download=False)
    assert xtr.shape == (60000, 28, 28, 1) and xte.shape == (10000, 28, 28, 1)
    assert xtr.dtype == np.uint8 and ytr.dtype == np.uint8
    assert ytr[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(yte).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_pyconv_data_environment_variable(monkeypatch):
    monkeypatch.setenv("PYCONV_DATA", str(mnist_dir().parent))  # finds its mnist/ subfolder
    (xtr, _), _ = datasets.load("mnist", download=False)
    assert xtr.shape[0] == 60000


def test_embedded_sample_is_the_start_of_real_mnist():
    (xs, ys), (xst, yst) = datasets.load_mnist_sample()
    assert xs.shape == (5000, 28, 28, 1) and xst.shape == (1000, 28, 28, 1)
    (xtr, ytr), (xte, yte) = datasets.load_mnist(mnist_dir(), download=False)
    np.testing.assert_array_equal(xs, xtr[:5000])
    np.testing.assert_array_equal(ys, ytr[:5000])
    np.testing.assert_array_equal(xst, xte[:1000])
    np.testing.assert_array_equal(yst, yte[:1000])


def test_embedded_sample_needs_no_files():
    (xs, ys), _ = datasets.load("mnist-sample")
    assert xs.dtype == np.uint8 and set(np.unique(ys)) == set(range(10))


def copy_mnist(tmp_path):
    d = tmp_path / "mnist"
    shutil.copytree(mnist_dir(), d)
    return d


def test_truncated_file_is_an_error_naming_it(tmp_path):
    d = copy_mnist(tmp_path)
    f = d / "t10k-labels-idx1-ubyte.gz"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz"):
        datasets.load_mnist(d, download=False)


def test_altered_content_fails_the_checksum(tmp_path):
    d = copy_mnist(tmp_path)
    f = d / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(f.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # still a valid IDX file with labels 0-9
    f.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DatasetError, match="SHA-256"):
        datasets.load_mnist(d, download=False)


def test_recompressed_files_pass(tmp_path):
    """Checksums are of the content, so a re-gzipped copy (as Debian ships) is accepted."""
    d = copy_mnist(tmp_path)
    for f in d.iterdir():
        f.write_bytes(gzip.compress(gzip.decompress(f.read_bytes()), compresslevel=1))
    (xtr, _), _ = datasets.load_mnist(d, download=False)
    assert xtr.shape[0] == 60000


def test_missing_files_say_where_to_put_them(tmp_path):
    with pytest.raises(DatasetError) as e:
        datasets.load_mnist(tmp_path / "nowhere", download=False)
    msg = str(e.value)
    assert "train-images-idx3-ubyte.gz" in msg and str(tmp_path / "nowhere") in msg
    assert "PYCONV_DATA" in msg
    assert "data_dir=" in msg and "load_mnist_sample()" in msg  # the offline option


def test_missing_files_name_the_callers_option(tmp_path):
    """The CLI passes option_name="--data-dir": its users never see data_dir=."""
    with pytest.raises(DatasetError) as e:
        datasets.load("mnist", tmp_path / "nowhere", download=False, option_name="--data-dir")
    msg = str(e.value)
    assert "--data-dir DIR" in msg and "data_dir=" not in msg
    assert "--dataset mnist_sample" in msg
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        datasets._load_idx_set("fashion_mnist", tmp_path / "nowhere", False, None, "data_dir")
    with pytest.raises(DatasetError, match="--data-dir"):
        datasets.load_cifar10(tmp_path / "nowhere", download=False, option_name="--data-dir")


def test_subset_reads_only_that_split(tmp_path):
    d = copy_mnist(tmp_path)
    (d / "train-images-idx3-ubyte.gz").unlink()  # not needed for the test split
    x, y = datasets.load("mnist", d, download=False, subset="test")
    assert x.shape == (10000, 28, 28, 1) and y.shape == (10000,)
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz"):
        datasets.load_mnist(d, download=False, subset="train")
    x, y = datasets.load("mnist_sample", subset="train")
    assert x.shape == (5000, 28, 28, 1)
    x, y = datasets.load_cifar10(cifar_dir(), download=False, subset="test")
    assert x.shape == (10000, 32, 32, 3) and y[:3].tolist() == [3, 8, 8]
    with pytest.raises(ValueError, match="subset must be None, 'train' or 'test', got 'val'"):
        datasets.load("mnist", d, subset="val")


def test_corrupt_gzip_names_the_file(tmp_path):
    d = copy_mnist(tmp_path)
    f = d / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(f.read_bytes())
    raw[40:60] = bytes(20)  # deflate data garbled mid-stream: zlib.error before
    f.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz: cannot read"):
        datasets.load_mnist(d, download=False, subset="test")


def test_gzip_bomb_is_refused_before_filling_memory(tmp_path):
    d = copy_mnist(tmp_path)
    f = d / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(f, "wb", compresslevel=1) as g:
        for _ in range(80):
            g.write(bytes(2**20))
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz: holds more than"):
        datasets.load_mnist(d, download=False, subset="test")


def test_idx_header_with_huge_dims_is_refused():
    # 65536**4 = 2**64 wrapped to 0 in int64 arithmetic: the empty payload then "matched"
    header = b"\x00\x00\x08\x04" + (2**16).to_bytes(4, "big") * 4
    with pytest.raises(DatasetError, match="huge.idx: 20 bytes, expected .* for shape"):
        datasets.parse_idx(header, "huge.idx")


def test_download_from_a_mirror_is_verified_and_cached(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    shutil.copytree(mnist_dir(), mirror / "mnist")
    monkeypatch.setenv("PYCONV_DATA_MIRROR", mirror.as_uri())
    (xtr, _), _ = datasets.load_mnist(tmp_path / "empty")
    assert xtr.shape[0] == 60000
    cached = tmp_path / "empty"  # a data_dir given is where the download goes
    assert sorted(p.name for p in cached.iterdir()) == sorted(datasets._IDX_FILES)
    assert not (tmp_path / "cache").exists()
    shutil.rmtree(mirror)  # second load: from the cache, no network
    assert datasets.load_mnist(tmp_path / "empty")[0][0].shape[0] == 60000


def test_a_bad_download_is_rejected_and_not_kept(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    shutil.copytree(mnist_dir(), mirror / "mnist")
    f = mirror / "mnist" / "train-labels-idx1-ubyte.gz"
    f.write_bytes(f.read_bytes()[:-50])
    monkeypatch.setenv("PYCONV_DATA_MIRROR", mirror.as_uri())
    with pytest.raises(DatasetError, match="download failed"):
        datasets.load_mnist(tmp_path / "empty")
    assert not (tmp_path / "empty" / "train-labels-idx1-ubyte.gz").exists()


def test_no_network_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PYCONV_DATA_MIRROR", "http://127.0.0.1:9")  # nothing listens on port 9
    with pytest.raises(DatasetError, match="not found.*\\n.*|download failed"):
        datasets.load_fashion_mnist(
            tmp_path / "none"
        ) if not datasets._DEBIAN_FASHION.is_dir() else datasets.load_mnist(tmp_path / "none")


def test_fashion_mnist_from_debian_package():
    if not datasets._DEBIAN_FASHION.is_dir():
        pytest.skip("apt-get install dataset-fashion-mnist to run this test")
    (xtr, ytr), (xte, yte) = datasets.load_fashion_mnist(download=False)
    assert xtr.shape == (60000, 28, 28, 1) and xte.shape == (10000, 28, 28, 1)
    assert np.bincount(ytr).tolist() == [6000] * 10
    assert len(datasets.CLASS_NAMES["fashion_mnist"]) == 10


def cifar_dir():
    return data_dir("cifar-10-batches-bin")


def test_cifar10_binary_batches():
    (xtr, ytr), (xte, yte) = datasets.load_cifar10(cifar_dir(), download=False)
    assert xtr.shape == (50000, 32, 32, 3) and xte.shape == (10000, 32, 32, 3)
    assert np.bincount(ytr).tolist() == [5000] * 10 and np.bincount(yte).tolist() == [1000] * 10
    assert ytr[:5].tolist() == [6, 9, 9, 4, 1]  # the canonical first labels (frog, truck, ...)
    # planes -> channels last: record 0's first red byte is pixel (0, 0, 0)
    raw = (cifar_dir() / "data_batch_1.bin").read_bytes()
    assert xtr[0, 0, 0].tolist() == [raw[1], raw[1 + 1024], raw[1 + 2048]]


def write_cifar_python_batches(tmp_path, monkeypatch):
    """The python-format batches, pickled here from the binary ones; their MD5s stand in
    for the canonical files' (which cannot be reproduced byte for byte)."""
    (xtr, ytr), (xte, yte) = datasets.load_cifar10(cifar_dir(), download=False)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    parts = [(xtr[i * 10000 : (i + 1) * 10000], ytr[i * 10000 : (i + 1) * 10000]) for i in range(5)]
    for name, (x, y) in zip(datasets._CIFAR_PY, [*parts, (xte, yte)]):
        data = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(len(x), 3072)
        with open(d / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": y.tolist()}, f, protocol=2)
    md5s = {name: datasets._md5(d / name) for name in datasets._CIFAR_PY}
    monkeypatch.setattr(datasets, "_CIFAR_PY_MD5", md5s)
    return d, (xtr, ytr), (xte, yte)


def test_cifar10_python_batches_read_safely(tmp_path, monkeypatch):
    _, (xtr, _), (_, yte) = write_cifar_python_batches(tmp_path, monkeypatch)
    (xtr2, ytr2), (xte2, yte2) = datasets.load_cifar10(tmp_path, download=False)
    np.testing.assert_array_equal(xtr2, xtr)
    np.testing.assert_array_equal(yte2, yte)


def test_cifar10_python_batches_are_checked_against_their_md5(tmp_path, monkeypatch):
    d, *_ = write_cifar_python_batches(tmp_path, monkeypatch)
    # a batch cut short at a pickle boundary still unpickles (it once loaded 40,100 images)
    batch = pickle.loads((d / "data_batch_3").read_bytes())
    batch[b"data"], batch[b"labels"] = batch[b"data"][:100], batch[b"labels"][:100]
    (d / "data_batch_3").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DatasetError, match="data_batch_3.*MD5"):
        datasets.load_cifar10(tmp_path, download=False)


def test_canonical_cifar_python_md5s():
    """The published digests of the python batches (the files torchvision checks)."""
    assert datasets._CIFAR_PY_MD5["data_batch_1"] == "c99cafc152244af753f735de768cd75f"
    assert datasets._CIFAR_PY_MD5["test_batch"] == "40351d587109b95175f43aff81a1287e"
    assert len(set(datasets._CIFAR_PY_MD5.values())) == 6


@pytest.mark.parametrize(
    "labels,match",
    [
        ([-1] + [0] * 9999, "labels in 0-9"),  # once an OverflowError from NumPy
        ([10] + [0] * 9999, "labels in 0-9"),
        (["a"] * 10000, "labels in 0-9"),
        ([0] * 9999, "labels in 0-9"),
    ],
)
def test_hostile_cifar_python_labels(tmp_path, labels, match):
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((10000, 3072), np.uint8), b"labels": labels}, f)
    with pytest.raises(DatasetError, match=f"data_batch_1.*{match}"):
        datasets.read_cifar_pickle(path)


def test_a_batch_of_the_wrong_size_is_refused(tmp_path):
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((100, 3072), np.uint8), b"labels": [0] * 100}, f)
    md5 = datasets._md5(path)
    with pytest.raises(DatasetError, match="data_batch_1: holds 100 images"):
        datasets.read_cifar_pickle(path, md5)


def test_hostile_pickle_is_refused_without_running(tmp_path):
    class Evil:
        def __reduce__(self):
            return (shutil.rmtree, (str(tmp_path / "victim"),))

    (tmp_path / "victim").mkdir()
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Evil()}, f)
    with pytest.raises(DatasetError, match="refusing"):
        datasets.read_cifar_pickle(tmp_path / "data_batch_1")
    assert (tmp_path / "victim").is_dir()


@pytest.mark.parametrize(
    "data,match",
    [
        (b"", "magic"),
        (b"\x00\x00\x08\x03\x00\x00", "header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05ab", "bytes"),
    ],
)
def test_parse_idx_errors(data, match):
    with pytest.raises(DatasetError, match=match):
        datasets.parse_idx(data)


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="unknown data set"):
        datasets.load("imagenet")


def test_cifar10_download_extracts_and_verifies_the_batches(tmp_path, monkeypatch):
    """The download path end to end, from a local mirror holding the canonical tarball's
    layout (stored uncompressed here to keep the test fast; tarfile detects either)."""
    import tarfile

    mirror = tmp_path / "mirror" / "cifar10"
    mirror.mkdir(parents=True)
    with tarfile.open(mirror / "cifar-10-binary.tar.gz", "w") as tf:
        for f in datasets._CIFAR_BIN:
            tf.add(cifar_dir() / f, arcname=f"cifar-10-batches-bin/{f}")
    monkeypatch.setenv("PYCONV_DATA_MIRROR", (tmp_path / "mirror").as_uri())
    (xtr, ytr), (xte, yte) = datasets.load_cifar10()  # no data_dir: into the cache
    assert xtr.shape == (50000, 32, 32, 3) and yte.shape == (10000,)
    cached = tmp_path / "cache" / "pyconv" / "cifar10"
    assert sorted(p.name for p in cached.iterdir()) == sorted(
        datasets._CIFAR_BIN
    )  # tarball removed


def test_an_oversized_download_is_refused_and_not_kept(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    shutil.copytree(mnist_dir(), mirror / "mnist")
    monkeypatch.setenv("PYCONV_DATA_MIRROR", mirror.as_uri())
    monkeypatch.setattr(datasets, "_MAX_DOWNLOAD_BYTES", 100_000)  # train images are 9.9 MB
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz: more than 100,000 bytes"):
        datasets.load_mnist(subset="train")
    cached = tmp_path / "cache" / "pyconv" / "mnist"
    assert not any(p.name.startswith(".train-images") for p in cached.iterdir())
    assert not (cached / "train-images-idx3-ubyte.gz").exists()


def test_special_files_are_refused(tmp_path):
    """read_idx("/dev/zero") once read until the memory ran out."""
    fifo = tmp_path / "labels.idx"
    os.mkfifo(fifo)
    with pytest.raises(DatasetError, match="labels.idx: not a regular file"):
        datasets.read_idx(fifo)
    with pytest.raises(DatasetError, match="not a regular file"):
        datasets.read_cifar_bin("/dev/zero")
    with pytest.raises(DatasetError, match="labels.idx: not a regular file"):
        datasets.read_cifar_pickle(fifo)  # (opening a FIFO blocks)


def test_a_given_data_dir_is_the_only_place_searched(tmp_path, monkeypatch):
    """Files elsewhere (PYCONV_DATA, the cache, Debian's Fashion-MNIST) must not silently
    stand in for the folder the caller named."""
    good = data_dir("mnist")
    monkeypatch.setenv("PYCONV_DATA", str(good.parent))
    monkeypatch.setenv("PYCONV_DATA_MIRROR", "http://127.0.0.1:9")
    with pytest.raises(DatasetError, match=str(tmp_path / "empty")):
        datasets.load_mnist(tmp_path / "empty", subset="test")
    for name in ("mnist", "fashion_mnist", "cifar10"):  # nothing to download from: not found
        with pytest.raises(DatasetError, match="not found"):
            datasets.load(name, tmp_path / "empty", download=True)
    x, y = datasets.load_mnist(subset="test")  # without data_dir: PYCONV_DATA
    assert x.shape == (10000, 28, 28, 1) and len(y) == 10000
