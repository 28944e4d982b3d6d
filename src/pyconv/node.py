"""Symbolic tensors and graph nodes: what calling a layer on ``pyconv.Input(...)`` records.

This module sits below the layers (it imports none of pyconv), as Keras's node module does:
``Layer.__call__`` records a node through ``call_symbolic``, and ``pyconv.graph`` (the
functional ``Model(inputs, outputs)``) walks the nodes. A layer here is anything with
``name``, ``build_for(shape)`` and a ``_graph_outputs`` list (``pyconv.layers.Layer``).
"""

from __future__ import annotations


class SymbolicTensor:
    """A placeholder with a shape ((None, *shape)): what ``Input(shape)`` returns, and what
    a layer called on such tensors returns (see ``pyconv.graph``). ``layer`` produced it;
    ``node`` is that call of the layer (None for an Input not yet used in a graph).

    ``Sequential([Input((28, 28, 1)), ...])`` uses an Input to fix the input shape.
    """

    def __init__(self, shape: tuple, layer, node=None):
        self.shape = (None, *shape)
        self.layer = layer
        self.node = node

    def __repr__(self) -> str:
        return f"<SymbolicTensor shape={self.shape} from {self.layer.name!r}>"


class Node:
    """One call of a layer in a graph: ``layer(inbound)`` produced ``output``."""

    __slots__ = ("layer", "inbound", "multi", "output")

    def __init__(self, layer, inbound: list, multi: bool):
        self.layer, self.inbound, self.multi = layer, inbound, multi
        self.output: SymbolicTensor | None = None


def is_symbolic(x) -> bool:
    """Whether a layer's call argument is a symbolic tensor (or a list starting with one)."""
    return isinstance(x, SymbolicTensor) or (
        isinstance(x, (list, tuple)) and bool(x) and isinstance(x[0], SymbolicTensor)
    )


def symbolic_input(layer) -> SymbolicTensor:
    """The tensor an input layer (``InputLayer``, of ``layer.shape``) provides to graphs."""
    tensor = SymbolicTensor(layer.shape, layer)
    layer._graph_outputs.append(tensor)
    return tensor


def input_node(tensor: SymbolicTensor) -> Node:
    """The node of an ``Input`` tensor (made on first use)."""
    if tensor.node is None:
        tensor.node = Node(tensor.layer, [], False)
        tensor.node.output = tensor
    return tensor.node


def call_symbolic(layer, inputs) -> SymbolicTensor:
    """``layer(inputs)`` on symbolic tensors: build the layer for their shapes, record a node."""
    multi = isinstance(inputs, (list, tuple))
    tensors = list(inputs) if multi else [inputs]
    for t in tensors:
        if not isinstance(t, SymbolicTensor):
            raise TypeError(
                f"layer {layer.name!r}: a graph layer's inputs must all be symbolic tensors "
                f"(from Input or another layer), got {type(t).__name__}"
            )
        if t.node is None:
            input_node(t)
    shapes = [t.shape[1:] for t in tensors]
    out_shape = layer.build_for(shapes if multi else shapes[0])
    node = Node(layer, tensors, multi)
    node.output = SymbolicTensor(tuple(out_shape), layer, node)
    layer._graph_outputs.append(node.output)
    return node.output
