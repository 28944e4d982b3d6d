"""Every layer: forward against an independent float64 formula, backward against finite
differences, configs that round-trip, and argument errors that name the argument."""

from __future__ import annotations

import numpy as np
import pytest
import ref64
from conftest import assert_close
from gradcheck import check_layer

import pyconv
from pyconv import layers as L


def distinct(rng, shape, step=0.05):
    """Values with gaps >= step between any two (no max-pool ties under +-h perturbations)."""
    n = int(np.prod(shape))
    return ((rng.permutation(n) - n / 2 + 0.5) * step).reshape(shape).astype(np.float32)


def to_nchw(x):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def hwio_to_oihw(w):
    return np.ascontiguousarray(w.transpose(3, 2, 0, 1))


# --- Dense -------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 6)])
def test_dense_matches_formula_and_finite_differences(rng, shape):
    layer = L.Dense(4, activation="tanh")
    x = rng.standard_normal(shape).astype(np.float32)
    y = check_layer(layer, x, rng)
    k, b = layer.get_weights()
    assert_close(y, np.tanh(x.astype(np.float64) @ k + b), 1e-5, "dense")
    assert k.shape == (shape[-1], 4) and b.shape == (4,)


def test_dense_without_bias(rng):
    layer = L.Dense(3, use_bias=False)
    check_layer(layer, rng.standard_normal((4, 5)), rng)
    assert len(layer.weights) == 1 and layer.count_params() == 15


# --- Conv2D ------------------------------------------------------------------------------

CONV_CASES = [
    dict(filters=4, kernel_size=3, activation="tanh"),
    dict(filters=3, kernel_size=3, strides=2, padding="same", activation="elu"),
    dict(filters=4, kernel_size=(2, 3), dilation_rate=2, padding="same", activation="sigmoid"),
    dict(filters=4, kernel_size=3, groups=2, padding="same"),
    dict(filters=2, kernel_size=1, use_bias=False, activation="softplus"),
    dict(filters=5, kernel_size=3),  # (relu kinks break finite differences on the kernel)
]


@pytest.mark.parametrize(
    "cfg", CONV_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items())
)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_conv2d_matches_reference_and_finite_differences(rng, cfg, data_format):
    layer = L.Conv2D(data_format=data_format, **cfg)
    x = rng.standard_normal((2, 7, 8, 4)).astype(np.float32)
    xin = x if data_format == "channels_last" else to_nchw(x)
    y = check_layer(layer, xin, rng)
    w = layer.get_weights()[0]
    b = layer.get_weights()[1] if layer.use_bias else None
    k, s, d = layer.kernel_size, layer.strides, layer.dilation_rate
    pads = (0, 0, 0, 0)
    if layer.padding == "same":
        pads = (*ref64.resolve_same(7, k[0], s[0], d[0]), *ref64.resolve_same(8, k[1], s[1], d[1]))
    z = ref64.conv2d(to_nchw(x), hwio_to_oihw(w), b, s, pads, d, layer.groups)
    act = pyconv.activations.get(cfg.get("activation"))
    ref = act.forward(z.astype(np.float32))  # activation applied to the float64 reference
    ours = y if data_format == "channels_first" else to_nchw(y)
    assert_close(ours, ref, 1e-4, "conv2d layer")
    assert y.shape[1:] == layer.output_shape


def test_conv2d_keras_kernel_shape_and_same_padding():
    layer = L.Conv2D(8, (3, 5), strides=2, padding="same")
    assert layer.build_for((9, 10, 3)) == (5, 5, 8)
    assert layer.kernel.shape == (3, 5, 3, 8)
    assert layer.count_params() == 3 * 5 * 3 * 8 + 8


# --- pooling -----------------------------------------------------------------------------

POOLS = [
    (L.MaxPooling2D, dict()),
    (L.MaxPooling2D, dict(pool_size=3, strides=1, padding="same")),
    (L.MaxPooling2D, dict(pool_size=(2, 3), strides=(1, 2))),
    (L.AveragePooling2D, dict()),
    (L.AveragePooling2D, dict(pool_size=3, strides=2, padding="same")),
    (L.GlobalAveragePooling2D, dict()),
    (L.GlobalMaxPooling2D, dict()),
    (L.GlobalAveragePooling2D, dict(keepdims=True)),
]


@pytest.mark.parametrize(
    "cls,cfg", POOLS, ids=lambda p: p.__name__ if isinstance(p, type) else str(p)
)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_pooling_finite_differences(rng, cls, cfg, data_format):
    x = distinct(rng, (2, 6, 7, 3))
    xin = x if data_format == "channels_last" else to_nchw(x)
    layer = cls(data_format=data_format, **cfg)
    y = check_layer(layer, xin, rng, h=1e-3)
    assert y.shape[1:] == layer.output_shape


def test_max_pooling_same_matches_reference(rng):
    x = distinct(rng, (2, 5, 5, 3))
    y = L.MaxPooling2D(pool_size=2, padding="same")(x)
    ref = ref64.max_pool2d(to_nchw(x), (2, 2), (2, 2), (0, 1, 0, 1))
    assert_close(to_nchw(y), ref, 0, "max pool same")


def test_average_pooling_same_excludes_padding(rng):
    x = rng.standard_normal((1, 3, 3, 2)).astype(np.float32)
    y = L.AveragePooling2D(pool_size=2, padding="same")(x)
    # the last window covers one real row/column: its mean is that cell alone
    assert_close(y[0, 1, 1], x[0, 2, 2], 1e-6, "corner")
    assert_close(y[0, 0, 0], x[0, :2, :2].mean(axis=(0, 1)), 1e-6, "first window")


# --- BatchNormalization ------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,axis",
    [((6, 4, 5, 3), -1), ((6, 3, 4, 5), 1), ((8, 5), -1)],
    ids=["nhwc", "nchw", "dense"],
)
def test_batchnorm_training_formula_and_finite_differences(rng, shape, axis):
    layer = L.BatchNormalization(
        axis=axis, gamma_initializer="random_normal", beta_initializer="random_normal"
    )
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    y = check_layer(layer, x, rng, tol=3e-2)
    gamma, beta, mm, mv = layer.get_weights()
    ax = axis % len(shape)
    red = tuple(i for i in range(len(shape)) if i != ax)
    bshape = [1] * len(shape)
    bshape[ax] = -1
    x64 = x.astype(np.float64)
    mean, var = x64.mean(axis=red), x64.var(axis=red)
    ref = (x64 - mean.reshape(bshape)) / np.sqrt(var.reshape(bshape) + 1e-3) * gamma.reshape(
        bshape
    ) + beta.reshape(bshape)
    assert_close(y, ref, 1e-5, "batchnorm training")


def test_batchnorm_moving_statistics_and_inference(rng):
    layer = L.BatchNormalization(momentum=0.9)
    x = (rng.standard_normal((32, 3)) * 2 + 5).astype(np.float32)
    layer.build_for((3,))
    layer.forward(x, training=True)
    _, _, mm, mv = layer.get_weights()
    assert_close(mm, 0.1 * x.mean(axis=0), 1e-5, "moving mean")
    assert_close(mv, 0.9 + 0.1 * x.astype(np.float64).var(axis=0), 1e-5, "moving variance")
    y = layer(x, training=False)
    assert_close(y, (x - mm) / np.sqrt(mv + 1e-3), 1e-5, "inference")
    check_layer(layer, x, rng, training=False)  # inference backward is the affine map's


def test_batchnorm_frozen_runs_in_inference_mode(rng):
    layer = L.BatchNormalization()
    x = rng.standard_normal((16, 4)).astype(np.float32)
    layer.build_for((4,))
    layer.trainable = False
    before = layer.get_weights()
    y, _ = layer.forward(x, training=True)
    for a, b in zip(before, layer.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert_close(y, x / np.sqrt(1 + 1e-3), 1e-6, "frozen batchnorm")
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 4


def test_batchnorm_param_counts():
    layer = L.BatchNormalization()
    layer.build_for((8, 8, 128))
    assert layer.count_params() == 512
    assert len(layer.trainable_weights) == 2 and len(layer.non_trainable_weights) == 2


# --- activations, dropout, shape layers ---------------------------------------------------


ACTS = ["relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus", "softmax", "linear"]


def _act_ref(name, x):
    x = x.astype(np.float64)
    return {
        "relu": lambda: np.maximum(x, 0),
        "leaky_relu": lambda: np.where(x > 0, x, 0.2 * x),
        "elu": lambda: np.where(x > 0, x, np.expm1(x)),
        "sigmoid": lambda: 1 / (1 + np.exp(-x)),
        "tanh": lambda: np.tanh(x),
        "softplus": lambda: np.log1p(np.exp(x)),
        "softmax": lambda: (
            np.exp(x - x.max(-1, keepdims=True))
            / np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)
        ),
        "linear": lambda: x,
    }[name]()


@pytest.mark.parametrize("name", ACTS)
def test_activation_layers(rng, name):
    x = distinct(rng, (3, 4, 5), 0.07)
    y = check_layer(L.Activation(name), x, rng, h=1e-3)
    assert_close(y, _act_ref(name, x), 1e-5, name)


@pytest.mark.parametrize(
    "layer,ref",
    [
        (lambda: L.ReLU(max_value=1.0), lambda x: np.clip(x, 0, 1)),
        (lambda: L.LeakyReLU(0.1), lambda x: np.where(x > 0, x, 0.1 * x)),
        (lambda: L.ELU(0.5), lambda x: np.where(x > 0, x, 0.5 * np.expm1(x))),
        (lambda: L.Softmax(), lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True)),
    ],
    ids=["relu6like", "leaky", "elu", "softmax"],
)
def test_activation_layer_classes(rng, layer, ref):
    x = distinct(rng, (2, 9), 0.17)
    y = check_layer(layer(), x, rng, h=1e-3)
    assert_close(y, ref(x.astype(np.float64)), 1e-5, "activation")


def test_softmax_is_exact_for_huge_logits():
    y = L.Softmax()(np.array([[1000.0, 0.0, -1000.0]]))
    np.testing.assert_allclose(y, [[1.0, 0.0, 0.0]])


def test_dropout_training_mask_and_scaling(rng):
    layer = L.Dropout(0.4, seed=3)
    x = rng.standard_normal((200, 50)).astype(np.float32) + 3
    y, mask = layer.forward(x, training=True)
    dropped = y == 0
    assert 0.35 < dropped.mean() < 0.45
    np.testing.assert_allclose(y[~dropped], x[~dropped] / 0.6, rtol=1e-6)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx = layer.backward(mask, dy)
    np.testing.assert_allclose(dx, np.where(dropped, 0, dy / 0.6), rtol=1e-6)
    np.testing.assert_array_equal(layer(x, training=False), x)


def test_dropout_gradient_with_a_fixed_mask(rng):
    layer = L.Dropout(0.3)
    check_layer(
        layer,
        rng.standard_normal((4, 6)),
        rng,
        reset=lambda: setattr(layer, "_rng", np.random.default_rng(7)),
    )


def test_dropout_noise_shape_broadcasts_one_mask(rng):
    layer = L.Dropout(0.5, noise_shape=(None, 1, 1, None), seed=1)
    y = layer(np.ones((3, 4, 5, 6), np.float32), training=True)
    assert np.all(y == y[:, :1, :1, :])


def test_flatten_and_reshape(rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    check_layer(L.Flatten(), x, rng)
    assert L.Flatten()(x).shape == (2, 60)
    first = L.Flatten(data_format="channels_first")  # Keras: flattens (N, H, W, C) order
    check_layer(first, x, rng)
    np.testing.assert_array_equal(first(x), x.transpose(0, 2, 3, 1).reshape(2, -1))
    r = L.Reshape((4, -1))
    check_layer(r, x, rng)
    assert r(x).shape == (2, 4, 15)


# --- configs and arguments ---------------------------------------------------------------

ALL_LAYERS = [
    lambda: L.Conv2D(
        4,
        3,
        strides=2,
        padding="same",
        activation="relu",
        kernel_regularizer=pyconv.regularizers.L2(1e-3),
    ),
    lambda: L.Dense(3, activation="softmax", kernel_initializer="he_normal", bias_regularizer="l1"),
    lambda: L.MaxPooling2D(3, strides=1, padding="same"),
    lambda: L.AveragePooling2D(2),
    lambda: L.GlobalAveragePooling2D(),
    lambda: L.GlobalMaxPooling2D(keepdims=True),
    lambda: L.BatchNormalization(momentum=0.9, epsilon=1e-5),
    lambda: L.Dropout(0.25, seed=4),
    lambda: L.Flatten(),
    lambda: L.Reshape((-1,)),
    lambda: L.Activation("tanh"),
    lambda: L.ReLU(max_value=6.0),
    lambda: L.LeakyReLU(0.2),
    lambda: L.ELU(0.7),
    lambda: L.Softmax(),
    lambda: L.Conv2D(
        2,
        (1, 3),
        padding="same",
        data_format="channels_first",
        dilation_rate=(1, 2),
        trainable=False,
    ),
]


@pytest.mark.parametrize("make", ALL_LAYERS, ids=range(len(ALL_LAYERS)))
def test_config_round_trips(make):
    layer = make()
    cfg = layer.get_config()
    spec = L.serialize(layer)
    clone = L.deserialize(spec)
    assert type(clone) is type(layer)
    assert clone.get_config() == cfg
    import json

    json.dumps(cfg)  # configs are plain JSON


@pytest.mark.parametrize("make", ALL_LAYERS, ids=range(len(ALL_LAYERS)))
def test_get_set_weights_and_count_params(rng, make):
    layer = make()
    shape = (6, 6, 4) if not isinstance(layer, L.Dense) else (5,)
    layer.build_for(shape)
    ws = layer.get_weights()
    assert layer.count_params() == sum(w.size for w in ws)
    new = [rng.standard_normal(w.shape).astype(np.float32) for w in ws]
    layer.set_weights(new)
    for a, b in zip(layer.get_weights(), new):
        np.testing.assert_array_equal(a, b)
    if ws:
        with pytest.raises(ValueError, match="shape"):
            layer.set_weights([np.zeros((1, 2, 3, 9))] + new[1:])
        with pytest.raises(ValueError, match="weights"):
            layer.set_weights(new[:-1])


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: L.Conv2D(0, 3), "filters"),
        (lambda: L.Conv2D(4, 0), "kernel_size"),
        (lambda: L.Conv2D(4, 3, padding="full"), "padding"),
        (lambda: L.Conv2D(4, 3, strides=0), "strides"),
        (lambda: L.Conv2D(4, 3, groups=3), "groups"),
        (lambda: L.Conv2D(4, 3, data_format="NHWC"), "data_format"),
        (lambda: L.Conv2D(4, 3, activation="swishy"), "activation"),
        (lambda: L.Conv2D(4, 3, kernel_initializer="nope"), "initializer"),
        (lambda: L.Conv2D(4, 3, kernel_regularizer="l3"), "regularizer"),
        (lambda: L.Conv2D(4, 3, fliters=3), "fliters"),
        (lambda: L.Dense(-1), "units"),
        (lambda: L.Dropout(1.0), "rate"),
        (lambda: L.Dropout("half"), "rate"),
        (lambda: L.MaxPooling2D(0), "pool_size"),
        (lambda: L.BatchNormalization(momentum=1.5), "momentum"),
        (lambda: L.Dense(3, name=""), "name"),
    ],
)
def test_bad_arguments_name_the_argument(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_bad_input_shapes_are_clear():
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        L.Conv2D(4, 3).build_for((28, 28))
    with pytest.raises(ValueError, match="does not fit"):
        L.Conv2D(4, 5).build_for((3, 3, 1))
    with pytest.raises(ValueError, match="larger"):
        L.MaxPooling2D(4).build_for((3, 3, 1))
    with pytest.raises(ValueError, match="groups"):
        L.Conv2D(4, 3, groups=2).build_for((5, 5, 3))
    layer = L.Dense(2)
    layer.build_for((3,))
    with pytest.raises(ValueError, match="built for"):
        layer.build_for((4,))


def test_forward_and_backward_are_final():
    """A layer implements _forward/_backward; the public pair is defined once (Layer)."""
    for name in ("forward", "backward"):
        with pytest.raises(TypeError, match=f"overrides Layer.{name}, which is final"):
            type("Bad", (L.Layer,), {name: lambda self, *a: None})


def test_custom_layer_on_the_contract(rng):
    class Scale(L.Layer):
        def _forward(self, x, training):
            return x * 2, None

        def _backward(self, ctx, dy, need_input_grad):
            return dy * 2 if need_input_grad else None

    layer = Scale()
    y, ctx = layer.forward([[1.0, 2.0]])  # converted to a float32 batch first
    assert y.dtype == np.float32
    np.testing.assert_array_equal(layer.backward(ctx, [[1, 1]]), [[2.0, 2.0]])
    model = pyconv.Sequential([L.Dense(3, input_shape=(4,)), Scale()])
    model.compile("sgd", "mse")
    model.fit(rng.standard_normal((8, 4)), rng.standard_normal((8, 3)), epochs=1, verbose=0)


@pytest.mark.parametrize("make", [lambda: L.Dense(3, activation="softmax"),
                                  lambda: L.Activation("sigmoid")])  # fmt: skip
def test_activation_folded_into_the_loss_is_read_from_ctx(rng, make):
    """The model marks the ctx (dy_is_logits_grad); the layer then skips the activation's
    backward: dx is the backward of the pre-activation alone."""
    layer = make()
    x = rng.standard_normal((4, 3)).astype(np.float32)
    layer(x)
    dy = rng.standard_normal((4, 3)).astype(np.float32)
    _, ctx = layer.forward(x, True)
    assert ctx.logits is not None and not ctx.dy_is_logits_grad
    through_activation = layer.backward(ctx, dy)
    ctx.dy_is_logits_grad = True
    folded = layer.backward(ctx, dy)
    if isinstance(layer, L.Activation):
        np.testing.assert_array_equal(folded, dy)
    else:
        np.testing.assert_allclose(folded, dy @ layer.kernel.value.T, rtol=1e-5, atol=1e-6)
    assert not np.allclose(folded, through_activation)
