"""What export and import share: the optional ``onnx`` package, the two image layouts, and
unique names within one graph."""

from __future__ import annotations

from ..utils import optional_module

TO_NCHW = (0, 3, 1, 2)  # NHWC -> NCHW
TO_NHWC = (0, 2, 3, 1)  # NCHW -> NHWC


def require_onnx():
    """The ``onnx`` module, with its ``numpy_helper``."""
    what = "pyconv.onnx needs the onnx package (and onnxruntime to run the files)"
    onnx = optional_module("onnx", what, "onnx")
    optional_module("onnx.numpy_helper", what, "onnx")
    return onnx


def fresh_name(taken: set, base: str) -> str:
    """``base``, or ``base_1``, ``base_2``, ... : the first not in ``taken`` (added to it)."""
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name
