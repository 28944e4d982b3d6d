"""Shared fixtures (every test that takes `isa` runs once per ISA this CPU supports), the
test-data folder, and the PYCONV_REQUIRE_ALL check that no test is skipped unexpectedly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyconv

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=pyconv.available_isas())
def isa(request):
    """Run the test on one kernel table (avx512 / avx2 / generic), then restore."""
    previous = pyconv.get_isa()
    pyconv.set_isa(request.param)
    yield request.param
    pyconv.set_isa(previous)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    previous = pyconv.get_num_threads()
    pyconv.set_num_threads(request.param)
    yield request.param
    pyconv.set_num_threads(previous)


@pytest.fixture(params=["direct", "winograd"])
def conv_algo(request):
    """Run on the direct kernel, then with Winograd forced wherever it applies."""
    previous = pyconv.get_conv_algorithm()
    pyconv.set_conv_algorithm(request.param)
    yield request.param
    pyconv.set_conv_algorithm(previous)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def assert_close(ours, ref, rtol=1e-5, name="value"):
    """max |ours - ref| <= rtol * max(1, max |ref|): float32 compute vs a float64 reference."""
    ours = np.asarray(ours, np.float64)
    ref = np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} != {ref.shape}"
    scale = max(1.0, float(np.abs(ref).max(initial=0.0)))
    err = float(np.abs(ours - ref).max(initial=0.0))
    assert err <= rtol * scale, f"{name}: max abs error {err:.3g} > {rtol:g} x {scale:.3g}"


# The data sets' canonical files (mnist/, cifar-10-batches-bin/, ...): $PYCONV_DATA, else
# ../shared/data beside the checkout. Read once at start-up, because tests that isolate the
# loaders from the user's environment delete PYCONV_DATA before they ask for the folder.
DATA_ENV = "PYCONV_DATA"
_DATA_ROOT = (
    Path(os.environ[DATA_ENV]) if os.environ.get(DATA_ENV) else REPO.parent / "shared" / "data"
)


def data_dir(*parts: str) -> Path:
    """The test-data folder (or a subfolder of it); skips the test, naming PYCONV_DATA, where
    it is absent."""
    path = _DATA_ROOT.joinpath(*parts)
    if not path.is_dir():
        pytest.skip(
            f"{path} not found: set {DATA_ENV} to a folder holding the data sets' files "
            "(mnist/, cifar-10-batches-bin/) to run this test"
        )
    return path


def run_python(args, cwd, timeout=120, env=None) -> subprocess.CompletedProcess:
    """``python ARGS`` in ``cwd`` (a fresh interpreter, as a user runs it), output captured."""
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def offline_env(tmp_path) -> dict:
    """os.environ without data files or network (no PYCONV_DATA, an empty cache, a download
    mirror where nothing listens): what runs in it needs nothing but pyconv."""
    env = {k: v for k, v in os.environ.items() if k != DATA_ENV}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), MPLBACKEND="Agg")
    env["PYCONV_DATA_MIRROR"] = "http://127.0.0.1:9"  # nothing listens on port 9
    return env


@pytest.fixture(scope="session")
def trained_folder(tmp_path_factory) -> Path:
    """A folder where `pyconv train` ran with its defaults, shortened (500 digits, 1 epoch):
    mnist_cnn.pyconv and the checkpoint, log and curves beside it, as the README's first
    command leaves them."""
    folder = tmp_path_factory.mktemp("trained")
    args = ["-m", "pyconv", "train", "--limit", "500", "--epochs", "1", "--verbose", "0"]
    done = run_python(args, folder)
    assert done.returncode == 0, done.stderr
    return folder


# --- PYCONV_REQUIRE_ALL=1 (set by .ci/run): a skipped test fails the run ---------------------
# Skips whose reason contains one of these are expected on some platforms; any other skip (a
# missing data set, a missing test dependency) makes the run fail, so CI cannot pass while it
# silently tests less than it should. Skips stay reported as skips; the run's exit status and
# a summary section say which were not allowed.
ALLOWED_SKIPS = (
    "needs signal.raise_signal",
    "needs /proc/self/statm (Linux)",
    "not under AddressSanitizer",  # memory-limit tests, run by the normal suite in the same CI
)
REQUIRE_ALL = os.environ.get("PYCONV_REQUIRE_ALL", "") not in ("", "0")
_unexpected_skips: list[str] = []


def _note_skip(report) -> None:
    if not (REQUIRE_ALL and report.skipped) or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr  # (path, line, "Skipped: why") for a skip
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
    if not any(allowed in reason for allowed in ALLOWED_SKIPS):
        _unexpected_skips.append(f"{report.nodeid}: {reason}")


def pytest_runtest_logreport(report):
    _note_skip(report)


def pytest_collectreport(report):
    _note_skip(report)  # a module-level importorskip skips a whole file at collection


def pytest_sessionfinish(session, exitstatus):
    if _unexpected_skips and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if _unexpected_skips:
        terminalreporter.section("skipped, but PYCONV_REQUIRE_ALL=1 requires them to run")
        for line in _unexpected_skips:
            terminalreporter.line(line)
