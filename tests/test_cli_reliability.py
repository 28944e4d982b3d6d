"""The pyconv command under a new user's mistakes and interruptions: Ctrl-C (a real SIGINT to
a real process), --resume checks, argument ranges, missing folders, bad and huge image files,
and the exact wording of what it reports."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys

import numpy as np
import pytest

import pyconv
from pyconv import cli, datasets, gradcam
from pyconv import layers as L

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def train(tmp_path, *extra) -> int:
    out = tmp_path / "m.pyconv"
    return cli.main(["train", "--limit", "600", "--out", str(out), "--verbose", "0", *extra])


def image_model(tmp_path, last=None, names=NAMES, shape=(28, 28, 1)):
    """A small untrained conv net saved to tmp_path/m.pyconv (no training: fast)."""
    pyconv.set_random_seed(0)
    last = [L.GlobalAveragePooling2D(), L.Dense(10, activation="softmax")] if last is None else last
    m = pyconv.Sequential([L.Conv2D(4, 3, activation="relu", input_shape=shape, name="c1"), *last])
    m.compile("adam", "sparse_categorical_crossentropy")
    m.metadata["class_names"] = names
    m.save(tmp_path / "m.pyconv")
    return str(tmp_path / "m.pyconv")


def png(path, size=(28, 28), seed=0) -> str:
    w, h = size
    PIL.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w), np.uint8)).save(path)
    return str(path)


def truncated_png(path) -> str:
    png(path, (64, 64))
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) * 6 // 10])
    return str(path)


# --- Ctrl-C ------------------------------------------------------------------------------------


def test_ctrl_c_during_train_stops_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    """A real `python -m pyconv train` gets SIGINT during its second epoch: no traceback,
    exit 130, the checkpoint named, and the printed command resumes the run to its end."""
    argv = ["train", "--limit", "1500", "--epochs", "2", "--out", "m.pyconv", "--verbose", "1"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "pyconv", *argv], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        for line in proc.stdout:
            if line.startswith("Epoch 2/"):  # epoch 1 and its checkpoint are done
                proc.send_signal(signal.SIGINT)
                break
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "pyconv train: interrupted; the checkpoint m.ckpt.pyconv holds epoch" in err
    resume = err.strip().splitlines()[-1].strip()
    assert resume == "pyconv " + shlex.join([*argv, "--resume"])
    assert pyconv.load_model(tmp_path / "m.ckpt.pyconv").metadata["epoch"] >= 1  # intact
    assert not (tmp_path / "m.pyconv").exists()

    monkeypatch.chdir(tmp_path)
    assert cli.main(shlex.split(resume)[1:]) == 0
    assert pyconv.load_model(tmp_path / "m.pyconv").metadata["epoch"] == 2
    assert "of 2" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["evaluate", "predict", "gradcam"])
def test_ctrl_c_in_the_other_commands_is_one_line_and_130(tmp_path, monkeypatch, capsys, command):
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pyconv, "load_model", ctrl_c)
    args = {"evaluate": [], "predict": ["a.png"], "gradcam": ["--image", "a.png"]}[command]
    assert cli.main([command, "--model", "m.pyconv", *args]) == 130
    assert capsys.readouterr().err.strip() == f"pyconv {command}: interrupted"


# --- resume ------------------------------------------------------------------------------------


def test_resume_without_a_checkpoint_is_refused(tmp_path, capsys):
    assert train(tmp_path, "--resume") == 2
    err = capsys.readouterr().err
    assert f"no checkpoint at {tmp_path / 'm.ckpt.pyconv'}" in err
    assert not (tmp_path / "m.pyconv").exists() and not (tmp_path / "m.ckpt.pyconv").exists()


def test_resume_takes_the_checkpoints_settings_and_refuses_others(tmp_path, capsys):
    saved = pyconv.get_num_threads()
    try:
        assert train(tmp_path, "--epochs", "1", "--threads", "1") == 0
    finally:
        pyconv.set_num_threads(saved)
    text = capsys.readouterr().out
    # 600 images less the 10% validation split; one thread, not "1 threads"
    assert "(540 training images, batch 128, 1 thread)" in text

    assert train(tmp_path, "--resume") == 0  # a finished 1-epoch run: no second epoch
    assert "has completed all 1 epochs" in capsys.readouterr().out
    meta = pyconv.load_model(tmp_path / "m.pyconv").metadata
    assert meta["epoch"] == 1 and len(meta["history"]["loss"]) == 1

    for given, saved_as in [
        (["--epochs", "3"], "--epochs 1"),
        (["--batch-size", "64"], "--batch-size 128"),
        (["--augment"], "--no-augment"),
        (["--learning-rate", "0.01"], "--learning-rate 0.001"),
        (["--validation-split", "0.2"], "--validation-split 0.1"),
        (["--limit", "700"], "--limit 600"),
        (["--seed", "1"], "--seed 0"),
    ]:
        assert train(tmp_path, "--resume", *given) == 2, given
        err = capsys.readouterr().err
        assert " ".join(given) in err and saved_as in err and "does not match" in err, err
    assert train(tmp_path, "--resume", "--dataset", "mnist") == 2
    assert "checkpoint of mnist_cnn on mnist_sample" in capsys.readouterr().err


# --- arguments -----------------------------------------------------------------------------------

BAD_ARGUMENTS = [
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--epochs", "-1"], "--epochs"),
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--limit", "0"], "--limit"),
    (["train", "--limit", "-5"], "--limit"),
    (["train", "--threads", "0"], "--threads"),
    (["train", "--threads", "100000"], "--threads"),
    (["train", "--validation-split", "1"], "--validation-split"),
    (["train", "--validation-split", "-0.1"], "--validation-split"),
    (["train", "--validation-split", "nan"], "--validation-split"),
    (["train", "--learning-rate", "0"], "--learning-rate"),
    (["train", "--learning-rate", "inf"], "--learning-rate"),
    (["train", "--seed", "-1"], "--seed"),
    (["evaluate", "--model", "m", "--batch-size", "0"], "--batch-size"),
    (["predict", "--model", "m", "--top", "0", "a.png"], "--top"),
    (["gradcam", "--model", "m", "--image", "a", "--alpha", "1.5"], "--alpha"),
    (["gradcam", "--model", "m", "--image", "a", "--alpha", "-0.1"], "--alpha"),
    (["gradcam", "--model", "m", "--image", "a", "--min-size", "0"], "--min-size"),
    (["gradcam", "--model", "m", "--image", "a", "--class", "-1"], "--class"),
]


@pytest.mark.parametrize(("argv", "option"), BAD_ARGUMENTS)
def test_out_of_range_arguments_are_usage_errors(argv, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage:") and f"argument {option}: must be" in err


def test_missing_output_folders_are_named_before_any_work(tmp_path, capsys):
    missing = tmp_path / "nodir"
    assert train(tmp_path, "--out", str(missing / "m.pyconv")) == 2
    err = capsys.readouterr().err
    assert f"the folder {missing} does not exist" in err and "--out" in err
    assert train(tmp_path, "--log", str(missing / "log.csv")) == 2
    assert "--log" in capsys.readouterr().err
    assert train(tmp_path, "--plot", str(tmp_path / "curves.xyz")) == 2
    assert "--plot: cannot tell a picture format" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing trained or written
    model = image_model(tmp_path)
    image = png(tmp_path / "d.png")
    argv = ["gradcam", "--model", model, "--image", image, "--out", str(missing / "cam.png")]
    assert cli.main(argv) == 2
    assert f"the folder {missing} does not exist" in capsys.readouterr().err
    argv[-1] = str(tmp_path)
    assert cli.main(argv) == 2
    assert f"--out {tmp_path} is a folder" in capsys.readouterr().err


# --- images ------------------------------------------------------------------------------------


def test_predict_reports_bad_files_and_goes_on(tmp_path, capsys):
    model = image_model(tmp_path)
    good = png(tmp_path / "a.png")
    other = tmp_path / "b.jpg"
    PIL.open(good).convert("RGB").save(other)
    (tmp_path / "text.png").write_text("not an image")
    bad = [str(tmp_path / "missing.png"), truncated_png(tmp_path / "cut.png"),
           str(tmp_path / "text.png")]  # fmt: skip
    assert cli.main(["predict", "--model", model, "--top", "2", good, *bad, str(other)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert [line.split(": ")[0] for line in lines] == [good, str(other)]
    assert all(line.split(": ")[1].split(" (")[0] in NAMES for line in lines)
    err = captured.err
    assert f"cannot read image {bad[0]}: No such file or directory" in err
    assert f"cannot read image {bad[1]}: image file is truncated" in err
    assert f"cannot read image {bad[2]}: not an image format Pillow can read" in err
    assert "3 of 5 images could not be read" in err and "Traceback" not in err


def test_predict_shows_what_kind_of_output_the_model_has(tmp_path, capsys):
    image = png(tmp_path / "a.png")
    logits = image_model(tmp_path, [L.GlobalAveragePooling2D(), L.Dense(3)], names=None)
    assert cli.main(["predict", "--model", logits, image]) == 0
    assert capsys.readouterr().out.count("(score ") == 3  # not probabilities
    binary = image_model(tmp_path, [L.GlobalAveragePooling2D(), L.Dense(1, activation="sigmoid")],
                         names=None)  # fmt: skip
    assert cli.main(["predict", "--model", binary, image]) == 0
    ranked = capsys.readouterr().out.split(": ")[1].split(", ")
    assert sorted(r.split(" ")[0] for r in ranked) == ["0", "1"]
    assert abs(sum(float(r.split("(")[1].rstrip(")\n")) for r in ranked) - 1) < 2e-3
    maps = image_model(tmp_path, [], names=None)  # a feature map, not one score per class
    assert cli.main(["predict", "--model", maps, image]) == 2
    assert "is not one score per class" in capsys.readouterr().err


def test_oversized_images_are_refused_naming_the_file(tmp_path, monkeypatch, capsys):
    model = image_model(tmp_path)
    monkeypatch.setattr(PIL, "MAX_IMAGE_PIXELS", 1000)
    warned = png(tmp_path / "warned.png", (40, 40))  # between the limit and twice it
    bomb = png(tmp_path / "bomb.png", (100, 100))  # over twice the limit
    assert cli.main(["predict", "--model", model, warned, bomb]) == 1
    err = capsys.readouterr().err
    assert f"cannot read image {warned}: too large for Pillow" in err
    assert f"cannot read image {bomb}: too large for Pillow" in err
    argv = ["gradcam", "--model", model, "--image", bomb, "--out", str(tmp_path / "c.png")]
    assert cli.main(argv) == 1
    assert f"pyconv gradcam: cannot read image {bomb}" in capsys.readouterr().err


def test_gradcam_works_at_a_bounded_display_size(tmp_path, capsys):
    assert cli.display_size(28, 28, 224) == (224, 224)  # small: enlarged 8x
    assert cli.display_size(100, 1000, 224) == (200, 2000)  # enlarged only within the cap
    assert cli.display_size(4000, 3000, 224) == (2048, 1536)  # large: shrunk to the cap
    assert cli.display_size(1, 20000, 224) == (1, 2048)  # was 224 x 4,480,000
    model = image_model(tmp_path)
    out = tmp_path / "cam.png"
    for size in ((1, 20000), (20000, 1), (3000, 2500)):
        image = png(tmp_path / "big.png", size)
        assert cli.main(["gradcam", "--model", model, "--image", image, "--out", str(out)]) == 0
        with PIL.open(out) as im:
            assert max(im.size) == cli.MAX_DISPLAY_SIDE


def test_gradcam_options_and_output_line(tmp_path, capsys):
    model = image_model(tmp_path)
    image = png(tmp_path / "a.png")
    argv = ["gradcam", "--model", model, "--image", image]
    assert cli.main([*argv, "--class", "10"]) == 2
    err = capsys.readouterr().err
    assert "--class must be in [0, 9] (the model has 10 classes), got 10" in err

    assert cli.main([*argv, "--out", str(tmp_path / "cam.jpg"), "--class", "3"]) == 0
    line = capsys.readouterr().out
    predicted = line.split("predicted ")[1].split(")")[0]
    assert "class cat (p=" in line and predicted in NAMES  # names, not an index
    assert (tmp_path / "cam.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    with PIL.open(tmp_path / "cam.jpg") as im:
        assert im.format == "JPEG" and im.size == (224, 224)

    assert cli.main([*argv, "--colormap", "no-such-map"]) == 2
    assert (
        "--colormap: colormap 'no-such-map' is not a matplotlib colormap" in capsys.readouterr().err
    )
    assert cli.main([*argv, "--out", str(tmp_path / "cam.xyz")]) == 2
    assert "--out: cannot tell an image format" in capsys.readouterr().err
    assert not (tmp_path / "cam.xyz").exists()

    cut = truncated_png(tmp_path / "cut.png")
    assert cli.main(["gradcam", "--model", model, "--image", cut, "--out", "x.png"]) == 1
    assert f"cannot read image {cut}: image file is truncated" in capsys.readouterr().err


def test_grad_cam_names_the_bad_class_index():
    m = pyconv.Sequential([L.Conv2D(2, 3, input_shape=(6, 6, 1)), L.Flatten(), L.Dense(10)])
    x = np.zeros((3, 6, 6, 1), np.float32)
    with pytest.raises(ValueError, match=r"in \[0, 9\] \(the model has 10 classes\), got 10$"):
        gradcam.grad_cam(m, x, class_index=10)
    with pytest.raises(ValueError, match=r"got -1, 12$"):
        gradcam.grad_cam(m, x, class_index=[3, 12, -1])


def test_overlay_of_a_large_image_stays_uint8_sized(tmp_path):
    tracemalloc = pytest.importorskip("tracemalloc")
    image = np.zeros((1500, 2000, 3), np.uint8)
    heat = np.random.default_rng(0).random((28, 28)).astype(np.float32)
    tracemalloc.start()
    out = gradcam.overlay(image, heat)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out.shape == image.shape and out.dtype == np.uint8
    assert peak < 8 * image.nbytes  # was > 30x: float64 copies of the whole picture
    small = gradcam.overlay(image[:40, :50], heat)
    np.testing.assert_array_equal(out[:40, :50].shape, small.shape)


# --- data sets -----------------------------------------------------------------------------------


def test_evaluate_reads_only_the_test_split(tmp_path, monkeypatch, capsys):
    calls = []
    real = datasets.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "load", spy)
    model = image_model(tmp_path)
    m = pyconv.load_model(model)
    m.metadata["dataset"] = "mnist_sample"
    m.save(model)
    assert cli.main(["evaluate", "--model", model]) == 0
    assert calls == [{"data_dir": None, "subset": "test", "option_name": "--data-dir"}]
    assert "(1,000 images)" in capsys.readouterr().out


def test_missing_data_is_reported_with_the_option_name(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PYCONV_DATA_MIRROR", "http://127.0.0.1:9")  # no download from the test
    monkeypatch.delenv("PYCONV_DATA", raising=False)
    argv = ["--dataset", "fashion_mnist", "--data-dir", str(tmp_path), "--epochs", "1"]
    assert train(tmp_path, *argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("pyconv train: ") and "--data-dir" in err and "Traceback" not in err


@pytest.mark.parametrize("option", ["--out", "--checkpoint"])
def test_keras_named_model_outputs_are_refused_before_training(tmp_path, capsys, option):
    assert cli.main(["train", "--limit", "600", option, str(tmp_path / "m.keras")]) == 2
    assert ".pyconv" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
