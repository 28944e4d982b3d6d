"""Losses and optimizers against independent references.

Losses: value and dL/dy_pred against float64 NumPy formulas written here (and central finite
differences of those formulas), the fused logits path against the probability path chained
through softmax/sigmoid, huge logits, PyTorch, and label checks.
Optimizers: several steps against torch.optim, the first two steps against Keras's update
rules written out in NumPy, gradient clipping, argument checks and config round trips.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import assert_close

import pyconv
from pyconv import losses, optimizers
from pyconv.layers import Variable

EPS = 1e-7  # Keras's probability clipping
N, K = 6, 4

# --------------------------------------------------------------------------------------------
# float64 references (independent of pyconv)


def reduce64(per, w):
    per = np.asarray(per, np.float64).reshape(len(per), -1).sum(axis=1)
    if w is None:
        return float(per.sum() / len(per))
    return float(np.dot(per, np.asarray(w, np.float64)) / len(per))


def wscale(w, n):
    """Per-row factor w_i / N as a column, for analytic gradients."""
    w = np.ones(n) if w is None else np.asarray(w, np.float64)
    return (w / n)[:, None]


def softmax64(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax64(z):
    z = np.asarray(z, np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def sigmoid64(z):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, np.float64)))


def onehot(labels, k):
    return np.eye(k)[np.asarray(labels)]


def ref_cce(y, p, w=None):
    # Keras: rows normalized to sum to 1, then clipped
    p = np.asarray(p, np.float64)
    q = np.clip(p / p.sum(axis=-1, keepdims=True), EPS, 1 - EPS)
    return reduce64(-(y * np.log(q)).sum(axis=-1), w)


def grad_cce(y, p, w=None):
    # d/dp of -sum y log(p / S), S = sum p: (-y / q + sum y) / S (no clipping active)
    y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
    s = p.sum(axis=-1, keepdims=True)
    return (-y / (p / s) + y.sum(axis=-1, keepdims=True)) / s * wscale(w, len(p))


def ref_cce_logits(y, z, w=None):
    return reduce64(-(y * log_softmax64(z)).sum(axis=-1), w)


def grad_cce_logits(y, z, w=None):
    y = np.asarray(y, np.float64)
    return (softmax64(z) * y.sum(axis=-1, keepdims=True) - y) * wscale(w, len(z))


def ref_scce(lab, p, w=None):
    return ref_cce(onehot(lab, p.shape[-1]), p, w)


def grad_scce(lab, p, w=None):
    return grad_cce(onehot(lab, p.shape[-1]), p, w)


def ref_scce_logits(lab, z, w=None):
    return ref_cce_logits(onehot(lab, z.shape[-1]), z, w)


def grad_scce_logits(lab, z, w=None):
    return grad_cce_logits(onehot(lab, z.shape[-1]), z, w)


def ref_bce(y, p, w=None):
    p = np.clip(np.asarray(p, np.float64), EPS, 1 - EPS)
    return reduce64(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=-1), w)


def grad_bce(y, p, w=None):
    p = np.asarray(p, np.float64)
    return (p - y) / (p * (1 - p) * p.shape[-1]) * wscale(w, len(p))


def ref_bce_logits(y, z, w=None):
    z = np.asarray(z, np.float64)
    return reduce64((np.logaddexp(0.0, z) - y * z).mean(axis=-1), w)


def grad_bce_logits(y, z, w=None):
    return (sigmoid64(z) - y) / z.shape[-1] * wscale(w, len(z))


def ref_mse(y, p, w=None):
    d = np.asarray(p, np.float64) - y
    return reduce64(np.square(d).reshape(len(d), -1).mean(axis=1), w)


def grad_mse(y, p, w=None):
    d = np.asarray(p, np.float64) - y
    ws = wscale(w, len(d)).reshape(-1, *([1] * (d.ndim - 1)))
    return 2 * d / d[0].size * ws


def ref_mae(y, p, w=None):
    d = np.asarray(p, np.float64) - y
    return reduce64(np.abs(d).reshape(len(d), -1).mean(axis=1), w)


def grad_mae(y, p, w=None):
    d = np.asarray(p, np.float64) - y
    ws = wscale(w, len(d)).reshape(-1, *([1] * (d.ndim - 1)))
    return np.sign(d) / d[0].size * ws


def central_fd(f, x, h=1e-6):
    """Central finite differences of a float64 function at every coordinate of x."""
    x = np.array(x, np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = (f(xp) - f(xm)) / (2 * h)
    return g


# --------------------------------------------------------------------------------------------
# loss cases

CASES = {
    # name: (keras name, class, from_logits, targets, input kind, ref, analytic gradient)
    "cce": ("categorical_crossentropy", losses.CategoricalCrossentropy, False, "soft", "probs", ref_cce, grad_cce),
    "cce_logits": ("categorical_crossentropy", losses.CategoricalCrossentropy, True, "soft", "logits", ref_cce_logits, grad_cce_logits),
    "scce": ("sparse_categorical_crossentropy", losses.SparseCategoricalCrossentropy, False, "sparse", "probs", ref_scce, grad_scce),
    "scce_logits": ("sparse_categorical_crossentropy", losses.SparseCategoricalCrossentropy, True, "sparse", "logits", ref_scce_logits, grad_scce_logits),
    "bce": ("binary_crossentropy", losses.BinaryCrossentropy, False, "binary", "sigmoid", ref_bce, grad_bce),
    "bce_logits": ("binary_crossentropy", losses.BinaryCrossentropy, True, "binary", "logits", ref_bce_logits, grad_bce_logits),
    "mse": ("mse", losses.MeanSquaredError, False, "real", "real", ref_mse, grad_mse),
    "mean_squared_error": ("mean_squared_error", losses.MeanSquaredError, False, "real3d", "real3d", ref_mse, grad_mse),
    "mae": ("mae", losses.MeanAbsoluteError, False, "real", "real", ref_mae, grad_mae),
    "mean_absolute_error": ("mean_absolute_error", losses.MeanAbsoluteError, False, "real3d", "real3d", ref_mae, grad_mae),
}  # fmt: skip


def make_loss(case: str, construct: str):
    name, cls, from_logits, *_ = CASES[case]
    if construct == "name":
        assert not from_logits
        return losses.get(name)
    if construct == "upper_name":
        return losses.get(name.upper())
    if construct == "class":
        return cls(from_logits=True) if from_logits else cls()
    config = {"from_logits": from_logits} if from_logits else {}
    return losses.get({"class_name": cls.__name__, "config": config})


def make_data(case: str, rng):
    """(y_true, prediction input as float32) for a case, away from clipping and kinks."""
    targets, kind = CASES[case][3], CASES[case][4]
    z = (rng.standard_normal((N, K)) * 0.7).astype(np.float32)
    if kind == "probs":
        pred = softmax64(z).astype(np.float32)  # every p in about [0.05, 0.7]
    elif kind == "sigmoid":
        pred = sigmoid64(z).astype(np.float32)
    elif kind == "logits":
        pred = (z * 2).astype(np.float32)
    elif kind == "real":
        pred = rng.standard_normal((N, K)).astype(np.float32)
    else:
        pred = rng.standard_normal((N, 2, 3)).astype(np.float32)
    if targets == "soft":
        y = rng.dirichlet(np.ones(K), size=N)
    elif targets == "sparse":
        y = rng.integers(0, K, size=N)
    elif targets == "binary":
        y = np.where(rng.random((N, K)) < 0.3, rng.random((N, K)), rng.random((N, K)) > 0.5)
    else:
        d = rng.uniform(0.05, 1.0, size=pred.shape) * rng.choice([-1.0, 1.0], size=pred.shape)
        y = pred.astype(np.float64) - d  # |y - pred| >= 0.05: no |.| kink within the FD step
    if targets != "sparse":
        y = np.asarray(y, np.float32).astype(np.float64)  # exactly representable in float32
    return y, pred


def loss_construct_params():
    out = []
    for case, spec in CASES.items():
        constructs = ["class", "config"] if spec[2] else ["name", "upper_name", "class", "config"]
        for c in constructs:
            out.append(pytest.param(case, c, id=f"{case}-{c}"))
    return out


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("case,construct", loss_construct_params())
def test_loss_value_and_grad_match_float64_reference(case, construct, weighted, rng):
    loss = make_loss(case, construct)
    _, cls, from_logits, _, _, ref, grad_ref = CASES[case]
    assert type(loss) is cls and getattr(loss, "from_logits", False) == from_logits
    y, pred = make_data(case, rng)
    w = rng.uniform(0.0, 2.0, size=N).astype(np.float32) if weighted else None
    if weighted:
        w[1] = 0.0
    w64 = None if w is None else w.astype(np.float64)

    value, grad = loss.value_and_grad(y, pred.copy(), w)
    expected = ref(y, pred.astype(np.float64), w64)
    assert isinstance(value, float)
    assert abs(value - expected) <= 2e-6 * max(1.0, abs(expected)), (value, expected)
    assert loss(y, pred.copy(), w) == pytest.approx(value, rel=1e-12)

    assert grad.shape == pred.shape
    analytic = grad_ref(y, pred.astype(np.float64), w64)
    numeric = central_fd(lambda p: ref(y, p, w64), pred.astype(np.float64))
    assert_close(analytic, numeric, rtol=1e-6, name="reference analytic vs finite differences")
    assert_close(grad, analytic, rtol=1e-5, name=f"{case} gradient vs analytic")
    assert_close(grad, numeric, rtol=1e-5, name=f"{case} gradient vs finite differences")
    if weighted:  # a zero-weight sample contributes nothing
        assert np.all(grad[1] == 0)


def test_loss_weights_scale_as_keras_sum_over_batch_size(rng):
    """L = sum(w_i l_i) / N: doubling every weight doubles the loss; w = 1 is no weights."""
    y, pred = make_data("scce_logits", rng)
    loss = losses.SparseCategoricalCrossentropy(from_logits=True)
    plain = loss(y, pred)
    assert loss(y, pred, np.ones(N)) == pytest.approx(plain, rel=1e-7)
    assert loss(y, pred, np.full(N, 2.0)) == pytest.approx(2 * plain, rel=1e-7)
    # not normalized by the sum of the weights
    w = np.zeros(N)
    w[0] = 1.0
    per0 = -log_softmax64(pred)[0, y[0]]
    assert loss(y, pred, w) == pytest.approx(per0 / N, rel=1e-6)


def test_sparse_labels_column_and_integral_floats_are_accepted(rng):
    y, pred = make_data("scce", rng)
    loss = losses.SparseCategoricalCrossentropy()
    value, grad = loss.value_and_grad(y, pred)
    for alt in (y[:, None], y.astype(np.float32), y.astype(np.uint8)):
        v2, g2 = loss.value_and_grad(alt, pred)
        assert v2 == value
        np.testing.assert_array_equal(g2, grad)


def test_categorical_crossentropy_normalizes_probabilities_like_keras(rng):
    """Keras divides y_pred by its row sum before clipping: scaling a row leaves the value."""
    y, pred = make_data("cce", rng)
    scaled = pred * np.array([2.0, 0.5, 3.0, 1.0, 0.25, 1.5], np.float32)[:, None]
    loss = losses.CategoricalCrossentropy()
    p = scaled.astype(np.float64)
    expected = ref_cce(y, p / p.sum(axis=-1, keepdims=True))
    assert loss(y, scaled) == pytest.approx(expected, rel=2e-6)


@pytest.mark.parametrize("case", ["cce", "scce"])
def test_crossentropy_gradient_of_unnormalized_probabilities(case, rng):
    y, pred = make_data(case, rng)
    pred = pred * np.float32(2.0)  # every row sums to 2
    loss = make_loss(case, "class")

    def keras_value(p):
        p = p / p.sum(axis=-1, keepdims=True)
        return ref_cce(y, p) if case == "cce" else ref_scce(y, p)

    _, grad = loss.value_and_grad(y, pred)
    assert_close(grad, central_fd(keras_value, pred.astype(np.float64)), rtol=1e-4)


@pytest.mark.parametrize("case", ["cce_logits", "scce_logits", "bce_logits"])
def test_crossentropy_on_rank3_outputs_averages_over_positions_like_keras(case, rng):
    z = rng.standard_normal((N, 3, K)).astype(np.float32)
    loss = make_loss(case, "class")
    if case == "scce_logits":
        lab = rng.integers(0, K, size=(N, 3))
        y = onehot(lab, K)
        label_arg = lab
    else:
        y = (
            rng.dirichlet(np.ones(K), size=(N, 3))
            if case == "cce_logits"
            else rng.random((N, 3, K))
        )
        y = y.astype(np.float32).astype(np.float64)
        label_arg = y
    if case == "bce_logits":
        per = (np.logaddexp(0.0, z.astype(np.float64)) - y * z).mean(axis=-1)
    else:
        per = -(y * log_softmax64(z)).sum(axis=-1)
    keras = float(per.mean())  # Keras: mean over N*T positions
    assert loss(label_arg, z) == pytest.approx(keras, rel=1e-5)


# --------------------------------------------------------------------------------------------
# fused logits path


def chain_softmax(p, g):
    """dL/dz from dL/dp through p = softmax(z): J^T g = p * (g - sum(p * g))."""
    return p * (g - (p * g).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("case", ["cce_onehot", "cce_soft", "scce", "bce"])
def test_fused_logits_path_equals_probability_path_chained(case, weighted, rng):
    z = (rng.standard_normal((N, K)) * 2).astype(np.float32)
    w = rng.uniform(0.1, 2.0, size=N).astype(np.float32) if weighted else None
    if case == "bce":
        loss = losses.get("binary_crossentropy")
        y = (rng.random((N, K)) > 0.5).astype(np.float32)
        p64 = sigmoid64(z)
    else:
        loss = losses.get(
            "sparse_categorical_crossentropy" if case == "scce" else "categorical_crossentropy"
        )
        lab = rng.integers(0, K, size=N)
        y = {"scce": lab, "cce_onehot": onehot(lab, K),
             "cce_soft": rng.dirichlet(np.ones(K), size=N)}[case]  # fmt: skip
        p64 = softmax64(z)
    assert loss.fused_activation == ("sigmoid" if case == "bce" else "softmax")
    assert not loss.from_logits
    p = p64.astype(np.float32)
    assert p.min() > 10 * EPS and p.max() < 1 - 10 * EPS  # the probability path does not clip

    v_fused, g_fused = loss.value_and_grad_logits(y, z.copy(), w)
    v_prob, g_prob = loss.value_and_grad(y, p.copy(), w)
    assert v_fused == pytest.approx(v_prob, rel=1e-5)
    g_prob = np.asarray(g_prob, np.float64)
    chained = g_prob * p64 * (1 - p64) if case == "bce" else chain_softmax(p64, g_prob)
    assert_close(g_fused, chained, rtol=1e-5, name="fused vs chained gradient")
    # and both against the float64 formula on the logits
    if case == "bce":
        ref, gref = ref_bce_logits(y, z, w), grad_bce_logits(y, z, w)
    else:
        y_dense = onehot(y, K) if case == "scce" else y
        ref, gref = ref_cce_logits(y_dense, z, w), grad_cce_logits(y_dense, z, w)
    assert v_fused == pytest.approx(ref, rel=2e-6)
    assert_close(g_fused, gref, rtol=1e-6, name="fused vs float64")


@pytest.mark.parametrize("from_logits_class", [False, True])
def test_fused_softmax_crossentropy_is_exact_for_huge_logits(from_logits_class):
    z = np.array([[0.0, 1000.0, -1000.0], [1000.0, -1000.0, 0.0], [5.0, 5.0, 5.0]], np.float32)
    lab = np.array([0, 1, 2])
    y = onehot(lab, 3)
    expected = ref_cce_logits(y, z)  # (1000 + 2000 + log 3) / 3
    assert expected == pytest.approx((3000 + math.log(3)) / 3, rel=1e-12)
    expected_grad = np.array([[-1, 1, 0], [1, -1, 0], [1 / 3, 1 / 3, -2 / 3]]) / 3
    for loss, labels in (
        (losses.SparseCategoricalCrossentropy(from_logits=from_logits_class), lab),
        (losses.CategoricalCrossentropy(from_logits=from_logits_class), y),
    ):
        if from_logits_class:
            value, grad = loss.value_and_grad(labels, z.copy())
            assert loss(labels, z) == pytest.approx(value, rel=1e-12)
        else:
            value, grad = loss.value_and_grad_logits(labels, z.copy())
        assert np.isfinite(value) and np.all(np.isfinite(grad))
        assert value == pytest.approx(expected, rel=1e-6)
        assert_close(grad, expected_grad, rtol=1e-6, name="huge-logit gradient")
        if not from_logits_class:  # the probability path clips at 1e-7: about -log(1e-7) per row
            clipped = loss.value_and_grad(labels, softmax64(z).astype(np.float32))[0]
            assert clipped < 20 < value


@pytest.mark.parametrize("from_logits_class", [False, True])
def test_fused_sigmoid_crossentropy_is_exact_for_huge_logits(from_logits_class):
    z = np.array([[1000.0, -1000.0], [-1000.0, 1000.0], [1000.0, -1000.0]], np.float32)
    y = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    expected = ref_bce_logits(y, z)
    assert expected == pytest.approx((1000 + 500 + 0) / 3, rel=1e-12)
    expected_grad = (sigmoid64(z) - y) / 2 / 3
    loss = losses.BinaryCrossentropy(from_logits=from_logits_class)
    if from_logits_class:
        value, grad = loss.value_and_grad(y, z.copy())
    else:
        value, grad = loss.value_and_grad_logits(y, z.copy())
        clipped = loss.value_and_grad(y, sigmoid64(z).astype(np.float32))[0]
        assert clipped < 20 < value
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert value == pytest.approx(expected, rel=1e-6)
    assert_close(grad, expected_grad, rtol=1e-6, name="huge-logit gradient")


# --------------------------------------------------------------------------------------------
# PyTorch


def torch_reduce(per, w, torch):
    if w is None:
        return per.mean()
    return (per * torch.as_tensor(w, dtype=torch.float64)).sum() / len(per)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_crossentropies_match_torch(weighted, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    z = (rng.standard_normal((N, K)) * 3).astype(np.float32)
    lab = rng.integers(0, K, size=N)
    soft = rng.dirichlet(np.ones(K), size=N).astype(np.float32)
    w = rng.uniform(0.1, 2.0, size=N).astype(np.float32) if weighted else None

    def torch_value_grad(fn, x):
        t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        out = fn(t)
        out.backward()
        return out.item(), t.grad.numpy()

    checks = [
        (losses.SparseCategoricalCrossentropy(from_logits=True), lab, z,
         lambda t: torch_reduce(F.cross_entropy(t, torch.as_tensor(lab), reduction="none"), w, torch)),
        (losses.CategoricalCrossentropy(from_logits=True), soft, z,
         lambda t: torch_reduce(F.cross_entropy(t, torch.as_tensor(soft, dtype=torch.float64), reduction="none"), w, torch)),
        (losses.SparseCategoricalCrossentropy(), lab, softmax64(z).astype(np.float32),
         lambda t: torch_reduce(F.nll_loss(torch.log(t), torch.as_tensor(lab), reduction="none"), w, torch)),
    ]  # fmt: skip
    for loss, target, x, fn in checks:
        value, grad = loss.value_and_grad(target, x.copy(), w)
        tv, tg = torch_value_grad(fn, x)
        assert value == pytest.approx(tv, rel=2e-6), type(loss).__name__
        if loss.from_logits:
            assert_close(grad, tg, rtol=1e-5, name=f"{type(loss).__name__} grad vs torch")
    if not weighted:  # torch's own mean reduction
        sc = losses.SparseCategoricalCrossentropy(from_logits=True)
        expected = F.cross_entropy(torch.tensor(z, dtype=torch.float64), torch.as_tensor(lab))
        assert sc(lab, z) == pytest.approx(expected.item(), rel=2e-6)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_binary_and_regression_losses_match_torch(weighted, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    z = (rng.standard_normal((N, K)) * 3).astype(np.float32)
    p = sigmoid64(z * 0.3).astype(np.float32)
    yb = (rng.random((N, K)) > 0.5).astype(np.float32)
    yr = rng.standard_normal((N, K)).astype(np.float32)
    w = rng.uniform(0.1, 2.0, size=N).astype(np.float32) if weighted else None
    wt = None if w is None else torch.tensor(w, dtype=torch.float64)[:, None]

    def t64(a):
        return torch.tensor(a, dtype=torch.float64)

    def fold(per):  # mean over every element, each sample's row weighted by w_i
        return per.mean() if wt is None else (per * wt).mean()

    bce_logits = F.binary_cross_entropy_with_logits(t64(z), t64(yb), weight=wt)
    bce = F.binary_cross_entropy(t64(p), t64(yb), weight=wt)
    mse = fold(F.mse_loss(t64(p), t64(yr), reduction="none"))
    mae = fold(F.l1_loss(t64(p), t64(yr), reduction="none"))
    assert losses.BinaryCrossentropy(from_logits=True)(yb, z, w) == pytest.approx(
        bce_logits.item(), rel=2e-6
    )
    assert losses.get("binary_crossentropy")(yb, p, w) == pytest.approx(bce.item(), rel=2e-6)
    assert losses.get("mse")(yr, p, w) == pytest.approx(mse.item(), rel=2e-6)
    assert losses.get("mae")(yr, p, w) == pytest.approx(mae.item(), rel=2e-6)
    if w is None:
        assert losses.get("mse")(yr, p) == pytest.approx(
            F.mse_loss(t64(p), t64(yr)).item(), rel=2e-6
        )


# --------------------------------------------------------------------------------------------
# bad labels

Y_OR_LABELS = r"\by\b|labels"


@pytest.mark.parametrize(
    "labels",
    [[0, 1, 3], [-1, 0, 1], [0, 7, 2], [0.5, 1, 2], [0, 1], [0, 1, 2, 0], [[0, 1], [1, 2], [2, 0]]],
    ids=["too_big", "negative", "way_out", "fractional", "too_few", "too_many", "two_columns"],
)
@pytest.mark.parametrize("from_logits", [False, True])
def test_sparse_crossentropy_rejects_bad_labels(labels, from_logits):
    p = np.full((3, 3), 1 / 3, np.float32)
    loss = losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    with pytest.raises(ValueError, match=Y_OR_LABELS):
        loss(labels, p)
    with pytest.raises(ValueError, match=Y_OR_LABELS):
        loss.value_and_grad_logits(labels, p)
    with pytest.raises(ValueError, match=Y_OR_LABELS):
        pyconv.metrics.sparse_categorical_accuracy(labels, p)


@pytest.mark.parametrize("name", ["categorical_crossentropy", "binary_crossentropy", "mse", "mae"])
@pytest.mark.parametrize("shape", [(3, 4), (3, 2), (2, 3), (3, 3, 2), (4, 3)])
def test_dense_targets_with_the_wrong_shape_raise(name, shape):
    p = np.full((3, 3), 0.4, np.float32)
    y = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=Y_OR_LABELS):
        losses.get(name)(y, p)


def test_targets_of_shape_n_fit_an_n_by_1_output():
    p = np.array([[0.2], [0.7], [0.9]], np.float32)
    y = np.array([0.0, 1.0, 1.0])
    for name in ("binary_crossentropy", "mse"):
        loss = losses.get(name)
        assert loss(y, p) == pytest.approx(loss(y[:, None], p), rel=1e-12)


@pytest.mark.parametrize("name", ["categorical_crossentropy", "binary_crossentropy", "mse", "mae"])
@pytest.mark.parametrize(
    "y_shape,p_shape", [((4, 3), (6, 2)), ((3, 2), (2, 3)), ((12,), (6, 2))], ids=str
)
def test_dense_targets_with_another_sample_count_raise(name, y_shape, p_shape):
    """Same number of values but another number of samples (e.g. transposed): no reshape."""
    p = np.full(p_shape, 0.5, np.float32)
    y = np.zeros(y_shape, np.float32)
    with pytest.raises(ValueError, match=Y_OR_LABELS):
        losses.get(name)(y, p)


def test_sample_weight_of_the_wrong_length_raises():
    p = np.full((3, 3), 1 / 3, np.float32)
    with pytest.raises(ValueError, match="sample_weight"):
        losses.SparseCategoricalCrossentropy()([0, 1, 2], p, sample_weight=[1.0, 2.0])


def test_fit_with_out_of_range_labels_raises_naming_labels():
    pyconv.set_random_seed(0)
    model = pyconv.Sequential([pyconv.Input((2,)), pyconv.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.zeros((4, 2), np.float32)
    before = model.get_weights()
    with pytest.raises(ValueError, match=Y_OR_LABELS):
        model.fit(x, np.array([0, 1, 2, 3]), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=Y_OR_LABELS):
        model.evaluate(x, np.array([0, 1, -1, 2]), verbose=0)
    for a, b in zip(before, model.get_weights()):  # the failing batch did not update anything
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------
# optimizers

SHAPES = {"w": (3, 2), "b": (2,)}
STEPS = 6
GRAD_SCALES = [1.0, 3.0, 0.2, 1.5, 0.1, 2.0]  # varying sizes so AMSGrad's max matters


def initial_values(rng):
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}


def grad_sequence(rng):
    seq = []
    for scale in GRAD_SCALES[:STEPS]:
        step = {}
        for k, s in SHAPES.items():
            mag = rng.uniform(0.5, 2.0, size=s) * rng.choice([-1.0, 1.0], size=s) * scale
            step[k] = mag.astype(np.float32)
        seq.append(step)
    return seq


def run_pyconv(opt, init, grads):
    """Apply opt over the gradient sequence; the values after every step."""
    variables = [Variable(f"opt_test/{k}", v.copy()) for k, v in init.items()]
    out = []
    for step in grads:
        for var, k in zip(variables, init):
            var.grad = step[k].copy()
        opt.apply(variables)
        out.append({k: var.value.copy() for var, k in zip(variables, init)})
    assert opt.iterations == len(grads)
    return out


def run_torch(make_opt, init, grads, torch):
    params = {k: torch.tensor(v.astype(np.float64), requires_grad=True) for k, v in init.items()}
    opt = make_opt(list(params.values()))
    out = []
    for step in grads:
        for k, p in params.items():
            p.grad = torch.tensor(step[k].astype(np.float64))
        opt.step()
        out.append({k: p.detach().numpy().copy() for k, p in params.items()})
    return out


TORCH_CASES = {
    "sgd": (lambda: optimizers.SGD(0.1), lambda t, p: t.optim.SGD(p, lr=0.1)),
    "sgd_momentum": (lambda: optimizers.SGD(0.1, momentum=0.9),
                     lambda t, p: t.optim.SGD(p, lr=0.1, momentum=0.9)),
    "sgd_nesterov": (lambda: optimizers.SGD(0.05, momentum=0.8, nesterov=True),
                     lambda t, p: t.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True)),
    "adam": (lambda: optimizers.Adam(0.01, epsilon=1e-12),
             lambda t, p: t.optim.Adam(p, lr=0.01, eps=1e-12)),
    "adam_betas": (lambda: optimizers.Adam(0.02, beta_1=0.8, beta_2=0.95, epsilon=1e-12),
                   lambda t, p: t.optim.Adam(p, lr=0.02, betas=(0.8, 0.95), eps=1e-12)),
    "amsgrad": (lambda: optimizers.Adam(0.01, beta_2=0.9, epsilon=1e-12, amsgrad=True),
                lambda t, p: t.optim.Adam(p, lr=0.01, betas=(0.9, 0.9), eps=1e-12, amsgrad=True)),
    "adamw": (lambda: optimizers.Adam(0.01, epsilon=1e-12, weight_decay=0.1),
              lambda t, p: t.optim.AdamW(p, lr=0.01, eps=1e-12, weight_decay=0.1)),
    "rmsprop": (lambda: optimizers.RMSprop(0.01, rho=0.9, epsilon=1e-12),
                lambda t, p: t.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-12)),
    "rmsprop_momentum": (lambda: optimizers.RMSprop(0.01, rho=0.8, momentum=0.7, epsilon=1e-12),
                         lambda t, p: t.optim.RMSprop(p, lr=0.01, alpha=0.8, momentum=0.7, eps=1e-12)),
    "rmsprop_centered": (lambda: optimizers.RMSprop(0.01, rho=0.9, centered=True, epsilon=1e-12),
                         lambda t, p: t.optim.RMSprop(p, lr=0.01, alpha=0.9, centered=True, eps=1e-12)),
    "rmsprop_centered_momentum": (
        lambda: optimizers.RMSprop(0.005, rho=0.9, momentum=0.5, centered=True, epsilon=1e-12),
        lambda t, p: t.optim.RMSprop(p, lr=0.005, alpha=0.9, momentum=0.5, centered=True, eps=1e-12)),
}  # fmt: skip


def assert_trajectory_close(ours, ref, init, rtol, name):
    """Compare displacements from init step by step, relative to the largest displacement."""
    for t, (a, b) in enumerate(zip(ours, ref)):
        for k in init:
            da = a[k].astype(np.float64) - init[k]
            db = b[k] - init[k].astype(np.float64)
            scale = float(np.abs(db).max())
            err = float(np.abs(da - db).max())
            assert err <= rtol * scale + 2e-7, (
                f"{name} step {t + 1} {k}: err {err:.3g} scale {scale:.3g}"
            )


@pytest.mark.parametrize("case", list(TORCH_CASES))
def test_optimizer_matches_torch(case, rng):
    torch = pytest.importorskip("torch")
    make_ours, make_theirs = TORCH_CASES[case]
    init, grads = initial_values(rng), grad_sequence(rng)
    ours = run_pyconv(make_ours(), init, grads)
    ref = run_torch(lambda p: make_theirs(torch, p), init, grads, torch)
    assert_trajectory_close(ours, ref, init, 1e-4, case)


def test_amsgrad_and_momentum_change_the_trajectory(rng):
    """The comparisons above are discriminating: the variants really differ on this sequence."""
    init, grads = initial_values(rng), grad_sequence(rng)
    pairs = [
        (optimizers.Adam(0.01, beta_2=0.9, epsilon=1e-12), optimizers.Adam(0.01, beta_2=0.9, epsilon=1e-12, amsgrad=True)),
        (optimizers.SGD(0.05, momentum=0.8), optimizers.SGD(0.05, momentum=0.8, nesterov=True)),
        (optimizers.RMSprop(0.01), optimizers.RMSprop(0.01, centered=True)),
    ]  # fmt: skip
    for a, b in pairs:
        ta, tb = run_pyconv(a, init, grads)[-1], run_pyconv(b, init, grads)[-1]
        assert max(float(np.abs(ta[k] - tb[k]).max()) for k in init) > 1e-3


def keras_two_steps(kind, cfg, w0, g1, g2):
    """Keras 3's update rules (keras/src/optimizers/*.py) written out, float64."""
    w = w0.astype(np.float64)
    lr = cfg["lr"]
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    vhat = np.zeros_like(w)
    mg = np.zeros_like(w)
    for t, g in ((1, g1.astype(np.float64)), (2, g2.astype(np.float64))):
        if cfg.get("wd"):
            w = w - w * cfg["wd"] * lr
        if kind == "sgd":
            mu = cfg.get("momentum", 0.0)
            if not mu:
                w = w - lr * g
            else:
                m = mu * m - lr * g
                w = w + (mu * m - lr * g if cfg.get("nesterov") else m)
        elif kind == "adam":
            b1, b2, eps = cfg["b1"], cfg["b2"], cfg["eps"]
            alpha = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
            m = m + (g - m) * (1 - b1)
            v = v + (g * g - v) * (1 - b2)
            if cfg.get("amsgrad"):
                vhat = np.maximum(vhat, v)
                w = w - m * alpha / (np.sqrt(vhat) + eps)
            else:
                w = w - m * alpha / (np.sqrt(v) + eps)
        else:  # rmsprop
            rho, eps, mu = cfg["rho"], cfg["eps"], cfg.get("momentum", 0.0)
            v = rho * v + (1 - rho) * g * g
            if cfg.get("centered"):
                mg = rho * mg + (1 - rho) * g
                denom = v - mg * mg + eps
            else:
                denom = v + eps
            inc = lr * g / np.sqrt(denom)
            if mu:
                m = mu * m + inc
                w = w - m
            else:
                w = w - inc
        if t == 1:
            w1 = w.copy()
    return w1, w


KERAS_CASES = {
    "sgd": ("sgd", {"lr": 0.1}, lambda: optimizers.SGD(0.1)),
    "sgd_momentum": ("sgd", {"lr": 0.1, "momentum": 0.9}, lambda: optimizers.SGD(0.1, momentum=0.9)),
    "sgd_nesterov": ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True},
                     lambda: optimizers.SGD(0.1, momentum=0.9, nesterov=True)),
    "sgd_weight_decay": ("sgd", {"lr": 0.1, "wd": 0.05}, lambda: optimizers.SGD(0.1, weight_decay=0.05)),
    # a large epsilon makes its placement (added to sqrt(v), not bias-corrected) visible
    "adam": ("adam", {"lr": 0.01, "b1": 0.9, "b2": 0.999, "eps": 0.1},
             lambda: optimizers.Adam(0.01, epsilon=0.1)),
    "adam_default_eps": ("adam", {"lr": 0.001, "b1": 0.9, "b2": 0.999, "eps": 1e-7},
                         lambda: optimizers.get("adam")),
    "amsgrad": ("adam", {"lr": 0.01, "b1": 0.8, "b2": 0.5, "eps": 0.05, "amsgrad": True},
                lambda: optimizers.Adam(0.01, beta_1=0.8, beta_2=0.5, epsilon=0.05, amsgrad=True)),
    "rmsprop": ("rmsprop", {"lr": 0.01, "rho": 0.9, "eps": 0.1},
                lambda: optimizers.RMSprop(0.01, epsilon=0.1)),
    "rmsprop_default": ("rmsprop", {"lr": 0.001, "rho": 0.9, "eps": 1e-7},
                        lambda: optimizers.get("rmsprop")),
    "rmsprop_momentum": ("rmsprop", {"lr": 0.01, "rho": 0.8, "eps": 0.1, "momentum": 0.6},
                         lambda: optimizers.RMSprop(0.01, rho=0.8, momentum=0.6, epsilon=0.1)),
    "rmsprop_centered": ("rmsprop", {"lr": 0.01, "rho": 0.9, "eps": 0.1, "centered": True},
                         lambda: optimizers.RMSprop(0.01, centered=True, epsilon=0.1)),
}  # fmt: skip


@pytest.mark.parametrize("case", list(KERAS_CASES))
def test_optimizer_first_two_steps_follow_keras_formulas(case, rng):
    kind, cfg, make = KERAS_CASES[case]
    init, grads = initial_values(rng), grad_sequence(rng)[:2]
    ours = run_pyconv(make(), init, grads)
    for k in init:
        w1, w2 = keras_two_steps(kind, cfg, init[k], grads[0][k], grads[1][k])
        ref = [{k: w1}, {k: w2}]
        assert_trajectory_close(ours, ref, {k: init[k]}, 2e-5, f"{case}/{k}")


def test_optimizer_does_not_touch_variables_without_gradient(rng):
    a = Variable("nograd/a", rng.standard_normal(3))
    b = Variable("nograd/b", rng.standard_normal(3))
    before = b.value.copy()
    a.grad = np.ones(3, np.float32)
    opt = optimizers.Adam(0.1)
    opt.apply([a, b])
    np.testing.assert_array_equal(b.value, before)
    assert "nograd/b" not in opt.slots


# --------------------------------------------------------------------------------------------
# clipping


def one_sgd_step(opt, grads):
    """Update zero-valued variables with SGD(lr=1): the update is minus the used gradient."""
    variables = []
    for i, g in enumerate(grads):
        var = Variable(f"clip/{i}", np.zeros(len(g), np.float32))
        var.grad = np.array(g, np.float32)
        variables.append(var)
    opt.apply(variables)
    return [-var.value.astype(np.float64) for var in variables]


def test_clipnorm_clips_each_gradient_to_its_own_norm():
    big, small = [3.0, 4.0, 0.0], [0.3, 0.4]  # norms 5 and 0.5
    used = one_sgd_step(optimizers.SGD(1.0, clipnorm=1.0), [big, small])
    np.testing.assert_allclose(used[0], [0.6, 0.8, 0.0], rtol=1e-6)
    np.testing.assert_allclose(used[1], small, rtol=1e-6)  # under the norm: unchanged
    assert np.linalg.norm(used[0]) == pytest.approx(1.0, rel=1e-6)


def test_global_clipnorm_scales_all_gradients_together():
    grads = [[3.0, 4.0, 0.0], [0.3, 0.4]]
    gnorm = math.sqrt(25 + 0.25)
    used = one_sgd_step(optimizers.SGD(1.0, global_clipnorm=2.0), grads)
    for u, g in zip(used, grads):
        np.testing.assert_allclose(u, np.array(g) * 2.0 / gnorm, rtol=1e-6)
    assert math.sqrt(sum(float(np.square(u).sum()) for u in used)) == pytest.approx(2.0, rel=1e-6)
    # directions are kept: the small gradient is scaled too (unlike clipnorm)
    used = one_sgd_step(optimizers.SGD(1.0, global_clipnorm=10.0), grads)
    for u, g in zip(used, grads):
        np.testing.assert_allclose(u, g, rtol=1e-6)


def test_clipvalue_clips_elementwise():
    used = one_sgd_step(optimizers.SGD(1.0, clipvalue=0.5), [[3.0, -4.0, 0.2, -0.5]])
    np.testing.assert_allclose(used[0], [0.5, -0.5, 0.2, -0.5], rtol=1e-6)


def test_clipping_applies_before_adam_moments():
    """With clipnorm the first Adam step sees the clipped gradient (its direction is kept)."""
    g = np.array([30.0, 40.0], np.float32)
    var = Variable("clipadam/v", np.zeros(2, np.float32))
    var.grad = g.copy()
    opt = optimizers.Adam(0.1, epsilon=0.5, clipnorm=1.0)
    opt.apply([var])
    gc = g / 50.0
    m, v = 0.1 * gc, 0.001 * gc * gc
    alpha = 0.1 * math.sqrt(1 - 0.999) / (1 - 0.9)
    np.testing.assert_allclose(var.value, -m * alpha / (np.sqrt(v) + 0.5), rtol=1e-5)


@pytest.mark.parametrize("arg", ["clipnorm", "clipvalue", "global_clipnorm", "weight_decay"])
@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_invalid_clip_arguments_raise(arg, bad):
    with pytest.raises(ValueError, match=arg):
        optimizers.SGD(0.1, **{arg: bad})


# --------------------------------------------------------------------------------------------
# argument checks


@pytest.mark.parametrize(
    "lr,exc",
    [(0, ValueError), (0.0, ValueError), (-0.01, ValueError), (float("nan"), ValueError),
     (float("inf"), ValueError), ("0.1", TypeError), (None, TypeError), (True, TypeError),
     ([0.1], TypeError)],
    ids=["zero_int", "zero", "negative", "nan", "inf", "str", "none", "bool", "list"],
)  # fmt: skip
@pytest.mark.parametrize("cls", [optimizers.SGD, optimizers.Adam, optimizers.RMSprop])
def test_invalid_learning_rate_raises(cls, lr, exc):
    with pytest.raises(exc, match="learning_rate"):
        cls(learning_rate=lr)
    opt = cls(learning_rate=0.5)
    with pytest.raises(exc, match="learning_rate"):
        opt.learning_rate = lr
    assert opt.learning_rate == 0.5  # a rejected value leaves the old one


def test_valid_learning_rates_are_stored_as_floats():
    for lr in (1, 0.25, np.float32(0.125), np.float64(1e-5)):
        opt = optimizers.SGD(learning_rate=lr)
        assert type(opt.learning_rate) is float and opt.learning_rate == float(lr)


@pytest.mark.parametrize(
    "momentum,exc",
    [(-0.1, ValueError), (1.0, ValueError), (1.5, ValueError), (float("nan"), ValueError),
     ("0.9", TypeError), (None, TypeError)],
    ids=["negative", "one", "above_one", "nan", "str", "none"],
)  # fmt: skip
@pytest.mark.parametrize("cls", [optimizers.SGD, optimizers.RMSprop])
def test_invalid_momentum_raises(cls, momentum, exc):
    with pytest.raises(exc) as info:
        cls(learning_rate=0.1, momentum=momentum)
    if exc is ValueError:
        assert "momentum" in str(info.value)


@pytest.mark.parametrize(
    "kwargs", [{"beta_1": 1.0}, {"beta_1": -0.1}, {"beta_2": 1.0}, {"beta_2": 2.0}]
)
def test_invalid_adam_betas_raise(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        optimizers.Adam(**kwargs)


@pytest.mark.parametrize("rho", [-0.5, 1.0])
def test_invalid_rmsprop_rho_raises(rho):
    with pytest.raises(ValueError, match="rho"):
        optimizers.RMSprop(rho=rho)


# --------------------------------------------------------------------------------------------
# get / serialize


@pytest.mark.parametrize(
    "name,cls,lr",
    [("sgd", optimizers.SGD, 0.01), ("SGD", optimizers.SGD, 0.01), ("adam", optimizers.Adam, 0.001),
     ("Adam", optimizers.Adam, 0.001), ("rmsprop", optimizers.RMSprop, 0.001),
     ("RMSprop", optimizers.RMSprop, 0.001)],
)  # fmt: skip
def test_get_optimizer_by_name(name, cls, lr):
    opt = optimizers.get(name)
    assert type(opt) is cls
    assert opt.learning_rate == lr and opt.iterations == 0
    assert optimizers.get(opt) is opt
    assert optimizers.get(name) is not opt  # a fresh optimizer each time


@pytest.mark.parametrize("bad", ["adamw", "", 3, None, {"class_name": "Nadam", "config": {}}])
def test_get_unknown_optimizer_raises(bad):
    with pytest.raises(ValueError, match="optimizer"):
        optimizers.get(bad)


ROUND_TRIP = [
    lambda: optimizers.SGD(0.05, momentum=0.9, nesterov=True, clipnorm=1.0),
    lambda: optimizers.SGD(),
    lambda: optimizers.Adam(0.002, beta_1=0.8, beta_2=0.99, epsilon=1e-6, amsgrad=True, global_clipnorm=2.0),
    lambda: optimizers.RMSprop(0.003, rho=0.8, momentum=0.5, centered=True, clipvalue=0.5, weight_decay=1e-3, name="my_rms"),
]  # fmt: skip


@pytest.mark.parametrize("make", ROUND_TRIP, ids=["sgd_nesterov", "sgd", "adam", "rmsprop"])
def test_optimizer_config_round_trip(make, rng):
    opt = make()
    spec = json.loads(json.dumps(optimizers.serialize(opt)))  # plain JSON, as saved in files
    assert spec["class_name"] == type(opt).__name__
    restored = optimizers.get(spec)
    assert type(restored) is type(opt)
    assert restored.get_config() == opt.get_config()
    assert restored.get_config()["learning_rate"] == opt.learning_rate
    init, grads = initial_values(rng), grad_sequence(rng)[:3]
    a, b = run_pyconv(opt, init, grads), run_pyconv(restored, init, grads)
    for k in init:  # the restored optimizer updates identically
        np.testing.assert_array_equal(a[-1][k], b[-1][k])


def test_loss_get_and_serialize_round_trip():
    for loss in (losses.CategoricalCrossentropy(from_logits=True), losses.BinaryCrossentropy(),
                 losses.get("mse"), losses.get("sparse_categorical_crossentropy")):  # fmt: skip
        restored = losses.get(json.loads(json.dumps(losses.serialize(loss))))
        assert type(restored) is type(loss)
        assert restored.get_config() == loss.get_config()
        assert getattr(restored, "from_logits", False) == getattr(loss, "from_logits", False)
    with pytest.raises(ValueError, match="loss"):
        losses.get("hinge")
