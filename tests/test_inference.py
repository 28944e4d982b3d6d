"""The inference plan (pyconv.inference): what predict, predict_on_batch and model(x) run.

Batch norm folded into the convolution (or Dense) before it is checked against float64
references with the float32 error bound of a dot product; whole networks against the layers
run one by one and against a float64 interpreter of the same network; where nothing folds,
the plan must give the layers' result to the bit. The plan must follow every change of a
weight (training steps, moving statistics, set_weights, load_weights, assign) and of the
model, never touch training, and never write into an array the caller can see.
"""

from __future__ import annotations

import numpy as np
import pytest
import ref64

import pyconv
from pyconv import inference, zoo
from pyconv import layers as L
from pyconv.activations import is_plain_relu

EPS32 = np.finfo(np.float32).eps / 2  # unit roundoff u of float32


@pytest.fixture(autouse=True)
def _fusion_on():
    yield
    inference.set_inference_fusion(True)


def randomize_batch_norms(model, seed=0):
    """Moving statistics and gamma/beta far from the identity (as after training), so that a
    folded batch norm changes the kernel."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            c = layer.moving_mean.shape[0]
            values = {
                "gamma": rng.uniform(0.5, 1.5, c),
                "beta": rng.normal(0, 0.3, c),
                "moving_mean": rng.normal(0, 0.3, c),
                "moving_variance": rng.uniform(0.3, 2.0, c),
            }
            layer.set_weights([values[v.name.split("/")[-1]] for v in layer.weights])


def unfused(model, x):
    """The model's output with the layers run one by one (the training forward pass)."""
    x = model._prepare_x(x, "x")
    return model._forward(x.astype(np.float32, copy=False), False)[0]


def steps(model):
    return inference.plan_for(model).steps


# --- a float64 interpreter of the layers the zoo networks use ---------------------------------


def _pads(padding, size, k, s, d):
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        return (*ref64.resolve_same(size[0], k[0], s[0], d[0]),
                *ref64.resolve_same(size[1], k[1], s[1], d[1]))  # fmt: skip
    (t, b), (l, r) = padding
    return (t, b, l, r)


def _act64(activation, z):
    name = activation.name
    if name == "linear":
        return z
    if name == "relu" and is_plain_relu(activation):
        return np.maximum(z, 0)
    if name == "softmax":
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    raise NotImplementedError(name)


def _nchw(x, channels_first):
    return x if channels_first else x.transpose(0, 3, 1, 2)


def _back(y, channels_first):
    return y if channels_first else y.transpose(0, 2, 3, 1)


def layer64(layer, x):
    """One layer in float64 from its definition (the weights read as float64)."""
    w64 = {v.name.split("/")[-1]: v.value.astype(np.float64) for v in layer.weights}
    if isinstance(layer, L.Conv2D):
        cf = layer.data_format == "channels_first"
        xc = _nchw(x, cf)
        pads = _pads(layer.padding, xc.shape[2:], layer.kernel_size, layer.strides,
                     layer.dilation_rate)  # fmt: skip
        y = ref64.conv2d(xc, w64["kernel"].transpose(3, 2, 0, 1), w64.get("bias"),
                         layer.strides, pads, layer.dilation_rate, layer.groups)  # fmt: skip
        return _act64(layer.activation, _back(y, cf))
    if isinstance(layer, L.Dense):
        return _act64(layer.activation, x @ w64["kernel"] + w64.get("bias", 0.0))
    if isinstance(layer, L.BatchNormalization):
        axis = layer._feature_axis(x.ndim)
        shape = [1] * x.ndim
        shape[axis] = -1

        def col(name, default):
            return w64[name].reshape(shape) if name in w64 else default

        xhat = (x - col("moving_mean", 0)) / np.sqrt(col("moving_variance", 1) + layer.epsilon)
        return col("gamma", 1.0) * xhat + col("beta", 0.0)
    if isinstance(layer, L.Activation):
        return _act64(layer.activation, x)
    if isinstance(layer, L.Add):
        return sum(x[1:], x[0])
    if isinstance(layer, L.MaxPooling2D):
        cf = layer.data_format == "channels_first"
        xc = _nchw(x, cf)
        pads = _pads(layer.padding, xc.shape[2:], layer.pool_size, layer.strides, (1, 1))
        if layer.padding == "same":  # padded cells never win: pad with -inf
            t, b, l, r = pads
            xc = np.pad(xc, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=-np.inf)
            pads = (0, 0, 0, 0)
        return _back(ref64.max_pool2d(xc, layer.pool_size, layer.strides, pads), cf)
    if isinstance(layer, L.GlobalAveragePooling2D):
        return x.mean(axis=(1, 2))
    if isinstance(layer, L.Flatten):
        return x.reshape(len(x), -1)
    if isinstance(layer, L.Dropout):
        return x
    raise NotImplementedError(type(layer).__name__)


def forward64(model, x):
    x = np.asarray(x, np.float64)
    if isinstance(model, pyconv.Sequential):
        for layer in model.layers:
            x = layer64(layer, x)
        return x
    values = {id(n): x for n in model._input_nodes}
    for node in model._nodes:
        if node.inbound:
            ins = [values[id(t.node)] for t in node.inbound]
            values[id(node)] = layer64(node.layer, ins if node.multi else ins[0])
    return values[id(model._outputs[0].node)]


# --- one folded convolution against float64, with the float32 error bound ----------------------


def fold64(kernel, bias, bn):
    """The folded kernel and bias in float64 (output channels on the last axis)."""
    g = {v.name.split("/")[-1]: v.value.astype(np.float64) for v in bn.weights}
    s = g.get("gamma", 1.0) / np.sqrt(g["moving_variance"] + bn.epsilon)
    b = 0.0 if bias is None else bias.astype(np.float64)
    return kernel.astype(np.float64) * s, (b - g["moving_mean"]) * s + g.get("beta", 0.0)


def conv64(conv, x, k64, b64):
    """conv's geometry with kernel k64 (HWIO) and bias b64, in float64."""
    cf = conv.data_format == "channels_first"
    xc = _nchw(np.asarray(x, np.float64), cf)
    pads = _pads(conv.padding, xc.shape[2:], conv.kernel_size, conv.strides, conv.dilation_rate)
    return _back(ref64.conv2d(xc, k64.transpose(3, 2, 0, 1), b64, conv.strides, pads,
                              conv.dilation_rate, conv.groups), cf)  # fmt: skip


def conv_bound(conv, x, k64, b64):
    """Bound on |y32 - y64| of a float32 conv with the folded kernel rounded once: a sum
    of n = taps + 1 products (the bias one of them) rounds each kernel entry, each product
    and each partial sum once, so |err| <= gamma_(n+1) (sum |w'| |x| + |b'|) with
    gamma_k = k u / (1 - k u); x8 for the summation orders the kernels use (blocked sums,
    Winograd's transforms), which this bound does not model."""
    taps = k64.shape[0] * k64.shape[1] * k64.shape[2]
    n = taps + 2
    gamma = n * EPS32 / (1 - n * EPS32)
    return 8 * gamma * conv64(conv, np.abs(x), np.abs(k64), np.abs(b64))


CONV_CASES = [
    dict(),
    dict(data_format="channels_first"),
    dict(groups=2, dilation_rate=2, padding="same"),
    dict(strides=2, padding=1, use_bias=False),
    dict(kernel_size=1),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: ",".join(map(str, c.items())) or "plain")
@pytest.mark.parametrize("relu", [False, True])
def test_conv_batch_norm_relu_fold_within_float32_bound(case, relu):
    case = dict(case)
    cf = case.get("data_format") == "channels_first"
    shape = (6, 9, 9) if cf else (9, 9, 6)
    pyconv.set_random_seed(1)
    conv = L.Conv2D(8, case.pop("kernel_size", 3), **case)
    bn = L.BatchNormalization(axis=1 if cf else -1, epsilon=1e-3)
    stack = [L.Input(shape), conv, bn] + ([L.ReLU()] if relu else [])
    model = pyconv.Sequential(stack)
    randomize_batch_norms(model, seed=2)
    if conv.bias is not None:
        conv.bias.assign(np.random.default_rng(3).normal(0, 0.5, 8))
    (step,) = steps(model)
    assert isinstance(step, inference.FusedConv) and step.bn is bn
    assert step.fused == ("relu" if relu else None)
    x = np.random.default_rng(4).normal(size=(3, *shape)).astype(np.float32)
    got = model.predict(x)
    k64, b64 = fold64(conv.kernel.value, None if conv.bias is None else conv.bias.value, bn)
    ref = conv64(conv, x, k64, b64)
    if relu:
        ref = np.maximum(ref, 0)
    assert np.all(np.abs(got - ref) <= conv_bound(conv, x, k64, b64))
    # the same network unfolded, in float64 from the layers' definitions: the same function
    np.testing.assert_allclose(forward64(model, x), ref, rtol=1e-12, atol=1e-12)
    # and the layers run one by one agree to float32 rounding
    np.testing.assert_allclose(got, unfused(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False)])
def test_dense_batch_norm_fold(center, scale):
    pyconv.set_random_seed(2)
    model = pyconv.Sequential(
        [
            L.Input((5, 12)),
            L.Dense(7),
            L.BatchNormalization(center=center, scale=scale),
            L.Activation("relu"),
            L.Dense(3, activation="softmax"),
        ]
    )
    randomize_batch_norms(model, seed=5)
    first = steps(model)[0]
    assert isinstance(first, inference.FusedConv) and first.bn is not None
    assert first.fused == "relu"
    x = np.random.default_rng(6).normal(size=(4, 5, 12)).astype(np.float32)
    got, ref = model.predict(x), forward64(model, x)
    # two dense layers of <= 13 terms: a few hundred u of the largest term at most
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got, unfused(model, x), rtol=0, atol=1e-5)


# --- whole networks --------------------------------------------------------------------------


def small_resnet():
    return zoo.build("resnet18", input_shape=(32, 32, 3), num_classes=10)


NETWORKS = {
    "mnist_cnn": lambda: zoo.build("mnist_cnn"),
    "cifar10_cnn": lambda: zoo.build("cifar10_cnn"),
    "cifar_resnet20": lambda: zoo.build("cifar_resnet20"),
    "resnet18_32px": small_resnet,
}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_zoo_networks_match_layers_and_float64(name):
    pyconv.set_random_seed(0)
    model = NETWORKS[name]()
    randomize_batch_norms(model)
    model.layers[-1].activation = pyconv.activations.get("linear")  # logits: sharper than p
    x = np.random.default_rng(1).random((2, *model.input_shape[1:]), dtype=np.float32)
    got, layers, ref = model.predict(x), unfused(model, x), forward64(model, x)
    folds = [s for s in steps(model) if isinstance(s, inference.FusedConv) and s.bn is not None]
    if not folds:
        # nothing folds (mnist_cnn; cifar10_cnn normalizes after its ReLUs): the same
        # float32 operations as the layers, so the same bits
        np.testing.assert_array_equal(got, layers)
    else:
        assert name.startswith(("cifar_resnet", "resnet")) and len(folds) >= 19
        # Folding trades the layers' float32 rounding of the affine map for one rounding of
        # the folded kernel: an error of the same order as the layers' own. Measured against
        # float64, the plan's error stays within 4x that of the layers (plus 4 ulps of the
        # largest logit, for networks where the layers happen to be nearly exact).
        # (Measured: the plan's error is 0.6-1.2x the layers' here.)
        err_layers = np.abs(layers - ref).max()
        err_plan = np.abs(got - ref).max()
        assert err_plan <= 4 * err_layers + 4 * EPS32 * np.abs(ref).max()
    scale = np.abs(ref).max()
    assert np.abs(layers - ref).max() < 1e-5 * scale and np.abs(got - ref).max() < 1e-5 * scale


def test_resnet_plan_is_one_step_per_conv_and_residual():
    model = small_resnet()
    plan = inference.plan_for(model)
    kinds = [type(s).__name__ for s in plan.steps]
    convs = sum(isinstance(l, L.Conv2D) for l in model.layers)
    adds = sum(isinstance(l, L.Add) for l in model.layers)
    assert kinds.count("FusedConv") == convs + 1  # + the Dense head
    assert kinds.count("AddRelu") == adds
    assert all(s.relu_layer is not None for s in plan.steps if isinstance(s, inference.AddRelu))
    # every batch norm folded; every ReLU fused into a conv or an Add
    fused = {id(l) for s in plan.steps for l in s.layers}
    for layer in model.layers:
        if isinstance(layer, (L.BatchNormalization, L.ReLU)):
            assert id(layer) in fused, layer.name
    assert len(plan.steps) == convs + adds + 3  # + max pool, global pool, head


def test_dropout_is_skipped_and_chain_runs_as_chain():
    model = zoo.build("mnist_cnn")
    plan = inference.plan_for(model)
    assert plan.chain
    assert not any(isinstance(l, L.Dropout) for s in plan.steps for l in s.layers)


# --- the plan follows every change ---------------------------------------------------------


def check_fresh(model, x):
    """The plan's output equals the layers' for the current weights (to float32 rounding)."""
    np.testing.assert_allclose(model.predict(x), unfused(model, x), rtol=1e-4, atol=1e-6)


def test_refresh_after_training_set_weights_load_weights_assign(tmp_path):
    pyconv.set_random_seed(0)
    model = zoo.build("cifar_resnet20")
    model.compile(pyconv.optimizers.SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, 4)
    model.predict(x)
    plan = model._inference_plan
    stem = plan.steps[0]
    v0, k0 = stem.version, stem.kernel.copy()
    saved = tmp_path / "w.pyconv"
    model.save_weights(saved)
    before = model.predict(x)
    for _ in range(2):  # weights and moving statistics move
        model.train_on_batch(x, y)
    check_fresh(model, x)
    assert model._inference_plan is plan and stem.version > v0
    assert not np.array_equal(stem.kernel, k0)
    model.load_weights(saved)
    np.testing.assert_allclose(model.predict(x), before, rtol=0, atol=0)
    weights = model.get_weights()
    weights = [w * 1.5 for w in weights]
    model.set_weights(weights)
    check_fresh(model, x)
    bn = model.get_layer("stem_bn")
    bn.moving_variance.assign(bn.moving_variance.value * 4)
    check_fresh(model, x)
    model.get_layer("stem_conv").kernel.assign(np.zeros(stem.kernel.shape, np.float32))
    check_fresh(model, x)
    assert model._inference_plan is plan  # weights changed, the structure did not


def test_fold_version_counts_refolds_and_is_stable_between_calls():
    model = small_resnet()
    x = np.zeros((1, 32, 32, 3), np.float32)
    model.predict(x)
    stem = model._inference_plan.steps[0]
    v, kernel = stem.version, stem.kernel
    model.predict(x)
    model(x)
    assert stem.version == v and stem.kernel is kernel  # nothing changed: nothing refolded
    model.get_layer("stem_bn").beta.assign(np.ones(64, np.float32))
    model.predict(x)
    assert stem.version == v + 1


def test_structure_changes_replan():
    pyconv.set_random_seed(0)
    model = pyconv.Sequential([L.Input((6, 6, 2)), L.Conv2D(4, 3), L.BatchNormalization()])
    randomize_batch_norms(model)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 2)).astype(np.float32)
    check_fresh(model, x)
    model.add(L.ReLU())
    assert model.predict(x).min() >= 0
    check_fresh(model, x)
    assert steps(model)[0].relu_layer is not None
    model.pop()
    assert model.predict(x).min() < 0
    check_fresh(model, x)
    # an activation or epsilon reassigned under a fused step: planned again
    model.add(L.ReLU())
    model.predict(x)
    model.layers[-1].activation = pyconv.activations.get("linear")
    assert model.predict(x).min() < 0
    check_fresh(model, x)
    model.layers[1].epsilon = 10.0
    check_fresh(model, x)


# --- training untouched, switches -----------------------------------------------------------


def test_training_never_uses_the_plan():
    pyconv.set_random_seed(0)
    results = []
    for fusion in (True, False):
        pyconv.set_random_seed(0)
        model = zoo.build("cifar_resnet20")
        model.inference_fusion = fusion
        model.compile("adam", "sparse_categorical_crossentropy")
        rng = np.random.default_rng(0)
        x, y = rng.random((8, 32, 32, 3), dtype=np.float32), rng.integers(0, 10, 8)
        model.predict(x)  # (a plan made first must not change anything training does)
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
        results.append((model.get_weights(), model(x, training=True)))
    for a, b in zip(results[0][0], results[1][0], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_switches_turn_the_plan_off():
    pyconv.set_random_seed(0)
    model = small_resnet()
    randomize_batch_norms(model)
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    layers = unfused(model, x)
    assert not np.array_equal(model.predict(x), layers)  # folded: other roundings
    model.inference_fusion = False
    np.testing.assert_array_equal(model.predict(x), layers)
    np.testing.assert_array_equal(model(x), layers)
    model.inference_fusion = True
    inference.set_inference_fusion(False)
    assert not inference.get_inference_fusion()
    np.testing.assert_array_equal(model.predict_on_batch(x), layers)
    inference.set_inference_fusion(True)
    assert not np.array_equal(model.predict_on_batch(x), layers)
    with pytest.raises(TypeError, match="inference_fusion must be a bool"):
        model.inference_fusion = "no"
    with pytest.raises(TypeError, match="enabled must be a bool"):
        inference.set_inference_fusion(0)


def test_predict_entry_points_agree():
    pyconv.set_random_seed(0)
    model = small_resnet()
    randomize_batch_norms(model)
    x = np.random.default_rng(0).random((5, 32, 32, 3), dtype=np.float32)
    whole = model.predict(x)
    np.testing.assert_array_equal(model.predict_on_batch(x), whole)
    np.testing.assert_array_equal(model(x), whole)
    np.testing.assert_array_equal(model.predict(x, batch_size=5, verbose=2), whole)
    for i in range(5):  # batch 1 (its own path) is the same per-sample function
        np.testing.assert_allclose(model.predict(x[i : i + 1]), whole[i : i + 1], atol=1e-6)
    np.testing.assert_allclose(model.predict(x, batch_size=2), whole, atol=1e-6)
    assert model.predict(x[:0]).shape == (0, 10)
    y = model.predict(x.astype(np.float64))  # other dtypes converted, as ever
    np.testing.assert_array_equal(y, whole)


def test_bit_identical_across_thread_counts():
    model = small_resnet()
    randomize_batch_norms(model)
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    threads = pyconv.get_num_threads()
    try:
        pyconv.set_num_threads(1)
        one = model.predict(x)
        pyconv.set_num_threads(2)
        two = model.predict(x)
    finally:
        pyconv.set_num_threads(threads)
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("isa", pyconv.available_isas())
def test_fold_on_every_isa(isa):
    pyconv.set_random_seed(3)
    model = pyconv.Sequential(
        [
            L.Input((10, 10, 5)),
            L.Conv2D(6, 3, padding="same", use_bias=False),
            L.BatchNormalization(),
            L.ReLU(),
        ]
    )
    randomize_batch_norms(model, seed=3)
    x = np.random.default_rng(3).normal(size=(2, 10, 10, 5)).astype(np.float32)
    before = pyconv.get_isa()
    try:
        pyconv.set_isa(isa)
        got = model.predict(x)
    finally:
        pyconv.set_isa(before)
    conv, bn = model.layers[0], model.layers[1]
    k64, b64 = fold64(conv.kernel.value, None, bn)
    assert np.all(np.abs(got - forward64(model, x)) <= conv_bound(conv, x, k64, b64))


# --- graphs: shared and frozen layers, in-place safety, fallbacks ------------------------------


def test_shared_and_frozen_layers():
    pyconv.set_random_seed(0)
    a, b = pyconv.Input((8, 8, 3)), pyconv.Input((8, 8, 3))
    conv = L.Conv2D(3, 3, padding="same")  # (3 -> 3 channels: applied to its outputs too)
    bn_a, bn_b = L.BatchNormalization(), L.BatchNormalization()
    shared_bn = L.BatchNormalization()
    ya = L.ReLU()(bn_a(conv(a)))  # one conv, two batch norms: two folds
    yb = bn_b(conv(b))
    za = shared_bn(conv(ya))  # one conv + one batch norm, called twice
    zb = shared_bn(conv(yb))
    out = L.Add()([za, zb])
    model = pyconv.Model([a, b], out)
    randomize_batch_norms(model)
    bn_b.trainable = False
    conv.trainable = False
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(2, 8, 8, 3)).astype(np.float32) for _ in range(2)]
    plan = inference.plan_for(model)
    folds = [s for s in plan.steps if isinstance(s, inference.FusedConv)]
    assert len(folds) == 4 and all(s.bn is not None for s in folds)
    got = model.predict(xs)
    np.testing.assert_allclose(got, unfused(model, xs), rtol=1e-5, atol=1e-5)


def test_in_place_steps_never_write_what_the_caller_sees():
    pyconv.set_random_seed(0)
    inp = pyconv.Input((6, 6, 4))
    c = L.Conv2D(4, 3, padding="same")(inp)  # read by the Add and a model output
    s = L.Add()([c, inp])  # the input: the caller's array
    r = L.ReLU()(s)
    n = L.BatchNormalization()(inp)  # straight on the caller's array
    t = L.ReLU()(n)
    u = L.Add()([t, t])  # one buffer twice
    v = L.ReLU()(L.Add()([u, c]))
    model = pyconv.Model(inp, [c, r, v, u, u])
    randomize_batch_norms(model)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 4)).astype(np.float32)
    keep = x.copy()
    outs = model.predict(x)
    np.testing.assert_array_equal(x, keep)
    for got, want in zip(outs, unfused(model, x), strict=True):
        np.testing.assert_array_equal(got, want)
    assert outs[3] is not outs[4]  # one node, two outputs: two arrays
    outs = model(x)
    np.testing.assert_array_equal(x, keep)
    for got, want in zip(outs, unfused(model, x), strict=True):
        np.testing.assert_array_equal(got, want)


def test_batch_norm_first_and_relu_on_input_leave_input_alone():
    model = pyconv.Sequential([L.Input((3, 3, 2)), L.BatchNormalization(), L.ReLU()])
    randomize_batch_norms(model)
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 2)).astype(np.float32)
    keep = x.copy()
    np.testing.assert_array_equal(model.predict(x), unfused(model, x))
    np.testing.assert_array_equal(x, keep)
    relu_only = pyconv.Sequential([L.Input((3, 3, 2)), L.ReLU()])
    np.testing.assert_array_equal(relu_only.predict(x), np.maximum(x, 0))
    np.testing.assert_array_equal(x, keep)


def test_patterns_that_do_not_fold_fall_back_to_the_layers():
    pyconv.set_random_seed(0)

    class MyConv(L.Conv2D):  # a subclass may compute anything: run as it is
        def _forward(self, x, training):
            y, ctx = super()._forward(x, training)
            return y * 2, ctx

    model = pyconv.Sequential(
        [
            L.Input((6, 6, 3)),
            L.Conv2D(4, 3, activation="tanh"),
            L.BatchNormalization(),  # not after a linear conv
            MyConv(4, 1),
            L.BatchNormalization(),  # a subclass
            L.Conv2D(4, 1),
            L.BatchNormalization(axis=1),  # not the channel axis
            L.Conv2D(4, 1),
            L.ReLU(max_value=0.5),  # not a plain ReLU
            L.LeakyReLU(0.1),
        ]
    )
    randomize_batch_norms(model)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x), unfused(model, x))
    assert not any(isinstance(s, inference.FusedConv) and s.bn for s in steps(model))
    assert any(isinstance(s, inference.LayerCall) and isinstance(s.layers[0], MyConv)
               for s in steps(model))  # fmt: skip


def test_subclassed_model_forward_is_respected():
    class Doubling(pyconv.Sequential):
        def _forward(self, x, training, keep=frozenset()):
            y, tape, penalty = super()._forward(x, training, keep)
            return y * 2, tape, penalty

    model = Doubling([L.Input((3,)), L.Dense(2)])
    x = np.ones((1, 3), np.float32)
    assert inference.plan_for(model) is None
    np.testing.assert_array_equal(model.predict(x), unfused(model, x))
    np.testing.assert_array_equal(model.predict(x), 2 * model.layers[0].forward(x)[0])
