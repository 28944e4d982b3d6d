"""Shared fixtures: every test that takes `isa` runs once per ISA this CPU supports."""

from __future__ import annotations

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


def shared_dir() -> Path:
    """../shared beside the checkout (data sets, lectures); skip cleanly where absent."""
    path = REPO.parent / "shared"
    if not path.is_dir():
        pytest.skip(f"{path} not found: these tests need the shared data folder beside the repo")
    return path
