"""The packed-weight cache (functional.conv2d's weight_cache, Conv2D's and Dense's inference
calls): identical results to uncached calls on every ISA and thread count, invalidated by
every weight write, correct across geometries and ISAs with one cache, and safe to share
between Python threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import ref64
from conftest import assert_close

import pyconv
from pyconv import functional as F
from pyconv import layers

# (N, C, HW, O, kernel, stride, padding): the direct kernel with packed tiles, Winograd,
# a kernel read in place (one 16-channel tile: nothing to cache), the small 1x1 matmul.
CASES = [
    (1, 24, 9, 40, 3, 1, 1),
    (2, 32, 12, 48, 3, 1, 1),
    (1, 5, 11, 70, 5, 2, 2),
    (1, 8, 6, 16, 3, 1, 1),
    (1, 64, 1, 96, 1, 1, 0),
]
KW = dict(data_format="NHWC", weight_format="HWIO")


def _data(case, rng):
    n, c, hw, o, k, s, p = case
    x = rng.standard_normal((n, hw, hw, c)).astype(np.float32)
    w = rng.standard_normal((k, k, c, o)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    return x, w, b, dict(stride=s, padding=p, **KW)


@pytest.mark.parametrize("case", CASES)
def test_cached_equals_uncached(case, isa, threads, conv_algo, rng):
    x, w, b, kw = _data(case, rng)
    want = F.conv2d(x, w, b, **kw)
    cache = F.WeightCache()
    for _ in range(2):  # a miss (packs into the cache), then a hit
        got = F.conv2d(x, w, b, **kw, weight_cache=cache, weight_version=3)
        np.testing.assert_array_equal(got, want)
    ref = ref64.conv2d(
        x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), b, (case[5],) * 2, (case[6],) * 4
    )
    assert_close(got, ref.transpose(0, 2, 3, 1))


def test_cache_is_used_and_keyed_by_version(rng):
    """Written in place without a new version, the weights are served stale from the cache
    (so it is really reused); a new version repacks them."""
    x, w, b, kw = _data(CASES[0], rng)
    cache = F.WeightCache()
    y0 = F.conv2d(x, w, b, **kw, weight_cache=cache, weight_version=0)
    assert cache.nbytes >= w.nbytes  # packed tiles: a copy
    w *= 2
    stale = F.conv2d(x, w, b, **kw, weight_cache=cache, weight_version=0)
    np.testing.assert_array_equal(stale, y0)
    fresh = F.conv2d(x, w, b, **kw, weight_cache=cache, weight_version=1)
    np.testing.assert_array_equal(fresh, F.conv2d(x, w, b, **kw))
    assert not np.array_equal(fresh, y0)
    # Another array (another address) with the same version: repacked, never mistaken.
    w2 = w + 1
    np.testing.assert_array_equal(
        F.conv2d(x, w2, b, **kw, weight_cache=cache, weight_version=1), F.conv2d(x, w2, b, **kw)
    )
    cache.clear()
    assert cache.nbytes == 0


def test_no_copy_where_weights_are_read_in_place(rng):
    for case in (CASES[3], CASES[4]):
        x, w, b, kw = _data(case, rng)
        cache = F.WeightCache()
        F.conv2d(x, w, b, **kw, weight_cache=cache, weight_version=0)
        assert cache.nbytes == 0, case


def test_one_cache_across_geometries_and_isas(rng):
    """A cache keyed by (version, address, ...) alone would serve a Winograd U to the direct
    kernel or an avx512 tile to avx2: every call here must equal its uncached twin."""
    _, w, b, _ = _data((1, 32, 8, 32, 3, 1, 1), rng)
    cache = F.WeightCache()
    previous = pyconv.get_isa()
    try:
        for isa in pyconv.available_isas() * 2:
            pyconv.set_isa(isa)
            for n, hw in ((1, 6), (4, 40), (1, 7), (4, 40)):  # direct, Winograd, direct ...
                x = rng.standard_normal((n, hw, hw, 32)).astype(np.float32)
                for weight_format, wv in (("HWIO", w), ("OIHW", w.transpose(3, 2, 0, 1))):
                    kw = dict(padding=1, data_format="NHWC", weight_format=weight_format)
                    got = F.conv2d(x, wv, b, **kw, weight_cache=cache, weight_version=0)
                    np.testing.assert_array_equal(got, F.conv2d(x, wv, b, **kw))
    finally:
        pyconv.set_isa(previous)


def test_bad_cache_arguments(rng):
    x, w, b, kw = _data(CASES[0], rng)
    cache = F.WeightCache()
    with pytest.raises(ValueError, match="together"):
        F.conv2d(x, w, b, **kw, weight_cache=cache)
    with pytest.raises(ValueError, match="together"):
        F.conv2d(x, w, b, **kw, weight_version=1)
    with pytest.raises(ValueError, match="weight_version"):
        F.conv2d(x, w, b, **kw, weight_cache=cache, weight_version=-1)
    with pytest.raises(ValueError, match="weight_version"):
        F.conv2d(x, w, b, **kw, weight_cache=cache, weight_version=1.5)
    with pytest.raises(TypeError, match="weight_cache"):
        F.conv2d(x, w, b, **kw, weight_cache={}, weight_version=1)


def _model(seed=0):
    inp = pyconv.Input((12, 12, 24))
    h = layers.Conv2D(40, 3, padding="same", activation="relu")(inp)
    h = layers.Conv2D(48, 3, padding="same")(h)
    h = layers.Flatten()(h)
    out = layers.Dense(70)(h)
    model = pyconv.Model(inp, out)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for v in layer.weights:
            v.assign(rng.standard_normal(v.shape).astype(np.float32) * 0.1)
    return model


def _uncached_predict(model, x):
    """The model's prediction through functional calls without a cache."""
    h = x
    for layer in model.layers[1:]:
        if isinstance(layer, layers.Conv2D):
            h = F.conv2d(
                h, layer.kernel.value, layer.bias.value, padding="same", **KW,
                activation=pyconv.activations.serialize(layer.activation),
            )  # fmt: skip
        elif isinstance(layer, layers.Flatten):
            h = h.reshape(len(h), -1)
        else:
            h = h @ layer.kernel.value.astype(np.float64) + layer.bias.value
    return h


def test_layers_invalidate_on_assign_and_optimizer(rng):
    model = _model()
    x = rng.standard_normal((40, 12, 12, 24)).astype(np.float32)  # Dense: packed tiles
    y0 = model.predict_on_batch(x)
    assert all(
        layer._weight_cache.nbytes > 0 for layer in model.layers[1:] if hasattr(layer, "kernel")
    )
    assert_close(y0, _uncached_predict(model, x), rtol=1e-4)
    np.testing.assert_array_equal(model.predict_on_batch(x), y0)
    conv = model.layers[1]
    conv.kernel.assign(conv.kernel.value * -1)
    y1 = model.predict_on_batch(x)
    assert not np.array_equal(y1, y0)
    assert_close(y1, _uncached_predict(model, x), rtol=1e-4)
    model.compile(pyconv.optimizers.SGD(0.1), "mse")
    model.train_on_batch(x, np.zeros_like(y1))
    y2 = model.predict_on_batch(x)
    assert not np.array_equal(y2, y1)
    assert_close(y2, _uncached_predict(model, x), rtol=1e-4)
    model.set_weights([w * 0.5 for w in model.get_weights()])
    assert_close(model.predict_on_batch(x), _uncached_predict(model, x), rtol=1e-4)


def test_two_python_threads_share_a_model(rng):
    model = _model()
    xs = [rng.standard_normal((n, 12, 12, 24)).astype(np.float32) for n in (1, 40, 3, 40)]
    want = [model.predict_on_batch(x) for x in xs]
    model.layers[1]._weight_cache.clear()
    errors = []

    def work():
        try:
            for _ in range(10):
                for x, y in zip(xs, want):
                    np.testing.assert_array_equal(model.predict_on_batch(x), y)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_cached_weights_move_the_winograd_rule(isa, rng):
    """With cached weights the automatic choice takes Winograd from 32 tiles (here 36): the
    cached call equals the uncached call with Winograd forced, and the float64 reference."""
    x, w, b, kw = _data((1, 32, 12, 48, 3, 1, 1), rng)
    previous = pyconv.get_conv_algorithm()
    try:
        pyconv.set_conv_algorithm("winograd")
        want = F.conv2d(x, w, b, **kw)
        pyconv.set_conv_algorithm("auto")
        got = F.conv2d(x, w, b, **kw, weight_cache=F.WeightCache(), weight_version=0)
        direct = F.conv2d(x, w, b, **kw)
    finally:
        pyconv.set_conv_algorithm(previous)
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, direct)  # the uncached call stayed direct
    ref = ref64.conv2d(x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), b, (1, 1), (1,) * 4)
    assert_close(got, ref.transpose(0, 2, 3, 1))
