"""Pictures of training and of what a network sees (matplotlib; ``pip install pyconv[viz]``).

Figures are returned (so they can be shown or styled) and, with ``path=``, written
atomically in the format the name's extension says (.png, .jpg, .svg, .pdf, ...).

- :func:`plot_history`: loss and metric curves.
- :func:`plot_filters`: the learned kernels of a Conv2D layer (:func:`filter_images`).
- :func:`plot_feature_maps`: what each conv/pooling layer outputs for one image
  (:func:`feature_maps`).
- :func:`classic_kernels`, :func:`apply_kernel`, :func:`plot_kernels`: the hand-made kernels
  of the lectures (identity, edge detection, Sobel, sharpen, box and Gaussian blur).
"""

from __future__ import annotations

import io
import math
import os

import numpy as np

from . import functional, saving
from ._shapes import as_int
from .layers.base import Layer
from .layers.conv import Conv2D
from .layers.pooling import AveragePooling2D, MaxPooling2D
from .utils import as_float32, optional_module


def _pyplot():
    matplotlib = optional_module("matplotlib", "pyconv's pictures need matplotlib", "viz")
    matplotlib.use("Agg", force=False)  # files, not windows, unless the user chose one
    import matplotlib.pyplot as plt

    return plt


def figure_format(path) -> str:
    """The file format ``path``'s extension names ("png", "jpg", "svg", "pdf", ...);
    ValueError for one matplotlib cannot write (so nothing is written under a wrong name)."""
    _pyplot()
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    fmt = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    if fmt not in formats:
        raise ValueError(
            f"cannot tell a picture format from {os.fspath(path)!r}: end the name in "
            f"{', '.join('.' + f for f in formats)}"
        )
    return fmt


def save_figure(fig, path) -> None:
    """Write a matplotlib figure to ``path`` atomically, in the format its extension names."""
    _save(fig, path, figure_format(path))


def save_png(fig, path) -> None:
    """Write a matplotlib figure to ``path`` as PNG (whatever its name), atomically."""
    _save(fig, path, "png")


def _save(fig, path, fmt: str) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=110, bbox_inches="tight")
    saving.atomic_write(path, lambda f: f.write(buf.getvalue()))


def plot_history(history, path=None, title=None):
    """Loss and metric curves per epoch (training and validation) from a History or its dict."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    hist = getattr(history, "history", history)
    if not isinstance(hist, dict) or not hist:
        raise ValueError("history must be a non-empty History or dict of per-epoch lists")
    skip = ("learning_rate", "epoch_seconds")
    names = [k for k in hist if not k.startswith("val_") and k not in skip]
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        epochs = range(1, len(hist[name]) + 1)
        ax.plot(epochs, hist[name], "o-", ms=3, label=f"training {name}")
        if f"val_{name}" in hist:
            ax.plot(range(1, len(hist[f"val_{name}"]) + 1), hist[f"val_{name}"], "s-", ms=3,
                    label=f"validation {name}")  # fmt: skip
        ax.set_xlabel("epoch")
        # whole epochs only, one tick at least: a 1-epoch run's axis is not 0.94 ... 1.06
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlim(0.5, max(len(hist[name]), len(hist.get(f"val_{name}", ()))) + 0.5)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


# --- shared helpers ------------------------------------------------------------------------


def _positive_int(value, name: str) -> int:
    n = as_int(value, name)
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return n


def _minmax(a: np.ndarray, axes: tuple) -> np.ndarray:
    """Scale ``a`` to [0, 1] over ``axes`` (each remaining index on its own); constant -> 0.5."""
    lo = a.min(axis=axes, keepdims=True)
    span = a.max(axis=axes, keepdims=True) - lo
    scaled = (a - lo) / np.where(span > 0, span, 1.0)
    return np.where(span > 0, scaled, 0.5).astype(np.float32)


def _finish(fig, path):
    if path is not None:
        save_figure(fig, path)
    return fig


# --- learned filters ------------------------------------------------------------------------


def filter_images(layer, channel=None) -> np.ndarray:
    """The filters of a built Conv2D layer as pictures, each min-max scaled to [0, 1].

    The kernel is ``layer.get_weights()[0]``, shape (kh, kw, in/groups, filters). ``channel``
    picks what each filter shows:

    - ``None`` (default): ``"rgb"`` when the layer sees 3 input channels (a colour image),
      else ``"mean"``;
    - ``"mean"``: the mean over the input channels -> (filters, kh, kw);
    - ``"rgb"``: the 3 input channels as colours -> (filters, kh, kw, 3), scaled per filter
      over all three together (so the colours keep their balance);
    - an int ``c``: input channel ``c`` only -> (filters, kh, kw).

    Returns float32 (filters, kh, kw) or (filters, kh, kw, 3). A constant filter shows 0.5.
    """
    if not isinstance(layer, Conv2D):
        what = f"{type(layer).__name__} {layer.name!r}" if isinstance(layer, Layer) else None
        raise TypeError(
            f"layer must be a Conv2D layer, got {what or type(layer).__name__} "
            "(filters are pictures of a convolution kernel)"
        )
    if not layer.built:
        raise ValueError(
            f"layer {layer.name!r} is not built yet, so it has no filters: give the model an "
            "input_shape (or call it on data) first"
        )
    kernel = np.asarray(layer.get_weights()[0], np.float64)  # (kh, kw, in/groups, filters)
    cin = kernel.shape[2]
    if channel is None:
        channel = "rgb" if cin == 3 else "mean"
    if isinstance(channel, str):
        mode = channel.lower()
        if mode == "mean":
            return _minmax(kernel.mean(axis=2).transpose(2, 0, 1), (1, 2))
        if mode == "rgb":
            if cin != 3:
                raise ValueError(
                    f"channel='rgb' needs a layer with 3 input channels; {layer.name!r} has {cin}"
                )
            return _minmax(kernel.transpose(3, 0, 1, 2), (1, 2, 3))
        raise ValueError(f"channel must be None, 'mean', 'rgb' or an int, got {channel!r}")
    if isinstance(channel, (bool, np.bool_)) or not isinstance(channel, (int, np.integer)):
        raise TypeError(
            f"channel must be None, 'mean', 'rgb' or an int, got {type(channel).__name__}"
        )
    if not 0 <= channel < cin:
        raise ValueError(
            f"channel must be in [0, {cin}) for layer {layer.name!r} ({cin} input channels), "
            f"got {channel}"
        )
    return _minmax(kernel[:, :, int(channel), :].transpose(2, 0, 1), (1, 2))


def plot_filters(layer, path=None, channel=None, max_filters=64, cmap="gray"):
    """A grid of a Conv2D layer's filters (the first ``max_filters``), one small image each.

    Each filter is its (kh, kw) kernel, min-max scaled to [0, 1] on its own; ``channel`` says
    which input channel it shows (see :func:`filter_images`: default the RGB picture for a
    layer on colour images, else the mean over the input channels). ``cmap`` colours the
    one-channel pictures. Returns the figure (one image axis per filter shown); with
    ``path``, also writes it as PNG.
    """
    images = filter_images(layer, channel)
    max_filters = _positive_int(max_filters, "max_filters")
    plt = _pyplot()
    n = min(len(images), max_filters)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.0 * cols + 0.4, 1.0 * rows + 0.7))
    axes = np.atleast_1d(axes).ravel()
    for i, ax in enumerate(axes):
        if i >= n:
            fig.delaxes(ax)
            continue
        if images.ndim == 4:
            ax.imshow(images[i], interpolation="nearest")
        else:
            ax.imshow(images[i], cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(str(i), fontsize=7, pad=2)
        ax.set_xticks([])
        ax.set_yticks([])
    kh, kw, cin, filters = layer.kernel.shape
    chosen = channel if channel is not None else ("rgb" if cin == 3 else "mean")
    if isinstance(chosen, str):  # filter_images accepted it: "mean" or "rgb"
        how = "RGB" if chosen.lower() == "rgb" else f"mean of {cin} input channels"
    else:
        how = f"input channel {chosen}"
    fig.suptitle(f"{layer.name}: {n} of {filters} filters, {kh}x{kw}, {how}", fontsize=9)
    fig.tight_layout()
    return _finish(fig, path)


# --- feature maps ---------------------------------------------------------------------------


def _model_input(model, image) -> np.ndarray:
    """One image -> a batch of one in the layout the model takes."""
    x = as_float32(image, "image")
    want = getattr(model, "input_shape", None)
    want = None if want is None else tuple(want[1:])
    if x.ndim == 2:
        x = x[None] if want == (1, *x.shape) else x[..., None]
    if x.ndim == 3:
        if want is not None and x.shape != want and x.transpose(2, 0, 1).shape == want:
            x = x.transpose(2, 0, 1)  # (H, W, C) for a channels-first model
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(
            f"image must be one image: (H, W), (H, W, C) or (1, H, W, C), got shape {x.shape}"
        )
    return x


def _image_layers(model, layers) -> list:
    if layers is None:
        chosen = [
            l for l in model.layers if isinstance(l, (Conv2D, MaxPooling2D, AveragePooling2D))
        ]
        if not chosen:
            raise ValueError(
                f"model {model.name!r} has no Conv2D or pooling layer; pass layers=[...]"
            )
        return chosen
    if isinstance(layers, (str, Layer)):
        layers = [layers]
    out = []
    for l in layers:
        if isinstance(l, str):
            l = model.get_layer(l)
        elif not isinstance(l, Layer):
            raise TypeError(f"layers must hold Layers or layer names, got {type(l).__name__}")
        out.append(l)
    if not out:
        raise ValueError("layers must name at least one layer (or be None for the default)")
    return out


def _channels_first(model) -> dict:
    """{id(layer): True when its output is (N, C, H, W)}: a layer's own data_format, else the
    last one set by a layer before it (activations and normalization keep the layout)."""
    fmt, out = "channels_last", {}
    for l in model.layers:
        fmt = getattr(l, "data_format", None) or fmt
        out[id(l)] = fmt == "channels_first"
    return out


def feature_maps(model, image, layers=None) -> dict:
    """{layer name: its output for ``image``, shape (H, W, C)} in the order of ``layers``.

    ``image`` is one input exactly as the model takes it (the caller preprocesses: scale,
    normalize, as for training); (H, W), (H, W, C) or (1, H, W, C) (and (C, H, W) for a
    channels-first model). ``layers``: Layers or names; default every Conv2D, MaxPooling2D
    and AveragePooling2D layer. One forward pass through ``model.layer_outputs``;
    channels-first outputs are transposed to (H, W, C).
    """
    chosen = _image_layers(model, layers)
    outputs = model.layer_outputs(_model_input(model, image), chosen)
    first = _channels_first(model)
    maps = {}
    for l in chosen:
        y = outputs[l.name]
        if y.ndim != 4:
            raise ValueError(
                f"layers: {l.name!r} ({type(l).__name__}) outputs shape {y.shape}, not images; "
                "feature maps need layers with (H, W, C) outputs such as Conv2D and pooling"
            )
        maps[l.name] = np.ascontiguousarray(y[0].transpose(1, 2, 0) if first[id(l)] else y[0])
    return maps


def plot_feature_maps(model, image, layers=None, path=None, max_maps=32, cmap="viridis"):
    """One row per layer: up to ``max_maps`` channels of its output for one image.

    ``image``: one preprocessed input, (H, W), (H, W, C) or (1, H, W, C) (see
    :func:`feature_maps`; it is only converted to float32, not rescaled). ``layers``: Layers
    or names, default every Conv2D and pooling layer. Each map is coloured over its own
    min..max. Returns the figure (one image axis per map shown); with ``path``, also writes
    it as PNG.
    """
    max_maps = _positive_int(max_maps, "max_maps")
    maps = feature_maps(model, image, layers)
    plt = _pyplot()
    cols = max(min(m.shape[2], max_maps) for m in maps.values())
    rows = len(maps)
    fig, axes = plt.subplots(
        rows, cols, figsize=(0.85 * cols + 1.3, 0.95 * rows + 0.5), squeeze=False
    )
    for r, (name, m) in enumerate(maps.items()):
        h, w, c = m.shape
        n = min(c, max_maps)
        for j in range(cols):
            ax = axes[r, j]
            if j >= n:
                fig.delaxes(ax)
                continue
            ax.imshow(m[:, :, j], cmap=cmap, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        label = f"{name}\n{h}x{w}x{c}" + (f"\n(first {n})" if n < c else "")
        axes[r, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return _finish(fig, path)


# --- classic kernels ------------------------------------------------------------------------

# (integer matrix, divisor), as the lectures write them.
_CLASSIC = {
    "identity": ([[0, 0, 0], [0, 1, 0], [0, 0, 0]], 1),
    "edge_detection_1": ([[1, 0, -1], [0, 0, 0], [-1, 0, 1]], 1),
    "edge_detection_2": ([[0, 1, 0], [1, -4, 1], [0, 1, 0]], 1),
    "edge_detection_3": ([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], 1),
    "sobel_x": ([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], 1),
    "sobel_y": ([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], 1),
    "sharpen": ([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], 1),
    "box_blur": ([[1, 1, 1], [1, 1, 1], [1, 1, 1]], 9),
    "gaussian_blur": ([[1, 2, 1], [2, 4, 2], [1, 2, 1]], 16),
}


def classic_kernels() -> dict:
    """The hand-made 3x3 kernels of the lectures: {name: float32 (3, 3)}, a new dict each call.

    - ``identity``: returns the image;
    - ``edge_detection_1``, ``_2``, ``_3``: the three "Edge detection" rows of the lecture
      table, in its order: [[1, 0, -1], [0, 0, 0], [-1, 0, 1]], the 4-neighbour Laplacian
      [[0, 1, 0], [1, -4, 1], [0, 1, 0]] and the 8-neighbour one (outline)
      [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]];
    - ``sobel_x``: [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]] (the lecture's "Sobel-Vertical":
      the horizontal derivative, bright on vertical edges where the image gets brighter to
      the right); ``sobel_y``: [[-1, -2, -1], [0, 0, 0], [1, 2, 1]] ("Sobel-Horizontal",
      brighter downwards; the slide prints a 1 in the centre, a typo: Sobel kernels sum to 0);
    - ``sharpen``: [[0, -1, 0], [-1, 5, -1], [0, -1, 0]];
    - ``box_blur``: ones / 9; ``gaussian_blur``: [[1, 2, 1], [2, 4, 2], [1, 2, 1]] / 16.
    """
    return {
        name: (np.asarray(m, np.float64) / d).astype(np.float32)
        for name, (m, d) in _CLASSIC.items()
    }


def apply_kernel(image, kernel) -> np.ndarray:
    """Filter an image with one 2-D kernel, each channel on its own, keeping its size.

    image: (H, W) greyscale or (H, W, C) (e.g. RGB), any real dtype, used as is (uint8
    stays 0..255); kernel: (kh, kw). Runs :func:`pyconv.functional.conv2d` with "same" zero
    padding (kh // 2 rows and kw // 2 columns each side for odd sizes; an even size pads the
    extra one at the bottom/right). Like every deep-learning library (and the lectures'
    TensorFlow demos) this is cross-correlation: the kernel is *not* flipped, so
    ``out[i, j] = sum_{a, b} kernel[a, b] * image[i + a - kh // 2, j + b - kw // 2]``
    (it matters only for asymmetric kernels such as Sobel: flipping negates them).
    Returns float32 with the image's shape.
    """
    img = as_float32(image, "image")
    if img.ndim not in (2, 3) or img.size == 0:
        raise ValueError(f"image must be a non-empty (H, W) or (H, W, C) array, got {img.shape}")
    k = as_float32(kernel, "kernel")
    if k.ndim != 2 or k.size == 0:
        raise ValueError(f"kernel must be a non-empty 2-D (kh, kw) array, got shape {k.shape}")
    planes = img[None, None] if img.ndim == 2 else img.transpose(2, 0, 1)[:, None]
    out = functional.conv2d(planes, k[None, None], padding="same")  # (C, 1, H, W)
    if img.ndim == 2:
        return out[0, 0]
    return np.ascontiguousarray(out[:, 0].transpose(1, 2, 0))


def _kernel_text(k: np.ndarray) -> str:
    """A small kernel as text, with a common fraction pulled out (1/9, 1/16) when there is one."""
    for d in (1, 2, 3, 4, 8, 9, 16, 25, 32, 49, 64, 81, 256):
        scaled = k.astype(np.float64) * d
        if np.allclose(scaled, np.round(scaled), atol=1e-4):
            rows = [" ".join(f"{int(v):>2d}" for v in row) for row in np.round(scaled)]
            return ("" if d == 1 else f"1/{d} x\n") + "\n".join(rows)
    return "\n".join(" ".join(f"{v:.2g}" for v in row) for row in k)


def _show(ax, im: np.ndarray, cmap) -> None:
    if im.ndim == 2:
        ax.imshow(im, cmap=cmap, interpolation="nearest")
    else:
        ax.imshow(_minmax(im, (0, 1, 2)), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_kernels(image, kernels=None, path=None, cmap="gray"):
    """The image, then its result under each kernel (:func:`apply_kernel`), kernel printed below.

    image: (H, W) greyscale or (H, W, 1) / (H, W, 3). kernels: {name: (kh, kw)}, names of
    :func:`classic_kernels`, or None for all of them. Greyscale panels are coloured by
    ``cmap`` over their own min..max; RGB panels are scaled to [0, 1] on their own. Returns
    the figure (one image axis per panel); with ``path``, also writes it as PNG.
    """
    img = as_float32(image, "image")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)) or img.size == 0:
        raise ValueError(f"image must be (H, W), (H, W, 1) or (H, W, 3), got shape {img.shape}")
    classic = classic_kernels()
    if kernels is None:
        kernels = classic
    elif not isinstance(kernels, dict):
        names = [kernels] if isinstance(kernels, str) else list(kernels)
        unknown = [n for n in names if not isinstance(n, str) or n not in classic]
        if unknown:
            raise ValueError(
                f"kernels: unknown kernel name(s) {unknown}; use a dict {{name: array}} or "
                f"names among {', '.join(classic)}"
            )
        kernels = {n: classic[n] for n in names}
    if not kernels:
        raise ValueError("kernels must hold at least one kernel (or be None for all)")
    panels = [("original", img, None)]
    panels += [(name, apply_kernel(img, k), np.asarray(k)) for name, k in kernels.items()]
    plt = _pyplot()
    cols = min(len(panels), 5)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.9 * rows), squeeze=False)
    axes = axes.ravel()
    for ax, (name, im, k) in zip(axes, panels):
        _show(ax, im, cmap)
        ax.set_title(name.replace("_", " "), fontsize=9)
        if k is not None:
            ax.set_xlabel(_kernel_text(k), fontsize=7, family="monospace")
    for ax in axes[len(panels) :]:
        fig.delaxes(ax)
    fig.tight_layout()
    return _finish(fig, path)
