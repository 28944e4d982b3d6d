"""ONNX file -> pyconv layer graph (``pyconv.onnx.load``; the ops it reads and how layouts
are handled are in the package's doc).

How it works: ``_Importer.build`` walks the ONNX nodes in file order (ONNX requires a
topological order) and calls ``op_<OpType>`` for each, which adds pyconv layers on the
symbolic tensors built so far. Every computed ONNX tensor is held as a ``_Sym``: the pyconv
tensor plus how its layout relates to the ONNX one (``q``: axis permutation; ``feat``: the
feature order after flattening an NCHW tensor channels last), so weights are transposed or
permuted once at load instead of adding layout layers. Constants (initializers, ``Constant``
nodes) are NumPy arrays and become layer weights. A fused node (an activation after a
Conv/Gemm/MatMul, the Add of a MatMul's bias, the Flatten after a global pool) is folded
into the layer before it and skipped. A new op: an ``op_<OpType>`` method and its name in
``_SUPPORTED_OPS``.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np

from .. import activations as A
from .. import layers as L
from .._shapes import pool_output_size, resolve_padding, same_pads
from ..utils import reserve_name, snake_case
from ._common import TO_NCHW, TO_NHWC, fresh_name, require_onnx


class _Sym:
    """An ONNX tensor held by a pyconv tensor.

    ``shape``: the ONNX shape (batch dimension None); ``q``: the pyconv array is the ONNX
    array transposed by q (pyconv axis j is ONNX axis q[j]; None: the same layout);
    ``feat``: for 2-D tensors, pyconv feature j is ONNX feature feat[j] (None: the same)."""

    __slots__ = ("tensor", "shape", "q", "feat")

    def __init__(self, tensor, shape, q=None, feat=None):
        self.tensor, self.shape = tensor, tuple(shape)
        self.q = None if q is None or tuple(q) == tuple(range(len(q))) else tuple(q)
        self.feat = None if feat is None or np.array_equal(feat, np.arange(len(feat))) else feat

    @property
    def rank(self) -> int:
        return len(self.shape)

    def axis(self, k: int) -> int:
        """The pyconv axis holding ONNX axis k."""
        return k if self.q is None else self.q.index(k)


def _sym_from_pyconv(tensor, q) -> _Sym:
    """_Sym of pyconv tensor ``tensor`` whose array is the ONNX array transposed by q."""
    pshape = tensor.shape
    if q is None:
        return _Sym(tensor, pshape)
    shape = [None] * len(q)
    for j, k in enumerate(q):
        shape[k] = pshape[j]
    return _Sym(tensor, shape, q)


_ACTIVATION_OPS = {"Relu", "LeakyRelu", "Elu", "Sigmoid", "Tanh", "Softplus", "Softmax", "Clip"}
_SUPPORTED_OPS = sorted(
    {"Conv", "Gemm", "MatMul", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
     "BatchNormalization", "Flatten", "Reshape", "Transpose", "Add", "Sub", "Mul", "Sum",
     "Concat", "Dropout", "Identity", "Constant"} | _ACTIVATION_OPS
)  # fmt: skip


def _safe_name(text: str, strip: str = "_.-") -> str:
    """``text`` with every run of characters other than letters, digits, ``_.-`` made one
    ``_`` (the names pyconv saves), ``strip`` stripped from both ends; maybe empty."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip(strip)


class _Importer:
    def __init__(self, onnx, proto, data_format: str, path: str):
        self.onnx, self.path = onnx, path
        self.graph = proto.graph
        self.channels_last = data_format == "channels_last"
        self.data_format = data_format
        self.opset = next(
            (o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None
        )
        if self.opset is None:
            raise ValueError(f"{path!r}: the model imports no standard ONNX opset")
        self.values: dict = {}
        self.layer_names: set[str] = set()
        self.fused: set[int] = set()  # nodes already folded into a previous layer
        self.uses: dict[str, int] = {}
        self.consumers: dict[str, list] = {}
        # one list of the node objects: ``fused`` holds their ids
        self.nodes = list(self.graph.node)
        for node in self.nodes:
            for name in node.input:
                if name:
                    self.uses[name] = self.uses.get(name, 0) + 1
                    self.consumers.setdefault(name, []).append(node)
        self.graph_outputs = {o.name for o in self.graph.output}
        for name in self.graph_outputs:
            self.uses[name] = self.uses.get(name, 0) + 1

    # --- helpers ---------------------------------------------------------------------------

    def layer_name(self, node) -> str:
        """The node's name, else its op's ("max_pool"), unique in the model."""
        return self.unique_layer_name(_safe_name(node.name or "") or snake_case(node.op_type))

    def unique_layer_name(self, base: str) -> str:
        name = fresh_name(self.layer_names, base)
        reserve_name(name)
        return name

    def where(self, node) -> str:
        return f"ONNX node {node.name!r} ({node.op_type})"

    def attrs(self, node) -> dict:
        get = self.onnx.helper.get_attribute_value
        out = {}
        for a in node.attribute:
            v = get(a)
            out[a.name] = v.decode() if isinstance(v, bytes) else v
        return out

    def const(self, node, i: int, what: str, optional=False):
        name = node.input[i] if i < len(node.input) else ""
        if not name:
            if optional:
                return None
            raise ValueError(f"{self.where(node)}: input {what} is missing")
        v = self.values.get(name)
        if not isinstance(v, np.ndarray):
            raise ValueError(
                f"{self.where(node)}: input {what} ({name!r}) must be a constant "
                "(an initializer): pyconv layers hold their weights"
            )
        return v

    def weight(self, node, i: int, what: str, optional=False):
        v = self.const(node, i, what, optional)
        return None if v is None else v.astype(np.float32)

    def sym(self, node, i: int = 0) -> _Sym:
        name = node.input[i] if i < len(node.input) else ""
        v = self.values.get(name)
        if v is None:
            raise ValueError(f"{self.where(node)}: input {name!r} is not computed before it")
        if not isinstance(v, _Sym):
            raise ValueError(
                f"{self.where(node)}: input {name!r} is a constant; pyconv layers take "
                "computed tensors here"
            )
        return v

    def image(self, node, i: int = 0) -> _Sym:
        """An input that must be an NCHW image batch, in the layout the layers run in."""
        v = self.sym(node, i)
        want = TO_NHWC if self.channels_last else None
        if v.rank != 4 or v.q != want:
            raise ValueError(
                f"{self.where(node)}: needs a 4-D NCHW image tensor, got shape "
                f"{v.shape}{' in another layout' if v.rank == 4 else ''}"
            )
        return v

    def only_output(self, node) -> None:
        for extra in node.output[1:]:
            if extra and self.uses.get(extra):
                raise ValueError(
                    f"{self.where(node)}: its output {extra!r} is used; pyconv computes only "
                    "the first output of this op"
                )

    def out(self, node, value) -> None:
        self.only_output(node)
        self.values[node.output[0]] = value

    def image_out(self, tensor) -> _Sym:
        return _sym_from_pyconv(tensor, TO_NHWC if self.channels_last else None)

    @property
    def fmt(self) -> str:
        return self.data_format

    def single_consumer(self, name: str):
        """The one node reading tensor ``name``, if it has exactly one and is no output."""
        if self.uses.get(name) != 1 or name in self.graph_outputs:
            return None
        return self.consumers[name][0]

    # --- activations -----------------------------------------------------------------------

    def activation_of(self, node, v: _Sym):
        """The pyconv activation computing ``node`` (an activation op) on ``v``, or None."""
        op, at = node.op_type, self.attrs(node)
        if op == "Relu":
            return A.Relu()
        if op == "LeakyRelu":
            alpha = float(at.get("alpha", 0.01))
            return A.LeakyRelu(alpha) if alpha >= 0 else None
        if op == "Elu":
            return A.Elu(float(at.get("alpha", 1.0)))
        if op in ("Sigmoid", "Tanh", "Softplus"):
            return A.get(op.lower())
        if op == "Softmax":
            axis = int(at.get("axis", -1 if self.opset >= 13 else 1))
            axis = axis + v.rank if axis < 0 else axis
            if self.opset < 13 and axis != v.rank - 1:
                return None
            return A.Softmax() if v.axis(axis) == v.rank - 1 else None
        if op == "Clip":
            if self.opset >= 11:
                lo = self.const(node, 1, "min", optional=True)
                hi = self.const(node, 2, "max", optional=True)
            else:
                lo, hi = at.get("min"), at.get("max")
            lo = None if lo is None else float(np.asarray(lo).reshape(()))
            hi = None if hi is None else float(np.asarray(hi).reshape(()))
            if lo != 0 or (hi is not None and not (math.isfinite(hi) and hi > 0)):
                return None
            return A.Relu(max_value=hi)
        return None

    def fuse_activation(self, out_name: str, v_probe: _Sym):
        """(activation, its node) when tensor ``out_name`` only feeds an activation that can
        be fused into the layer computing it; (None, None) otherwise."""
        nxt = self.single_consumer(out_name)
        if nxt is None or nxt.op_type not in _ACTIVATION_OPS or nxt.domain not in ("", "ai.onnx"):
            return None, None
        try:
            act = self.activation_of(nxt, v_probe)
        except ValueError:  # e.g. Clip bounds that are not constants: not fused
            act = None
        if act is None:
            return None, None
        self.only_output(nxt)
        return act, nxt

    # --- the graph -------------------------------------------------------------------------

    def build(self):
        from ..models import Model

        numpy_helper = self.onnx.numpy_helper
        for init in self.graph.initializer:
            self.values[init.name] = numpy_helper.to_array(init)
        inputs = []
        for vi in self.graph.input:
            if vi.name in self.values:  # an initializer listed as an input (IR < 4)
                continue
            inputs.append(self.make_input(vi))
        for node in self.nodes:  # constants first: a fusion may look ahead at them
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                self.op_Constant(node)
                self.fused.add(id(node))
        for node in self.nodes:
            if id(node) in self.fused:
                continue
            if node.domain not in ("", "ai.onnx"):
                raise ValueError(
                    f"unsupported ONNX op {node.op_type!r} of domain {node.domain!r} "
                    f"(node {node.name!r})"
                )
            handler = getattr(self, "op_" + node.op_type, None)
            if handler is None or node.op_type not in _SUPPORTED_OPS:
                raise ValueError(
                    f"unsupported ONNX op {node.op_type!r} (node {node.name!r}); "
                    f"pyconv.onnx.load supports {', '.join(_SUPPORTED_OPS)}"
                )
            handler(node)
        outputs = []
        for o in self.graph.output:
            v = self.values.get(o.name)
            if not isinstance(v, _Sym) or any(v.tensor is t for t in inputs):
                raise ValueError(
                    f"{self.path!r}: output {o.name!r} is a constant or a graph input; a "
                    "pyconv model's outputs are computed by layers"
                )
            if v.feat is not None:
                raise ValueError(
                    f"{self.path!r}: output {o.name!r} is a flattened NCHW tensor, which "
                    "pyconv holds in (h, w, c) order; load with data_format='channels_first'"
                )
            outputs.append(v.tensor)
        if not outputs:
            raise ValueError(f"{self.path!r}: the graph has no outputs")
        name = _safe_name(self.graph.name or "", strip="_") or "onnx_model"
        return Model(
            inputs if len(inputs) > 1 else inputs[0],
            outputs if len(outputs) > 1 else outputs[0],
            name=name,
        )

    def make_input(self, vi):
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or tt.elem_type != self.onnx.TensorProto.FLOAT:
            raise ValueError(f"{self.path!r}: input {vi.name!r} must be a float32 tensor")
        dims = list(tt.shape.dim)
        shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if len(shape) < 2 or any(d is None or d < 1 for d in shape[1:]):
            raise ValueError(
                f"{self.path!r}: input {vi.name!r} needs a batch dimension and fixed sizes "
                f"for the others, got {[d.dim_param or d.dim_value for d in dims]}"
            )
        onnx_shape = (None, *shape[1:])
        q = None
        if len(shape) == 4:
            readers = self.consumers.get(vi.name, [])
            nhwc = any(
                n.op_type == "Transpose" and list(self.attrs(n).get("perm", [])) == list(TO_NCHW)
                for n in readers
            )
            if nhwc:  # already channels last (NHWC); the Transpose makes it NCHW
                q = None if self.channels_last else TO_NCHW
            else:
                q = TO_NHWC if self.channels_last else None
        name = self.unique_layer_name(_safe_name(vi.name) or "input")
        pshape = onnx_shape if q is None else tuple(onnx_shape[k] for k in q)
        tensor = L.Input(pshape[1:], name=name)
        self.values[vi.name] = _Sym(tensor, onnx_shape, q)
        return tensor

    # --- ops -------------------------------------------------------------------------------

    def op_Constant(self, node):  # noqa: N802
        at = self.attrs(node)
        if "value" in at:
            value = self.onnx.numpy_helper.to_array(at["value"])
        elif "value_float" in at or "value_int" in at:
            value = np.array(at.get("value_float", at.get("value_int")))
        elif "value_floats" in at or "value_ints" in at:
            value = np.array(at.get("value_floats", at.get("value_ints")))
        else:
            raise ValueError(f"{self.where(node)}: unsupported kind of constant {sorted(at)}")
        self.values[node.output[0]] = value

    def op_Identity(self, node):  # noqa: N802
        v = self.values.get(node.input[0])
        if v is None:
            raise ValueError(f"{self.where(node)}: input {node.input[0]!r} is not computed")
        self.values[node.output[0]] = v

    def op_Dropout(self, node):  # noqa: N802  (the identity at inference)
        self.out(node, self.sym(node))

    def _with_activation(self, layer_cls, node, args, make_probe, **kwargs):
        """Create the layer, fusing the activation that follows ``node``'s output."""
        probe = make_probe()
        act, act_node = self.fuse_activation(node.output[0], probe)
        if act_node is not None:
            self.fused.add(id(act_node))
        layer = layer_cls(*args, activation=act, name=self.layer_name(node), **kwargs)
        return layer, (node.output[0] if act_node is None else act_node.output[0])

    def op_Conv(self, node):  # noqa: N802
        x = self.image(node)
        at = self.attrs(node)
        w = self.weight(node, 1, "W")
        b = self.weight(node, 2, "B", optional=True)
        if w.ndim != 4:
            raise ValueError(f"{self.where(node)}: only 2-D convolutions, got weights {w.shape}")
        m, cg, kh, kw = w.shape
        group = int(at.get("group", 1))
        if list(at.get("kernel_shape", [kh, kw])) != [kh, kw]:
            raise ValueError(f"{self.where(node)}: kernel_shape does not match W {w.shape}")
        if cg * group != x.shape[1]:
            raise ValueError(
                f"{self.where(node)}: W {w.shape} with group={group} does not fit "
                f"{x.shape[1]} input channels"
            )
        strides = tuple(at.get("strides", [1, 1]))
        dilations = tuple(at.get("dilations", [1, 1]))
        padding = self.padding(node, at, x, (kh, kw), strides, dilations)
        layer, out = self._with_activation(
            L.Conv2D, node, (m, (kh, kw)), lambda: self.image_out_probe(x, m),
            strides=strides, padding=padding, dilation_rate=dilations, groups=group,
            data_format=self.fmt, use_bias=b is not None, kernel_initializer="zeros",
        )  # fmt: skip
        y = layer(x.tensor)
        layer.kernel.assign(w.transpose(2, 3, 1, 0))  # OIHW -> HWIO
        if b is not None:
            layer.bias.assign(b)
        self.values[out] = self.image_out(y)
        self.only_output(node)

    def image_out_probe(self, x: _Sym, channels: int) -> _Sym:
        """A stand-in for an image output (its layout), to decide on fusing a softmax."""
        return _Sym(None, (None, channels, 1, 1), TO_NHWC if self.channels_last else None)

    def padding(self, node, at, x: _Sym, kernel, strides, dilations, pooling=False):
        """ONNX pads / auto_pad -> pyconv's padding argument."""
        h, w = x.shape[2], x.shape[3]
        auto = at.get("auto_pad", "NOTSET")
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            (t, b), (l, r) = (same_pads(n, k, s, d) for n, k, s, d in
                              zip((h, w), kernel, strides, dilations))  # fmt: skip
            if auto == "SAME_UPPER":
                return "same"
            t, b, l, r = b, t, r, l
        elif auto == "VALID":
            t = b = l = r = 0
        elif auto == "NOTSET":
            pads = list(at.get("pads", [0, 0, 0, 0]))
            if len(pads) != 4:
                raise ValueError(f"{self.where(node)}: pads {pads} are not 2-D")
            t, l, b, r = pads
        else:
            raise ValueError(f"{self.where(node)}: unknown auto_pad {auto!r}")
        if (t, b, l, r) == (0, 0, 0, 0):
            return "valid"
        if t == b and l == r:
            return (t, l)
        if not pooling:
            return ((t, b), (l, r))
        if (t, b, l, r) == resolve_padding("same", (h, w), kernel, strides, dilations):
            return "same"
        raise ValueError(
            f"{self.where(node)}: asymmetric pooling pads {[t, l, b, r]} other than TF's "
            "'same' rule are not supported"
        )

    def _pool_common(self, node):
        x = self.image(node)
        at = self.attrs(node)
        kernel = tuple(at["kernel_shape"])
        strides = tuple(at.get("strides", [1, 1]))
        if len(kernel) != 2:
            raise ValueError(f"{self.where(node)}: only 2-D pooling, got kernel {kernel}")
        if any(d != 1 for d in at.get("dilations", [1, 1])):
            raise ValueError(f"{self.where(node)}: dilated pooling is not supported")
        padding = self.padding(node, at, x, kernel, strides, (1, 1), pooling=True)
        if at.get("ceil_mode", 0):
            t, b, l, r = resolve_padding(padding, x.shape[2:], kernel, strides, (1, 1))
            for n, k, s, lo, hi in zip(x.shape[2:], kernel, strides, (t, l), (b, r)):
                if pool_output_size(n, k, s, lo, hi, True) != pool_output_size(
                    n, k, s, lo, hi, False
                ):
                    raise ValueError(f"{self.where(node)}: ceil_mode=1 is not supported")
        return x, at, kernel, strides, padding

    def op_MaxPool(self, node):  # noqa: N802
        x, at, kernel, strides, padding = self._pool_common(node)
        layer = L.MaxPooling2D(kernel, strides, padding, data_format=self.fmt,
                               name=self.layer_name(node))  # fmt: skip
        self.out(node, self.image_out(layer(x.tensor)))

    def op_AveragePool(self, node):  # noqa: N802
        x, at, kernel, strides, padding = self._pool_common(node)
        if not at.get("count_include_pad", 0) or padding == "valid":
            layer = L.AveragePooling2D(kernel, strides, padding, data_format=self.fmt,
                                       name=self.layer_name(node))  # fmt: skip
            self.out(node, self.image_out(layer(x.tensor)))
            return
        # count_include_pad=1: the padded zeros count, i.e. a depthwise convolution of
        # 1/(kh*kw) over the zero-padded image (frozen: it is a pooling)
        c = x.shape[1]
        layer = L.Conv2D(c, kernel, strides, padding, data_format=self.fmt, groups=c,
                         use_bias=False, kernel_initializer="zeros", trainable=False,
                         name=self.layer_name(node))  # fmt: skip
        y = layer(x.tensor)
        layer.kernel.assign(np.full((*kernel, 1, c), 1.0 / (kernel[0] * kernel[1]), np.float32))
        self.out(node, self.image_out(y))

    def _global_pool(self, node, cls):
        x = self.image(node)
        # GlobalPool -> Flatten (or a Reshape to (N, C)): one layer without keepdims
        nxt = self.single_consumer(node.output[0])
        flat = nxt is not None and (
            (nxt.op_type == "Flatten" and self.attrs(nxt).get("axis", 1) == 1)
            or (nxt.op_type == "Reshape" and self.reshape_target(nxt, (None, x.shape[1], 1, 1))
                == (x.shape[1],))
        )  # fmt: skip
        layer = cls(data_format=self.fmt, keepdims=not flat, name=self.layer_name(node))
        y = layer(x.tensor)
        self.only_output(node)
        if flat:
            self.fused.add(id(nxt))
            self.values[nxt.output[0]] = _Sym(y, (None, x.shape[1]))
        else:
            self.values[node.output[0]] = self.image_out(y)

    def op_GlobalAveragePool(self, node):  # noqa: N802
        self._global_pool(node, L.GlobalAveragePooling2D)

    def op_GlobalMaxPool(self, node):  # noqa: N802
        self._global_pool(node, L.GlobalMaxPooling2D)

    def op_BatchNormalization(self, node):  # noqa: N802
        x = self.sym(node)
        at = self.attrs(node)
        if at.get("training_mode", 0):
            raise ValueError(f"{self.where(node)}: training_mode=1 is not supported")
        params = [self.weight(node, i, n) for i, n in
                  enumerate(("scale", "B", "input_mean", "input_var"), 1)]  # fmt: skip
        if x.rank < 2:
            raise ValueError(f"{self.where(node)}: needs a batch of features, got {x.shape}")
        if x.feat is not None:
            params = [p[x.feat] for p in params]
        axis = x.axis(1)
        momentum = float(at.get("momentum", 0.9))
        layer = L.BatchNormalization(
            axis=-1 if axis == x.rank - 1 else axis, epsilon=float(at.get("epsilon", 1e-5)),
            momentum=momentum if 0 <= momentum < 1 else 0.9, name=self.layer_name(node),
        )  # fmt: skip
        y = layer(x.tensor)
        layer.set_weights(params)
        self.out(node, _Sym(y, x.shape, x.q, x.feat))

    def _dense(self, node, x: _Sym, kernel, bias, out_name_node):
        """A Dense layer for kernel (in, units) in ONNX feature order, on x."""
        if x.rank == 2:
            if x.feat is not None:  # pyconv feature j is ONNX feature feat[j]
                kernel = kernel[x.feat]
        elif x.q is not None:
            raise ValueError(
                f"{self.where(node)}: a matrix product over the last axis of an NCHW tensor "
                "held channels last; load with data_format='channels_first'"
            )
        units = kernel.shape[1]
        probe = _Sym(None, (*x.shape[:-1], units))
        layer, out = self._with_activation(
            L.Dense, out_name_node, (units,), lambda: probe,
            use_bias=bias is not None, kernel_initializer="zeros",
        )  # fmt: skip
        y = layer(x.tensor)
        layer.kernel.assign(kernel)
        if bias is not None:
            layer.bias.assign(bias)
        self.values[out] = _Sym(y, (*x.shape[:-1], units))

    def op_Gemm(self, node):  # noqa: N802
        x = self.sym(node)
        at = self.attrs(node)
        if at.get("transA", 0):
            raise ValueError(f"{self.where(node)}: transA=1 is not supported")
        if x.rank != 2:
            raise ValueError(f"{self.where(node)}: needs a 2-D input, got {x.shape}")
        w = self.weight(node, 1, "B")
        kernel = w.T if at.get("transB", 0) else w
        alpha, beta = float(at.get("alpha", 1.0)), float(at.get("beta", 1.0))
        if kernel.ndim != 2 or kernel.shape[0] != x.shape[1]:
            raise ValueError(f"{self.where(node)}: B {w.shape} does not fit input {x.shape}")
        if alpha != 1.0:
            kernel = kernel * np.float32(alpha)
        c = self.weight(node, 2, "C", optional=True)
        bias = None if c is None else self.bias_vector(node, c, kernel.shape[1]) * np.float32(beta)
        self.only_output(node)
        self._dense(node, x, np.ascontiguousarray(kernel), bias, node)

    def bias_vector(self, node, c, units: int):
        if c.size not in (1, units) or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2:
            raise ValueError(f"{self.where(node)}: bias of shape {c.shape} is not per unit")
        return np.broadcast_to(c.reshape(-1), (units,)).astype(np.float32)

    def op_MatMul(self, node):  # noqa: N802
        x = self.sym(node)
        w = self.weight(node, 1, "B")
        if w.ndim != 2 or w.shape[0] != x.shape[-1]:
            raise ValueError(f"{self.where(node)}: B {w.shape} does not fit input {x.shape}")
        self.only_output(node)
        # MatMul + Add of a per-unit constant: one Dense layer with a bias
        nxt = self.single_consumer(node.output[0])
        if nxt is not None and nxt.op_type == "Add" and len(nxt.input) == 2:
            other = nxt.input[1] if nxt.input[0] == node.output[0] else nxt.input[0]
            c = self.values.get(other)
            if isinstance(c, np.ndarray) and c.size in (1, w.shape[1]) and c.ndim <= 2:
                self.fused.add(id(nxt))
                self.only_output(nxt)
                self._dense(nxt, x, w, self.bias_vector(nxt, c.astype(np.float32), w.shape[1]),
                            nxt)  # fmt: skip
                return
        self._dense(node, x, w, None, node)

    def _binary(self, node, cls):
        xs = [self.sym(node, i) for i in range(len(node.input))]
        first = xs[0]
        for v in xs[1:]:
            same_feat = (v.feat is None and first.feat is None) or (
                v.feat is not None and first.feat is not None and np.array_equal(v.feat, first.feat)
            )
            if v.shape[1:] != first.shape[1:] or v.q != first.q or not same_feat:
                raise ValueError(
                    f"{self.where(node)}: inputs of shapes {[u.shape for u in xs]} (broadcasting "
                    "or mixed layouts are not supported)"
                )
        if len(xs) == 1:
            self.out(node, first)
            return
        layer = cls(name=self.layer_name(node))
        self.out(node, _Sym(layer([v.tensor for v in xs]), first.shape, first.q, first.feat))

    def op_Add(self, node):  # noqa: N802
        self._binary(node, L.Add)

    def op_Sum(self, node):  # noqa: N802
        self._binary(node, L.Add)

    def op_Sub(self, node):  # noqa: N802
        self._binary(node, L.Subtract)

    def op_Mul(self, node):  # noqa: N802
        self._binary(node, L.Multiply)

    def op_Concat(self, node):  # noqa: N802
        xs = [self.sym(node, i) for i in range(len(node.input))]
        first = xs[0]
        axis = int(self.attrs(node)["axis"])
        axis = axis + first.rank if axis < 0 else axis
        if axis == 0 or any(v.rank != first.rank or v.q != first.q for v in xs):
            raise ValueError(
                f"{self.where(node)}: concatenation of {[v.shape for v in xs]} on axis {axis} "
                "is not supported"
            )
        feat = None
        if first.rank == 2 and any(v.feat is not None for v in xs):
            parts, offset = [], 0
            for v in xs:
                n = v.shape[1]
                parts.append((np.arange(n) if v.feat is None else v.feat) + offset)
                offset += n
            feat = np.concatenate(parts)
        shape = list(first.shape)
        shape[axis] = sum(v.shape[axis] for v in xs)
        if len(xs) == 1:
            self.out(node, first)
            return
        layer = L.Concatenate(axis=first.axis(axis), name=self.layer_name(node))
        self.out(node, _Sym(layer([v.tensor for v in xs]), shape, first.q, feat))

    def _activation_layer(self, node):
        x = self.sym(node)
        act = self.activation_of(node, x)
        if act is None:
            raise ValueError(
                f"{self.where(node)}: not supported with these attributes on a tensor of "
                f"shape {x.shape}"
            )
        name = self.layer_name(node)
        if type(act) is A.Relu:
            layer = L.ReLU(max_value=act.max_value, name=name)
        elif type(act) is A.LeakyRelu:
            layer = L.LeakyReLU(act.negative_slope, name=name)
        elif type(act) is A.Elu:
            layer = L.ELU(act.alpha, name=name)
        elif type(act) is A.Softmax:
            layer = L.Softmax(name=name)
        else:
            layer = L.Activation(act.name, name=name)
        self.out(node, _Sym(layer(x.tensor), x.shape, x.q, x.feat))

    op_Relu = op_LeakyRelu = op_Elu = op_Sigmoid = op_Tanh = op_Softplus = _activation_layer
    op_Softmax = op_Clip = _activation_layer

    def _flatten_to_2d(self, node, x: _Sym):
        """pyconv Flatten of x; the feature order is recorded for the layers after it."""
        if x.rank == 2:
            self.out(node, x)
            return
        dims = x.shape[1:]
        feat = None
        if x.q is not None:  # pyconv flattens its own layout: (h, w, c) of an NCHW tensor
            order = [k - 1 for k in x.q[1:]]
            feat = np.arange(math.prod(dims)).reshape(dims).transpose(order).ravel()
        layer = L.Flatten(name=self.layer_name(node))
        self.out(node, _Sym(layer(x.tensor), (None, math.prod(dims)), feat=feat))

    def op_Flatten(self, node):  # noqa: N802
        x = self.sym(node)
        axis = int(self.attrs(node).get("axis", 1))
        if axis + (x.rank if axis < 0 else 0) != 1:
            raise ValueError(f"{self.where(node)}: only axis=1 (keep the batch) is supported")
        self._flatten_to_2d(node, x)

    def reshape_target(self, node, shape):
        """The per-sample shape a Reshape node gives a tensor of ONNX ``shape``, or None."""
        target = self.values.get(node.input[1]) if len(node.input) > 1 else None
        if not isinstance(target, np.ndarray) or target.ndim != 1 or len(target) < 1:
            return None
        target = [int(d) for d in target]
        if not self.attrs(node).get("allowzero", 0):  # 0: copy that dimension of the input
            target = [shape[i] if d == 0 and i < len(shape) else d for i, d in enumerate(target)]
        size = math.prod(shape[1:])
        batch, rest = target[0], target[1:]
        if batch == -1:  # the batch dimension inferred: the others are all given
            return tuple(rest) if all(d >= 1 for d in rest) and math.prod(rest) == size else None
        if (batch is not None and batch < 1) or rest.count(-1) > 1:
            return None
        if any(d is None or (d < 1 and d != -1) for d in rest):
            return None
        known = math.prod(d for d in rest if d != -1)
        if -1 in rest:
            if size % known:
                return None
            rest = [size // known if d == -1 else d for d in rest]
        return tuple(rest) if math.prod(rest) == size else None

    def op_Reshape(self, node):  # noqa: N802
        x = self.sym(node)
        target = self.reshape_target(node, x.shape)
        if target is None:
            raise ValueError(
                f"{self.where(node)}: the target shape must be a constant that keeps the "
                f"batch dimension (input shape {x.shape})"
            )
        if target == tuple(x.shape[1:]):
            self.out(node, x)
        elif len(target) == 1:
            self._flatten_to_2d(node, x)
        elif x.q is None and x.feat is None:
            layer = L.Reshape(target, name=self.layer_name(node))
            self.out(node, _Sym(layer(x.tensor), (None, *target)))
        else:
            raise ValueError(
                f"{self.where(node)}: reshaping a tensor held in another layout (input shape "
                f"{x.shape} to {target}); load with data_format='channels_first'"
            )

    def op_Transpose(self, node):  # noqa: N802
        v = self.values.get(node.input[0])
        perm = self.attrs(node).get("perm")
        if isinstance(v, np.ndarray):
            self.values[node.output[0]] = np.transpose(v, perm)
            return
        x = self.sym(node)
        perm = list(range(x.rank))[::-1] if perm is None else [int(p) for p in perm]
        if perm[0] != 0 or x.feat is not None and perm != [0, 1]:
            raise ValueError(f"{self.where(node)}: perm {perm} moves the batch axis")
        # the pyconv tensor stays as it is; only its relation to the ONNX layout changes
        inv = np.argsort(perm)
        q = list(range(x.rank)) if x.q is None else list(x.q)
        shape = [x.shape[p] for p in perm]
        self.out(node, _Sym(x.tensor, shape, [int(inv[k]) for k in q], x.feat))


def load(path, data_format: str = "channels_last"):
    """A pyconv model (``pyconv.Model``, a layer graph) computing the ONNX model at ``path``.

    ``data_format="channels_last"`` (default): the model takes NHWC batches, as every pyconv
    model, where the ONNX model takes NCHW (4-D outputs come back NHWC);
    ``"channels_first"``: NCHW in and out, the layers running channels first. The model is
    ready for ``predict``, ``compile``/``fit`` (fine-tuning), ``save``. Ops outside the
    supported set (see the module's doc) raise ValueError naming the op and the node."""
    onnx = require_onnx()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}"
        )
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    try:
        proto = onnx.load(path)
    except Exception as e:  # protobuf's DecodeError and friends
        raise ValueError(f"{path!r} is not a readable ONNX model ({e})") from None
    return _Importer(onnx, proto, data_format, path).build()
