"""Pictures of training and of what a network sees (matplotlib; ``pip install pyconv[viz]``).

Figures are returned (so they can be shown or styled) and, with ``path=``, written as PNG
atomically.
"""

from __future__ import annotations

import io

from . import saving


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)  # files, not windows, unless the user chose one
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "pyconv's pictures need matplotlib: pip install 'pyconv[viz]' (or matplotlib)"
        ) from None
    return plt


def save_png(fig, path) -> None:
    """Write a matplotlib figure to ``path`` as PNG, atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    saving.atomic_write(path, lambda f: f.write(buf.getvalue()))


def plot_history(history, path=None, title=None):
    """Loss and metric curves per epoch (training and validation) from a History or its dict."""
    plt = _pyplot()
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
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        save_png(fig, path)
    return fig
