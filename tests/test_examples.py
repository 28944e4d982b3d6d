"""The examples as documented: each runs (with small options), writes where it is told or into
the folder it runs in (never over the repository's tracked pictures), says how to make a
missing input in one line (no traceback), and says so when it falls back; and what
`pyconv train` and the examples leave in the repository root is ignored by git."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest
from conftest import REPO, data_dir, offline_env, run_python

EXAMPLES = REPO / "examples"
TRACKED_PICTURES = (EXAMPLES / "gradcam.png", EXAMPLES / "classic_kernels.png")


@pytest.fixture
def pictures_untouched():
    """Fails the test if it changed the repository's tracked example pictures."""
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in TRACKED_PICTURES}
    yield
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in TRACKED_PICTURES}
    assert after == before


def example(name, *args, cwd, env=None, timeout=180):
    return run_python([EXAMPLES / name, *args], cwd, timeout=timeout, env=env)


def assert_one_line_error(done, *words):
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: "), done.stderr
    for word in words:
        assert word in done.stderr


# --- gradcam_example.py ----------------------------------------------------------------------


def test_gradcam_example_on_the_model_pyconv_train_writes(tmp_path, trained_folder,
                                                          pictures_untouched):  # fmt: skip
    shutil.copy(trained_folder / "mnist_cnn.pyconv", tmp_path)
    done = example("gradcam_example.py", "--count", "3", cwd=tmp_path, env=offline_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "gradcam_grid.png").stat().st_size > 1000  # its default, where it ran
    out = tmp_path / "chosen" / "cam.png"
    out.parent.mkdir()
    done = example("gradcam_example.py", "--count", "2", "--model", "mnist_cnn.pyconv",
                   "--out", out, cwd=tmp_path, env=offline_env(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 1000


def test_gradcam_example_without_a_model_says_how_to_make_one(tmp_path):
    done = example("gradcam_example.py", cwd=tmp_path)
    assert_one_line_error(done, "mnist_cnn.pyconv not found", "pyconv train")
    assert len(done.stderr.strip().splitlines()) == 1


def test_gradcam_example_bad_inputs_are_one_line_errors(tmp_path, trained_folder):
    (tmp_path / "junk.pyconv").write_bytes(b"not a model")
    assert_one_line_error(example("gradcam_example.py", "--model", "junk.pyconv", cwd=tmp_path),
                          "junk.pyconv")  # fmt: skip
    model = trained_folder / "mnist_cnn.pyconv"
    done = example("gradcam_example.py", "--model", model, "--layer", "nope", cwd=tmp_path)
    assert_one_line_error(done, "nope")
    done = example("gradcam_example.py", "--model", model, "--start", "5000", cwd=tmp_path)
    assert_one_line_error(done, "--start")
    assert not list(tmp_path.glob("*.png"))


# --- classic_kernels.py ----------------------------------------------------------------------


def test_classic_kernels_says_when_it_falls_back_to_a_digit(tmp_path, pictures_untouched):
    done = example("classic_kernels.py", cwd=tmp_path, env=offline_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "CIFAR-10 not found" in done.stderr and "MNIST digit" in done.stderr
    assert (tmp_path / "kernels_applied.png").stat().st_size > 1000
    done = example("classic_kernels.py", "--mnist", "--out", "d.png", cwd=tmp_path)
    assert done.returncode == 0 and not done.stderr, done.stderr  # chosen: nothing to say
    assert (tmp_path / "d.png").is_file()


def test_classic_kernels_on_the_cat(tmp_path, pictures_untouched):
    cifar = data_dir("cifar-10-batches-bin")
    done = example("classic_kernels.py", "--data-dir", cifar, "--out", "cat.png", cwd=tmp_path)
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert (tmp_path / "cat.png").is_file()


def test_classic_kernels_with_a_wrong_data_dir_is_an_error_not_a_fallback(tmp_path):
    done = example("classic_kernels.py", "--data-dir", tmp_path / "none", cwd=tmp_path,
                   env=offline_env(tmp_path))  # fmt: skip
    assert_one_line_error(done, "cifar10 files not found")
    assert not list(tmp_path.glob("*.png"))


# --- transfer_learning.py --------------------------------------------------------------------

QUICK = ["--source-per-class", "40", "--target-per-class", "20", "--test-per-class", "20",
         "--source-epochs", "1", "--target-epochs", "1"]  # fmt: skip


def test_transfer_learning_runs_end_to_end(tmp_path):
    pytest.importorskip("onnx")
    cifar = data_dir("cifar-10-batches-bin")
    done = example("transfer_learning.py", "--data-dir", cifar, *QUICK, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "after ONNX export + re-import" in done.stdout
    assert not list(tmp_path.iterdir())  # the ONNX file went to a temporary folder


def test_transfer_learning_without_data_or_with_bad_options_fails_cleanly(tmp_path):
    done = example("transfer_learning.py", "--data-dir", tmp_path / "none", *QUICK,
                   cwd=tmp_path, env=offline_env(tmp_path))  # fmt: skip
    assert_one_line_error(done, "cifar10 files not found")
    done = example("transfer_learning.py", "--target-epochs", "0", cwd=tmp_path)
    assert done.returncode == 2 and "--target-epochs must be >= 1" in done.stderr


# --- what runs from the repository root leaves nothing for git to pick up ---------------------


def test_outputs_written_in_the_repository_root_are_ignored(trained_folder):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    written = [p.name for p in trained_folder.iterdir()]  # by `pyconv train`
    assert "mnist_cnn.pyconv" in written and "mnist_cnn_history.png" in written
    written += [
        "cam.png",  # pyconv gradcam's default
        "cam.jpg",
        "gradcam_grid.png",  # the examples' defaults
        "kernels_applied.png",
        "mnist_cnn.onnx",  # the README's snippets
        "filters.png",
        ".mnist_cnn.pyconv.k2j3h4.tmp",  # a killed save's temporary file
    ]
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", "--verbose", "--non-matching", *written],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    not_ignored = [
        line.split("\t")[1] for line in done.stdout.splitlines() if line.startswith("::")
    ]
    assert not not_ignored, f"not in .gitignore: {not_ignored}"
    # and no tracked file matches a pattern (it would hide its new siblings, e.g. runs/ logs)
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--ignored", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert tracked.stdout == ""
