"""Grad-CAM / Grad-CAM++ against an independent float64 computation (finite-difference
gradients of a NumPy re-implementation of the model's second half), localization on a
synthetic task trained in the test, Model.backward_to, overlays and the command (flat
memory over repeated calls: tests/test_reliability.py)."""

from __future__ import annotations

import numpy as np
import pytest

import pyconv
from pyconv import cli, gradcam
from pyconv import layers as L


def small_model(seed=0, data_format="channels_last"):
    """conv -> conv (target, linear) -> BN -> ReLU -> maxpool -> flatten -> dense softmax."""
    pyconv.set_random_seed(seed)
    shape = (8, 8, 2) if data_format == "channels_last" else (2, 8, 8)
    kw = dict(data_format=data_format)
    m = pyconv.Sequential(
        [
            L.Conv2D(4, 3, activation="relu", input_shape=shape, **kw),
            L.Conv2D(3, 3, name="target", **kw),
            L.BatchNormalization(axis=-1 if data_format == "channels_last" else 1),
            L.ReLU(),
            L.MaxPooling2D(2, **kw),
            L.Flatten(data_format=data_format),
            L.Dense(4, activation="softmax"),
        ]
    )
    m.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(seed)
    bn = m.layers[2]
    gamma, beta, mean, var = (w.copy() for w in bn.get_weights())
    bn.set_weights([1 + rng.random(3) * 0.5, rng.normal(0, 0.2, 3), rng.normal(0, 0.1, 3),
                    0.5 + rng.random(3)])  # fmt: skip
    return m


def second_half64(m, a: np.ndarray) -> np.ndarray:
    """The logits from the target's output A (h, w, K), in float64, written independently."""
    gamma, beta, mean, var = (w.astype(np.float64) for w in m.layers[2].get_weights())
    z = (a - mean) / np.sqrt(var + m.layers[2].epsilon) * gamma + beta
    z = np.maximum(z, 0)
    h, w, k = z.shape
    pooled = z[: h // 2 * 2, : w // 2 * 2].reshape(h // 2, 2, w // 2, 2, k).max(axis=(1, 3))
    kernel, bias = (v.astype(np.float64) for v in m.layers[-1].get_weights())
    return pooled.reshape(-1) @ kernel + bias


def reference_cam(m, x, classes, method, eps=1e-4):
    """Independent Grad-CAM(++): A from layer_outputs, dy^c/dA by central differences."""
    outs = m.layer_outputs(x, ["target"])["target"].astype(np.float64)
    cams = []
    for a, c in zip(outs, classes):
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            ap, am = a.copy(), a.copy()
            ap[idx] += eps
            am[idx] -= eps
            g[idx] = (second_half64(m, ap)[c] - second_half64(m, am)[c]) / (2 * eps)
        if method == "gradcam":
            weights = g.mean(axis=(0, 1))
        else:  # Grad-CAM++ (Chattopadhyay et al. eq. 19 with the exp score), channel by channel
            weights = np.zeros(a.shape[2])
            for k in range(a.shape[2]):
                gk, ak = g[:, :, k], a[:, :, k]
                denom = 2 * gk**2 + ak.sum() * gk**3
                alpha = np.where(denom != 0, gk**2 / np.where(denom != 0, denom, 1), 0)
                weights[k] = (alpha * np.maximum(gk, 0)).sum()
        cam = np.maximum((a * weights).sum(axis=2), 0)
        cams.append(cam / cam.max() if cam.max() > 0 else cam)
    return np.array(cams)


@pytest.mark.parametrize("method", gradcam.METHODS)
def test_heatmaps_match_an_independent_float64_computation(method):
    m = small_model()
    x = np.random.default_rng(1).normal(size=(3, 8, 8, 2)).astype(np.float32)
    probs = m.predict(x, verbose=0)
    for cls in (None, np.array([3, 0, 2])):
        classes = probs.argmax(1) if cls is None else cls
        heat, p = gradcam.grad_cam(m, x, layer="target", class_index=cls, method=method,
                                   upsample=False)  # fmt: skip
        np.testing.assert_allclose(p, probs, rtol=1e-6)
        ref = reference_cam(m, x, classes, method)
        assert heat.shape == (3, 4, 4) and heat.dtype == np.float32
        np.testing.assert_allclose(heat, ref, atol=2e-4)
        assert np.isclose(heat.max(axis=(1, 2)), 1).all() or (heat == 0).any()


def test_channels_first_gives_the_same_heatmaps():
    last, first = small_model(), small_model(data_format="channels_first")
    for a, b in zip(last.layers, first.layers):
        b.set_weights(a.get_weights())
    x = np.random.default_rng(2).normal(size=(4, 8, 8, 2)).astype(np.float32)
    h_last, _ = gradcam.grad_cam(last, x, layer="target")
    h_first, _ = gradcam.grad_cam(first, x.transpose(0, 3, 1, 2), layer=first.layers[1])
    assert h_first.shape == (4, 8, 8)
    np.testing.assert_allclose(h_first, h_last, atol=1e-5)


def test_upsampling_is_bilinear_with_half_pixel_centres():
    torch = pytest.importorskip("torch")
    maps = np.random.default_rng(3).random((2, 5, 7))
    for size in ((20, 28), (5, 7), (13, 9)):
        ours = gradcam.bilinear_resize(maps, size)
        ref = torch.nn.functional.interpolate(torch.tensor(maps)[:, None], size=size,
                                              mode="bilinear", align_corners=False)  # fmt: skip
        np.testing.assert_allclose(ours, ref[:, 0].numpy(), atol=1e-6)


def test_feature_map_geometry_finds_the_pixel_under_each_cell():
    """Convolutions whose kernels pick their window's centre (a delta) copy the input pixel
    that feature_map_geometry says each output cell sits over."""

    def delta_conv(k, **kw):
        layer = L.Conv2D(1, k, use_bias=False, kernel_initializer="zeros", **kw)
        return layer, k

    stack = [
        delta_conv(3, input_shape=(23, 21, 1)),  # valid: +1
        delta_conv(5, dilation_rate=2),  # valid, dilated: +4
        delta_conv(3, strides=2, padding="same"),  # pads 0 or 1 before: depends on size
        delta_conv(3, strides=(1, 2), padding="same"),
    ]
    m = pyconv.Sequential([layer for layer, _ in stack])
    x = np.random.default_rng(11).random((1, 23, 21, 1)).astype(np.float32)
    m.predict(x, verbose=0)
    for layer, k in stack:
        w = np.zeros((k, k, 1, 1), np.float32)
        w[k // 2, k // 2] = 1
        layer.set_weights([w])
    y = m.predict(x, verbose=0)[0, :, :, 0]
    (sr, orow), (sc, ocol) = gradcam.feature_map_geometry(m, m.layers[-1])
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            r, c = orow + i * sr, ocol + j * sc
            inside = 0 <= r < 23 and 0 <= c < 21 and r == int(r) and c == int(c)
            assert y[i, j] == (x[0, int(r), int(c), 0] if inside else 0), (i, j, r, c)
    assert (sr, sc) == (2, 4)


def test_maps_of_valid_convolutions_line_up_with_the_image():
    m = pyconv.Sequential(
        [L.Conv2D(2, 3, input_shape=(12, 12, 1)), L.Conv2D(2, 3), L.MaxPooling2D(2)]
    )
    m.predict(np.zeros((1, 12, 12, 1), np.float32), verbose=0)
    assert gradcam.feature_map_geometry(m, m.layers[1]) == ((1, 2), (1, 2))
    assert gradcam.feature_map_geometry(m, m.layers[2]) == ((2, 2.5), (2, 2.5))
    impulse = np.zeros((1, 8, 8))
    impulse[0, 3, 5] = 1
    up = gradcam.upsample_to_input(impulse, gradcam.feature_map_geometry(m, m.layers[1]), (12, 12))
    assert np.unravel_index(up[0].argmax(), up[0].shape) == (5, 7) and up[0, 5, 7] == 1
    # 'same' padding and 2x2 pools: the map covers the image exactly, as a plain resize does
    cifar = pyconv.zoo.cifar10_cnn()
    cifar.predict(np.zeros((1, 32, 32, 3), np.float32), verbose=0)
    geometry = gradcam.feature_map_geometry(cifar, gradcam.last_conv_layer(cifar))
    maps = np.random.default_rng(12).random((2, 8, 8))
    np.testing.assert_allclose(
        gradcam.upsample_to_input(maps, geometry, (32, 32)),
        gradcam.bilinear_resize(maps, (32, 32)),
        atol=1e-6,
    )


def test_default_layer_is_the_last_conv_and_batches_agree():
    m = small_model()
    x = np.random.default_rng(4).normal(size=(5, 8, 8, 2)).astype(np.float32)
    h_all, p_all = gradcam.grad_cam(m, x)
    h_small, p_small = gradcam.grad_cam(m, x, batch_size=2, class_index=list(p_all.argmax(1)))
    assert gradcam.last_conv_layer(m).name == "target"
    np.testing.assert_allclose(h_small, h_all, atol=1e-6)
    np.testing.assert_allclose(p_small, p_all, atol=1e-6)
    assert h_all.shape == (5, 8, 8) and 0 <= h_all.min() and h_all.max() <= 1


def test_weight_gradients_are_untouched_and_nothing_is_kept():
    m = small_model()
    x = np.random.default_rng(5).normal(size=(2, 8, 8, 2)).astype(np.float32)
    for v in m.trainable_weights:  # pending gradients, e.g. mid-way through accumulation
        v.grad = np.full_like(v.value, 0.5)
    attrs = [dict(vars(layer)) for layer in m.layers]
    gradcam.grad_cam(m, x)
    for v in m.trainable_weights:
        assert np.all(v.grad == 0.5), v.name
    for a, layer in zip(attrs, m.layers):
        assert set(vars(layer)) == set(a), layer.name  # no cached activations or hooks


def test_backward_to_matches_the_full_backward_at_the_first_layer():
    """dL/d(first conv output) from backward_to, pushed through that conv's own backward,
    must give the same kernel gradient as compute_gradients (the loss-gradient seed)."""
    pyconv.set_random_seed(1)
    m = pyconv.Sequential(  # no BN or dropout: training and inference passes coincide
        [
            L.Conv2D(4, 3, activation="relu", input_shape=(8, 8, 2)),
            L.Conv2D(3, 3, activation="tanh"),
            L.Flatten(),
            L.Dense(4, activation="softmax"),
        ]
    )
    m.compile("sgd", "sparse_categorical_crossentropy")
    x = np.random.default_rng(6).normal(size=(3, 8, 8, 2)).astype(np.float32)
    y = np.array([0, 2, 1])
    _, grad_list = m.compute_gradients(x, y)
    grads = dict(zip([v.name for v in m.trainable_weights], grad_list))
    first = m.layers[0]

    def seed(p):  # d(mean sparse CE)/d logits = (softmax - onehot) / n
        g = p.copy()
        g[np.arange(3), y] -= 1
        return g / 3

    a, da, p = m.backward_to(x, first, seed)
    np.testing.assert_allclose(p, m.predict(x, verbose=0), rtol=1e-6)
    _, ctx = first.forward(x, training=False)
    for v in first.trainable_weights:
        v.grad = None
    first.backward(ctx, da, need_input_grad=False)
    np.testing.assert_allclose(first.kernel.grad, grads[first.kernel.name], rtol=1e-4, atol=1e-6)


def test_backward_to_rejects_bad_arguments():
    m = small_model()
    x = np.zeros((2, 8, 8, 2), np.float32)
    with pytest.raises(ValueError, match="output_gradient"):
        m.backward_to(x, "target", np.zeros((2, 3)))
    with pytest.raises(ValueError, match="not in model"):
        m.backward_to(x, L.Dense(3), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="no_such"):
        m.backward_to(x, "no_such", np.zeros((2, 4)))


def test_grad_cam_rejects_bad_arguments():
    m = small_model()
    x = np.zeros((2, 8, 8, 2), np.float32)
    with pytest.raises(ValueError, match="method"):
        gradcam.grad_cam(m, x, method="cam")
    with pytest.raises(ValueError, match="class_index"):
        gradcam.grad_cam(m, x, class_index=4)
    with pytest.raises(ValueError, match="class_index"):
        gradcam.grad_cam(m, x, class_index=[0, 1, 2])
    with pytest.raises(TypeError, match="class_index"):
        gradcam.grad_cam(m, x, class_index=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        gradcam.grad_cam(m, x, batch_size=0)
    with pytest.raises(ValueError, match="images"):
        gradcam.grad_cam(m, x[0])
    with pytest.raises(ValueError, match="4-D"):
        gradcam.grad_cam(m, x, layer=m.layers[5])  # Flatten
    mlp = pyconv.Sequential([L.Dense(3, input_shape=(4,))])
    with pytest.raises(ValueError, match="no Conv2D"):
        gradcam.grad_cam(mlp, np.zeros((1, 4)))


# --- a synthetic task whose evidence sits in a known region --------------------------------


_YY, _XX = np.mgrid[0:4, 0:4]
TEXTURES = (((_YY + _XX) % 2).astype(np.float32), (_YY % 2).astype(np.float32))


def textured_patches(n, rng, size=16):
    """Uniform-noise images with one 4x4 patch at a random place: a checkerboard (class 0) or
    stripes (class 1). The patch is no brighter than the noise on average, so only a model
    that learned the textures looks there. Returns images (n, size, size, 1), labels, and
    the patches' top-left corners."""
    x = rng.uniform(0, 1, (n, size, size, 1)).astype(np.float32)
    y = rng.integers(0, 2, n)
    corners = rng.integers(0, size - 3, (n, 2))
    for i, (r, c) in enumerate(corners):
        x[i, r : r + 4, c : c + 4, 0] = TEXTURES[y[i]]
    return x, y, corners


def peak_on_patch_rate(heat, corners) -> float:
    hits = []
    for hm, (r, c) in zip(heat, corners):
        pr, pc = np.unravel_index(hm.argmax(), hm.shape)
        hits.append(r - 1 <= pr <= r + 4 and c - 1 <= pc <= c + 4)  # patch + 1 px margin
    return float(np.mean(hits))


def test_heatmap_peak_falls_on_the_evidence():
    pyconv.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y, _ = textured_patches(1000, rng)
    xt, yt, corners = textured_patches(200, rng)
    m = pyconv.Sequential(
        [
            L.Conv2D(8, 3, padding="same", activation="relu", input_shape=(16, 16, 1)),
            L.Conv2D(16, 3, padding="same", activation="relu"),
            L.MaxPooling2D(2),
            L.Conv2D(16, 3, padding="same", activation="relu"),
            L.GlobalAveragePooling2D(),
            L.Dense(2, activation="softmax"),
        ]
    )
    m.compile(pyconv.optimizers.Adam(0.01), "sparse_categorical_crossentropy", ["accuracy"])
    # Before training the peaks land on the patch for ~40% (Grad-CAM) / ~65% (Grad-CAM++)
    # of the images (a random pixel: ~14%); after training, for nearly all of them.
    m.fit(x, y, batch_size=64, epochs=4, verbose=0)
    acc = m.evaluate(xt, yt, verbose=0)[1]
    assert acc > 0.95, f"the synthetic task was not learned (accuracy {acc:.3f})"
    for method in gradcam.METHODS:
        heat, _ = gradcam.grad_cam(m, xt, method=method)
        rate = peak_on_patch_rate(heat, corners)
        assert rate > 0.9, f"{method}: the peak is on the patch for only {rate:.2f} of images"


# --- pictures and the command ------------------------------------------------------------


def test_overlay_blends_the_colormap_over_the_image():
    matplotlib = pytest.importorskip("matplotlib")
    img = np.random.default_rng(8).integers(0, 256, (10, 12), dtype=np.uint8)
    heat = np.linspace(0, 1, 20).reshape(4, 5)
    out = gradcam.overlay(img, heat, alpha=0.0)
    assert out.shape == (10, 12, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.repeat(img[:, :, None], 3, axis=2))
    full = gradcam.overlay(img, np.ones((10, 12)), alpha=1.0)
    jet_top = np.rint(np.array(matplotlib.colormaps["jet"](1.0)[:3]) * 255)
    np.testing.assert_array_equal(full, np.broadcast_to(jet_top, (10, 12, 3)))
    half = gradcam.overlay(img / 255.0, np.zeros((10, 12)), alpha=0.5, colormap="viridis")
    v0 = np.array(matplotlib.colormaps["viridis"](0.0)[:3])
    expect = np.rint((0.5 * img[:, :, None] / 255 + 0.5 * v0) * 255)
    np.testing.assert_allclose(half, expect, atol=1)
    with pytest.raises(ValueError, match="alpha"):
        gradcam.overlay(img, heat, alpha=2)
    with pytest.raises(ValueError, match="colormap"):
        gradcam.overlay(img, heat, colormap="no-such-map")
    with pytest.raises(ValueError, match="heatmap"):
        gradcam.overlay(img, np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="image"):
        gradcam.overlay(np.zeros((4, 4, 2)), heat)


def test_save_image_writes_a_png(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    rgb = np.random.default_rng(9).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    gradcam.save_image(rgb, tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(np.asarray(pil.open(tmp_path / "a.png")), rgb)
    with pytest.raises(ValueError, match="uint8"):
        gradcam.save_image(rgb.astype(np.float32), tmp_path / "b.png")
    assert not (tmp_path / "b.png").exists()


def test_save_image_format_follows_the_extension(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    rgb = np.random.default_rng(9).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    for name, fmt in (("a.jpg", "JPEG"), ("a.JPEG", "JPEG"), ("a.webp", "WEBP"), ("a.bmp", "BMP")):
        gradcam.save_image(rgb, tmp_path / name)
        with pil.open(tmp_path / name) as im:
            assert im.format == fmt and im.size == (7, 6)
    for name in ("a.xyz", "noext"):
        with pytest.raises(ValueError, match="cannot tell an image format"):
            gradcam.save_image(rgb, tmp_path / name)
        assert not (tmp_path / name).exists()


def test_overlay_of_empty_pictures_is_refused():
    with pytest.raises(ValueError, match="sizes must be >= 1"):
        gradcam.overlay(np.zeros((0, 5)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="sizes must be >= 1"):
        gradcam.overlay(np.zeros((5, 5)), np.zeros((3, 0)))


def test_gradcam_command(tmp_path, capsys):
    pil = pytest.importorskip("PIL.Image")
    pytest.importorskip("matplotlib")
    pyconv.set_random_seed(0)
    m = pyconv.Sequential(
        [
            L.Conv2D(4, 3, activation="relu", input_shape=(28, 28, 1), name="c1"),
            L.Conv2D(4, 3, activation="relu", name="c2"),
            L.GlobalAveragePooling2D(),
            L.Dense(10, activation="softmax"),
        ]
    )
    m.compile("adam", "sparse_categorical_crossentropy")
    m.metadata["class_names"] = [f"digit {i}" for i in range(10)]
    m.save(tmp_path / "m.pyconv")
    digit = (np.random.default_rng(10).random((28, 28)) * 255).astype(np.uint8)
    pil.fromarray(digit).save(tmp_path / "d.png")
    out = tmp_path / "cam.png"
    args = ["gradcam", "--model", str(tmp_path / "m.pyconv"), "--image", str(tmp_path / "d.png")]
    assert cli.main([*args, "--out", str(out), "--class", "3", "--layer", "c1"]) == 0
    text = capsys.readouterr().out
    assert "class digit 3" in text and "layer c1" in text
    with pil.open(out) as im:
        assert im.size == (224, 224) and im.mode == "RGB"  # 28 px enlarged 8x
    assert cli.main([*args, "--out", str(out), "--method", "gradcam++", "--min-size", "1"]) == 0
    with pil.open(out) as im:
        assert im.size == (28, 28)
    assert cli.main([*args, "--out", str(out), "--layer", "nope"]) == 1
    assert "nope" in capsys.readouterr().err
