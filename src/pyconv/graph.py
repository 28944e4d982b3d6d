"""Layer graphs: the functional API (``Model(inputs, outputs)``).

    inputs = pyconv.Input((32, 32, 3))
    x = Conv2D(16, 3, padding="same", activation="relu")(inputs)   # a SymbolicTensor
    y = Add()([x, Conv2D(16, 3, padding="same")(x)])                 # a skip connection
    model = pyconv.Model(inputs, Dense(10, activation="softmax")(Flatten()(y)))

Calling a layer on symbolic tensors records a ``Node`` (the layer and the tensors it was
called on; see ``pyconv.node``) and returns the node's output tensor. ``Functional`` walks
its nodes in
topological order; the tape holds one entry per node, so a layer called twice (shared
weights) has two contexts and its weight gradients add up. Backward visits the nodes in
reverse order and sums the gradients of tensors that feed several nodes. Everything else
(compile, fit, evaluate, predict, save, Grad-CAM) is ``Model``'s.
"""

from __future__ import annotations

import numpy as np

from .layers import InputLayer, Layer, deserialize, serialize
from .models import Model
from .node import Node, SymbolicTensor, call_symbolic, input_node, symbolic_input
from .training.loop import as_batch_array
from .training.tape import TapeEntry, apply_layer, backprop_layer
from .utils import shape_str


class Inputs:
    """The batches of a model with several inputs, indexed and converted together (so the
    training loop slices them as it slices one array)."""

    __slots__ = ("arrays",)

    def __init__(self, arrays):
        self.arrays = list(arrays)

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index):
        return Inputs([a[index] for a in self.arrays])

    def astype(self, dtype, copy=True):
        return Inputs([a.astype(dtype, copy=copy) for a in self.arrays])


def _tensor_list(value, what: str) -> list[SymbolicTensor]:
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ValueError(f"{what} must not be empty")
    for t in items:
        if not isinstance(t, SymbolicTensor):
            raise TypeError(
                f"{what} must be symbolic tensors (pyconv.Input(...) and layer outputs), "
                f"got {type(t).__name__}"
            )
    return items


class Functional(Model):
    """A model over a graph of layers: ``Model(inputs, outputs)``."""

    def __init__(self, inputs, outputs, name=None):
        super().__init__(name=name)
        self._multi_in = isinstance(inputs, (list, tuple))
        self._multi_out = isinstance(outputs, (list, tuple))
        self._inputs = _tensor_list(inputs, "inputs")
        self._outputs = _tensor_list(outputs, "outputs")
        for t in self._inputs:
            if not isinstance(t.layer, InputLayer):
                raise ValueError(
                    f"inputs must come from pyconv.Input(...), got the output of {t.layer.name!r}"
                )
            input_node(t)
        if len({id(t) for t in self._inputs}) != len(self._inputs):
            raise ValueError("the same Input appears twice in inputs")
        self._nodes = self._topological_order()
        self._input_nodes = [t.node for t in self._inputs]
        layers: list[Layer] = []
        for node in self._nodes:
            if not any(node.layer is l for l in layers):
                layers.append(node.layer)
        names = [l.name for l in layers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"layer names must be unique in a model, repeated: {sorted(dup)}")
        self._layers = layers
        # per node: how many node inputs and model outputs read its output
        self._consumers: dict[int, int] = {}
        for t in [t for node in self._nodes for t in node.inbound] + self._outputs:
            self._consumers[id(t.node)] = self._consumers.get(id(t.node), 0) + 1

    def _topological_order(self) -> list[Node]:
        """Nodes from the inputs to the outputs (post-order DFS: the last output's node
        comes last); every path must start at one of ``inputs``."""
        order, state = [], {}
        allowed = {id(t.node) for t in self._inputs}
        for out in self._outputs:
            stack = [(out.node, False)]
            while stack:
                node, done = stack.pop()
                if done:
                    if state.get(id(node)) != 2:
                        state[id(node)] = 2
                        order.append(node)
                    continue
                if state.get(id(node)) == 2:
                    continue
                if not node.inbound and id(node) not in allowed:
                    raise ValueError(
                        f"graph disconnected: {node.layer.name!r} is an input of the graph "
                        f"but not in the model's inputs"
                    )
                state[id(node)] = 1
                stack.append((node, True))
                for t in reversed(node.inbound):
                    if state.get(id(t.node)) != 2:
                        stack.append((t.node, False))
        for t in self._inputs:
            if state.get(id(t.node)) != 2:
                order.insert(0, t.node)  # an unused input: accepted, as Keras
        return order

    # --- wiring ----------------------------------------------------------------------------

    @property
    def layers(self) -> list[Layer]:
        return list(self._layers)

    @property
    def built(self) -> bool:
        return True

    @property
    def inputs(self) -> list[SymbolicTensor]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[SymbolicTensor]:
        return list(self._outputs)

    @property
    def input(self):
        """The input tensor (a list with several inputs), as Keras's ``model.input``."""
        return list(self._inputs) if self._multi_in else self._inputs[0]

    @property
    def output(self):
        """The output tensor (a list with several outputs): a new model can start from the
        tensors of this one (transfer learning: ``Model(base.input, head(tensor))``)."""
        return list(self._outputs) if self._multi_out else self._outputs[0]

    @property
    def input_shape(self):
        shapes = [t.shape for t in self._inputs]
        return shapes if self._multi_in else shapes[0]

    @property
    def output_shape(self):
        shapes = [t.shape for t in self._outputs]
        return shapes if self._multi_out else shapes[0]

    @staticmethod
    def _batches(values, count: int, name: str, what: str) -> list[np.ndarray]:
        """``count`` batch arrays from a list (one per model input or output), checked to
        have one number of samples."""
        if not isinstance(values, (list, tuple)) or len(values) != count:
            raise ValueError(f"{what}: {name} must be a list of {count} arrays")
        arrays = [as_batch_array(a, f"{name}[{i}]") for i, a in enumerate(values)]
        if len({len(a) for a in arrays}) > 1:
            raise ValueError(
                f"{name}: the arrays have different numbers of samples {[len(a) for a in arrays]}"
            )
        return arrays

    def _prepare_x(self, x, name="x"):
        """One float32 batch per input (bundled as ``Inputs`` when there are several)."""
        if isinstance(x, Inputs):
            x = x.arrays
        if self._multi_in:
            what = f"model {self.name!r} has {len(self._inputs)} inputs"
            xs = self._batches(x, len(self._inputs), name, what)
        else:
            xs = [as_batch_array(x, name)]
        for a, t in zip(xs, self._inputs):
            if tuple(a.shape[1:]) != t.shape[1:]:
                raise ValueError(
                    f"model {self.name!r} expects {name} of shape {shape_str(t.shape)} for "
                    f"input {t.layer.name!r}, got {a.shape}"
                )
        return Inputs(xs) if self._multi_in else xs[0]

    def _output_names(self) -> list[str]:
        return [t.layer.name for t in self._outputs]

    def _output_shapes(self) -> list[tuple]:
        return [tuple(t.shape[1:]) for t in self._outputs]

    def _prepare_y(self, y):
        """Targets: one array, or (several outputs) a list of one array per output (or a
        dict by output name)."""
        if not self._multi_out:
            return as_batch_array(y, "y")
        if isinstance(y, Inputs):
            return y
        if isinstance(y, dict):
            names = self._output_names()
            if sorted(y) != sorted(names):
                raise ValueError(f"y must have one entry per output {names}, got {sorted(y)}")
            y = [y[n] for n in names]
        what = f"model {self.name!r} has {len(self._outputs)} outputs"
        return Inputs(self._batches(y, len(self._outputs), "y", what))

    def _loss_and_grad(self, y_true, y_pred, tape, sample_weight):
        if not self._multi_out:
            return super()._loss_and_grad(y_true, y_pred, tape, sample_weight)
        # several outputs: L = sum_i w_i L_i(y_i, out_i); each output's softmax/sigmoid is
        # folded into its cross-entropy where it can be (not for a node that is two outputs:
        # its dy sums gradients w.r.t. the output, not the logits)
        entries = {id(e.node): e for e in tape}
        total, grads = 0.0, []
        for i, t in enumerate(self._outputs):
            once = sum(o.node is t.node for o in self._outputs) == 1
            loss, grad = self._output_loss(
                i, y_true.arrays[i], y_pred[i], entries.get(id(t.node)), sample_weight, once
            )
            total += loss
            grads.append(grad)
        return total, grads

    def _loss_value(self, y_true, y_pred, sample_weight) -> float:
        if not self._multi_out:
            return super()._loss_value(y_true, y_pred, sample_weight)
        return sum(
            w * loss_fn.value_and_grad(y, p, sample_weight)[0]
            for loss_fn, w, y, p in zip(self._losses, self._loss_weights, y_true.arrays, y_pred)
        )

    def _metrics(self, y_true, y_pred) -> list[np.ndarray]:
        if not self._multi_out:
            return super()._metrics(y_true, y_pred)
        per = len(self._metric_specs)
        return [
            np.asarray(f(y_true.arrays[k // per], y_pred[k // per]), np.float64).reshape(-1)
            for k, f in enumerate(self._metric_fns)
        ]

    def _ensure_built(self, x) -> None:
        """Nothing to build: the layers were built when the graph was made (``_prepare_x``
        has checked the shapes)."""

    def _forward(self, x, training, keep=frozenset()):
        xs = x.arrays if isinstance(x, Inputs) else list(x) if self._multi_in else [x]
        values: dict[int, np.ndarray] = {id(n): a for n, a in zip(self._input_nodes, xs)}
        # Free each intermediate output once its last consumer has run (the tape keeps
        # what the backward needs): inference on deep graphs holds only the live tensors.
        uses = dict(self._consumers)
        tape: list[TapeEntry] = []
        penalties: list[float] = []
        for node in self._nodes:
            if not node.inbound:
                continue
            ins = [values[id(t.node)] for t in node.inbound]
            y = apply_layer(
                node.layer, ins if node.multi else ins[0], training, tape, penalties,
                id(node.layer) in keep,
            )  # fmt: skip
            tape[-1].node = node
            values[id(node)] = y
            for t in node.inbound:
                uses[id(t.node)] -= 1
                if uses[id(t.node)] == 0:
                    del values[id(t.node)]
        outs = [values[id(t.node)] for t in self._outputs]
        return (outs if self._multi_out else outs[0]), tape, float(sum(penalties))

    def _needs_input_grad(self) -> dict[int, bool]:
        """Per node: whether any node upstream has trainable weights (else its input
        gradient is never used: frozen bases get no backward at all)."""
        reaches: dict[int, bool] = {}
        needs: dict[int, bool] = {}
        for node in self._nodes:
            up = any(reaches[id(t.node)] for t in node.inbound)
            needs[id(node)] = up
            reaches[id(node)] = up or bool(node.layer.trainable_weights)
        return needs

    def _backward(self, tape, dy, stop_at=None):
        grads: dict[int, np.ndarray] = {}

        def add(node, g):
            if not node.inbound:  # a model input: its gradient is not wanted
                return
            prev = grads.get(id(node))
            grads[id(node)] = g if prev is None else prev + g

        dys = dy if self._multi_out else [dy]
        for t, g in zip(self._outputs, dys):
            add(t.node, g)
        needs = self._needs_input_grad()
        for i in range(len(tape) - 1, -1, -1):
            entry = tape[i]
            tape[i] = None
            node = entry.node
            g = grads.pop(id(node), None)
            if stop_at is not None and node.layer is stop_at:
                return g
            if g is None:
                continue  # this node does not feed the outputs being differentiated
            need = stop_at is not None or needs[id(node)]
            dx = backprop_layer(entry, g, need)
            if not need:
                continue
            dxs = dx if node.multi else [dx]
            for t, gx in zip(node.inbound, dxs):
                if gx is not None:
                    add(t.node, gx)
        return None

    def _layer_path(self, layer) -> list[Layer]:
        """Layers from an input to ``layer``'s first call, following each node's first input."""
        node = next((n for n in self._nodes if n.layer is layer), None)
        if node is None:
            raise ValueError(f"layer {layer.name!r} is not in model {self.name!r}")
        path = [node.layer]
        while node.inbound:
            node = node.inbound[0].node
            path.append(node.layer)
        return path[::-1]

    # --- summary / config ------------------------------------------------------------------

    def _summary_rows(self):
        """Keras's functional table: one row per node, with the layers it reads from."""
        heads = ("Layer (type)", "Output Shape", "Param #", "Connected to")
        rows = [
            (f"{n.layer.name} ({type(n.layer).__name__})", shape_str(n.output.shape),
             f"{n.layer.count_params():,}" if n.layer.built else "0",
             ", ".join(t.layer.name for t in n.inbound))
            for n in self._nodes
        ]  # fmt: skip
        return heads, rows

    def get_config(self) -> dict:
        index = {id(n): i for i, n in enumerate(self._nodes)}
        return {
            "name": self.name,
            "layers": [serialize(l) for l in self._layers],
            "nodes": [
                {
                    "layer": n.layer.name,
                    "inbound": [index[id(t.node)] for t in n.inbound],
                    "multi": n.multi,
                }
                for n in self._nodes
            ],
            "inputs": [index[id(t.node)] for t in self._inputs],
            "outputs": [index[id(t.node)] for t in self._outputs],
            "multi_inputs": self._multi_in,
            "multi_outputs": self._multi_out,
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects=None):
        layers = {}
        for spec in config["layers"]:
            layer = deserialize(spec, custom_objects)
            layers[layer.name] = layer
        tensors: list[SymbolicTensor] = []
        for spec in config["nodes"]:
            layer = layers[spec["layer"]]
            if not spec["inbound"]:
                if not isinstance(layer, InputLayer):
                    raise ValueError(f"node of {layer.name!r} has no inputs but is not an Input")
                tensors.append(symbolic_input(layer))
                continue
            ins = [tensors[i] for i in spec["inbound"]]
            tensors.append(call_symbolic(layer, ins if spec["multi"] else ins[0]))
        ins = [tensors[i] for i in config["inputs"]]
        outs = [tensors[i] for i in config["outputs"]]
        return cls(
            ins if config.get("multi_inputs") else ins[0],
            outs if config.get("multi_outputs") else outs[0],
            name=config.get("name"),
        )
