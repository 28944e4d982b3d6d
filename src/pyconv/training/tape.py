"""The tape: what one forward pass of a model records for its backward.

Each layer application is one ``TapeEntry`` (the layer, the ctx its ``forward`` returned,
and its output when needed); ``Model._backward`` walks the entries in reverse, calling
``layer.backward(ctx, dy)``. Sequential and layer graphs both build their tapes here.
"""

from __future__ import annotations

import numpy as np

from ..layers import Layer


class TapeEntry:
    """One layer application: the layer, its ctx, and (with an activity regularizer) its output."""

    __slots__ = ("layer", "ctx", "output", "node")

    def __init__(self, layer, ctx, output=None):
        self.layer, self.ctx, self.output = layer, ctx, output
        self.node = None  # in a layer graph: the node (call of the layer) this entry ran


def apply_layer(layer: Layer, x, training: bool, tape: list, penalties: list, keep=False):
    """Forward one layer, recording its tape entry and activity penalty (one place for both).

    The output is kept on the tape when the activity regularizer needs it or ``keep``."""
    y, ctx = layer.forward(x, training)
    reg = layer.activity_regularizer
    if reg is not None:
        penalties.append(reg.penalty(y) / len(y))
    tape.append(TapeEntry(layer, ctx, y if (reg is not None or keep) else None))
    return y


def backprop_layer(entry: TapeEntry, dy, need_input_grad: bool):
    """Backward one tape entry (adding the activity penalty's gradient to dy first)."""
    layer = entry.layer
    if entry.output is not None and layer.activity_regularizer is not None:
        dy = dy + layer.activity_regularizer.gradient(entry.output) / np.float32(len(dy))
    return layer.backward(entry.ctx, dy, need_input_grad)


def fold_activation_into_gradient(entry: TapeEntry) -> bool:
    """Tell the layer of ``entry`` that its backward's dy is dL/d(logits) (its softmax or
    sigmoid is folded into the loss or seed); False, changing nothing, when its ctx keeps
    no logits (any other layer or activation)."""
    if entry is None or getattr(entry.ctx, "logits", None) is None:
        return False
    entry.ctx.dy_is_logits_grad = True
    return True
