"""What a Keras user types first: metrics_names, to_json / model_from_json,
utils.to_categorical, ImageAugmenter.flow, predict(verbose=1), and a clear refusal of
.keras/.h5 file names (pyconv writes its own format)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import pyconv
from pyconv import layers
from pyconv.augment import ImageAugmenter
from pyconv.models import model_from_json
from pyconv.utils import to_categorical


def _cnn():
    pyconv.set_random_seed(0)
    model = pyconv.Sequential(
        [
            pyconv.Input((8, 8, 1)),
            layers.Conv2D(2, 3, activation="relu"),
            layers.Flatten(),
            layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _graph():
    pyconv.set_random_seed(0)
    inputs = pyconv.Input((8, 8, 1))
    x = layers.Conv2D(2, 3, padding="same", activation="relu")(inputs)
    x = layers.Add()([x, layers.Conv2D(2, 3, padding="same")(x)])
    return pyconv.Model(inputs, layers.Dense(3)(layers.Flatten()(x)), name="skip")


def _x(n=10):
    return np.random.default_rng(0).random((n, 8, 8, 1), dtype=np.float32)


def test_metrics_names_follow_keras():
    model = pyconv.Sequential([pyconv.Input((4,)), layers.Dense(2, activation="softmax")])
    assert model.metrics_names == []
    model.compile(
        "sgd",
        "sparse_categorical_crossentropy",
        metrics=["accuracy", "sparse_categorical_accuracy"],
    )
    assert model.metrics_names == ["loss", "accuracy", "sparse_categorical_accuracy"]
    result = model.evaluate(np.ones((3, 4)), np.array([0, 1, 0]), verbose=0)
    assert len(result) == len(model.metrics_names)


@pytest.mark.parametrize("make", [_cnn, _graph])
def test_to_json_round_trips_the_architecture(make):
    model = make()
    text = model.to_json()
    assert json.loads(text)["class_name"] == type(model).__name__
    clone = model_from_json(text)
    assert type(clone) is type(model) and clone.to_json() == text
    assert [w.shape for w in clone.get_weights()] == [w.shape for w in model.get_weights()]
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(clone.predict(_x()), model.predict(_x()))


@pytest.mark.parametrize(
    ("text", "error"),
    [("not json", ValueError), ("[1, 2]", ValueError), (b'{"class_name": "Nope", "config": {}}',
     ValueError), (3, TypeError)],
)  # fmt: skip
def test_model_from_json_rejects_what_is_no_architecture(text, error):
    with pytest.raises(error):
        model_from_json(text)


def test_to_categorical_follows_keras():
    np.testing.assert_array_equal(to_categorical([0, 2, 1]), np.eye(3)[[0, 2, 1]])
    out = to_categorical(np.array([[1], [0]]), num_classes=4, dtype="uint8")
    assert out.shape == (2, 4) and out.dtype == np.uint8 and out[0, 1] == 1
    assert to_categorical(np.zeros((2, 3), int), 2).shape == (2, 3, 2)
    assert to_categorical([1.0, 0.0]).dtype == np.float32
    for bad, error in (([-1, 0], ValueError), ([0, 5], ValueError), ([0.5], ValueError),
                       ([np.nan], ValueError), (["a"], TypeError)):  # fmt: skip
        with pytest.raises(error):
            to_categorical(bad, num_classes=3 if bad != [0, 5] else 5)
    with pytest.raises(TypeError, match="num_classes"):
        to_categorical([0, 1], num_classes=2.0)


def test_flow_yields_augmented_batches_forever():
    x, y = _x(10), np.arange(10)
    flow = ImageAugmenter(rotation_range=20, horizontal_flip=True).flow(x, y, 4, seed=1)
    assert len(flow) == 3
    batches = [next(flow) for _ in range(6)]  # two passes: it goes on, reshuffled
    assert [len(b[1]) for b in batches] == [4, 4, 2, 4, 4, 2]
    assert sorted(np.concatenate([b[1] for b in batches[:3]])) == list(range(10))
    assert all(b[0].shape[1:] == (8, 8, 1) and b[0].dtype == np.float32 for b in batches)
    again = ImageAugmenter(rotation_range=20, horizontal_flip=True).flow(x, y, 4, seed=1)
    for (xa, ya), (xb, yb) in zip(batches, (next(again) for _ in range(6))):
        np.testing.assert_array_equal(xa, xb)  # the seed repeats shuffling and transforms
        np.testing.assert_array_equal(ya, yb)
    plain = ImageAugmenter().flow(x, batch_size=10, shuffle=False)
    np.testing.assert_array_equal(next(plain), x)  # no y: batches of x alone


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"x": np.ones((2, 3))}, ValueError), ({"y": np.arange(3)}, ValueError),
     ({"batch_size": 0}, ValueError), ({"batch_size": "4"}, TypeError),
     ({"shuffle": "yes"}, TypeError), ({"seed": -1}, ValueError),
     ({"x": np.ones((0, 8, 8, 1))}, ValueError)],
)  # fmt: skip
def test_flow_checks_its_arguments(kwargs, error):
    args = {"x": _x(10), "y": None, **kwargs}
    with pytest.raises(error):
        ImageAugmenter().flow(**args)


def test_fit_on_a_flow_says_how_to_augment():
    model = _cnn()
    with pytest.raises(TypeError, match="augment="):
        model.fit(ImageAugmenter().flow(_x(), np.zeros(10, int)))


def test_predict_verbose_shows_the_progress_bar(capsys):
    model = _cnn()
    model.predict(_x(10), batch_size=4)
    assert capsys.readouterr().out == ""  # verbose=0 by default
    model.predict(_x(10), batch_size=4, verbose=1)
    out = capsys.readouterr().out
    assert "3/3 [==============================]" in out and "ms/step" in out
    model.evaluate(_x(10), np.zeros(10, int), batch_size=4, verbose=2)
    assert "3/3 [" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["m.keras", "m.h5", "M.HDF5"])
def test_keras_file_names_are_refused_not_written_as_pyconv_zips(tmp_path, name):
    model = _cnn()
    path = tmp_path / name
    with pytest.raises(ValueError, match=r"\.pyconv"):
        model.save(path)
    with pytest.raises(ValueError, match=r"\.pyconv"):
        model.save_weights(str(path))
    with pytest.raises(ValueError, match=r"\.pyconv"):
        pyconv.callbacks.ModelCheckpoint(str(tmp_path / ("ckpt-{epoch}" + path.suffix)))
    assert list(tmp_path.iterdir()) == []
    model.save(tmp_path / "m.pyconv")
    assert pyconv.load_model(tmp_path / "m.pyconv").count_params() == model.count_params()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"seed": "3"}, TypeError), ({"seed": 2.7}, TypeError), ({"seed": -1}, ValueError),
     ({"cval": "0"}, TypeError), ({"cval": float("nan")}, ValueError),
     ({"horizontal_flip": "no"}, TypeError)],
)  # fmt: skip
def test_image_augmenter_checks_its_arguments(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        ImageAugmenter(**kwargs)


def test_keras_files_are_named_as_such_when_loaded(tmp_path):
    """A real Keras file (HDF5 signature, or a .keras zip of config.json + weights) is named
    as a Keras file, not reported as a corrupted pyconv file."""
    h5 = tmp_path / "model.bin"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    zipped = tmp_path / "model.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("config.json", "{}")
        z.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n")
    for path in (h5, zipped):
        with pytest.raises(pyconv.ModelFileError, match="Keras"):
            pyconv.load_model(path)
        with pytest.raises(pyconv.ModelFileError, match="Keras"):
            _cnn().load_weights(path)


def test_layer_set_weights_is_all_or_nothing():
    layer = _cnn().layers[0]
    before = [w.copy() for w in layer.get_weights()]
    good = [np.ones_like(before[0])]
    with pytest.raises(ValueError):
        layer.set_weights([*good, np.ones(before[1].size + 1, np.float32)])
    for was, now in zip(before, layer.get_weights()):
        np.testing.assert_array_equal(was, now)


def test_loss_flags_must_be_bools():
    with pytest.raises(TypeError, match="from_logits"):
        pyconv.losses.SparseCategoricalCrossentropy(from_logits="x")
