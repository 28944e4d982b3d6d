"""pyconv.onnx: export to ONNX (checked by running the file in onnxruntime), import from ONNX
(checked against the model that was exported, and against PyTorch for a file PyTorch wrote).

Weights are randomized beyond their initial values (biases, batch-norm statistics and
scales), and the classifiers are compared on their logits, so a wrong layout, epsilon, pad
or feature order shows up as a large error instead of hiding in a near-uniform softmax.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

import pyconv
from pyconv import activations, zoo
from pyconv import layers as L

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
import pyconv.onnx as ponnx  # noqa: E402

RTOL = 1e-4


def rel_err(ours, ref) -> float:
    """max |ours - ref| / max |ref| (the error relative to the output's scale)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, f"shape {ours.shape} != {ref.shape}"
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-30))


def randomize(model, rng) -> None:
    """Non-trivial values for what initializes to constants (biases, batch norm)."""
    for v in model.weights:
        kind = v.name.rsplit("/", 1)[-1]
        if kind == "moving_variance":
            v.assign(rng.uniform(0.5, 2.0, v.shape))
        elif kind == "gamma":
            v.assign(rng.uniform(0.5, 1.5, v.shape))
        elif kind in ("bias", "beta", "moving_mean"):
            v.assign(rng.normal(0.0, 0.3, v.shape))


def logits(model):
    """The model with its final softmax removed (compare logits, not probabilities)."""
    model.layers[-1].activation = activations.get("linear")
    return model


def run_ort(path, xs):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xs = xs if isinstance(xs, list) else [xs]
    feeds = {i.name: x for i, x in zip(sess.get_inputs(), xs)}
    out = sess.run(None, feeds)
    return out if len(out) > 1 else out[0]


def check_round_trip(model, x, tmp_path, name, reload=True, **load_kwargs):
    """export -> onnxruntime equals predict; export -> load -> predict equals predict."""
    path = tmp_path / f"{name}.onnx"
    ponnx.export(model, path)
    ref = model.predict(x, verbose=0)
    out = run_ort(path, x)
    refs, outs = (ref, out) if isinstance(ref, list) else ([ref], [out])
    errs = [rel_err(o, r) for o, r in zip(outs, refs)]
    assert max(errs) <= RTOL, f"{name}: onnxruntime vs pyconv relative error {errs}"
    if reload:
        back = ponnx.load(path, **load_kwargs)
        again = back.predict(x, verbose=0)
        agains = again if isinstance(again, list) else [again]
        errs2 = [rel_err(a, r) for a, r in zip(agains, refs)]
        assert max(errs2) <= RTOL, f"{name}: re-imported model vs pyconv relative error {errs2}"
        return path, back
    return path, None


# --- export: the zoo's networks --------------------------------------------------------------


def test_mnist_cnn_round_trip(tmp_path, rng):
    model = zoo.mnist_cnn()  # softmax output: Softmax exported, Flatten of an NHWC map
    randomize(model, rng)
    x = rng.normal(size=(4, 28, 28, 1)).astype(np.float32)
    _, back = check_round_trip(model, x, tmp_path, "mnist_cnn")
    # the re-imported model is the same network: same layers, same weights
    assert [type(l).__name__ for l in back.layers if not isinstance(l, L.InputLayer)] == [
        "Conv2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense"
    ]  # fmt: skip
    assert back.layers[-1].activation.name == "softmax"
    for a, b in zip([v.value for v in model.weights], [v.value for v in back.weights], strict=True):
        np.testing.assert_array_equal(a, b)


def test_flatten_order_is_kept(tmp_path, rng):
    """Flatten of an NHWC map feeds the Dense in (h, w, c) order: the exported graph must
    flatten in that order too (a plain NCHW flatten gives different numbers)."""
    model = pyconv.Sequential(
        [L.Input((3, 4, 5)), L.Conv2D(6, 1), L.Flatten(), L.Dense(3)]
    )  # fmt: skip
    randomize(model, rng)
    x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    check_round_trip(model, x, tmp_path, "flatten_order")


def test_cifar10_cnn_round_trip(tmp_path, rng):
    model = logits(zoo.cifar10_cnn())  # batch norm after convs and after a Dense
    randomize(model, rng)
    x = rng.normal(size=(3, 32, 32, 3)).astype(np.float32)
    check_round_trip(model, x, tmp_path, "cifar10_cnn")


def test_cifar_resnet20_round_trip(tmp_path, rng):
    model = logits(zoo.cifar_resnet20(input_shape=(16, 16, 3)))  # Add, 1x1 projections
    randomize(model, rng)
    x = rng.normal(size=(3, 16, 16, 3)).astype(np.float32)
    _, back = check_round_trip(model, x, tmp_path, "cifar_resnet20")
    assert sum(isinstance(l, L.Add) for l in back.layers) == 9


def test_same_pooling_round_trip(tmp_path, rng):
    """'same' pooling with odd sizes: asymmetric pads (TF rule), padded cells never win a
    max and are not counted in an average (count_include_pad=0)."""
    model = pyconv.Sequential(
        [
            L.Input((13, 11, 4)),
            L.Conv2D(6, 3, padding="same", activation="elu"),
            L.MaxPooling2D(2, padding="same"),  # 13x11 -> 7x6: pads (0, 1) and (0, 1)
            L.AveragePooling2D(3, strides=2, padding="same"),  # 7x6 -> 4x3, pads (1, 1), (0, 1)
            L.AveragePooling2D(2, strides=1, padding="same"),  # pads (0, 1): border averages
            L.Conv2D(
                5,
                (2, 3),
                strides=(2, 1),
                padding=((0, 1), (2, 1)),
                dilation_rate=(1, 2),
                activation="tanh",
            ),  # fmt: skip
            L.Flatten(),
            L.Dense(7, activation="sigmoid"),
        ]
    )
    randomize(model, rng)
    x = rng.normal(size=(3, 13, 11, 4)).astype(np.float32)
    path, _ = check_round_trip(model, x, tmp_path, "same_pooling")
    pools = [n for n in onnx.load(str(path)).graph.node if n.op_type.endswith("Pool")]
    pads = [list(onnx.helper.get_attribute_value(a)) for n in pools for a in n.attribute
            if a.name == "pads"]  # fmt: skip
    assert [0, 0, 1, 1] in pads  # asymmetric: the extra row/column at the bottom/right
    counts = [onnx.helper.get_attribute_value(a) for n in pools for a in n.attribute
              if a.name == "count_include_pad"]  # fmt: skip
    assert counts == [0, 0]


def _misc_graph():
    """Every other exported layer: merges, capped/leaky ReLU, softplus, Dense over a 4-D
    tensor (MatMul), global max pooling, Reshape, batch norm over features, two outputs."""
    inputs = pyconv.Input((9, 10, 3), name="image")
    a = L.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    b = L.Conv2D(4, 1, activation="softplus")(inputs)
    c = L.ReLU(max_value=0.5)(L.Concatenate()([a, b]))
    f = L.Add()([L.Subtract()([a, b]), L.Multiply()([a, b]), a])
    g = L.LeakyReLU(0.2)(f)
    d = L.Dense(3)(g)  # over the channels of each pixel
    v1 = L.GlobalMaxPooling2D()(g)
    v2 = L.Reshape((3,))(L.GlobalAveragePooling2D(keepdims=True)(d))
    v3 = L.Flatten()(L.MaxPooling2D(3)(c))
    h = L.BatchNormalization()(L.Dense(6, activation="elu")(L.Concatenate()([v1, v2, v3])))
    out1 = L.Dense(4, name="scores")(h)
    out2 = L.Softmax(name="probs")(L.Dense(5)(L.Dropout(0.5)(h)))
    return pyconv.Model(inputs, [out1, out2], name="misc")


def test_misc_layers_round_trip(tmp_path, rng):
    model = _misc_graph()
    randomize(model, rng)
    x = rng.normal(size=(3, 9, 10, 3)).astype(np.float32)
    path, back = check_round_trip(model, x, tmp_path, "misc")
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["image"]
    assert [o.name for o in graph.output] == ["scores", "probs"]
    assert not any(n.op_type == "Dropout" for n in graph.node)


def test_channels_first_layers_round_trip(tmp_path, rng):
    """Layers with data_format='channels_first' (the array is NCHW already), BN on axis 1,
    Flatten(channels_first); re-imported keeping NCHW (data_format='channels_first')."""
    model = pyconv.Sequential(
        [
            L.Input((6, 7, 5)),
            L.Conv2D(4, 3, padding="same", data_format="channels_first", activation="relu"),
            L.BatchNormalization(axis=1),
            L.MaxPooling2D(2, data_format="channels_first"),
            L.Flatten(data_format="channels_first"),
            L.Dense(3),
        ]
    )
    randomize(model, rng)
    x = rng.normal(size=(2, 6, 7, 5)).astype(np.float32)
    check_round_trip(model, x, tmp_path, "channels_first", data_format="channels_first")


def test_export_refuses_unsupported_layer(tmp_path):
    siamese, _ = zoo.siamese_network()
    target = tmp_path / "siamese.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(ValueError, match=r"'distance' \(EuclideanDistance\)"):
        ponnx.export(siamese, target)
    assert target.read_bytes() == b"previous"  # nothing half-written in its place
    assert [p.name for p in tmp_path.iterdir()] == ["siamese.onnx"]  # no temp file left
    with pytest.raises(ValueError, match="opset"):
        ponnx.export(zoo.mnist_cnn(), tmp_path / "m.onnx", opset=9)


# --- import --------------------------------------------------------------------------------


def test_import_from_pytorch(tmp_path):
    """A CNN written by torch.onnx.export: conv (+BN folded in by the exporter), BN after a
    residual add, ReLU, max pooling, average pooling counting the padding (PyTorch's
    default) and not, a depthwise conv, leaky ReLU, concat, flatten (NCHW order) and linear
    layers, ReLU6 (Clip), tanh. pyconv (NHWC input) gives PyTorch's outputs (NCHW input)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
            self.bn_add = nn.BatchNorm2d(8)
            self.pool = nn.MaxPool2d(2)
            self.avg = nn.AvgPool2d(3, stride=1, padding=1)  # count_include_pad=True
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.c3 = nn.Conv2d(16, 6, 3, stride=2, padding=(1, 0))
            self.avg2 = nn.AvgPool2d(2)
            self.fc1, self.fc2 = nn.Linear(6 * 2 * 1, 10), nn.Linear(10, 4)

        def features(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            y = torch.relu(self.bn_add(y + self.b2(self.c2(y))))  # residual add
            y = self.pool(y)
            y = torch.cat([self.avg(y), nn.functional.leaky_relu(self.dw(y), 0.1)], 1)
            y = self.avg2(torch.sigmoid(self.c3(y)))  # (N, 6, 2, 1): flatten order matters
            return self.fc1(torch.flatten(y, 1))

        def forward(self, x):
            return torch.tanh(self.fc2(nn.functional.relu6(self.features(x))))  # Clip(0, 6)

    torch.manual_seed(0)
    net = Net()
    for bn in (net.b1, net.b2, net.bn_add):
        bn.running_mean.normal_(0, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.normal_(0, 0.3)
    net.fc1.weight.data *= 30.0  # some features reach the cap of ReLU6
    net.eval()
    x = torch.randn(5, 3, 16, 14)
    path = tmp_path / "torch_cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"],
            output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
        )  # fmt: skip
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Conv", "BatchNormalization", "Add", "MaxPool", "AveragePool", "Flatten", "Clip"} <= ops
    with torch.no_grad():
        ref = net(x).numpy()
    with torch.no_grad():
        assert (net.features(x) > 6).any() and (net.features(x) < 0).any()
    model = ponnx.load(path)
    assert model.input_shape == (None, 16, 14, 3)
    out = model.predict(x.numpy().transpose(0, 2, 3, 1), verbose=0)
    assert rel_err(out, ref) <= RTOL
    model_cf = ponnx.load(path, data_format="channels_first")
    assert model_cf.input_shape == (None, 3, 16, 14)
    assert rel_err(model_cf.predict(x.numpy(), verbose=0), ref) <= RTOL


def _tiny_onnx(path, op, **attrs):
    """Conv -> ``op`` -> output, written with onnx.helper."""
    h = onnx.helper
    w = onnx.numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")
    nodes = [
        h.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        h.make_node(op, ["c"], ["y"], name="my_node", **attrs),
    ]
    graph = h.make_graph(
        nodes, "tiny",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 4, 4])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        initializer=[w],
    )  # fmt: skip
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), str(path))


def test_import_refuses_unsupported_op(tmp_path):
    _tiny_onnx(tmp_path / "cos.onnx", "Cos")
    with pytest.raises(ValueError, match=r"unsupported ONNX op 'Cos' \(node 'my_node'\)"):
        ponnx.load(tmp_path / "cos.onnx")
    _tiny_onnx(tmp_path / "relu.onnx", "Relu")  # the same graph with a supported op loads
    model = ponnx.load(tmp_path / "relu.onnx")
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(
        model.predict(x, verbose=0), np.maximum(x.sum(-1, keepdims=True), 0).repeat(2, -1),
        rtol=1e-5, atol=1e-6,
    )  # fmt: skip
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all \xff\xff")
    with pytest.raises(ValueError, match="junk.onnx"):
        ponnx.load(tmp_path / "junk.onnx")


def test_imported_model_fine_tunes(tmp_path, rng):
    """Freeze an imported base, put a new head on an inner tensor, train: only the head moves."""
    model = zoo.mnist_cnn(input_shape=(12, 12, 1), num_classes=3)
    ponnx.export(model, tmp_path / "base.onnx")
    base = ponnx.load(tmp_path / "base.onnx")
    for layer in base.layers:
        layer.trainable = False
    features = base.layers[-2].output  # the tensor before the old head
    new = pyconv.Model(base.input, L.Dense(2, activation="softmax")(features))
    new.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    frozen = [v.value.copy() for v in base.weights]
    x = rng.normal(size=(16, 12, 12, 1)).astype(np.float32)
    new.fit(x, rng.integers(0, 2, 16), epochs=1, batch_size=8, verbose=0)
    for before, v in zip(frozen, base.weights):
        np.testing.assert_array_equal(before, v.value)
    assert new.output_shape == (None, 2)


def test_import_pyconv_does_not_need_onnx(monkeypatch, tmp_path):
    code = (
        "import sys, pyconv; assert 'onnx' not in sys.modules and 'onnxruntime' not in sys.modules"
    )
    # outside the checkout: there ``import pyconv`` would find the source tree (no _core)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'pyconv\[onnx\]'"):
        ponnx.load("anything.onnx")
