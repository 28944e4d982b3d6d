"""ONNX interoperability: write a pyconv model as an ONNX file, build a pyconv model from one.

    import pyconv.onnx

    pyconv.onnx.export(model, "model.onnx")   # opset 17; runs in onnxruntime, TensorRT, ...
    model = pyconv.onnx.load("model.onnx")     # a pyconv layer graph (pyconv.Model)

Needs the ``onnx`` package (``pip install pyconv[onnx]``, which brings onnxruntime too);
``import pyconv`` itself never imports it.

Layouts. pyconv computes channels last (NHWC activations, HWIO kernels); ONNX's Conv and
pooling are NCHW (OIHW kernels).

- ``export`` keeps pyconv's interface: the ONNX model takes the same NHWC batches as
  ``model.predict`` and returns the same arrays. Kernels are written OIHW, a ``Transpose`` to
  NCHW goes in front of the first convolution, and one back to NHWC in front of a
  ``Flatten``, so the flattened features keep pyconv's (h, w, c) order and the Dense
  weights after it are written unchanged (the numbers are the same, not re-ordered sums).
- ``load`` returns a model that takes NHWC inputs, like every pyconv model, where the ONNX
  model takes NCHW (``data_format="channels_first"`` keeps NCHW instead: the layers then run
  channels first). The weights are transposed once at load; where an NCHW tensor is
  flattened into a Gemm/MatMul, pyconv's Flatten gives (h, w, c) order and the rows of the
  following Dense kernel are permuted to match, so the outputs equal the ONNX model's. A
  4-D output comes back channels last. An input that feeds a ``Transpose(perm=[0, 3, 1, 2])``
  is taken to be NHWC already (files written by ``export``, tf2onnx), and that Transpose
  disappears.

Ops. ``export`` writes Conv, Gemm (MatMul + Add for Dense layers over more than 2 axes),
Relu, LeakyRelu, Clip (capped ReLU), Elu, Sigmoid, Tanh, Softplus, Softmax (an activation
fused into Conv2D/Dense becomes its own node), MaxPool, AveragePool (``count_include_pad=0``,
as pyconv's AveragePooling2D), GlobalAveragePool, GlobalMaxPool, BatchNormalization
(inference), Add, Sub, Mul, Concat, Flatten, Reshape and Transpose; Dropout and the
random-augmentation layers (the identity at inference) are left out. Any other layer is a
ValueError naming it.

``load`` reads Conv (any ``group``, strides, pads, dilations, ``auto_pad``), Gemm,
MatMul (+ Add of a bias), Relu, LeakyRelu, Elu, Sigmoid, Tanh, Softplus, Softmax, Clip
(min 0: a capped ReLU), MaxPool, AveragePool (``count_include_pad=1`` with padding becomes a
frozen depthwise convolution of 1/(kh*kw): the same sums as PyTorch's divisor),
GlobalAveragePool, GlobalMaxPool, BatchNormalization (inference), Flatten, Reshape, Transpose
(of layouts, as above), Add, Sub, Mul, Sum, Concat, Dropout, Identity, Constant and
initializers. An activation right after a Conv/Gemm/MatMul is fused into the layer (as a
Keras model is built: ``Dense(10, activation="softmax")``). Any other op is a ValueError
naming the op type and the node. The file is parsed as data (protobuf); nothing in it is
executed.
"""

from __future__ import annotations

from .exporter import export
from .importer import load

__all__ = ["export", "load"]
