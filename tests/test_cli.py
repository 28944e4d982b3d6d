"""The pyconv command: train (embedded sample, checkpoints, resume, curves), evaluate,
predict on image files, and clear errors."""

from __future__ import annotations

import json
import signal
import zipfile

import numpy as np
import pytest

import pyconv
from pyconv import cli, datasets

PIL = pytest.importorskip("PIL.Image")


def train(tmp_path, *extra):
    tmp_path.mkdir(exist_ok=True)
    out = tmp_path / "m.pyconv"
    code = cli.main(["train", "--limit", "600", "--out", str(out), "--verbose", "0", *extra])
    assert code == 0
    return out


def test_train_on_the_embedded_sample_writes_everything(tmp_path, capsys):
    out = train(tmp_path, "--epochs", "2")
    text = capsys.readouterr().out
    assert "MNIST sample shipped with pyconv" in text
    assert "test accuracy:" in text and "mean epoch time:" in text
    for name in ("m.pyconv", "m.ckpt.pyconv", "m.log.csv", "m_history.png"):
        assert (tmp_path / name).is_file(), name
    model = pyconv.load_model(out)
    meta = model.metadata
    assert meta["dataset"] == "mnist_sample" and meta["epoch"] == 2
    assert len(meta["history"]["val_accuracy"]) == 2 and len(meta["history"]["epoch_seconds"]) == 2
    assert meta["test_accuracy"] > 0.5  # 600 digits, 2 epochs: far above chance (0.1)
    lines = (tmp_path / "m.log.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,") and len(lines) == 3
    assert PIL.open(tmp_path / "m_history.png").size[0] > 300

    assert cli.main(["evaluate", "--model", str(out)]) == 0
    acc = float(capsys.readouterr().out.split("accuracy ")[1].split(",")[0])
    assert abs(acc - meta["test_accuracy"]) < 1e-4


def interrupt_after_epoch(monkeypatch, epoch):
    """Ctrl-C (a real SIGINT) at the end of ``epoch``, after the checkpoint was written."""
    real = cli._train_callbacks

    class CtrlC(pyconv.callbacks.Callback):
        def on_epoch_end(self, e, logs=None):
            if e == epoch:
                signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(cli, "_train_callbacks", lambda *a: [*real(*a), CtrlC()])


def test_resume_continues_from_the_checkpoint(tmp_path, capsys, monkeypatch):
    interrupt_after_epoch(monkeypatch, 0)
    args = ["train", "--limit", "600", "--out", str(tmp_path / "m.pyconv"), "--verbose", "0"]
    assert cli.main([*args, "--epochs", "2"]) == 130
    err = capsys.readouterr().err
    assert "holds epoch 1 of 2" in err and "m.ckpt.pyconv" in err
    assert err.splitlines()[-1].strip().endswith("--epochs 2 --resume")
    assert not (tmp_path / "m.pyconv").exists()
    monkeypatch.undo()
    train(tmp_path, "--resume")  # --epochs 2 comes from the checkpoint
    text = capsys.readouterr().out
    assert "Resuming mnist_cnn on mnist_sample from" in text and "after epoch 1 of 2" in text
    resumed = pyconv.load_model(tmp_path / "m.pyconv")
    meta = resumed.metadata
    assert meta["epoch"] == 2 and len(meta["history"]["loss"]) == 2
    lr = meta["history"]["learning_rate"]
    assert lr[1] < lr[0]  # the cosine schedule continued where it left off
    assert len((tmp_path / "m.log.csv").read_text().splitlines()) == 3  # header + 2 epochs
    straight = pyconv.load_model(train(tmp_path / "straight", "--epochs", "2"))
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)  # as if never interrupted


def test_predict_reads_images_like_the_training_data(tmp_path, capsys):
    out = train(tmp_path, "--epochs", "2")
    _, (xte, yte) = datasets.load_mnist_sample()
    model = pyconv.load_model(out)
    paths = []
    for i in range(3):
        p = tmp_path / f"digit{i}.png"
        PIL.fromarray(xte[i, :, :, 0]).save(p)  # light digit on a dark background
        q = tmp_path / f"paper{i}.png"
        PIL.fromarray(255 - xte[i, :, :, 0]).save(q)  # dark ink on white paper
        paths += [p, q]
        np.testing.assert_allclose(cli.load_image(p, (28, 28, 1)), xte[i] / 255, atol=1e-6)
        np.testing.assert_allclose(cli.load_image(q, (28, 28, 1)), xte[i] / 255, atol=1e-6)
    capsys.readouterr()
    assert cli.main(["predict", "--model", str(out), "--top", "1", *map(str, paths)]) == 0
    lines = capsys.readouterr().out.splitlines()
    want = model.predict(xte[:3].astype(np.float32) / 255).argmax(axis=1)
    got = [int(line.split(": ")[1].split(" ")[0]) for line in lines]
    assert got == [int(k) for k in want for _ in range(2)]


def test_metadata_is_stored_as_json(tmp_path):
    out = train(tmp_path, "--epochs", "1")
    with zipfile.ZipFile(out) as zf:
        manifest = json.loads(zf.read("pyconv.json"))
    assert manifest["metadata"]["class_names"] == [str(i) for i in range(10)]
    assert manifest["metadata"]["command"].startswith("pyconv train")


def test_errors_are_messages_not_tracebacks(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PYCONV_DATA_MIRROR", "http://127.0.0.1:9")  # no download from the test
    monkeypatch.delenv("PYCONV_DATA", raising=False)
    assert cli.main(["train", "--model", "resnet1000"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert cli.main(["evaluate", "--model", str(tmp_path / "missing.pyconv")]) == 1
    assert "missing.pyconv" in capsys.readouterr().err
    assert (
        cli.main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--epochs", "1"])
        == 1
    )
    err = capsys.readouterr().err
    assert "cifar10 files not found" in err or "download failed" in err


def test_info_and_version(capsys):
    assert cli.main(["info"]) == 0
    assert "isa:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert pyconv.__version__ in capsys.readouterr().out
