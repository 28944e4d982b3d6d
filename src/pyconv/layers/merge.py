"""Layers over several inputs: Add, Subtract, Multiply, Concatenate, EuclideanDistance.

They take a list of batches and return one: ``y, ctx = layer.forward([a, b], training)``;
``layer.backward(ctx, dy)`` returns the list of input gradients (None where not needed).
Shapes exclude the batch dimension; ``build_for`` takes the list of input shapes.
``Merge`` implements the layer contract (checking the list and dy); each merge implements
``_merge_forward(xs, training)`` and ``_merge_backward(ctx, dy, need_input_grad)``.
"""

from __future__ import annotations

import numpy as np

from .._shapes import real
from ..node import SymbolicTensor, call_symbolic
from .base import Layer, _shape_tuple


class Merge(Layer):
    """Base class: checks the list of inputs; subclasses give the shape rule and the math."""

    min_inputs = 2
    max_inputs: int | None = None

    def build_for(self, input_shape) -> tuple:
        if not isinstance(input_shape, (list, tuple)) or not all(
            isinstance(s, (list, tuple)) for s in input_shape
        ):
            raise TypeError(
                f"layer {self.name!r} ({type(self).__name__}) takes a list of inputs, "
                f"got one of shape {input_shape!r}"
            )
        shapes = [_shape_tuple(s, "input_shape") for s in input_shape]
        n = len(shapes)
        if n < self.min_inputs or (self.max_inputs is not None and n > self.max_inputs):
            want = (
                f"exactly {self.min_inputs}"
                if self.max_inputs == self.min_inputs
                else f"at least {self.min_inputs}"
            )
            raise ValueError(f"layer {self.name!r} takes {want} inputs, got {n}")
        return self._build_once(shapes)

    def spatial_map(self):
        """Inputs and output on one pixel grid: pixels map to themselves."""
        if self.built and all(s[:-1] == self.output_shape[:-1] for s in self.input_shape):
            return ((1.0, 0.0), (1.0, 0.0))
        return None

    def compute_output_shape(self, input_shape):
        first = input_shape[0]
        for s in input_shape[1:]:
            if s != first:
                raise ValueError(
                    f"layer {self.name!r} needs inputs of one shape, got {input_shape}"
                )
        return first

    def _inputs(self, x):
        if not isinstance(x, (list, tuple)):
            raise TypeError(
                f"layer {self.name!r} ({type(self).__name__}) takes a list of batches (x), "
                f"got {type(x).__name__}"
            )
        xs = [self._batch(a) for a in x]  # float32 with a batch axis, or a clear error
        self.build_for([a.shape[1:] for a in xs])
        if any(len(a) != len(xs[0]) for a in xs):
            raise ValueError(
                f"layer {self.name!r}: inputs have different batch sizes {[len(a) for a in xs]}"
            )
        return xs

    def _forward(self, xs, training):
        y, ctx = self._merge_forward(xs, training)
        return y, (y.shape, ctx)

    def _backward(self, ctx, dy, need_input_grad):
        """The list of dL/d(each input) (Nones if not needed); dy must have the output's
        shape."""
        shape, inner = ctx
        return self._merge_backward(inner, self._grad(dy, shape), need_input_grad)

    def _merge_forward(self, xs, training):
        """(y, ctx) from the list of input batches (checked: float32, one batch size)."""
        raise NotImplementedError

    def _merge_backward(self, ctx, dy, need_input_grad):
        """The list of input gradients from dy (checked against the output's shape)."""
        raise NotImplementedError

    def __call__(self, x, training=False):
        if isinstance(x, (list, tuple)) and any(isinstance(t, SymbolicTensor) for t in x):
            return call_symbolic(self, x)  # a graph node (the functional API)
        return self.forward(x, training)[0]


class Add(Merge):
    """y = x1 + x2 + ... (same shapes)."""

    def _merge_forward(self, xs, training):
        y = xs[0] + xs[1]
        for a in xs[2:]:
            y += a
        return y, len(xs)

    def _merge_backward(self, n, dy, need_input_grad):
        return [dy] + [dy.copy() for _ in range(n - 1)] if need_input_grad else [None] * n


class Subtract(Merge):
    """y = x1 - x2."""

    max_inputs = 2

    def _merge_forward(self, xs, training):
        return xs[0] - xs[1], None

    def _merge_backward(self, ctx, dy, need_input_grad):
        return [dy, -dy] if need_input_grad else [None, None]


class Multiply(Merge):
    """y = x1 * x2 * ... elementwise."""

    def _merge_forward(self, xs, training):
        y = xs[0] * xs[1]
        for a in xs[2:]:
            y = y * a
        return y, xs

    def _merge_backward(self, xs, dy, need_input_grad):
        if not need_input_grad:
            return [None] * len(xs)
        grads = []
        for i in range(len(xs)):
            g = dy.copy()
            for j, a in enumerate(xs):
                if j != i:
                    g *= a
            grads.append(g)
        return grads


class Concatenate(Merge):
    """Joins inputs along ``axis`` (default -1, the channels of NHWC maps)."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"axis must be an int, got {type(axis).__name__}")
        if axis == 0:
            raise ValueError("axis must not be 0 (the batch axis)")
        self.axis = int(axis)

    def _axis(self, ndim: int) -> int:
        """The axis within a sample's shape (batch dimension excluded)."""
        a = self.axis - 1 if self.axis > 0 else ndim + self.axis
        if not 0 <= a < ndim:
            raise ValueError(f"axis {self.axis} is out of range for inputs of rank {ndim + 1}")
        return a

    def compute_output_shape(self, input_shape):
        ranks = {len(s) for s in input_shape}
        if len(ranks) != 1:
            raise ValueError(f"layer {self.name!r} needs inputs of one rank, got {input_shape}")
        a = self._axis(ranks.pop())
        first = input_shape[0]
        for s in input_shape[1:]:
            if s[:a] + s[a + 1 :] != first[:a] + first[a + 1 :]:
                raise ValueError(
                    f"layer {self.name!r}: inputs must match except along axis {self.axis}, "
                    f"got {input_shape}"
                )
        return (*first[:a], sum(s[a] for s in input_shape), *first[a + 1 :])

    def _merge_forward(self, xs, training):
        a = self._axis(xs[0].ndim - 1) + 1
        return np.concatenate(xs, axis=a), (a, [x.shape[a] for x in xs])

    def _merge_backward(self, ctx, dy, need_input_grad):
        a, sizes = ctx
        if not need_input_grad:
            return [None] * len(sizes)
        cuts = np.cumsum(sizes)[:-1]
        return [np.ascontiguousarray(g) for g in np.split(dy, cuts, axis=a)]

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


class EuclideanDistance(Merge):
    """d = sqrt(max(sum over features of (x1 - x2)^2, epsilon)), shape (1,) per sample: the
    distance between two embeddings of a Siamese network (Keras examples write it as a
    Lambda layer; here it is a layer with its gradient). The epsilon floor keeps the
    gradient finite for identical embeddings (it is 0 there)."""

    min_inputs = max_inputs = 2

    def __init__(self, epsilon=1e-7, **kwargs):
        super().__init__(**kwargs)
        eps = real(epsilon, "epsilon")  # (an int beyond float range: a ValueError)
        if not np.isfinite(eps) or eps <= 0:
            raise ValueError(f"epsilon must be a positive number, got {epsilon!r}")
        self.epsilon = eps

    def compute_output_shape(self, input_shape):
        super().compute_output_shape(input_shape)
        return (1,)

    def _merge_forward(self, xs, training):
        diff = (xs[0] - xs[1]).reshape(len(xs[0]), -1)
        sq = np.einsum("ij,ij->i", diff, diff, dtype=np.float64)
        floored = sq < self.epsilon
        d = np.sqrt(np.maximum(sq, self.epsilon)).astype(np.float32)
        return d[:, None], (diff, d, floored, xs[0].shape)

    def _merge_backward(self, ctx, dy, need_input_grad):
        diff, d, floored, shape = ctx
        if not need_input_grad:
            return [None, None]
        # d(d)/d(x1) = (x1 - x2) / d where the floor is not active, else 0
        scale = np.where(floored, 0.0, dy[:, 0] / d).astype(np.float32)
        g = (diff * scale[:, None]).reshape(shape)
        return [g, -g]

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
