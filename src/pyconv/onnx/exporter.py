"""pyconv model -> ONNX file (``pyconv.onnx.export``; the layouts and ops it writes are in
the package's doc).

How it works: ``_model_steps`` lists the model's layers in an order where every input is
computed first (a Sequential or a layer graph alike); ``_Exporter.layer`` writes each one as
ONNX nodes. Every pyconv tensor is a ``_Value`` holding its ONNX name in pyconv's layout
("P") and, once some op needs it, transposed to the other one ("T": NCHW for an NHWC
tensor), so a chain of convolutions and poolings runs NCHW with one Transpose at each end.
A new exportable layer: a branch in ``_Exporter.layer`` and its class in ``_EXPORTABLE``.
"""

from __future__ import annotations

import numpy as np

from .. import activations as A
from .. import layers as L
from .._shapes import resolve_padding
from ..saving import atomic_write
from ._common import TO_NCHW, TO_NHWC, fresh_name, require_onnx

_MIN_OPSET = 13  # Softmax over one axis, Clip/Reshape bounds as inputs


class _Value:
    """A pyconv tensor in the ONNX graph: its ONNX names in pyconv's own layout ("P") and,
    for 4-D tensors, transposed to the other image layout ("T": NCHW for NHWC tensors)."""

    __slots__ = ("rank", "forms", "hint")

    def __init__(self, rank: int, hint: str, **forms):
        self.rank, self.hint, self.forms = rank, hint, forms


class _Exporter:
    def __init__(self, onnx, opset: int):
        self.onnx, self.helper, self.opset = onnx, onnx.helper, opset
        self.nodes: list = []
        self.initializers: list = []
        self.tensor_names: set[str] = set()
        self.node_names: set[str] = set()
        self.values: dict = {}

    # --- names, constants, nodes ---------------------------------------------------------

    def const(self, base: str, array) -> str:
        name = fresh_name(self.tensor_names, base)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs, base: str, **attrs) -> str:
        out = fresh_name(self.tensor_names, base)
        name = fresh_name(self.node_names, base)
        self.nodes.append(self.helper.make_node(op, list(inputs), [out], name=name, **attrs))
        return out

    def get(self, key, form: str) -> str:
        """The ONNX name of tensor ``key`` in ``form`` ("P" or "T"), transposing once."""
        v = self.values[key]
        if form not in v.forms:
            if form == "P":
                v.forms["P"] = self.node("Transpose", [v.forms["T"]], v.hint + "/to_nhwc",
                                         perm=list(TO_NHWC))  # fmt: skip
            else:
                v.forms["T"] = self.node("Transpose", [v.forms["P"]], v.hint + "/to_nchw",
                                         perm=list(TO_NCHW))  # fmt: skip
        return v.forms[form]

    def set(self, key, rank: int, hint: str, **forms) -> None:
        self.values[key] = _Value(rank, hint, **forms)

    def common_form(self, keys) -> str:
        """T when every input is 4-D and one is already NCHW (no transpose needed), else P."""
        vals = [self.values[k] for k in keys]
        if all(v.rank == 4 for v in vals) and any("T" in v.forms for v in vals):
            return "T"
        return "P"

    # --- activations ---------------------------------------------------------------------

    def activation(self, act, x: str, base: str, rank: int, form: str, layer) -> str:
        t = type(act)
        if t is A.Linear:
            return x
        if t in (A.Relu, A.LeakyRelu):
            if act.negative_slope:
                x = self.node("LeakyRelu", [x], base, alpha=float(act.negative_slope))
            elif act.max_value is None:
                return self.node("Relu", [x], base)
            if act.max_value is None:
                return x
            lo = "" if act.negative_slope else self.const(base + "/min", np.float32(0))
            hi = self.const(base + "/max", np.float32(act.max_value))
            return self.node("Clip", [x, lo, hi], base)
        if t is A.Elu:
            return self.node("Elu", [x], base, alpha=float(act.alpha))
        simple = {A.Sigmoid: "Sigmoid", A.Tanh: "Tanh", A.Softplus: "Softplus"}
        if t in simple:
            return self.node(simple[t], [x], base)
        if t is A.Softmax:  # pyconv's softmax is over the last axis of its own layout
            return self.node("Softmax", [x], base, axis=1 if form == "T" else rank - 1)
        raise ValueError(
            f"layer {layer.name!r} ({type(layer).__name__}): activation {act.name!r} "
            f"({t.__name__}) has no ONNX export"
        )

    # --- layers ---------------------------------------------------------------------------

    def layer(self, layer, in_keys, in_shapes, out_key, out_shape) -> None:
        t = type(layer)
        name = layer.name
        rank = len(out_shape) + 1
        if t in _IDENTITY_LAYERS:  # Dropout, augmentation: the identity at inference
            self.values[out_key] = self.values[in_keys[0]]
            return
        if t is L.Conv2D:
            self._conv(layer, in_keys[0], in_shapes[0], out_key)
        elif t is L.Dense:
            self._dense(layer, in_keys[0], len(in_shapes[0]) + 1, out_key)
        elif t in (L.MaxPooling2D, L.AveragePooling2D):
            self._pool(layer, in_keys[0], in_shapes[0], out_key)
        elif t in (L.GlobalAveragePooling2D, L.GlobalMaxPooling2D):
            form = "T" if layer._fmt == "NHWC" else "P"
            op = "GlobalAveragePool" if t is L.GlobalAveragePooling2D else "GlobalMaxPool"
            y = self.node(op, [self.get(in_keys[0], form)], name)
            if layer.keepdims:
                self.set(out_key, 4, name, **{form: y})
            else:
                self.set(out_key, 2, name, P=self.node("Flatten", [y], name + "/flatten", axis=1))
        elif t is L.BatchNormalization:
            self._batch_norm(layer, in_keys[0], len(in_shapes[0]) + 1, out_key)
        elif t is L.Flatten:
            v = self.values[in_keys[0]]
            x = self.get(in_keys[0], "P")
            if layer.data_format == "channels_first" and v.rank > 2:  # read as (N, ..., C)
                perm = [0, *range(2, v.rank), 1]
                x = self.node("Transpose", [x], name + "/channels_last", perm=perm)
            self.set(out_key, 2, name, P=self.node("Flatten", [x], name, axis=1))
        elif t is L.Reshape:
            shape = self.const(name + "/shape", np.array([-1, *out_shape], np.int64))
            self.set(out_key, rank, name,
                     P=self.node("Reshape", [self.get(in_keys[0], "P"), shape], name))  # fmt: skip
        elif t in (L.Activation, L.ReLU, L.LeakyReLU, L.ELU, L.Softmax):
            form = self.common_form(in_keys)
            x = self.get(in_keys[0], form)
            y = self.activation(layer.activation, x, name, rank, form, layer)
            if y == x:  # linear
                self.values[out_key] = self.values[in_keys[0]]
            else:
                self.set(out_key, rank, name, **{form: y})
        elif t in (L.Add, L.Subtract, L.Multiply):
            form = self.common_form(in_keys)
            op = {L.Add: "Add", L.Subtract: "Sub", L.Multiply: "Mul"}[t]
            xs = [self.get(k, form) for k in in_keys]
            y = xs[0]
            for i, x in enumerate(xs[1:]):  # left to right, as pyconv sums
                y = self.node(op, [y, x], name if i == len(xs) - 2 else f"{name}/{op.lower()}")
            self.set(out_key, rank, name, **{form: y})
        elif t is L.Concatenate:
            form = self.common_form(in_keys)
            axis = layer._axis(rank - 1) + 1
            if form == "T":
                axis = TO_NCHW.index(axis)
            xs = [self.get(k, form) for k in in_keys]
            self.set(out_key, rank, name, **{form: self.node("Concat", xs, name, axis=axis)})
        else:
            raise ValueError(
                f"layer {name!r} ({t.__name__}) has no ONNX export; pyconv.onnx.export "
                f"supports {', '.join(sorted(c.__name__ for c in _EXPORTABLE))}"
            )

    def _conv(self, layer, key, in_shape, out_key) -> None:
        name = layer.name
        form = "T" if layer._fmt == "NHWC" else "P"
        h, w = (in_shape[0], in_shape[1]) if layer._fmt == "NHWC" else (in_shape[1], in_shape[2])
        t, b, l, r = resolve_padding(
            layer.padding, (h, w), layer.kernel_size, layer.strides, layer.dilation_rate
        )
        inputs = [
            self.get(key, form),
            self.const(name + "/kernel", layer.kernel.value.transpose(3, 2, 0, 1)),  # OIHW
        ]
        if layer.bias is not None:
            inputs.append(self.const(name + "/bias", layer.bias.value))
        y = self.node(
            "Conv", inputs, name,
            kernel_shape=list(layer.kernel_size), strides=list(layer.strides),
            pads=[t, l, b, r], dilations=list(layer.dilation_rate), group=layer.groups,
        )  # fmt: skip
        y = self.activation(layer.activation, y, f"{name}/{layer.activation.name}", 4, form, layer)
        self.set(out_key, 4, name, **{form: y})

    def _dense(self, layer, key, rank, out_key) -> None:
        name = layer.name
        x = self.get(key, "P")
        kernel = self.const(name + "/kernel", layer.kernel.value)
        bias = None if layer.bias is None else self.const(name + "/bias", layer.bias.value)
        if rank == 2:
            y = self.node("Gemm", [x, kernel] + ([bias] if bias else []), name)
        else:  # Dense acts on the last axis: MatMul broadcasts over the others
            y = self.node("MatMul", [x, kernel], name if bias is None else name + "/matmul")
            if bias is not None:
                y = self.node("Add", [y, bias], name)
        y = self.activation(layer.activation, y, f"{name}/{layer.activation.name}", rank, "P",
                            layer)  # fmt: skip
        self.set(out_key, rank, name, P=y)

    def _pool(self, layer, key, in_shape, out_key) -> None:
        name = layer.name
        form = "T" if layer._fmt == "NHWC" else "P"
        h, w = (in_shape[0], in_shape[1]) if layer._fmt == "NHWC" else (in_shape[1], in_shape[2])
        t, b, l, r = resolve_padding(layer.padding, (h, w), layer.pool_size, layer.strides, (1, 1))
        attrs = dict(kernel_shape=list(layer.pool_size), strides=list(layer.strides),
                     pads=[t, l, b, r])  # fmt: skip
        x = self.get(key, form)
        if type(layer) is L.MaxPooling2D:
            y = self.node("MaxPool", [x], name, **attrs)
        else:  # pyconv (as Keras) averages over the cells inside the image only
            y = self.node("AveragePool", [x], name, count_include_pad=0, **attrs)
        self.set(out_key, 4, name, **{form: y})

    def _batch_norm(self, layer, key, rank, out_key) -> None:
        name = layer.name
        c = layer.moving_mean.shape[0]
        gamma = np.ones(c, np.float32) if layer.gamma is None else layer.gamma.value
        beta = np.zeros(c, np.float32) if layer.beta is None else layer.beta.value
        mm, mv = layer.moving_mean.value, layer.moving_variance.value
        axis = layer._feature_axis(rank)
        form = "P" if axis == 1 else "T" if rank == 4 and TO_NCHW.index(axis) == 1 else None
        if form is not None:  # ONNX normalizes axis 1
            params = [self.const(f"{name}/{n}", a) for n, a in
                      (("gamma", gamma), ("beta", beta), ("moving_mean", mm),
                       ("moving_variance", mv))]  # fmt: skip
            y = self.node("BatchNormalization", [self.get(key, form), *params], name,
                          epsilon=float(layer.epsilon), momentum=float(layer.momentum))  # fmt: skip
            self.set(out_key, rank, name, **{form: y})
            return
        # another axis: y = x * scale + shift, computed as pyconv's inference computes them
        scale = np.float32(1.0) * gamma / np.sqrt(mv + np.float32(layer.epsilon))
        shift = (beta - mm * scale).astype(np.float32)
        shape = [1] * rank
        shape[axis] = c
        x = self.get(key, "P")
        y = self.node("Mul", [x, self.const(name + "/scale", scale.reshape(shape))], name + "/mul")
        y = self.node("Add", [y, self.const(name + "/shift", shift.reshape(shape))], name)
        self.set(out_key, rank, name, P=y)


_IDENTITY_LAYERS = {L.Dropout, L.RandomFlip, L.RandomRotation, L.RandomTranslation, L.RandomZoom}
_EXPORTABLE = {
    L.Conv2D, L.Dense, L.MaxPooling2D, L.AveragePooling2D, L.GlobalAveragePooling2D,
    L.GlobalMaxPooling2D, L.BatchNormalization, L.Flatten, L.Reshape, L.Activation, L.ReLU,
    L.LeakyReLU, L.ELU, L.Softmax, L.Add, L.Subtract, L.Multiply, L.Concatenate,
    *_IDENTITY_LAYERS,
}  # fmt: skip


def _model_steps(model):
    """(inputs, steps, outputs) of a Sequential or a layer graph: inputs and outputs as
    (key, name, per-sample shape), steps as (layer, input keys, input shapes, output key,
    output shape) in an order where every input is computed before it is used."""
    from ..graph import Functional
    from ..models import Sequential

    if isinstance(model, Functional):
        inputs = [(id(t.node), t.layer.name, t.shape[1:]) for t in model.inputs]
        steps = [
            (n.layer, [id(t.node) for t in n.inbound], [t.shape[1:] for t in n.inbound],
             id(n), n.output.shape[1:])
            for n in model._nodes
            if n.inbound
        ]  # fmt: skip
        outputs = [(id(t.node), t.layer.name, t.shape[1:]) for t in model.outputs]
        return inputs, steps, outputs
    if isinstance(model, Sequential):
        if not model.built:
            raise ValueError(
                f"model {model.name!r} is not built: give it an input shape before exporting"
            )
        input_layer = model._input_layer
        shape = tuple(model.input_shape[1:])
        inputs = [(0, "input" if input_layer is None else input_layer.name, shape)]
        steps = []
        for i, layer in enumerate(model.layers):
            steps.append((layer, [i], [shape], i + 1, tuple(layer.output_shape)))
            shape = tuple(layer.output_shape)
        last = model.layers[-1].name if model.layers else "output"
        return inputs, steps, [(len(model.layers), last, shape)]
    raise TypeError(f"model must be a pyconv Sequential or Model, got {type(model).__name__}")


def export(model, path, opset: int = 17) -> None:
    """Write ``model`` (Sequential or layer graph) as an ONNX file at ``path`` (atomically:
    a temporary file renamed over it). The ONNX model takes NHWC batches of any size, as
    ``model.predict`` does, and returns what ``predict`` returns (its inputs and outputs are
    named after the model's Input and output layers). ``opset`` >= 13. Training-only layers
    (Dropout, random augmentation) are left out; a layer with no ONNX counterpart raises
    ValueError naming it."""
    onnx = require_onnx()
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise TypeError(f"opset must be an int, got {type(opset).__name__}")
    latest = onnx.defs.onnx_opset_version()
    if not _MIN_OPSET <= opset <= latest:
        raise ValueError(
            f"opset must be in [{_MIN_OPSET}, {latest}] (this onnx package), got {opset}"
        )
    inputs, steps, outputs = _model_steps(model)
    ex = _Exporter(onnx, int(opset))
    helper = onnx.helper
    FLOAT = onnx.TensorProto.FLOAT
    # the graph's input and output names come first: intermediate names give way to them
    in_names = [fresh_name(ex.tensor_names, name) for _, name, _ in inputs]
    out_names = [fresh_name(ex.tensor_names, name) for _, name, _ in outputs]
    graph_inputs = []
    for (key, _, shape), name in zip(inputs, in_names):
        ex.set(key, len(shape) + 1, name, P=name)
        graph_inputs.append(helper.make_tensor_value_info(name, FLOAT, ["N", *shape]))
    for layer, in_keys, in_shapes, out_key, out_shape in steps:
        ex.layer(layer, in_keys, in_shapes, out_key, out_shape)
    graph_outputs = []
    for (key, _, shape), name in zip(outputs, out_names):
        node_name = fresh_name(ex.node_names, name)
        ex.nodes.append(helper.make_node("Identity", [ex.get(key, "P")], [name], name=node_name))
        graph_outputs.append(helper.make_tensor_value_info(name, FLOAT, ["N", *shape]))
    graph = helper.make_graph(
        ex.nodes, model.name, graph_inputs, graph_outputs, initializer=ex.initializers,
        doc_string="exported by pyconv: NHWC (channels-last) inputs, as the pyconv model",
    )  # fmt: skip
    from .. import __version__

    opsets = [helper.make_opsetid("", int(opset))]
    proto = helper.make_model(
        graph, opset_imports=opsets, producer_name="pyconv", producer_version=__version__
    )
    proto.ir_version = helper.find_min_ir_version_for(opsets)  # readable by older runtimes
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    atomic_write(path, lambda f: f.write(data))
