"""The inference plan: what ``predict``, ``predict_on_batch`` and ``model(x)`` run.

A model's layers, run one by one in inference mode, pay for work that training needs and
inference does not: batch normalization as its own pass over each activation map (in
inference it is a fixed per-channel affine map, which folds into the convolution before
it), ReLU as another pass (the convolution applies it as it stores its output), a residual
Add into a new array (it can add into a buffer no one else sees), Dropout (the identity),
and per layer the Python of the layer contract (argument checks, the backward's context).
At batch 1 that is most of the time beyond the convolutions.

``plan_for(model)`` turns the model's layers (a Sequential's stack or a layer graph's nodes)
into a list of steps, each one call:

- ``FusedConv``: Conv2D or Dense [-> BatchNormalization] [-> ReLU], one convolution. The
  batch norm folds into the kernel and bias, in float64, then rounded to float32:
  ``s = gamma / sqrt(var + eps)``, ``kernel' = kernel * s`` (per output channel),
  ``bias' = (bias - mean) * s + beta``. Folded only after a convolution with no activation
  (a ReLU before the batch norm, as in the lecture CNNs, does not commute with it); the
  ReLU only when it is a plain max(z, 0) layer right after.
- ``ChannelAffine``: a batch norm that did not fold, as its float32 (scale, shift) -- the
  layer's own numbers, so the result is the layer's to the bit -- in place when it may.
- ``AddRelu``: Add [-> ReLU] into one of its inputs when that buffer is the plan's own
  (made by a step of the plan, read by nothing else, not a model output), else into a new
  array; the same sums in the same order as the Add layer.
- ``Activate``: an activation layer (a plain ReLU as a blocked pass), in place when it may.
- ``LayerCall``: any other layer, through its ``forward`` (the fallback: the plan never
  needs to know a layer to run it).
Dropout layers are skipped (their consumers read their input).

Every step that derives arrays from weights (folded kernels, (scale, shift)) keeps the
``version`` of each weight it read (``Variable.version``, bumped by every write: optimizer
steps, moving statistics, set_weights, load_weights) and recomputes them when one differs,
so a plan is never stale; a fused step also checks that the layers' activation and
epsilon are the ones it was planned for, else the model plans again. ``FusedConv.version``
counts its refolds: with ``cache`` (one per step) it is what a packed-weight cache keys on.

Results: bit-identical to the layers where nothing folds; a folded batch norm rounds
differently (one float32 rounding of the folded kernel instead of two roundings of the
unfolded affine map), within a few float32 ulps of the sum of |terms| (tests/
test_inference.py bounds it against float64 references).

Training never uses a plan (``training=True``, fit, train_on_batch, evaluate's losses come
from the layers' forward passes as ever). ``set_inference_fusion(False)`` (all models) or
``model.inference_fusion = False`` (one model) runs predict through the layers one by one,
for debugging or to compare.
"""

from __future__ import annotations

import numpy as np

from . import _core, functional
from ._shapes import flag
from .activations import Activation as _ActivationFn
from .activations import is_plain_relu

_enabled = True


def set_inference_fusion(enabled: bool) -> None:
    """Turn the inference plan on (default) or off for every model: with it off, predict
    and ``model(x)`` run the layers one by one, as the training forward pass does (for
    debugging, or to compare). One model: ``model.inference_fusion = False``."""
    global _enabled
    _enabled = flag(enabled, "enabled")


def get_inference_fusion() -> bool:
    """Whether models run predict through their inference plan (see set_inference_fusion)."""
    return _enabled


class Stale(Exception):
    """A step's layers changed in a way the plan was not made for (an activation or an
    epsilon reassigned): the model plans again."""


# --- steps -----------------------------------------------------------------------------------


def _versions(variables) -> tuple:
    return tuple([v.version for v in variables])


class Step:
    """One call of the plan. ``ins``: the slots it reads; ``out``: the slot it writes;
    ``free``: slots no later step reads (dropped after it runs); ``layers``: the model's
    layers it stands for (bench/layer_latency.py prints them)."""

    multi = False
    owned = False  # its output is a new buffer no one else holds

    def __init__(self, layers, ins):
        self.layers = list(layers)
        self.ins = list(ins)
        self.out = -1
        self.free: list[int] = []

    @property
    def label(self) -> str:
        return "+".join(l.name for l in self.layers)

    def run(self, x):
        raise NotImplementedError


class LayerCall(Step):
    """Any layer, through its inference forward (the fallback)."""

    def __init__(self, layer, ins, multi):
        super().__init__([layer], ins)
        self.layer, self.multi = layer, multi

    def run(self, x):
        return self.layer.forward(x, False)[0]


class FusedConv(Step):
    """Conv2D or Dense [-> BatchNormalization] [-> ReLU layer] as one convolution.

    kernel/bias: what the convolution reads, the layer's own arrays when no batch norm
    folds (no copy), else the folded ones, remade when a weight's version changes
    (``version`` counts the remakes; ``cache`` is this step's slot for a packed-weight
    cache keyed on it)."""

    owned = True

    def __init__(self, layer, bn, relu_layer, ins):
        super().__init__([l for l in (layer, bn, relu_layer) if l is not None], ins)
        self.layer, self.bn, self.relu_layer = layer, bn, relu_layer
        self.dense = not hasattr(layer, "_geometry")
        self.activation = layer.activation
        self.relu_activation = None if relu_layer is None else relu_layer.activation
        self.epsilon = None if bn is None else bn.epsilon
        self.sources = [v for v in (layer.kernel, layer.bias) if v is not None]
        if bn is not None:
            self.sources += bn.weights
        if self.dense:
            self.geometry = dict(data_format="NHWC", weight_format="HWIO")
            self.units = layer.units
        else:
            self.geometry = layer._geometry()
        fused_relu = is_plain_relu(self.activation) or relu_layer is not None
        self.fused = "relu" if fused_relu else None
        # an activation applied after the convolution, on its (own) output buffer
        self.after = None if fused_relu or self.activation.name == "linear" else self.activation
        self.seen: tuple | None = None
        self.folded: tuple = (None, None)
        self.version = 0
        # The packed-weight cache for what the convolution reads: the layer's own (shared with
        # its layer-by-layer inference calls) when nothing folds, else one for the folded
        # kernel, keyed on self.version (which changes exactly when that kernel does).
        self.cache = layer._weight_cache if bn is None else functional.WeightCache()

    def _check(self) -> None:
        relu = self.relu_layer
        if (
            self.layer.activation is not self.activation
            or (relu is not None and relu.activation is not self.relu_activation)
            or (self.bn is not None and self.bn.epsilon != self.epsilon)
        ):
            raise Stale

    def refresh(self) -> tuple:
        """(kernel, bias) for the weights as they are now: recomputed when any weight's
        version differs from the last time (one tuple, so a concurrent call never pairs a
        new kernel with an old bias)."""
        seen = _versions(self.sources)
        if seen == self.seen:
            return self.folded
        layer = self.layer
        kernel = layer.kernel.value
        bias = None if layer.bias is None else layer.bias.value
        if self.bn is not None:
            kernel, bias = fold_batch_norm(kernel, bias, self.bn)
        if self.dense:
            kernel = kernel.reshape(1, 1, *kernel.shape)  # (1, 1, in, units): a 1x1 conv
        self.folded, self.seen = (kernel, bias), seen
        self.version += 1
        return self.folded

    @property
    def kernel(self):
        return self.refresh()[0]

    def run(self, x):
        self._check()
        kernel, bias = self.refresh()
        version = self.layer.kernel.version if self.bn is None else self.version
        cached = dict(weight_cache=self.cache, weight_version=version)
        if self.dense:
            z = functional.conv2d(
                x.reshape(-1, 1, 1, x.shape[-1]), kernel, bias, **self.geometry,
                activation=self.fused, **cached,
            ).reshape(*x.shape[:-1], self.units)  # fmt: skip
        else:
            z = functional.conv2d(x, kernel, bias, **self.geometry, activation=self.fused, **cached)
        return z if self.after is None else self.after.forward(z)


def fold_batch_norm(kernel, bias, bn):
    """(kernel', bias') of a convolution (kernel HWIO, or Dense's (in, units): output
    channels last) followed by ``bn`` in inference mode, computed in float64 and rounded
    once to float32: kernel' = kernel * s, bias' = (bias - mean) * s + beta with
    s = gamma / sqrt(moving_variance + epsilon)."""
    mean = bn.moving_mean.value.astype(np.float64)
    var = bn.moving_variance.value.astype(np.float64)
    s = 1.0 / np.sqrt(var + bn.epsilon)
    if bn.gamma is not None:
        s *= bn.gamma.value
    shift = -mean * s if bias is None else (bias.astype(np.float64) - mean) * s
    if bn.beta is not None:
        shift += bn.beta.value
    folded = (kernel.astype(np.float64) * s).astype(np.float32)  # s broadcasts over the last axis
    return folded, shift.astype(np.float32)


class ChannelAffine(Step):
    """A batch norm in inference mode over the last axis of C-contiguous inputs, as the
    layer computes it (its float32 scale and shift: the same result to the bit); in place
    when the input is the plan's own buffer."""

    owned = True

    def __init__(self, bn, ins, in_place):
        super().__init__([bn], ins)
        self.bn, self.in_place, self.epsilon = bn, in_place, bn.epsilon
        self.sources = bn.weights
        self.seen: tuple | None = None
        self.scale = self.shift = None

    def run(self, x):
        if self.bn.epsilon != self.epsilon:
            raise Stale
        seen = _versions(self.sources)
        if seen != self.seen:
            self.scale, self.shift = self.bn.inference_affine()
            self.seen = seen
        if not x.flags.c_contiguous or x.shape[-1] != self.scale.shape[0]:
            return self.bn.forward(x, False)[0]  # the layer says what is wrong, or copes
        rows = x.reshape(-1, x.shape[-1])
        y = rows if self.in_place else functional._aligned_empty(rows.shape)
        _core.channel_affine(rows, self.scale, self.shift, y)  # (elementwise: y may be rows)
        return y.reshape(x.shape)


# Elementwise passes go over flat arrays in blocks of _BLOCK floats (256 KB, in L2): the Add
# and the ReLU of a block run back to back while it is in cache, so together they cost about
# one pass over memory. np.maximum against a zeros array of the same size is ~4x faster than
# against the scalar 0 (NumPy 2.4) and keeps NaN, as the convolution's fused ReLU does.
_BLOCK = 1 << 16
_ZEROS = np.zeros(_BLOCK, np.float32)
_ZEROS.flags.writeable = False


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1) if a.flags.c_contiguous else np.ascontiguousarray(a).reshape(-1)


def relu_in_place(y: np.ndarray) -> np.ndarray:
    """y = max(y, 0) in place (y C-contiguous float32); NaN stays NaN."""
    f = y.reshape(-1)
    n = f.size
    for s in range(0, n, _BLOCK):
        part = f[s : s + _BLOCK]
        np.maximum(part, _ZEROS[: len(part)], out=part)
    return y


class AddRelu(Step):
    """Add [-> ReLU layer]: sums in the Add layer's order, ((x0 + x1) + x2) + ..., into x0 or
    x1 when that one is the plan's own buffer (``target``), else into a new array; block by
    block, each block's ReLU right after its sums."""

    multi = True
    owned = True

    def __init__(self, add, relu_layer, ins, target):
        super().__init__([l for l in (add, relu_layer) if l is not None], ins)
        self.add, self.relu_layer, self.target = add, relu_layer, target
        self.relu_activation = None if relu_layer is None else relu_layer.activation

    def run(self, xs):
        if self.relu_layer is not None and self.relu_layer.activation is not self.relu_activation:
            raise Stale
        a = xs[0]
        if any(x.shape != a.shape or x.dtype != np.float32 for x in xs):
            y = self.add.forward(xs, False)[0]  # the layer's checks and errors
            return y if self.relu_layer is None else self.relu_layer.forward(y, False)[0]
        # (x0 + x1 == x1 + x0 exactly: either may take the sum)
        y = None if self.target is None else xs[self.target]
        if y is None or not y.flags.c_contiguous:
            y = functional._aligned_empty(a.shape)
        out, flats = y.reshape(-1), [_flat(x) for x in xs]
        relu = self.relu_layer is not None
        for s in range(0, out.size, _BLOCK):
            part = out[s : s + _BLOCK]
            np.add(flats[0][s : s + _BLOCK], flats[1][s : s + _BLOCK], out=part)
            for f in flats[2:]:
                np.add(part, f[s : s + _BLOCK], out=part)
            if relu:
                np.maximum(part, _ZEROS[: len(part)], out=part)
        return y


class Activate(Step):
    """An activation layer (ReLU, Activation, Softmax, ...) in place when it may."""

    owned = True

    def __init__(self, layer, ins, in_place):
        super().__init__([layer], ins)
        self.layer, self.in_place, self.activation = layer, in_place, layer.activation
        self.plain_relu = is_plain_relu(layer.activation)

    def run(self, x):
        if self.layer.activation is not self.activation:
            raise Stale
        if x.dtype != np.float32:
            return self.layer.forward(x, False)[0]
        y = x if self.in_place and x.flags.c_contiguous else np.array(x, np.float32)
        return relu_in_place(y) if self.plain_relu else self.activation.forward(y)


# --- planning --------------------------------------------------------------------------------


class _Node:
    """A layer call while planning: its layer, the nodes it reads, whether it takes a list."""

    __slots__ = ("layer", "ins", "multi", "ndim")

    def __init__(self, layer, ins, multi, ndim):
        self.layer, self.ins, self.multi, self.ndim = layer, ins, multi, ndim


class Plan:
    """Steps over value slots: slots 0..k-1 are the model's inputs; each step writes one."""

    def __init__(self, steps, n_inputs, outputs, n_slots):
        self.steps, self.n_inputs, self.outputs = steps, n_inputs, outputs
        self.n_slots = n_slots
        # A chain (each step reads the one before, one output): a plain loop runs it.
        self.chain = n_inputs == 1 and all(
            not s.multi and s.ins == [i] and s.out == i + 1 for i, s in enumerate(steps)
        ) and outputs == [len(steps)]  # fmt: skip

    def run(self, xs: list) -> list:
        if self.chain:
            x = xs[0]
            for step in self.steps:
                x = step.run(x)
            return [x]
        values = [None] * self.n_slots
        values[: self.n_inputs] = xs
        for step in self.steps:
            if step.multi:
                y = step.run([values[i] for i in step.ins])
            else:
                y = step.run(values[step.ins[0]])
            values[step.out] = y
            for i in step.free:
                values[i] = None
        return [values[i] for i in self.outputs]


def _plain_relu_layer(layer) -> bool:
    from .layers.core import Activation

    return isinstance(layer, Activation) and type(layer)._forward is Activation._forward and (
        is_plain_relu(layer.activation)
    )  # fmt: skip


def _bn_folds(bn, node: _Node, producer) -> bool:
    """Whether batch norm ``bn`` normalizes the output channels of ``producer`` (a Conv2D
    or Dense whose output has ``node.ndim`` dims, batch included)."""
    try:
        axis = bn._feature_axis(node.ndim)
    except ValueError:
        return False
    if hasattr(producer, "_geometry"):  # Conv2D: channels last or first
        return axis == (3 if producer._fmt == "NHWC" else 1)
    return axis == node.ndim - 1  # Dense: its units are the last axis


def build(nodes: list[_Node], n_inputs: int, outputs: list[int]) -> Plan:
    """The plan for layer calls ``nodes`` (topological order; node i < n_inputs: the model's
    inputs, no layer) whose ``outputs`` are the model's outputs."""
    from .layers.conv import Conv2D
    from .layers.core import Activation, Dense, Dropout
    from .layers.merge import Add
    from .layers.normalization import BatchNormalization

    # Dropout is the identity at inference: its readers read its input instead.
    alias = list(range(len(nodes)))
    for i, node in enumerate(nodes):
        if i >= n_inputs and type(node.layer) is Dropout:
            alias[i] = alias[node.ins[0]]
    for node in nodes:
        node.ins = [alias[j] for j in node.ins]
    outputs = [alias[j] for j in outputs]
    live = [i for i in range(n_inputs, len(nodes)) if alias[i] == i]
    readers: list[list[int]] = [[] for _ in nodes]
    for i in live:
        for j in nodes[i].ins:
            readers[j].append(i)
    uses = [len(r) for r in readers]
    for j in outputs:
        uses[j] += 1

    def only_reader(j):
        """The one node that reads node j's output (and no model output does), or None."""
        return readers[j][0] if uses[j] == 1 and readers[j] else None

    steps: list[Step] = []
    slot_of: dict[int, int] = {i: i for i in range(n_inputs)}  # node -> slot of its value
    owned: dict[int, bool] = {}  # node -> its value is a buffer of the plan's own
    absorbed: set[int] = set()

    def mine(j) -> bool:
        """Whether a step reading node j's value may overwrite it."""
        return owned.get(j, False) and uses[j] == 1

    for i in live:
        if i in absorbed:
            continue
        node, layer = nodes[i], nodes[i].layer
        end, step = i, None
        kind = type(layer)
        if kind in (Conv2D, Dense) and layer.built:
            bn = relu = None
            if layer.activation.name == "linear":
                r = only_reader(end)
                if (
                    r is not None
                    and type(nodes[r].layer) is BatchNormalization
                    and nodes[r].layer.built
                    and _bn_folds(nodes[r].layer, node, layer)
                ):
                    bn, end = nodes[r].layer, r
                r = only_reader(end)
                if r is not None and _plain_relu_layer(nodes[r].layer):
                    relu, end = nodes[r].layer, r
            step = FusedConv(layer, bn, relu, node.ins)
        elif kind is BatchNormalization and layer.built:
            axis_last = layer.axis in (-1, node.ndim - 1)
            if axis_last:
                step = ChannelAffine(layer, node.ins, mine(node.ins[0]))
        elif kind is Add and len(node.ins) >= 2:
            target = next((k for k in (0, 1) if mine(node.ins[k])), None)
            relu = None
            r = only_reader(end)
            if r is not None and _plain_relu_layer(nodes[r].layer):
                relu, end = nodes[r].layer, r
            step = AddRelu(layer, relu, node.ins, target)
        elif isinstance(layer, Activation) and type(layer)._forward is Activation._forward:
            if isinstance(layer.activation, _ActivationFn):
                step = Activate(layer, node.ins, mine(node.ins[0]))
        if step is None:
            step = LayerCall(layer, node.ins, node.multi)
        # the nodes folded into this step (after the first) produce no value of their own
        k = end
        while k != i:
            absorbed.add(k)
            k = nodes[k].ins[0]
        step.ins = [slot_of[j] for j in node.ins]
        step.out = slot_of[end] = len(slot_of)
        owned[end] = step.owned
        steps.append(step)
    # each slot is dropped after its last read (the model's outputs are kept to the end)
    out_slots = [slot_of[j] for j in outputs]
    last_read: dict[int, int] = {}
    for k, step in enumerate(steps):
        for s in step.ins:
            last_read[s] = k
    for s in out_slots:
        last_read[s] = len(steps)
    for k, step in enumerate(steps):
        step.free = sorted({s for s in step.ins if last_read.get(s) == k})
    return Plan(steps, n_inputs, out_slots, len(slot_of))


def _sequential_nodes(model):
    nodes = [_Node(None, [], False, len(model.input_shape))]
    for layer in model._layers:
        nodes.append(_Node(layer, [len(nodes) - 1], False, len(layer.output_shape) + 1))
    return nodes, 1, [len(nodes) - 1]


def _graph_nodes(model):
    index: dict[int, int] = {}
    nodes: list[_Node] = []
    for n in model._input_nodes:
        index[id(n)] = len(nodes)
        nodes.append(_Node(None, [], False, len(n.output.shape)))
    for n in model._nodes:
        if not n.inbound or id(n) in index:
            continue
        index[id(n)] = len(nodes)
        ins = [index[id(t.node)] for t in n.inbound]
        nodes.append(_Node(n.layer, ins, n.multi, len(n.output.shape)))
    return nodes, len(model._input_nodes), [index[id(t.node)] for t in model._outputs]


def plan_for(model) -> Plan | None:
    """The inference plan of a Sequential (built) or a layer graph; None for models whose
    forward pass the plan cannot stand for (a subclass with its own ``_forward``)."""
    from .graph import Functional
    from .models import Sequential

    cls = type(model)
    if cls._forward is Sequential._forward and isinstance(model, Sequential):
        if not model.built:
            return None
        return build(*_sequential_nodes(model))
    if cls._forward is Functional._forward and isinstance(model, Functional):
        return build(*_graph_nodes(model))
    return None
