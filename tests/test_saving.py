"""model.save / load_model / save_weights: identical predictions, optimizer state that
resumes training exactly, atomic writes, and clear errors for bad files."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

import pyconv
from pyconv import layers as L
from pyconv.saving import ModelFileError


def make_model():
    model = pyconv.Sequential(
        [
            pyconv.Input((8, 8, 1)),
            L.Conv2D(4, 3, padding="same", activation="relu", kernel_regularizer="l2"),
            L.BatchNormalization(),
            L.MaxPooling2D(2),
            L.Dropout(0.2, seed=1),
            L.Flatten(),
            L.Dense(8, activation="elu"),
            L.Dense(3, activation="softmax"),
        ],
        name="saved_model",
    )
    model.compile(
        pyconv.optimizers.Adam(0.01, amsgrad=True), "sparse_categorical_crossentropy", ["accuracy"]
    )
    return model


@pytest.fixture
def data(rng):
    return rng.standard_normal((32, 8, 8, 1)).astype(np.float32), rng.integers(0, 3, 32)


def test_save_load_predict_identical(tmp_path, data):
    x, y = data
    pyconv.set_random_seed(0)
    model = make_model()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    path = tmp_path / "model.pyconv"
    model.save(path)
    loaded = pyconv.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.name == "saved_model"
    assert [type(l) for l in loaded.layers] == [type(l) for l in model.layers]
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
    assert loaded.count_params() == model.count_params()
    assert loaded.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
    lines_a, lines_b = [], []
    model.summary(print_fn=lines_a.append)
    loaded.summary(print_fn=lines_b.append)
    assert lines_a == lines_b


def test_optimizer_state_resumes_training_exactly(tmp_path, data):
    x, y = data
    pyconv.set_random_seed(1)
    model = make_model()
    model.layers[3].rate = 0.0  # dropout draws would differ between the two copies
    for _ in range(3):
        model.train_on_batch(x[:16], y[:16])
    model.save(tmp_path / "ckpt.pyconv")
    resumed = pyconv.load_model(tmp_path / "ckpt.pyconv")
    resumed.layers[3].rate = 0.0
    assert resumed.optimizer.iterations == 3
    assert isinstance(resumed.optimizer, pyconv.optimizers.Adam) and resumed.optimizer.amsgrad
    for _ in range(2):
        model.train_on_batch(x[16:], y[16:])
        resumed.train_on_batch(x[16:], y[16:])
    for a, b in zip(model.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_load_without_compile(tmp_path, data):
    make_model().save(tmp_path / "m.pyconv")
    model = pyconv.load_model(tmp_path / "m.pyconv", compile=False)
    assert not model.compiled
    assert model.predict(data[0]).shape == (32, 3)


def test_uncompiled_model_saves(tmp_path):
    model = pyconv.Sequential([L.Dense(2, input_shape=(3,))])
    model.save(tmp_path / "u.pyconv")
    loaded = pyconv.load_model(tmp_path / "u.pyconv")
    np.testing.assert_array_equal(loaded.get_weights()[0], model.get_weights()[0])


def test_save_weights_and_load_weights(tmp_path, data):
    pyconv.set_random_seed(2)
    a = make_model()
    pyconv.set_random_seed(3)
    b = make_model()
    a.save_weights(tmp_path / "w.weights")
    b.load_weights(tmp_path / "w.weights")
    np.testing.assert_array_equal(a.predict(data[0]), b.predict(data[0]))
    other = pyconv.Sequential([L.Dense(2, input_shape=(3,))])
    with pytest.raises(ValueError, match="architectures differ"):
        other.load_weights(tmp_path / "w.weights")
    with pytest.raises(ModelFileError, match="only weights"):
        pyconv.load_model(tmp_path / "w.weights")


def test_save_is_atomic_when_interrupted(tmp_path, data, monkeypatch):
    path = tmp_path / "model.pyconv"
    model = make_model()
    model.save(path)
    good = path.read_bytes()

    calls = {"n": 0}
    real = np.lib.format.write_array

    def crash_midway(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # e.g. Ctrl-C or a crash half way through the file
        return real(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["model.pyconv"]  # no temporary file left behind
    monkeypatch.undo()
    pyconv.load_model(path)


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "model.pyconv"
    make_model().save(path)
    raw = path.read_bytes()
    for cut in (len(raw) // 2, len(raw) - 30, 10):
        (tmp_path / "cut.pyconv").write_bytes(raw[:cut])
        with pytest.raises(ModelFileError, match="cut.pyconv"):
            pyconv.load_model(tmp_path / "cut.pyconv")


def test_corrupted_array_bytes_are_detected(tmp_path):
    path = tmp_path / "model.pyconv"
    make_model().save(path)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("arrays/w0000.npy")
    flip = info.header_offset + 30 + len(info.filename) + info.extra.__len__() + 200
    raw[flip] ^= 0xFF
    (tmp_path / "bad.pyconv").write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="corrupted"):
        pyconv.load_model(tmp_path / "bad.pyconv")


def test_foreign_files_are_rejected(tmp_path):
    (tmp_path / "text.pyconv").write_text("hello")
    with pytest.raises(ModelFileError, match="not a pyconv model file"):
        pyconv.load_model(tmp_path / "text.pyconv")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("data.txt", "x")
    with pytest.raises(ModelFileError, match="not a pyconv model file"):
        pyconv.load_model(tmp_path / "other.zip")
    np.save(tmp_path / "arr.npy", np.zeros(3))
    with pytest.raises(ModelFileError):
        pyconv.load_model(tmp_path / "arr.npy")
    with pytest.raises(FileNotFoundError):
        pyconv.load_model(tmp_path / "missing.pyconv")


def _rewrite_manifest(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "pyconv.json":
                m = json.loads(data)
                edit(m)
                data = json.dumps(m).encode()
            zout.writestr(item, data)


def test_newer_format_version_is_rejected(tmp_path):
    make_model().save(tmp_path / "m.pyconv")
    _rewrite_manifest(
        tmp_path / "m.pyconv", tmp_path / "new.pyconv", lambda m: m.update(format_version=99)
    )
    with pytest.raises(ModelFileError, match="newer pyconv"):
        pyconv.load_model(tmp_path / "new.pyconv")


def test_unknown_layer_class_needs_custom_objects(tmp_path):
    class Scale(L.Layer):
        def __init__(self, factor=2.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def _forward(self, x, training):
            return x * self.factor, None

        def _backward(self, ctx, dy, need_input_grad):
            return dy * self.factor

        def get_config(self):
            return {**super().get_config(), "factor": self.factor}

    model = pyconv.Sequential([L.Dense(2, input_shape=(3,)), Scale(3.0)])
    model.save(tmp_path / "c.pyconv")
    with pytest.raises(ValueError, match="custom_objects"):
        pyconv.load_model(tmp_path / "c.pyconv")
    loaded = pyconv.load_model(tmp_path / "c.pyconv", custom_objects={"Scale": Scale})
    x = np.ones((1, 3), np.float32)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.layers[1].factor == 3.0


def test_pickled_payloads_are_never_loaded(tmp_path):
    """An object array (pickle) in place of a weight is refused, not unpickled."""
    make_model().save(tmp_path / "m.pyconv")
    with (
        zipfile.ZipFile(tmp_path / "m.pyconv") as zin,
        zipfile.ZipFile(tmp_path / "p.pyconv", "w") as zout,
    ):
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "arrays/w0000.npy":
                import io

                buf = io.BytesIO()
                np.save(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
                data = buf.getvalue()
            zout.writestr(item, data)
    with pytest.raises(ModelFileError, match="w0000"):
        pyconv.load_model(tmp_path / "p.pyconv")


# --- all-or-nothing weight assignment ------------------------------------------------------


@pytest.mark.parametrize(
    "bad,error,match",
    [
        (np.zeros(8, bool), TypeError, "real numbers, got dtype bool"),
        (np.zeros(8, np.complex64), TypeError, "dtype complex64"),
        (np.zeros(8, [("a", "f4")]), TypeError, "real numbers"),
        (np.array(["1"] * 8), TypeError, "dtype <U1"),
        (np.array([object()] * 8), TypeError, "dtype object"),
        (np.zeros(7), ValueError, r"shape \(7,\)"),
        (np.full(8, 1e300), ValueError, "too large for float32"),
        ("abc", TypeError, "got str"),
    ],
)
def test_assign_weights_is_all_or_nothing(bad, error, match):
    from pyconv.saving import assign_weights

    model = pyconv.Sequential([L.Dense(4, input_shape=(3,)), L.Dense(8)])
    before = model.get_weights()
    arrays = [np.ones_like(w) for w in before]
    arrays[-1] = bad  # the last one is bad: the ones before it must not be assigned either
    with pytest.raises(error, match=f"the file.*'dense_?\\d*/bias'.*{match}|{match}"):
        assign_weights(model.weights, arrays, "the file")
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="the file: got 3 weight arrays for 4 weights"):
        assign_weights(model.weights, arrays[:3], "the file")
    assign_weights(model.weights, [w.astype(np.float64) * 2 for w in before], "the file")
    np.testing.assert_array_equal(model.get_weights()[0], before[0] * 2)


# --- temp files and links ------------------------------------------------------------------

KILLED_WRITER = """
import sys
import numpy as np
from pyconv import saving
arr = np.ones(8_000_000, np.float32)  # 32 MB: each save takes a while
while True:
    saving.write_archive(sys.argv[1], {"format": "pyconv-weights", "weights": []}, {"a": arr})
"""


def temp_files(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_a_killed_writers_temp_file_is_removed_by_the_next_save(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from pyconv import saving

    path = tmp_path / "big.pyconv"
    for _ in range(20):  # retry the rare kill that lands between two saves
        # (run outside the checkout, so the child imports the installed pyconv)
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_WRITER, str(path)], cwd=tmp_path, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 60
        while not temp_files(tmp_path) and time.monotonic() < deadline:
            assert proc.poll() is None, f"the writer died: {proc.stderr.read().decode()}"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if temp_files(tmp_path):
            break
    leftovers = temp_files(tmp_path)
    assert leftovers and str(proc.pid) in leftovers[0]  # the writer's pid is in the name
    saving.write_archive(path, {"format": "pyconv-weights", "weights": []}, {})
    assert temp_files(tmp_path) == []
    assert pyconv.saving.Archive(path, "weights").manifest["weights"] == []


def test_a_live_writers_temp_file_is_left_alone(tmp_path):
    import subprocess
    import sys

    from pyconv import saving

    path = tmp_path / "m.pyconv"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"], cwd=tmp_path)
    dead.wait()
    try:
        prefix = saving._temp_prefix(path.name)
        (tmp_path / f"{prefix}{live.pid}.abc.tmp").write_bytes(b"in progress")
        (tmp_path / f"{prefix}{dead.pid}.abc.tmp").write_bytes(b"left over")
        (tmp_path / f".other.pyconv{prefix[len(path.name) + 1 :]}{dead.pid}.x.tmp").touch()
        (tmp_path / ".m.pyconv.abc123.tmp").touch()  # no pid: whose it is cannot be known
        saving.write_archive(path, {"format": "pyconv-weights", "weights": []}, {})
        assert temp_files(tmp_path) == sorted(
            [
                f"{prefix}{live.pid}.abc.tmp",
                f".other.pyconv{prefix[len(path.name) + 1 :]}{dead.pid}.x.tmp",
                ".m.pyconv.abc123.tmp",
            ]
        )
    finally:
        live.kill()
        live.wait()


def test_saving_over_a_symlink_keeps_the_link(tmp_path, data):
    real_dir = tmp_path / "store"
    real_dir.mkdir()
    (real_dir / "real.pyconv").write_bytes(b"old")
    link = tmp_path / "latest.pyconv"
    link.symlink_to(os.path.join("store", "real.pyconv"))  # relative, as users make them
    model = make_model()
    model.save(link)
    assert link.is_symlink() and os.readlink(link) == os.path.join("store", "real.pyconv")
    loaded = pyconv.load_model(real_dir / "real.pyconv")
    np.testing.assert_array_equal(loaded.predict(data[0]), model.predict(data[0]))
    assert temp_files(tmp_path) == [] and temp_files(real_dir) == []
    dangling = tmp_path / "dangling.pyconv"
    dangling.symlink_to(real_dir / "new.pyconv")
    model.save_weights(dangling)  # creates the file the link points to, as open() would
    assert dangling.is_symlink() and (real_dir / "new.pyconv").is_file()
