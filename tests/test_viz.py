"""pyconv.viz: classic kernels (against a float64 NumPy reference), filters and feature maps."""

from __future__ import annotations

import numpy as np
import pytest

import pyconv
from pyconv import layers as L
from pyconv import viz

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

LECTURE_KERNELS = {  # the lectures' tables (Sobel-Horizontal with the centre typo fixed)
    "identity": [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
    "edge_detection_1": [[1, 0, -1], [0, 0, 0], [-1, 0, 1]],
    "edge_detection_2": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
    "edge_detection_3": [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]],
    "sobel_x": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "sobel_y": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
    "box_blur": np.ones((3, 3)) / 9,
    "gaussian_blur": np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16,
}


def reference(image, kernel) -> np.ndarray:
    """float64 'same' cross-correlation with zero padding: np.pad + one shifted sum per tap."""
    image = np.asarray(image, np.float64)
    kernel = np.asarray(kernel, np.float64)
    kh, kw = kernel.shape
    top, left = (kh - 1) // 2, (kw - 1) // 2  # the extra row/column of an even kernel: bottom/right
    h, w = image.shape[:2]
    pads = [(top, kh - 1 - top), (left, kw - 1 - left)] + [(0, 0)] * (image.ndim - 2)
    padded = np.pad(image, pads)
    out = np.zeros(image.shape)
    for a in range(kh):
        for b in range(kw):
            out += kernel[a, b] * padded[a : a + h, b : b + w]
    return out


@pytest.fixture
def plt():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    yield pyplot
    pyplot.close("all")


def image_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.images]


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    Image = pytest.importorskip("PIL.Image")
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 50 and im.size[1] > 50


# --- classic kernels and apply_kernel ----------------------------------------------------------


def test_classic_kernels_are_the_lectures():
    kernels = viz.classic_kernels()
    assert list(kernels) == list(LECTURE_KERNELS)
    for name, k in kernels.items():
        assert k.dtype == np.float32 and k.shape == (3, 3), name
        np.testing.assert_array_equal(k, np.asarray(LECTURE_KERNELS[name], np.float32), name)
    for name in ("identity", "sharpen", "box_blur", "gaussian_blur"):
        assert kernels[name].sum() == pytest.approx(1.0, abs=1e-6), name
    for name in ("edge_detection_1", "edge_detection_2", "edge_detection_3", "sobel_x", "sobel_y"):
        assert kernels[name].sum() == 0, name
    kernels["identity"][1, 1] = 7  # a new dict of new arrays each call
    assert viz.classic_kernels()["identity"][1, 1] == 1


@pytest.mark.parametrize("shape", [(13, 11), (9, 14, 3), (7, 8, 1)], ids=["grey", "rgb", "hw1"])
def test_apply_kernel_matches_reference(shape, rng):
    image = rng.standard_normal(shape).astype(np.float32)
    kernels = dict(viz.classic_kernels())
    for ks in [(5, 5), (3, 5), (1, 1), (2, 4)]:
        kernels[f"random{ks}"] = rng.standard_normal(ks).astype(np.float32)
    for name, k in kernels.items():
        out = viz.apply_kernel(image, k)
        assert out.dtype == np.float32 and out.shape == image.shape, name
        want = reference(image, k)
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5 * k.size, err_msg=name)


def test_apply_kernel_rgb_is_per_channel(rng):
    image = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)  # any real dtype, used as is
    k = viz.classic_kernels()["sobel_x"]
    out = viz.apply_kernel(image, k)
    for c in range(3):
        np.testing.assert_allclose(out[:, :, c], viz.apply_kernel(image[:, :, c], k), atol=1e-4)
    np.testing.assert_allclose(out, reference(image, k), atol=1e-3)


def test_identity_returns_the_image(rng):
    image = rng.standard_normal((6, 9, 3)).astype(np.float32)
    np.testing.assert_array_equal(viz.apply_kernel(image, viz.classic_kernels()["identity"]), image)


def test_box_blur_of_a_constant_is_constant_inside():
    kernels = viz.classic_kernels()
    image = np.full((8, 10), 3.0, np.float32)
    for name in ("box_blur", "gaussian_blur"):
        out = viz.apply_kernel(image, kernels[name])
        np.testing.assert_allclose(out[1:-1, 1:-1], 3.0, rtol=1e-6, err_msg=name)
        assert (out[0] < 3.0).all() and (out[:, -1] < 3.0).all(), name  # zero padding darkens
    for name in ("edge_detection_1", "edge_detection_2", "edge_detection_3", "sobel_x", "sobel_y"):
        np.testing.assert_allclose(viz.apply_kernel(image, kernels[name])[1:-1, 1:-1], 0, atol=1e-5)


def test_sobel_of_a_ramp():
    ramp = np.tile(np.arange(12, dtype=np.float32), (9, 1))  # brighter to the right
    kernels = viz.classic_kernels()
    # cross-correlation, not flipped: (+1 * (j+1) - 1 * (j-1)) * (1 + 2 + 1) = 8
    np.testing.assert_array_equal(viz.apply_kernel(ramp, kernels["sobel_x"])[1:-1, 1:-1], 8.0)
    np.testing.assert_array_equal(viz.apply_kernel(ramp, kernels["sobel_y"])[1:-1, 1:-1], 0.0)
    np.testing.assert_array_equal(viz.apply_kernel(ramp.T, kernels["sobel_y"])[1:-1, 1:-1], 8.0)


def test_apply_kernel_errors_name_the_argument():
    k = viz.classic_kernels()["sharpen"]
    with pytest.raises(ValueError, match="image"):
        viz.apply_kernel(np.zeros(5), k)
    with pytest.raises(ValueError, match="image"):
        viz.apply_kernel(np.zeros((1, 4, 4, 1)), k)
    with pytest.raises(TypeError, match="image"):
        viz.apply_kernel("cat.png", k)
    with pytest.raises(ValueError, match="kernel"):
        viz.apply_kernel(np.zeros((4, 4)), np.zeros((3, 3, 1)))
    with pytest.raises(TypeError, match="kernel"):
        viz.apply_kernel(np.zeros((4, 4)), None)


# --- filters ----------------------------------------------------------------------------------


def conv_model(channels=3, data_format=None):
    shape = (channels, 10, 10) if data_format == "channels_first" else (10, 10, channels)
    return pyconv.Sequential(
        [
            L.Conv2D(6, 3, padding="same", data_format=data_format, input_shape=shape, name="c1"),
            L.ReLU(name="relu"),
            L.MaxPooling2D(data_format=data_format, name="pool"),
            L.Conv2D(5, 3, data_format=data_format, name="c2"),
            L.Flatten(data_format=data_format, name="flat"),
            L.Dense(2, name="dense"),
        ]
    )


def test_filter_images_are_min_max_scaled_per_filter():
    model = conv_model(channels=3)
    kernel = model.get_layer("c1").get_weights()[0]  # (3, 3, 3, 6)
    rgb = viz.filter_images(model.get_layer("c1"))
    assert rgb.shape == (6, 3, 3, 3) and rgb.dtype == np.float32
    f = kernel[..., 4]
    np.testing.assert_allclose(rgb[4], (f - f.min()) / (f.max() - f.min()), atol=1e-6)
    mean = viz.filter_images(model.get_layer("c2"))  # 6 input channels: the mean
    k2 = model.get_layer("c2").get_weights()[0].mean(axis=2)
    assert mean.shape == (5, 3, 3)
    np.testing.assert_allclose(
        mean[2], (k2[..., 2] - k2[..., 2].min()) / np.ptp(k2[..., 2]), atol=1e-6
    )
    one = viz.filter_images(model.get_layer("c1"), channel=1)
    assert one.shape == (6, 3, 3)
    np.testing.assert_allclose(one.min(axis=(1, 2)), 0)
    np.testing.assert_allclose(one.max(axis=(1, 2)), 1)
    model.get_layer("c2").set_weights([np.zeros((3, 3, 6, 5), np.float32), np.zeros(5, np.float32)])
    np.testing.assert_array_equal(viz.filter_images(model.get_layer("c2")), 0.5)  # constant


def test_plot_filters(plt, tmp_path):
    model = conv_model(channels=3)
    fig = viz.plot_filters(model.get_layer("c1"), path=tmp_path / "f.png")
    axes = image_axes(fig)
    assert len(axes) == len(fig.axes) == 6
    assert axes[0].images[0].get_array().shape == (3, 3, 3)  # colour filters shown in RGB
    assert_png(tmp_path / "f.png")
    fig = viz.plot_filters(model.get_layer("c2"), max_filters=4, channel=0, cmap="magma")
    assert len(image_axes(fig)) == 4
    assert image_axes(fig)[0].images[0].get_array().shape == (3, 3)


def test_plot_filters_errors_name_the_argument(plt):
    model = conv_model(channels=3)
    with pytest.raises(TypeError, match="layer must be a Conv2D.*Dense 'dense'"):
        viz.plot_filters(model.get_layer("dense"))
    with pytest.raises(TypeError, match="layer must be a Conv2D"):
        viz.plot_filters(np.zeros((3, 3, 1, 4)))
    with pytest.raises(ValueError, match="not built"):
        viz.plot_filters(L.Conv2D(4, 3))
    with pytest.raises(ValueError, match=r"channel must be in \[0, 3\)"):
        viz.plot_filters(model.get_layer("c1"), channel=3)
    with pytest.raises(ValueError, match="channel='rgb' needs .* 3 input channels"):
        viz.plot_filters(model.get_layer("c2"), channel="rgb")
    with pytest.raises(ValueError, match="channel must be"):
        viz.plot_filters(model.get_layer("c1"), channel="red")
    with pytest.raises(TypeError, match="channel"):
        viz.plot_filters(model.get_layer("c1"), channel=True)
    with pytest.raises(ValueError, match="max_filters"):
        viz.plot_filters(model.get_layer("c1"), max_filters=0)
    with pytest.raises(TypeError, match="max_filters"):
        viz.plot_filters(model.get_layer("c1"), max_filters=2.5)


# --- feature maps -----------------------------------------------------------------------------


def test_feature_maps_come_from_layer_outputs(rng):
    model = conv_model(channels=1)
    image = rng.random((10, 10)).astype(np.float32)
    maps = viz.feature_maps(model, image)
    assert list(maps) == ["c1", "pool", "c2"]  # every Conv2D and pooling layer, in order
    assert [m.shape for m in maps.values()] == [(10, 10, 6), (5, 5, 6), (3, 3, 5)]
    outs = model.layer_outputs(image[None, :, :, None])
    for name, m in maps.items():
        np.testing.assert_array_equal(m, outs[name][0])
    same = viz.feature_maps(model, image[None, :, :, None], layers=["relu", model.get_layer("c2")])
    assert list(same) == ["relu", "c2"]
    np.testing.assert_array_equal(same["c2"], maps["c2"])


def test_feature_maps_channels_first(rng):
    model = conv_model(channels=2, data_format="channels_first")
    chw = rng.random((2, 10, 10)).astype(np.float32)
    outs = model.layer_outputs(chw[None])
    maps = viz.feature_maps(model, chw, layers=["c1", "relu", "pool"])
    for name, m in maps.items():  # (H, W, C), also for the ReLU after a channels-first conv
        np.testing.assert_array_equal(m, outs[name][0].transpose(1, 2, 0))
    hwc = viz.feature_maps(model, chw.transpose(1, 2, 0), layers=["c1"])  # (H, W, C) accepted
    np.testing.assert_array_equal(hwc["c1"], maps["c1"])
    grey = pyconv.Sequential([L.Conv2D(3, 3, data_format="channels_first", input_shape=(1, 6, 6))])
    assert viz.feature_maps(grey, rng.random((6, 6)))[grey.layers[0].name].shape == (4, 4, 3)


def test_plot_feature_maps(plt, tmp_path, rng):
    model = conv_model(channels=3)
    image = rng.random((10, 10, 3))
    fig = viz.plot_feature_maps(model, image, path=tmp_path / "maps.png")
    assert len(image_axes(fig)) == len(fig.axes) == 6 + 6 + 5
    assert_png(tmp_path / "maps.png")
    fig = viz.plot_feature_maps(model, image[None], layers=["c2"], max_maps=3, cmap="gray")
    assert len(image_axes(fig)) == 3
    assert image_axes(fig)[0].images[0].get_array().shape == (3, 3)


def test_feature_map_errors_name_the_argument(plt, rng):
    model = conv_model(channels=1)
    image = rng.random((10, 10))
    with pytest.raises(ValueError, match="layers: 'dense'"):
        viz.plot_feature_maps(model, image, layers=["c1", "dense"])
    with pytest.raises(TypeError, match="layers"):
        viz.plot_feature_maps(model, image, layers=[3])
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        viz.plot_feature_maps(model, image, layers="nope")
    with pytest.raises(ValueError, match="image must be one image"):
        viz.plot_feature_maps(model, np.zeros((2, 10, 10, 1)))
    with pytest.raises(ValueError, match="max_maps"):
        viz.plot_feature_maps(model, image, max_maps=0)
    dense = pyconv.Sequential([L.Dense(3, input_shape=(4,))])
    with pytest.raises(ValueError, match="no Conv2D or pooling layer"):
        viz.feature_maps(dense, np.zeros((1, 4)))


# --- plot_kernels -----------------------------------------------------------------------------


def test_plot_kernels(plt, tmp_path, rng):
    grey = rng.random((12, 12))
    fig = viz.plot_kernels(grey, path=tmp_path / "k.png")
    assert len(image_axes(fig)) == len(fig.axes) == 1 + len(viz.classic_kernels())
    assert_png(tmp_path / "k.png")
    fig = viz.plot_kernels(
        rng.integers(0, 256, (12, 12, 3), dtype=np.uint8), ["sobel_x", "sharpen"]
    )
    assert len(image_axes(fig)) == 3
    assert image_axes(fig)[1].images[0].get_array().shape == (12, 12, 3)
    fig = viz.plot_kernels(grey[:, :, None], {"mine": np.eye(3)}, cmap="viridis")
    assert [ax.get_title() for ax in image_axes(fig)] == ["original", "mine"]


def test_plot_kernels_errors_name_the_argument(plt):
    with pytest.raises(ValueError, match="kernels: unknown kernel name"):
        viz.plot_kernels(np.zeros((5, 5)), ["sobel_x", "emboss"])
    with pytest.raises(ValueError, match="kernels"):
        viz.plot_kernels(np.zeros((5, 5)), {})
    with pytest.raises(ValueError, match="image"):
        viz.plot_kernels(np.zeros((5, 5, 2)))


# --- training curves -------------------------------------------------------------------------


@pytest.mark.parametrize("epochs", [1, 2, 7, 40])
def test_plot_history_has_whole_epoch_ticks(plt, tmp_path, epochs):
    hist = {"loss": list(np.linspace(1, 0.1, epochs)), "val_loss": [0.5] * epochs}
    fig = viz.plot_history(hist, path=tmp_path / "h.png")
    fig.canvas.draw()
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks and all(t == int(t) and 1 <= t <= epochs for t in ticks), ticks
    assert lo < 1 and epochs < hi  # every point is inside the axis
    assert_png(tmp_path / "h.png")


def test_figures_are_written_in_the_format_the_name_says(plt, tmp_path):
    hist = {"loss": [1.0, 0.5]}
    viz.plot_history(hist, path=tmp_path / "h.svg")
    assert b"<svg" in (tmp_path / "h.svg").read_bytes()[:500]
    viz.plot_history(hist, path=tmp_path / "h.jpg")
    assert (tmp_path / "h.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    with pytest.raises(ValueError, match=r"cannot tell a picture format from .*h\.xyz"):
        viz.plot_history(hist, path=tmp_path / "h.xyz")
    assert not (tmp_path / "h.xyz").exists()
    viz.save_png(viz.plot_history(hist), tmp_path / "h.any")  # save_png: PNG whatever the name
    assert (tmp_path / "h.any").read_bytes()[:8] == PNG_SIGNATURE
