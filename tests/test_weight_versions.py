"""Weights change only through paths that bump their version (the key of every cache derived
from a weight: packed kernels, batch norm folded into a convolution for inference)."""

from __future__ import annotations

import numpy as np
import pytest

import pyconv
from pyconv import layers as L


def small_model():
    pyconv.set_random_seed(0)
    model = pyconv.Sequential(
        [L.Input((8, 8, 2)), L.Conv2D(4, 3), L.BatchNormalization(), L.Flatten(), L.Dense(3)]
    )
    return model


def versions(model):
    return [v.version for v in model.weights]


def test_value_is_read_only_and_assign_bumps_version():
    model = small_model()
    kernel = model.layers[0].kernel
    with pytest.raises(ValueError, match="read-only"):
        kernel.value[...] = 0
    before = kernel.version
    kernel.assign(np.ones(kernel.shape, np.float32))
    assert kernel.version > before
    np.testing.assert_array_equal(kernel.value, 1)


def test_variable_does_not_alias_the_array_it_was_made_from():
    from pyconv.layers.base import Variable

    w = np.zeros((3, 3), np.float32)
    var = Variable("w", w)
    w[...] = 5  # the caller's array stays theirs: the weight keeps its value and version
    np.testing.assert_array_equal(var.value, 0)
    assert var.version == 0


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_every_updated_weight_gets_a_new_version(optimizer):
    model = small_model()
    model.compile(optimizer, "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.random((4, 8, 8, 2), dtype=np.float32), rng.integers(0, 3, 4)
    before = versions(model)
    model.train_on_batch(x, y)
    after = versions(model)
    # trainable weights by the optimizer; batch norm's moving statistics by its forward
    assert all(a > b for a, b in zip(after, before, strict=True))


def test_set_weights_load_weights_bump_versions(tmp_path):
    model = small_model()
    weights = model.get_weights()
    before = versions(model)
    model.set_weights(weights)
    mid = versions(model)
    assert all(a > b for a, b in zip(mid, before, strict=True))
    model.save_weights(tmp_path / "w.pyconv")
    model.load_weights(tmp_path / "w.pyconv")
    assert all(a > b for a, b in zip(versions(model), mid, strict=True))


def test_inference_does_not_bump_versions():
    model = small_model()
    before = versions(model)
    model.predict(np.zeros((2, 8, 8, 2), np.float32), verbose=0)
    assert versions(model) == before


@pytest.mark.parametrize("fusion", [True, False])
def test_cache_made_during_a_write_is_not_served_after_it(fusion):
    # A predict that runs while a weight is half-written (another thread's optimizer step)
    # packs and caches that half-written kernel; once the write is done the version must
    # differ from the one it cached under, or every later predict serves the stale copy.
    model = small_model()
    model.inference_fusion = fusion
    x = np.random.default_rng(1).random((2, 8, 8, 2), dtype=np.float32)
    kernel = model.layers[0].kernel
    final = np.random.default_rng(2).standard_normal(kernel.shape).astype(np.float32)
    with kernel.updating() as w:
        w.reshape(-1)[: w.size // 2] = final.reshape(-1)[: w.size // 2]
        model.predict(x, verbose=0)  # caches the half-written kernel
        w[...] = final
    got = model.predict(x, verbose=0)
    fresh = small_model()
    fresh.inference_fusion = fusion
    fresh.set_weights(model.get_weights())
    np.testing.assert_array_equal(got, fresh.predict(x, verbose=0))


def test_updating_bumps_the_version_even_when_the_write_fails():
    model = small_model()
    kernel = model.layers[0].kernel
    before = kernel.version
    with pytest.raises(RuntimeError), kernel.updating() as w:
        w[0] = 1
        raise RuntimeError("interrupted write")
    assert kernel.version >= before + 2
