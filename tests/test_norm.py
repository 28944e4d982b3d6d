"""Batch-norm kernels (pyconv.functional.batch_norm & co.) on every ISA: against float64
formulas, finite differences, and bit-identical results for any thread count."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import pyconv
from pyconv import functional as F


def ref_forward(x, gamma, beta, eps):
    x = x.astype(np.float64)
    mean, var = x.mean(axis=0), x.var(axis=0)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta, mean, var


@pytest.mark.parametrize("m,c", [(1, 3), (7, 5), (300, 17), (1000, 64)])
def test_batch_norm_forward_matches_float64(isa, threads, rng, m, c):
    x = (rng.standard_normal((m, c)) * 3 + 100).astype(np.float32)  # large mean: no cancellation
    gamma = rng.standard_normal(c).astype(np.float32)
    beta = rng.standard_normal(c).astype(np.float32)
    y, mean, var = F.batch_norm(x, gamma, beta, 1e-3)
    ry, rmean, rvar = ref_forward(x, gamma, beta, 1e-3)
    assert_close(mean, rmean, 1e-6, "mean")
    assert_close(var, rvar, 1e-5, "var")
    assert_close(y, ry, 1e-4, "y")


@pytest.mark.parametrize("batch_stats", [True, False])
def test_batch_norm_backward_matches_finite_differences(isa, rng, batch_stats):
    m, c, eps = 40, 6, 1e-3
    x = rng.standard_normal((m, c))
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    r = rng.standard_normal((m, c))
    fixed_mean, fixed_var = rng.standard_normal(c), rng.random(c) + 0.5

    def loss(x, gamma, beta):  # float64 reference of the forward the backward differentiates
        if batch_stats:
            y = ref_forward(x, gamma, beta, eps)[0]
        else:
            y = (x - fixed_mean) / np.sqrt(fixed_var + eps) * gamma + beta
        return float((y * r).sum())

    if batch_stats:
        _, mean, var = F.batch_norm(x, gamma, beta, eps)
    else:
        mean, var = fixed_mean, fixed_var
    gx, gg, gb = F.batch_norm_backward(r, x, mean, var, gamma, eps, batch_stats)
    h = 1e-6
    for arr, grad, name in ((x, gx, "x"), (gamma, gg, "gamma"), (beta, gb, "beta")):
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + h
            lp = loss(x, gamma, beta)
            arr[i] = old - h
            lm = loss(x, gamma, beta)
            arr[i] = old
            num[i] = (lp - lm) / (2 * h)
        assert_close(grad, num, 2e-4, name)


def test_channel_affine(isa, rng):
    x = rng.standard_normal((33, 9)).astype(np.float32)
    s, t = rng.standard_normal(9), rng.standard_normal(9)
    assert_close(F.channel_affine(x, s, t), x.astype(np.float64) * s + t, 1e-6, "affine")


def test_results_do_not_depend_on_thread_count(rng):
    x = rng.standard_normal((5000, 32)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    outs = []
    for n in (1, 2):
        pyconv.set_num_threads(n)
        y, mean, var = F.batch_norm(x)
        outs.append((y, mean, var, *F.batch_norm_backward(dy, x, mean, var)))
    pyconv.set_num_threads(2)
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda x: F.batch_norm(x[0]), "2-D"),
        (lambda x: F.batch_norm(x, gamma=np.ones(3)), "gamma"),
        (lambda x: F.batch_norm_backward(x[:2], x, np.zeros(4), np.ones(4)), "grad_out"),
        (lambda x: F.batch_norm_backward(x, x, None, np.ones(4)), "mean and var"),
        (lambda x: F.channel_affine(x, np.ones(4), np.ones(5)), "shift"),
        (lambda x: F.batch_norm(x, epsilon=0.0), "epsilon"),
    ],
)
def test_bad_arguments(rng, call, match):
    with pytest.raises(ValueError, match=match):
        call(rng.standard_normal((5, 4)))
