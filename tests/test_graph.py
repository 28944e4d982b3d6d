"""Layer graphs (functional API): gradients by finite differences through a skip connection
and a shared layer, merge layers against NumPy, Sequential equivalence, save/load, freezing,
Grad-CAM, and the classic architectures' parameter counts."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import check_coords

import pyconv
from pyconv import layers as L
from pyconv import zoo
from pyconv.gradcam import grad_cam


def graph_model(loss="mse"):
    """Two inputs; a conv trunk with a skip connection (Add); one Dense layer shared by both
    branches (weights tied, gradients summed); Concatenate, Subtract and Multiply heads."""
    a = pyconv.Input((6, 6, 2), name="a")
    b = pyconv.Input((4,), name="b")
    x = L.Conv2D(3, 3, padding="same", activation="tanh", name="c1")(a)
    y = L.Conv2D(3, 3, padding="same", name="c2")(x)
    x = L.Add(name="skip")([x, y])
    x = L.BatchNormalization(name="bn")(x)
    x = L.Flatten()(x)
    x = L.Dense(4, activation="tanh", name="d1")(x)
    shared = L.Dense(4, activation="tanh", name="shared")
    u, v = shared(x), shared(b)
    h = L.Concatenate(name="cat")([L.Subtract()([u, v]), L.Multiply()([u, v])])
    out = L.Dense(3, activation="softmax", name="out")(h)
    model = pyconv.Model([a, b], out)
    model.compile("sgd", loss)
    return model


def model_loss(model, x, y):
    y_pred, _, penalty = model._forward(x, training=True)
    return model.loss(y, y_pred) + penalty + model._regularization(add_grads=False)


@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "mse"])
def test_graph_parameter_gradients_match_finite_differences(rng, loss):
    pyconv.set_random_seed(5)
    model = graph_model(loss)
    x = [rng.standard_normal((4, 6, 6, 2)).astype(np.float32),
         rng.standard_normal((4, 4)).astype(np.float32)]  # fmt: skip
    labels = np.array([0, 2, 1, 2])
    y = labels if loss.startswith("sparse") else np.eye(3, dtype=np.float32)[labels]
    total, grads = model.compute_gradients(x, y)
    assert abs(total - model_loss(model, x, y)) < 1e-5 * max(1, abs(total))
    names = [v.name for v in model.trainable_weights]
    assert sum(n.startswith("shared/") for n in names) == 2  # one kernel, one bias: tied
    for var, g in zip(model.trainable_weights, grads):
        check_coords(lambda: model_loss(model, x, y), var, g, rng, var.name, h=1e-2, n=6, tol=3e-2)


def test_shared_layer_gradient_is_the_sum_over_its_uses(rng):
    """The tied Dense's gradient equals the sum of the gradients of two untied copies."""
    pyconv.set_random_seed(6)
    inp = pyconv.Input((3,))
    shared = L.Dense(2, name="tied")
    tied = pyconv.Model(inp, L.Add()([shared(inp), shared(L.Dense(3, name="pre")(inp))]))
    inp2 = pyconv.Input((3,))
    one, two = L.Dense(2, name="one"), L.Dense(2, name="two")
    pre = L.Dense(3, name="pre2")
    untied = pyconv.Model(inp2, L.Add()([one(inp2), two(pre(inp2))]))
    one.set_weights(shared.get_weights())
    two.set_weights(shared.get_weights())
    pre.set_weights(tied.get_layer("pre").get_weights())
    for m in (tied, untied):
        m.compile("sgd", "mse")
    x = rng.standard_normal((5, 3)).astype(np.float32)
    y = rng.standard_normal((5, 2)).astype(np.float32)
    np.testing.assert_allclose(tied.predict(x), untied.predict(x), rtol=1e-6, atol=1e-6)
    _, gt = tied.compute_gradients(x, y)
    _, gu = untied.compute_gradients(x, y)
    gt = dict(zip([v.name for v in tied.trainable_weights], gt))
    gu = dict(zip([v.name for v in untied.trainable_weights], gu))
    np.testing.assert_allclose(gt["tied/kernel"], gu["one/kernel"] + gu["two/kernel"], rtol=1e-5)
    np.testing.assert_allclose(gt["tied/bias"], gu["one/bias"] + gu["two/bias"], rtol=1e-5)


@pytest.mark.parametrize(
    "layer,fn",
    [
        (L.Add, lambda a, b: a + b),
        (L.Subtract, lambda a, b: a - b),
        (L.Multiply, lambda a, b: a * b),
        (L.Concatenate, lambda a, b: np.concatenate([a, b], axis=-1)),
        (lambda: L.Concatenate(axis=1), lambda a, b: np.concatenate([a, b], axis=1)),
        (L.EuclideanDistance, lambda a, b: np.sqrt(((a - b) ** 2).sum(axis=(1, 2, 3)))[:, None]),
    ],
)
def test_merge_layers_values_and_gradients(layer, fn, rng):
    a = rng.standard_normal((3, 4, 5, 2)).astype(np.float32)
    b = rng.standard_normal((3, 4, 5, 2)).astype(np.float32)
    lay = layer()
    y, ctx = lay.forward([a, b])
    np.testing.assert_allclose(y, fn(a.astype(np.float64), b.astype(np.float64)), rtol=1e-5)
    r = rng.standard_normal(y.shape).astype(np.float32)
    ga, gb = lay.backward(ctx, r.copy())
    for arr, g, name in ((a, ga, "a"), (b, gb, "b")):
        check_coords(
            lambda: float(np.sum(lay.forward([a, b])[0].astype(np.float64) * r)),
            arr, g, rng, name, h=1e-2, n=10, tol=2e-2,
        )  # fmt: skip


def test_merge_layer_argument_errors():
    with pytest.raises(ValueError, match="one shape"):
        L.Add()([np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(ValueError, match="exactly 2"):
        L.Subtract()([np.zeros((2, 3))] * 3)
    with pytest.raises(TypeError, match="list of inputs"):
        L.Add().build_for((3,))
    with pytest.raises(ValueError, match="axis"):
        L.Concatenate(axis=0)
    with pytest.raises(ValueError, match="batch sizes"):
        L.Add()([np.zeros((2, 3)), np.zeros((3, 3))])
    with pytest.raises(ValueError, match="epsilon"):
        L.EuclideanDistance(epsilon=0)


def test_euclidean_distance_of_identical_embeddings_has_zero_gradient():
    a = np.ones((2, 3), np.float32)
    lay = L.EuclideanDistance()
    y, ctx = lay.forward([a, a.copy()])
    ga, gb = lay.backward(ctx, np.ones_like(y))
    assert np.isfinite(y).all() and not ga.any() and not gb.any()


def test_graph_chain_equals_sequential(rng):
    """The same layers as a Sequential and as a graph: same outputs, gradients, summary
    parameter count."""
    pyconv.set_random_seed(7)
    seq = zoo.mnist_cnn()
    inp = pyconv.Input((28, 28, 1))
    x = inp
    clones = []
    for layer in seq.layers:
        clone = type(layer).from_config(layer.get_config() | {"name": layer.name + "_g"})
        clones.append(clone)
        x = clone(x)
    graph = pyconv.Model(inp, x)
    graph.set_weights(seq.get_weights())
    for k, (a, b) in enumerate(zip(seq.layers, clones)):
        if isinstance(a, L.Dropout):  # the same masks in both
            a._rng, b._rng = np.random.default_rng(k), np.random.default_rng(k)
    assert graph.count_params() == seq.count_params() == 1_199_882
    for m in (seq, graph):
        m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    xb = rng.random((6, 28, 28, 1)).astype(np.float32)
    yb = np.arange(6) % 10
    np.testing.assert_array_equal(seq.predict(xb), graph.predict(xb))
    ls, gs = seq.compute_gradients(xb, yb)
    lg, gg = graph.compute_gradients(xb, yb)
    assert ls == lg
    for a, b in zip(gs, gg):
        np.testing.assert_array_equal(a, b)


def test_fit_evaluate_predict_with_two_inputs_and_save_load(tmp_path, rng):
    pyconv.set_random_seed(8)
    model = graph_model("sparse_categorical_crossentropy")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x = [rng.standard_normal((40, 6, 6, 2)).astype(np.float32),
         rng.standard_normal((40, 4)).astype(np.float32)]  # fmt: skip
    y = (x[1][:, 0] > 0).astype(np.int64) + (x[1][:, 1] > 0)
    hist = model.fit(x, y, batch_size=8, epochs=15, verbose=0, validation_split=0.25)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    path = tmp_path / "graph.pyconv"
    model.save(path)
    again = pyconv.load_model(path)
    assert type(again).__name__ == "Functional"
    np.testing.assert_array_equal(model.predict(x), again.predict(x))
    assert model.evaluate(x, y, verbose=0) == again.evaluate(x, y, verbose=0)
    # the optimizer state came along: one more step gives the same weights
    model.train_on_batch([a[:8] for a in x], y[:8])
    again.train_on_batch([a[:8] for a in x], y[:8])
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    lines = []
    again.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Connected to" in text and "shared (Dense)" in text and "skip (Add)" in text


def test_graph_input_errors(rng):
    model = graph_model()
    with pytest.raises(ValueError, match="2 inputs"):
        model.predict(np.zeros((2, 6, 6, 2), np.float32))
    with pytest.raises(ValueError, match="expects x of shape"):
        model.predict([np.zeros((2, 6, 6, 3)), np.zeros((2, 4))])
    with pytest.raises(ValueError, match="different numbers of samples"):
        model.predict([np.zeros((2, 6, 6, 2)), np.zeros((3, 4))])
    a, b = pyconv.Input((3,)), pyconv.Input((3,))
    with pytest.raises(ValueError, match="disconnected"):
        pyconv.Model(a, L.Add()([a, b]))
    with pytest.raises(TypeError, match="symbolic"):
        pyconv.Model(a, np.zeros(3))
    with pytest.raises(TypeError, match="symbolic tensors"):
        L.Add()([a, np.zeros((1, 3))])


def test_freezing_a_graph_base_skips_its_gradients(rng):
    pyconv.set_random_seed(9)
    model = graph_model()
    for name in ("c1", "c2", "bn", "d1"):
        model.get_layer(name).trainable = False
    model.compile("sgd", "mse")
    before = [w.copy() for w in model.get_layer("c1").get_weights()]
    x = [rng.standard_normal((4, 6, 6, 2)).astype(np.float32),
         rng.standard_normal((4, 4)).astype(np.float32)]  # fmt: skip
    model.fit(x, np.eye(3, dtype=np.float32)[[0, 1, 2, 0]], epochs=2, verbose=0)
    for a, b in zip(before, model.get_layer("c1").get_weights()):
        np.testing.assert_array_equal(a, b)
    assert all(v.name.split("/")[0] in ("shared", "out") for v in model.trainable_weights)


def test_grad_cam_on_a_resnet_graph(rng):
    pyconv.set_random_seed(10)
    model = zoo.cifar_resnet20(input_shape=(16, 16, 3), num_classes=4)
    x = rng.random((2, 16, 16, 3)).astype(np.float32)
    heat, _ = grad_cam(model, x)
    assert heat.shape[0] == 2 and np.isfinite(heat).all()
    assert heat.min() >= 0 and heat.max() <= 1 + 1e-6
    # backward_to stops inside a residual block: the gradient has the layer output's shape
    out, grad, y = model.backward_to(x[:1], "stage3_block3_add", np.eye(4, dtype=np.float32)[[1]])
    assert out.shape == grad.shape


@pytest.mark.parametrize(
    "builder,kwargs,trainable,total",
    [
        (zoo.resnet18, {}, 11_689_512, 11_689_512 + 9_600),
        (zoo.resnet50, {}, 25_557_032, 25_557_032 + 53_120),
        (zoo.vgg16, {}, 138_357_544, 138_357_544),
        (zoo.alexnet, {}, 61_100_840, 61_100_840),
        (zoo.cifar_resnet20, {}, 272_474, None),
    ],
)
def test_classic_architectures_parameter_counts(builder, kwargs, trainable, total):
    """Trainable counts equal torchvision's (resnet18/50, vgg16, alexnet); the extra
    non-trainable ones are batch norm's moving means and variances."""
    model = builder(**kwargs)
    n_train = sum(v.value.size for v in model.trainable_weights)
    assert n_train == trainable
    if total is not None:
        assert model.count_params() == total


def test_resnet_forward_shape_and_num_classes(rng):
    model = zoo.resnet18(input_shape=(64, 64, 3), num_classes=7)
    y = model.predict(rng.random((2, 64, 64, 3)).astype(np.float32))
    assert y.shape == (2, 7)
    np.testing.assert_allclose(y.sum(axis=1), 1, rtol=1e-5)


def test_siamese_network_learns_to_separate_pairs(rng):
    """Twin encoders with shared weights and a contrastive loss: after training on pairs of
    two synthetic classes, same-class pairs are closer than different-class pairs."""
    pyconv.set_random_seed(11)
    assert zoo.siamese_network()[0].count_params() == 224_131  # as documented
    siamese, encoder = zoo.siamese_network(input_shape=(12, 12, 1), embedding_dim=3)
    assert siamese.count_params() == encoder.count_params()  # one set of weights
    siamese.compile(pyconv.optimizers.Adam(1e-3), pyconv.losses.ContrastiveLoss(margin=1.0))

    def images(cls, n):
        base = np.zeros((n, 12, 12, 1), np.float32)
        if cls == 0:
            base[:, 2:10, 5:7] = 1  # a vertical bar
        else:
            base[:, 5:7, 2:10] = 1  # a horizontal bar
        return base + 0.3 * rng.standard_normal(base.shape).astype(np.float32)

    n = 128
    left_cls = rng.integers(0, 2, n)
    right_cls = np.where(rng.random(n) < 0.5, left_cls, 1 - left_cls)
    left = np.concatenate([images(c, 1) for c in left_cls])
    right = np.concatenate([images(c, 1) for c in right_cls])
    same = (left_cls == right_cls).astype(np.float32)
    siamese.fit([left, right], same, batch_size=16, epochs=8, verbose=0)
    d = siamese.predict([left, right])[:, 0]
    assert d[same == 1].mean() < 0.5 * d[same == 0].mean()
    emb = encoder.predict(left)
    assert emb.shape == (n, 3)
    np.testing.assert_allclose(
        np.linalg.norm(emb - encoder.predict(right), axis=1), d, rtol=1e-4, atol=1e-4
    )


def test_contrastive_loss_value_and_gradient(rng):
    loss = pyconv.losses.ContrastiveLoss(margin=1.5)
    d = np.abs(rng.standard_normal((6, 1))).astype(np.float32) + 0.05
    y = np.array([1, 0, 1, 0, 0, 1])
    v, g = loss.value_and_grad(y, d)
    want = np.mean(np.where(y[:, None] == 1, d**2, np.maximum(1.5 - d, 0) ** 2))
    assert abs(v - want) < 1e-6
    check_coords(lambda: loss(y, d), d, g, rng, "d", h=1e-3, n=6, tol=1e-2)
    with pytest.raises(ValueError, match="margin"):
        pyconv.losses.ContrastiveLoss(margin=-1)


def test_concatenate_backward_splits_exactly(rng):
    cat = L.Concatenate()
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 5))
    y, ctx = cat.forward([a, b])
    ga, gb = cat.backward(ctx, y)
    np.testing.assert_array_equal(ga, a.astype(np.float32))
    np.testing.assert_array_equal(gb, b.astype(np.float32))


def test_transfer_learning_by_graph_surgery(rng):
    """Keras's recipe: freeze a trained base, put a new head on an inner tensor; the base's
    weights stay as they were while the head trains, and predictions of the base agree."""
    pyconv.set_random_seed(12)
    base = zoo.cifar_resnet20(input_shape=(8, 8, 3), num_classes=5)
    features = base.layers[-2]  # the global average pooling before the old head
    for layer in base.layers:
        layer.trainable = False
    head = L.Dense(3, activation="softmax", name="new_head")(features.output)
    model = pyconv.Model(base.input, head)
    model.compile("adam", "sparse_categorical_crossentropy")
    assert [v.name for v in model.trainable_weights] == ["new_head/kernel", "new_head/bias"]
    before = [w.copy() for w in base.get_weights()]
    x = rng.random((16, 8, 8, 3)).astype(np.float32)
    model.fit(x, np.arange(16) % 3, epochs=2, batch_size=8, verbose=0)
    for a, b in zip(before, base.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.predict(x).shape == (16, 3) and base.predict(x).shape == (16, 5)
    with pytest.raises(AttributeError, match="not been called"):
        _ = L.Dense(2).output


def test_two_outputs_fit_with_weighted_losses_and_save_load(tmp_path, rng):
    """A classifier head and a regression head on one trunk: the total loss is the weighted
    sum of the two (each output's gradient checked by finite differences), metrics are
    logged per output, predict returns both, and the losses survive save/load."""
    pyconv.set_random_seed(13)
    inp = pyconv.Input((5,))
    h = L.Dense(8, activation="tanh", name="trunk")(inp)
    cls = L.Dense(3, activation="softmax", name="cls")(h)
    reg = L.Dense(2, name="reg")(h)
    model = pyconv.Model(inp, [cls, reg])
    model.compile(
        "adam",
        {"cls": "sparse_categorical_crossentropy", "reg": "mse"},
        metrics=["accuracy"],
        loss_weights=[1.0, 0.5],
    )
    x = rng.standard_normal((32, 5)).astype(np.float32)
    y = [np.argmax(x[:, :3], axis=1), x[:, 3:5] * 2]
    total, grads = model.compute_gradients(x, y)
    y_pred = model.predict(x)
    assert isinstance(y_pred, list) and y_pred[0].shape == (32, 3) and y_pred[1].shape == (32, 2)
    want = model._losses[0](y[0], y_pred[0]) + 0.5 * model._losses[1](y[1], y_pred[1])
    assert abs(total - want) < 1e-5
    for var, g in zip(model.trainable_weights, grads):
        check_coords(
            lambda: float(model._loss_value(pyconv.graph.Inputs(y), model._forward(x, True)[0], None)),
            var, g, rng, var.name, h=1e-2, n=6, tol=3e-2,
        )  # fmt: skip
    hist = model.fit(x, y, epochs=20, batch_size=8, verbose=0, validation_split=0.25)
    assert set(hist.history) >= {"loss", "cls_accuracy", "reg_accuracy", "val_cls_accuracy"}
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    path = tmp_path / "two.pyconv"
    model.save(path)
    again = pyconv.load_model(path)
    assert again._loss_weights == [1.0, 0.5]
    assert model.evaluate(x, y, verbose=0) == again.evaluate(x, y, verbose=0)
    with pytest.raises(ValueError, match="2 outputs"):
        model.fit(x, y[0], verbose=0)
    with pytest.raises(ValueError, match="one entry per output"):
        model.compile("sgd", ["mse"])


def test_layers_sit_below_the_graph():
    """The node module is below the layers and the graph above them: no module of
    pyconv/layers imports pyconv.graph (nor pyconv.models), and pyconv.node imports no
    pyconv module at all."""
    import ast
    import pathlib

    import pyconv.node

    def imported(path):
        tree = ast.parse(path.read_text())
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom):
                yield "." * n.level + (n.module or "")
                yield from ("." * n.level + a.name for a in n.names if not n.module)
            elif isinstance(n, ast.Import):
                yield from (a.name for a in n.names)

    layers_dir = pathlib.Path(L.__file__).parent
    for path in layers_dir.glob("*.py"):
        for name in imported(path):
            assert name.lstrip(".") not in ("graph", "models", "pyconv.graph"), (path, name)
    node_imports = set(imported(pathlib.Path(pyconv.node.__file__)))
    assert node_imports == {"__future__"}
    assert pyconv.graph.SymbolicTensor is pyconv.node.SymbolicTensor is L.SymbolicTensor
    assert pyconv.graph.Node is pyconv.node.Node
    assert pyconv.graph.call_symbolic is pyconv.node.call_symbolic
