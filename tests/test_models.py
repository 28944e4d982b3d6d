"""Sequential models: whole-model gradients, the lectures' networks and their summaries,
learning on real data, freezing, reproducibility, and argument errors."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_dir
from gradcheck import check_coords

import pyconv
from pyconv import layers as L
from pyconv import zoo


def small_cnn(loss="sparse_categorical_crossentropy", head="softmax", units=3):
    model = pyconv.Sequential(
        [
            pyconv.Input((6, 6, 2)),
            L.Conv2D(
                3,
                3,
                padding="same",
                activation="tanh",
                kernel_regularizer=pyconv.regularizers.L2(1e-2),
            ),
            L.BatchNormalization(),
            L.AveragePooling2D(2),
            L.Conv2D(4, 2, activation="elu", bias_regularizer=pyconv.regularizers.L1(1e-3)),
            L.Flatten(),
            L.Dense(5, activation="tanh", activity_regularizer=pyconv.regularizers.L2(1e-2)),
            L.Dense(units, activation=head),
        ]
    )
    model.compile("sgd", loss)
    return model


def model_loss(model, x, y):
    y_pred, _, penalty = model._forward(x, training=True)
    return model.loss(y, y_pred) + penalty + model._regularization(add_grads=False)


@pytest.mark.parametrize(
    "loss,head,targets",
    [
        ("sparse_categorical_crossentropy", "softmax", "sparse"),  # fused softmax + CE
        ("categorical_crossentropy", "softmax", "onehot"),
        ("mse", "softmax", "onehot"),  # softmax backward not fused
        ("binary_crossentropy", "sigmoid", "binary"),  # fused sigmoid + BCE
        ("mae", "linear", "onehot"),
    ],
)
def test_model_parameter_gradients_match_finite_differences(rng, loss, head, targets):
    pyconv.set_random_seed(3)
    model = small_cnn(loss, head)
    x = rng.standard_normal((4, 6, 6, 2)).astype(np.float32)
    labels = np.array([0, 2, 1, 2])
    y = {"sparse": labels, "onehot": np.eye(3, dtype=np.float32)[labels],
         "binary": (rng.random((4, 3)) > 0.5).astype(np.float32)}[targets]  # fmt: skip
    total, grads = model.compute_gradients(x, y)
    assert abs(total - model_loss(model, x, y)) < 1e-5 * max(1, abs(total))
    assert len(grads) == len(model.trainable_weights) == 10
    for var, g in zip(model.trainable_weights, grads):
        check_coords(lambda: model_loss(model, x, y), var, g, rng, var.name, h=1e-2, n=6, tol=3e-2)


def test_fused_softmax_cross_entropy_equals_unfused_chain(rng):
    pyconv.set_random_seed(4)
    fused = small_cnn("categorical_crossentropy")
    x = rng.standard_normal((5, 6, 6, 2)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[[0, 1, 2, 1, 0]]
    loss_a, grads_a = fused.compute_gradients(x, y)
    # the same weights without fusion: softmax as a separate layer after a linear Dense
    pyconv.set_random_seed(4)
    plain = small_cnn("categorical_crossentropy", head="linear")
    plain.add(L.Softmax())
    plain.compile("sgd", "categorical_crossentropy")
    plain.set_weights(fused.get_weights())
    fused.set_weights(plain.get_weights())
    loss_b, grads_b = plain.compute_gradients(x, y)
    assert abs(loss_a - loss_b) < 1e-5
    for a, b in zip(grads_a, grads_b):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)


# --- the lectures' networks ----------------------------------------------------------------


mnist_mlp, cifar_cnn, smiley_cnn = zoo.mnist_mlp, zoo.cifar10_cnn, zoo.smiley_cnn


def summary_lines(model):
    lines = []
    model.summary(print_fn=lines.append)
    return lines


def test_lecture_mnist_mlp_has_932362_params():
    model = mnist_mlp()
    assert model.count_params() == 932_362
    text = "\n".join(summary_lines(model))
    assert "Total params: 932,362" in text and "Non-trainable params: 0" in text
    assert "(None, 512)" in text and "401,920" in text and "5,130" in text


def test_lecture_cifar_cnn_params_and_summary():
    model = cifar_cnn()
    assert model.count_params() == 1_345_066
    assert sum(v.value.size for v in model.trainable_weights) == 1_343_146
    assert sum(v.value.size for v in model.non_trainable_weights) == 1_920
    lines = summary_lines(model)
    text = "\n".join(lines)
    for want in (
        "Total params: 1,345,066",
        "Trainable params: 1,343,146",
        "Non-trainable params: 1,920",
    ):
        assert want in lines, want
    expected_rows = [  # (type, output shape, params) in the lecture's order
        ("Conv2D", "(None, 32, 32, 32)", "896"), ("BatchNormalization", "(None, 32, 32, 32)", "128"),
        ("Conv2D", "(None, 32, 32, 32)", "9,248"), ("BatchNormalization", "(None, 32, 32, 32)", "128"),
        ("MaxPooling2D", "(None, 16, 16, 32)", "0"), ("Dropout", "(None, 16, 16, 32)", "0"),
        ("Conv2D", "(None, 16, 16, 64)", "18,496"), ("BatchNormalization", "(None, 16, 16, 64)", "256"),
        ("Conv2D", "(None, 16, 16, 64)", "36,928"), ("BatchNormalization", "(None, 16, 16, 64)", "256"),
        ("MaxPooling2D", "(None, 8, 8, 64)", "0"), ("Dropout", "(None, 8, 8, 64)", "0"),
        ("Conv2D", "(None, 8, 8, 128)", "73,856"), ("BatchNormalization", "(None, 8, 8, 128)", "512"),
        ("Conv2D", "(None, 8, 8, 128)", "147,584"), ("BatchNormalization", "(None, 8, 8, 128)", "512"),
        ("MaxPooling2D", "(None, 4, 4, 128)", "0"), ("Dropout", "(None, 4, 4, 128)", "0"),
        ("Flatten", "(None, 2048)", "0"), ("Dense", "(None, 512)", "1,049,088"),
        ("BatchNormalization", "(None, 512)", "2,048"), ("Dropout", "(None, 512)", "0"),
        ("Dense", "(None, 10)", "5,130"),
    ]  # fmt: skip
    rows = [l.split() for l in lines if l.startswith(" ") and "(" in l and "Layer (type)" not in l]
    assert len(rows) == len(expected_rows)
    for row, (kind, shape, params) in zip(rows, expected_rows):
        assert row[1] == f"({kind})" and " ".join(row[2:-1]) == shape and row[-1] == params, row
    assert text.startswith('Model: "')


def test_lecture_smiley_cnn_layer_by_layer():
    """Lecture 000's table: 50x50 -> 50x50 means padding="same" on the first two convs,
    50->25->23->21 'valid' 3x3, then 2x2 kernels (9, 8), and 'valid' 2x2 pooling (21->10)."""
    model = smiley_cnn()
    expected = [
        ((50, 50, 16), 160), ((50, 50, 16), 2320), ((25, 25, 16), 0), ((25, 25, 16), 0),
        ((23, 23, 32), 4640), ((21, 21, 32), 9248), ((10, 10, 32), 0), ((10, 10, 32), 0),
        ((9, 9, 64), 8256), ((8, 8, 64), 16448), ((4, 4, 64), 0), ((4, 4, 64), 0),
        ((1024,), 0), ((128,), 131200), ((128,), 0), ((265,), 34185), ((265,), 0), ((1,), 266),
    ]  # fmt: skip
    got = [(layer.output_shape, layer.count_params()) for layer in model.layers]
    assert got == expected
    assert model.count_params() == sum(p for _, p in expected)


# --- learning --------------------------------------------------------------------------------


def test_small_cnn_learns_real_mnist_digits():
    data = data_dir("mnist")
    (xtr, ytr), (xte, yte) = pyconv.datasets.load_mnist(data, download=False)
    pyconv.set_random_seed(0)
    x = xtr[:1000].astype(np.float32) / 255
    xt = xte[:500].astype(np.float32) / 255
    model = pyconv.Sequential(
        [
            L.Conv2D(8, 3, activation="relu", input_shape=(28, 28, 1)),
            L.MaxPooling2D(2),
            L.Conv2D(16, 3, activation="relu"),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dropout(0.2),
            L.Dense(10, activation="softmax"),
        ]
    )
    model.compile(pyconv.optimizers.Adam(0.002), "sparse_categorical_crossentropy", ["accuracy"])
    before = model.evaluate(xt, yte[:500], verbose=0)[1]
    history = model.fit(x, ytr[:1000], batch_size=32, epochs=6, verbose=0, validation_split=0.1)
    loss, acc = model.evaluate(xt, yte[:500], verbose=0)
    assert before < 0.3  # chance level before training
    assert acc > 0.85, f"test accuracy {acc:.3f} after 6 epochs on 900 digits"
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_learns_a_synthetic_task_without_data_files(rng):
    """Where the bright 3x3 patch is (left or right half): learnable by a tiny CNN."""
    pyconv.set_random_seed(1)
    n = 256
    x = rng.random((n, 12, 12, 1)).astype(np.float32) * 0.3
    y = rng.integers(0, 2, n)
    for i in range(n):
        r, c = rng.integers(0, 9), rng.integers(0, 3) + 6 * y[i]
        x[i, r : r + 3, c : c + 3] += 1.0
    model = pyconv.Sequential(
        [L.Conv2D(4, 3, activation="relu", input_shape=(12, 12, 1)), L.MaxPooling2D(2),
         L.Flatten(), L.Dense(1, activation="sigmoid")]
    )  # fmt: skip
    model.compile(pyconv.optimizers.Adam(0.01), "binary_crossentropy", ["accuracy"])
    model.fit(x[:192], y[:192], epochs=15, batch_size=32, verbose=0)
    assert model.evaluate(x[192:], y[192:], verbose=0)[1] > 0.9


# --- freezing, reproducibility ----------------------------------------------------------------


def test_frozen_layers_are_untouched_by_fit(rng):
    pyconv.set_random_seed(5)
    model = small_cnn()
    model.layers[0].trainable = False
    model.layers[1].trainable = False  # batch norm: inference mode, statistics frozen too
    frozen = [w.copy() for l in model.layers[:2] for w in l.get_weights()]
    free = [w.copy() for w in model.layers[-1].get_weights()]
    model.compile("adam", "sparse_categorical_crossentropy")
    x = rng.standard_normal((16, 6, 6, 2)).astype(np.float32)
    model.fit(x, rng.integers(0, 3, 16), epochs=2, batch_size=4, verbose=0)
    for a, b in zip(frozen, [w for l in model.layers[:2] for w in l.get_weights()]):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(free, model.layers[-1].get_weights()))
    assert len(model.trainable_weights) == 10 - 4


def test_same_seed_gives_bit_identical_training(rng):
    x = rng.standard_normal((40, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, 3, 40)

    def run():
        pyconv.set_random_seed(42)
        model = small_cnn()
        model.add(L.Dropout(0.3))  # dropout masks and shuffling both come from the seed
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=8, verbose=0)
        return model.get_weights()

    a, b = run(), run()
    for wa, wb in zip(a, b):
        np.testing.assert_array_equal(wa, wb)
    pyconv.set_random_seed(43)
    c = small_cnn().get_weights()
    assert not np.array_equal(a[0], c[0])


def test_predict_batches_agree_and_inference_ignores_dropout(rng):
    pyconv.set_random_seed(6)
    model = small_cnn()
    model.add(L.Dropout(0.5))
    x = rng.standard_normal((37, 6, 6, 2)).astype(np.float32)
    full = model.predict(x, batch_size=64)
    np.testing.assert_allclose(model.predict(x, batch_size=5), full, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(model.predict(x, batch_size=64), full)
    np.testing.assert_allclose(full.sum(axis=1), 1, rtol=1e-5)
    assert model.predict(x[:0]).shape == (0, 3)


def test_class_weight_scales_the_loss(rng):
    pyconv.set_random_seed(8)
    model = small_cnn()
    x = rng.standard_normal((6, 6, 6, 2)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    base = model.compute_gradients(x, y)[0]
    sw = model._class_sample_weights(y, {0: 2.0, 1: 0.0, 2: 1.0})
    np.testing.assert_array_equal(sw, [2, 0, 1, 2, 0, 1])
    pyconv.set_random_seed(8)
    weighted = small_cnn().compute_gradients(x, y, sample_weight=np.ones(6))[0]
    assert abs(base - weighted) < 1e-6


def test_model_api_basics():
    model = small_cnn()
    assert model.get_layer(model.layers[0].name) is model.layers[0]
    with pytest.raises(ValueError, match="no layer named"):
        model.get_layer("nope")
    assert model.input_shape == (None, 6, 6, 2) and model.output_shape == (None, 3)
    n = model.count_params()
    assert n == sum(l.count_params() for l in model.layers)
    popped = model.pop()
    assert isinstance(popped, L.Dense) and model.output_shape == (None, 5)


def test_lazy_build_from_data(rng):
    model = pyconv.Sequential([L.Conv2D(2, 3), L.Flatten(), L.Dense(2, activation="softmax")])
    with pytest.raises(ValueError, match="not built"):
        model.summary()
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(rng.standard_normal((4, 5, 5, 1)), np.array([0, 1, 0, 1]), verbose=0)
    assert model.input_shape == (None, 5, 5, 1) and model.count_params() == 20 + 2 * 18 + 2


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda m, x, y: m.fit(x[:, :, :, :1], y), ValueError, "expects inputs of shape"),
        (lambda m, x, y: m.fit(x, y[:3]), ValueError, "same number of samples"),
        (lambda m, x, y: m.fit(x, y, batch_size=0), ValueError, "batch_size"),
        (lambda m, x, y: m.fit(x, y, validation_split=1.5), ValueError, "validation_split"),
        (lambda m, x, y: m.fit(x, y + 5), ValueError, "labels"),
        (lambda m, x, y: m.fit(np.array(["a"] * 4), y), TypeError, "numeric"),
        (lambda m, x, y: m.fit(x, y, validation_data=x), ValueError, "validation_data"),
        (lambda m, x, y: m.predict(x, batch_size=-1), ValueError, "batch_size"),
        (lambda m, x, y: m.compile("adamm", "mse"), ValueError, "optimizer"),
        (lambda m, x, y: m.compile("adam", "msee"), ValueError, "loss"),
        (lambda m, x, y: m.compile("adam", "mse", ["acuracy"]), ValueError, "metric"),
        (lambda m, x, y: m.compile("adam"), ValueError, "loss"),
        (lambda m, x, y: m.add("conv"), TypeError, "Layer"),
        (lambda m, x, y: m.add(m.layers[0]), ValueError, "already"),
    ],
)
def test_model_argument_errors(rng, call, exc, match):
    model = small_cnn()
    x = rng.standard_normal((4, 6, 6, 2)).astype(np.float32)
    with pytest.raises(exc, match=match):
        call(model, x, np.array([0, 1, 2, 0]))


def test_fit_before_compile_is_an_error(rng):
    model = pyconv.Sequential([L.Dense(2, input_shape=(3,))])
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(np.zeros((2, 3)), np.zeros((2, 2)))


def test_zoo_parameter_counts_match_their_documentation():
    documented = {"mnist_mlp": 932_362, "mnist_cnn": 1_199_882, "cifar10_cnn": 1_345_066,
                  "fashion_cnn": 872_426, "smiley_cnn": 206_723, "lenet5": 61_706}  # fmt: skip
    assert set(documented) == set(zoo.BUILDERS)
    for name, count in documented.items():
        model = zoo.build(name)
        assert model.count_params() == count, name
        assert f"{count:,}" in zoo.__doc__ and f"{count:,}" in zoo.BUILDERS[name].__doc__
    assert set(zoo.RECIPES) == set(zoo.BUILDERS)
    classic = {"resnet18": 11_689_512, "resnet50": 25_557_032, "cifar_resnet20": 272_474,
               "vgg16": 138_357_544, "alexnet": 61_100_840}  # fmt: skip
    assert set(classic) == set(zoo.CLASSIC)
    for name, count in classic.items():
        model = zoo.build(name)
        assert sum(v.value.size for v in model.trainable_weights) == count, name
        assert f"{count:,}" in zoo.__doc__ and f"{count:,}" in zoo.CLASSIC[name].__doc__
    with pytest.raises(ValueError, match="unknown network"):
        zoo.build("resnet1000")


def test_model_composes_compile_loop_and_saving():
    """Model's public methods, wherever they are implemented (training/compile.py,
    training/loop.py, model_saving.py), and the names pyconv.models exports."""
    from pyconv import model_saving, models
    from pyconv.training import compile as compile_mod
    from pyconv.training import loop

    public = {n for n in dir(models.Model) if not n.startswith("_")}
    assert public == {
        "backward_to", "built", "compile", "compute_gradients", "count_params", "evaluate",
        "fit", "get_config", "get_layer", "get_weights", "inference_fusion", "layer_outputs",
        "layers", "load_weights", "metrics_names", "non_trainable_weights", "predict",
        "predict_on_batch", "save", "save_weights", "set_weights", "summary", "to_json",
        "train_on_batch", "trainable_weights", "weights",
    }  # fmt: skip
    assert models.Model.compile is compile_mod.CompileMixin.compile
    assert models.Model.fit is loop.TrainingLoopMixin.fit
    assert models.load_model is model_saving.load_model is pyconv.load_model
    assert models.model_from_json is model_saving.model_from_json
    for name in ("Sequential", "MODEL_CLASSES", "TapeEntry", "apply_layer", "backprop_layer"):
        assert hasattr(models, name)
