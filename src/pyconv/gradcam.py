"""Grad-CAM and Grad-CAM++: where in the image a network finds its evidence for a class.

Grad-CAM (Selvaraju et al., arXiv:1610.02391; lecture 002): split the model at a conv layer
with output A (N, h, w, K); take the gradients of the class score y^c (the pre-softmax
logit) with respect to A through the model's own backward pass (:meth:`Model.backward_to`);
average them over space into one weight per channel,

    alpha_k = 1/(h w) sum_ij dy^c/dA_ij^k,          heatmap = ReLU(sum_k alpha_k A^k),

then upsample the (h, w) map to the input size -- each input pixel reads the map where it
sits under the layer's windows, so maps of 'valid' convolutions line up with the image --
and scale it to [0, 1] (divide by its max).

Grad-CAM++ (Chattopadhyay et al., arXiv:1710.11063) weights each position's positive
gradient instead of averaging all of them, which separates several instances of a class:
with g = dy^c/dA (using the paper's exp(y^c) score, whose higher derivatives reduce to
powers of g),

    a_ij^k = g^2 / (2 g^2 + sum_ab A_ab^k g^3),    w_k = sum_ij a_ij^k ReLU(g_ij^k).

    cams, probs = grad_cam(model, x_test[:8])                  # last conv layer, top class
    rgb = overlay(x_test[0], cams[0])                           # (H, W, 3) uint8
    save_image(rgb, "cam.png")

Nothing is cached on the model: each call is one inference forward pass and one backward
pass down to the layer, and leaves the weights' gradients untouched.
"""

from __future__ import annotations

import io
import os

import numpy as np

from . import saving
from .layers import Conv2D, Layer
from .utils import optional_module

METHODS = ("gradcam", "gradcam++")


def last_conv_layer(model) -> Layer:
    """The model's last Conv2D layer (Grad-CAM's default)."""
    convs = [layer for layer in model.layers if isinstance(layer, Conv2D)]
    if not convs:
        raise ValueError(f"model {model.name!r} has no Conv2D layer; pass layer=")
    return convs[-1]


def _channels_last(layer) -> bool:
    return getattr(layer, "data_format", "channels_last") != "channels_first"


def _input_hw(model, images: np.ndarray) -> tuple[int, int]:
    """Spatial size of the model's input images, whichever data format the first conv uses."""
    first = next((layer for layer in model.layers if hasattr(layer, "data_format")), None)
    if images.ndim != 4:
        raise ValueError(f"images must be a batch (N, H, W, C) of images, got {images.shape}")
    return images.shape[1:3] if first is None or _channels_last(first) else images.shape[2:4]


def _class_indices(class_index, probs: np.ndarray) -> np.ndarray:
    n, classes = probs.shape
    if class_index is None:
        return probs.argmax(axis=1) if classes > 1 else np.zeros(n, np.int64)
    idx = np.asarray(class_index)
    if idx.dtype.kind not in "iu" or idx.ndim > 1:
        raise TypeError("class_index must be None, an int, or a sequence of ints (one per image)")
    idx = np.broadcast_to(idx, (n,)) if idx.ndim == 0 else idx
    if idx.shape != (n,):
        raise ValueError(f"class_index must have one entry per image ({n}), got {idx.shape[0]}")
    bad = idx[(idx < 0) | (idx >= classes)]
    if bad.size:
        bad = np.unique(bad)
        got = ", ".join(str(v) for v in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise ValueError(
            f"class_index must be in [0, {classes - 1}] (the model has {classes} "
            f"class{'' if classes == 1 else 'es'}), got {got}"
        )
    return idx.astype(np.int64)


def cam_weights(activations: np.ndarray, gradients: np.ndarray, method: str) -> np.ndarray:
    """Per-channel weights (N, K) from A and dy^c/dA, both (N, h, w, K) (float64 inside)."""
    a = activations.astype(np.float64)
    g = gradients.astype(np.float64)
    if method == "gradcam":
        return g.mean(axis=(1, 2))
    g2 = g * g
    denom = 2 * g2 + a.sum(axis=(1, 2), keepdims=True) * g2 * g
    ratio = np.divide(g2, denom, out=np.zeros_like(g2), where=denom != 0)
    return (ratio * np.maximum(g, 0)).sum(axis=(1, 2))


def _interpolation(pos: np.ndarray, n_in: int):
    """Bilinear reading of a length-n_in signal at positions ``pos`` (pixel centres at
    integers; outside [0, n_in - 1] the edge value is used): the two neighbours' indices and
    the second one's weight."""
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    return lo, np.minimum(lo + 1, n_in - 1), pos - lo


def _resample(maps: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """maps (N, h, w) read bilinearly at the given row and column positions: (N, H, W).
    Separable, two neighbours per axis: O(N H W) time and memory, whatever h and w."""
    maps = maps.astype(np.float64)
    lo, hi, f = _interpolation(rows, maps.shape[1])
    f = f[None, :, None]
    maps = (1 - f) * maps[:, lo, :] + f * maps[:, hi, :]  # (N, H, w)
    lo, hi, f = _interpolation(cols, maps.shape[2])
    return ((1 - f) * maps[:, :, lo] + f * maps[:, :, hi]).astype(np.float32)


def bilinear_resize(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize maps (N, h, w) to (N, H, W) bilinearly with half-pixel centres (as PIL, OpenCV
    and torch's align_corners=False do; edges clamp)."""
    return _resample(maps, *_resize_positions(maps.shape[1:], size))


def _resize_positions(shape: tuple[int, int], size: tuple[int, int]):
    """Where each output row and column of a (half-pixel centred) resize reads its input."""
    (h, w), (height, width) = shape, size
    if min(h, w, height, width) < 1:
        raise ValueError(f"cannot resize {tuple(shape)} to {tuple(size)}: sizes must be >= 1")
    rows = (np.arange(height) + 0.5) * (h / height) - 0.5
    cols = (np.arange(width) + 0.5) * (w / width) - 0.5
    return rows, cols


def feature_map_geometry(model, layer):
    """((scale, offset) for rows, for columns): pixel (i, j) of ``layer``'s output is the
    centre of a window over input pixel (offset_r + i*scale_r, offset_c + j*scale_c),
    composed from each layer's :meth:`Layer.spatial_map`. None where a layer on the way
    cannot say (the heatmap is then stretched over the image)."""
    geometry = [(1.0, 0.0), (1.0, 0.0)]
    # a layer graph: the layers on the path from the input to ``layer`` (through the first
    # input of each merge, whose inputs are aligned pixel for pixel)
    path = model._layer_path(layer) if hasattr(model, "_layer_path") else model.layers
    for current in path:
        step = current.spatial_map()
        if step is None:
            return None
        # input position = offset + scale * (position in current's input)
        geometry = [(sc * s, off + sc * o) for (sc, off), (s, o) in zip(geometry, step)]
        if current is layer:
            return tuple(geometry)
    return None


def upsample_to_input(maps: np.ndarray, geometry, size: tuple[int, int]) -> np.ndarray:
    """Layer-resolution maps (N, h, w) on the input's (H, W) pixel grid: each input pixel reads
    the map where it sits under the layer's windows (feature_map_geometry), so a map from
    'valid' convolutions lines up with the image instead of being stretched over it."""
    if geometry is None:
        return bilinear_resize(maps, size)
    (sr, orow), (sc, ocol) = geometry
    return _resample(maps, (np.arange(size[0]) - orow) / sr, (np.arange(size[1]) - ocol) / sc)


def _normalize(cams: np.ndarray) -> np.ndarray:
    """Scale each map to [0, 1] by its maximum (all-zero maps stay zero)."""
    top = cams.max(axis=(1, 2), keepdims=True)
    return np.divide(cams, top, out=np.zeros_like(cams), where=top > 0)


def grad_cam(
    model,
    images,
    layer=None,
    class_index=None,
    method: str = "gradcam",
    upsample: bool = True,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Class-activation heatmaps of a batch of images.

    model: a built Model; images: (N, H, W, C) (or the model's layout) preprocessed as the
    model expects. layer: a layer with a 4-D output (object or name; default the last
    Conv2D). class_index: None (each image's predicted class), an int, or one int per image.
    method: "gradcam" or "gradcam++". upsample=False keeps the layer's (h, w) resolution.

    Returns (heatmaps (N, H, W) float32 in [0, 1], predictions (N, classes) = model output).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    x = np.asarray(images)
    if x.dtype.kind not in "fiub":
        raise TypeError(f"images must be numeric, got dtype {x.dtype}")
    if class_index is not None and np.ndim(class_index) == 1 and len(class_index) != len(x):
        raise ValueError(
            f"class_index must have one entry per image ({len(x)}), got {len(class_index)}"
        )
    target = last_conv_layer(model) if layer is None else model._resolve_layer(layer)
    size = _input_hw(model, x)
    heatmaps, predictions = [], []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]

        def seed(y, class_index=class_index, start=start):  # the classes need the output
            if y.ndim != 2:
                raise ValueError(f"Grad-CAM needs a (N, classes) model output, got {y.shape}")
            ci = class_index
            if ci is not None and np.ndim(ci) == 1:
                ci = np.asarray(ci)[start : start + len(y)]
            idx = _class_indices(ci, y)
            onehot = np.zeros(y.shape, np.float32)
            onehot[np.arange(len(y)), idx] = 1
            return onehot

        a, da, y = model.backward_to(xb, target, seed, logits=True)
        if a.ndim != 4:
            raise ValueError(f"layer {target.name!r} output {a.shape} is not a 4-D feature map")
        if not _channels_last(target):
            a, da = a.transpose(0, 2, 3, 1), da.transpose(0, 2, 3, 1)
        weights = cam_weights(a, da, method)  # (n, K)
        cams = np.maximum(np.einsum("nhwk,nk->nhw", a.astype(np.float64), weights), 0)
        if upsample:
            cams = upsample_to_input(cams, feature_map_geometry(model, target), size)
        heatmaps.append(_normalize(cams.astype(np.float32)))
        predictions.append(y)
    return np.concatenate(heatmaps), np.concatenate(predictions)


# --- pictures ---------------------------------------------------------------------------------


def get_colormap(colormap):
    """A matplotlib colormap from its name (ValueError naming an unknown one), or itself."""
    matplotlib = optional_module("matplotlib", "overlay needs matplotlib", "viz")
    if isinstance(colormap, str):
        try:
            return matplotlib.colormaps[colormap]
        except KeyError:
            raise ValueError(f"colormap {colormap!r} is not a matplotlib colormap") from None
    if callable(colormap):
        return colormap
    raise TypeError(f"colormap must be a name or a matplotlib Colormap, got {colormap!r}")


def _as_rgb(image) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, 3) image, uint8 or numeric, as (H, W, 1 or 3) (no copy)."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[:, :, None]
    elif not (img.ndim == 3 and img.shape[2] in (1, 3)):
        raise ValueError(f"image must be (H, W), (H, W, 1) or (H, W, 3), got {img.shape}")
    if img.dtype.kind not in "fiu":
        raise TypeError(f"image must be uint8 or float, got dtype {img.dtype}")
    return img


def _rgb_float(img: np.ndarray) -> np.ndarray:
    """Part of an _as_rgb image as float (h, w, 3) in [0, 1] (uint8 / 255, others clipped)."""
    img = img / 255.0 if img.dtype == np.uint8 else np.clip(img.astype(np.float64), 0, 1)
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img


_OVERLAY_CHUNK = 1 << 16  # pixels blended at a time: bounds the float temporaries (~8 MB)


def overlay(image, heatmap, alpha: float = 0.5, colormap="jet") -> np.ndarray:
    """The heatmap, coloured by ``colormap``, blended over the image: (H, W, 3) uint8.

    image: (H, W), (H, W, 1) or (H, W, 3), uint8 or float in [0, 1]. heatmap: (h, w) in
    [0, 1], resized bilinearly to the image when the sizes differ. alpha: the heatmap's
    weight (0 = image only, 1 = heatmap only). Works in row blocks, so a large image costs
    little beyond its uint8 result.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    img = _as_rgb(image)
    hm = np.asarray(heatmap)
    if hm.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (h, w), got shape {hm.shape}")
    cmap = get_colormap(colormap)
    height, width = img.shape[:2]
    # the heatmap on the image's grid, one block of rows at a time (as bilinear_resize)
    rows, cols = _resize_positions(hm.shape, (height, width))
    resized = hm.shape != (height, width)
    out = np.empty((height, width, 3), np.uint8)
    step = max(1, _OVERLAY_CHUNK // max(width, 1))
    for r in range(0, height, step):
        part = _resample(hm[None], rows[r : r + step], cols)[0] if resized else hm[r : r + step]
        colored = cmap(np.clip(part.astype(np.float64), 0, 1))[..., :3]
        blend = (1 - alpha) * _rgb_float(img[r : r + step]) + alpha * colored
        out[r : r + step] = np.clip(np.rint(blend * 255), 0, 255)
    return out


def image_format(path) -> str:
    """Pillow's name of the image format for ``path``'s extension ("PNG", "JPEG", ...);
    ValueError for an extension Pillow cannot write."""
    Image = optional_module("PIL.Image", "saving images needs Pillow", "viz")
    Image.init()
    ext = os.path.splitext(os.fspath(path))[1].lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(
            f"cannot tell an image format Pillow can write from {os.fspath(path)!r}: "
            "end the name in .png, .jpg, .webp, .bmp, .tif, ..."
        )
    return fmt


def save_image(image, path) -> None:
    """Write an (H, W) or (H, W, 3) uint8 image, atomically (Pillow), in the format its
    extension names (.png, .jpg, ...; ValueError for one Pillow cannot write)."""
    fmt = image_format(path)
    from PIL import Image

    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"image must be uint8 (H, W) or (H, W, 3), got {img.dtype} {img.shape}")
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    saving.atomic_write(path, lambda f: f.write(buf.getvalue()))
