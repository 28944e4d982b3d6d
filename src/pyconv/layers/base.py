"""Variables, the Layer contract, and Input.

A layer is a forward/backward pair, as in llm.c:

    y, ctx = layer.forward(x, training)        # ctx: what the backward needs (x, y, masks)
    dx = layer.backward(ctx, dy, need_input_grad)   # adds dL/dw into each variable's .grad

``forward`` and ``backward`` are defined here once (they convert and check x and dy) and
are final: a layer implements ``_forward(x, training) -> (y, ctx)`` and
``_backward(ctx, dy, need_input_grad) -> dx``. Whatever travels from one to the other
lives in ctx, including what the model tells a layer before its backward (a softmax/sigmoid
folded into the loss: see ``core.ActivationContext``), so no layer takes extra arguments.

The context is returned, never stored on the layer, so a layer may be applied several times
in one step (a shared layer in a graph: its gradients add up) and nothing outlives the step.
Shapes given to ``build``/``compute_output_shape`` leave out the batch dimension.
"""

from __future__ import annotations

import contextlib
import operator
import threading

import numpy as np

from .. import initializers, regularizers, saving
from .._shapes import check_size, flag, size_of
from ..node import SymbolicTensor, call_symbolic, is_symbolic, symbolic_input
from ..utils import as_float32, snake_case, unique_name

_grad_mode = threading.local()
_FLOAT32 = np.dtype(np.float32)


@contextlib.contextmanager
def no_param_grads():
    """Within this block (in this thread) backward passes compute input gradients only: no
    layer adds into any Variable.grad (used to look inside a model, e.g. Grad-CAM)."""
    previous = getattr(_grad_mode, "params", True)
    _grad_mode.params = False
    try:
        yield
    finally:
        _grad_mode.params = previous


class Variable:
    """A weight: its value (float32 array), whether the optimizer trains it, its gradient.

    ``value`` is a read-only view: a weight changes only through ``assign`` (or
    ``Layer.set_weights`` / ``Model.load_weights``, the optimizers, batch norm's moving
    statistics), each of which writes inside ``updating()`` and so bumps ``version``. That
    counter is what caches derived from a weight (packed kernels, batch norm folded into a
    convolution for inference) compare, so they can never serve a stale copy. As in Keras,
    ``layer.kernel.value[...] = w`` is refused (numpy: "assignment destination is
    read-only"); use ``layer.kernel.assign(w)``.
    """

    __slots__ = ("name", "_value", "_view", "trainable", "regularizer", "grad", "version")

    def __init__(self, name: str, value: np.ndarray, trainable=True, regularizer=None):
        self.name = name
        self._value = np.array(value, dtype=np.float32, order="C")  # owned: no alias writes
        self._view = self._value.view()
        self._view.flags.writeable = False
        self.version = 0
        self.trainable = trainable
        self.regularizer = regularizer
        self.grad: np.ndarray | None = None

    @property
    def value(self) -> np.ndarray:
        """The weight's current value, read-only (see the class docstring)."""
        return self._view

    @property
    def shape(self) -> tuple:
        return self._value.shape

    @contextlib.contextmanager
    def updating(self):
        """``with var.updating() as w:`` -- the value's writable array, for code that updates
        it in place (optimizers, moving statistics, loaders). ``version`` is bumped when the
        block is entered and again when it is left (also on an exception): a cache made from
        a half-written value while the block runs (a predict in another thread) carries a
        version that is stale once the write is done, so it is never served afterwards."""
        self.version += 1
        try:
            yield self._value
        finally:
            self.version += 1

    def add_grad(self, g: np.ndarray) -> None:
        """Accumulate dL/dvalue (a layer used twice in one step gets the sum)."""
        if self.grad is None:
            self.grad = np.asarray(g, dtype=np.float32).reshape(self._value.shape)
        else:
            self.grad += g.reshape(self._value.shape)

    def numpy(self) -> np.ndarray:
        return self._value.copy()

    def assign(self, value) -> None:
        value = as_float32(value, f"the value for weight {self.name!r}")
        if value.shape != self._value.shape:
            raise ValueError(
                f"weight {self.name!r} has shape {self._value.shape}; got a value of shape "
                f"{value.shape}"
            )
        with self.updating() as w:
            w[...] = value

    def __repr__(self) -> str:
        return f"<Variable {self.name} shape={self.value.shape} trainable={self.trainable}>"


def _shape_tuple(shape, name: str) -> tuple:
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        if isinstance(shape, (str, bytes)) or any(isinstance(d, (bool, np.bool_)) for d in shape):
            raise TypeError
        out = tuple(None if d is None else operator.index(d) for d in shape)
    except TypeError:  # not iterable, or not ints (2.5, "3", True)
        raise TypeError(f"{name} must be a tuple of ints, got {shape!r}") from None
    if any(d is not None and d < 1 for d in out):
        raise ValueError(f"{name} must have positive dimensions, got {shape!r}")
    return out


def named(get, value, name: str):
    """``get(value)`` (activations/initializers/regularizers.get), its error naming the
    argument the value came from."""
    try:
        return get(value)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{name}: {e}") from None


def seed_arg(seed):
    """A layer's ``seed``: None or an int >= 0."""
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be None or an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return int(seed)


class Layer:
    """Base class. Subclasses set their arguments (returned by ``get_config``), then
    implement ``build`` (create weights with ``add_weight``), ``compute_output_shape``,
    ``_forward`` and ``_backward``; ``forward`` and ``backward`` are final."""

    # Layers whose forward needs what ``build`` makes (weights, the output shape).
    _needs_build = False
    # The arguments that set its weights' sizes (named when a weight would not fit in memory).
    _size_args = "the layer's arguments"

    # The public entry points every layer shares; subclasses implement _forward/_backward.
    _FINAL = ("forward", "backward")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        overridden = [name for name in Layer._FINAL if name in vars(cls)]
        if overridden:
            raise TypeError(
                f"{cls.__name__} overrides Layer.{overridden[0]}, which is final: implement "
                f"_{overridden[0]} instead (forward -> _forward(x, training) returning "
                "(y, ctx); backward -> _backward(ctx, dy, need_input_grad) returning dx)"
            )

    def __init__(self, name=None, trainable=True, input_shape=None, dtype=None, **kwargs):
        if kwargs:
            raise TypeError(
                f"{type(self).__name__} got unexpected argument(s): {', '.join(sorted(kwargs))}"
            )
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        try:  # (np.dtype, not ``in``: an array would make ``in`` ambiguous)
            float32 = dtype is None or np.dtype(dtype) == _FLOAT32
        except (TypeError, ValueError):
            float32 = False
        if not float32:
            raise ValueError(f"only dtype float32 is supported, got {dtype!r}")
        self.name = name or unique_name(snake_case(type(self).__name__))
        self._trainable = flag(trainable, "trainable")
        self._variables: list[Variable] = []
        self.built = False
        self.input_shape: tuple | None = None
        self.output_shape: tuple | None = None
        self._declared_input_shape = (
            None if input_shape is None else _shape_tuple(input_shape, "input_shape")
        )
        self.activity_regularizer = None
        self._graph_outputs: list = []  # symbolic outputs of this layer's calls (graphs)

    @property
    def output(self):
        """The symbolic output of this layer in a layer graph (Keras's ``layer.output``), to
        build a new graph from part of another: ``Model(base.input, head(layer.output))``."""
        if not self._graph_outputs:
            raise AttributeError(f"layer {self.name!r} has not been called on a symbolic tensor")
        if len(self._graph_outputs) > 1:
            raise AttributeError(
                f"layer {self.name!r} is called {len(self._graph_outputs)} times in graphs; "
                "its output is ambiguous (use the tensor its call returned)"
            )
        return self._graph_outputs[0]

    def spatial_map(self):
        """((scale_h, offset_h), (scale_w, offset_w)): output pixel (i, j) lies over input
        position (offset_h + i*scale_h, offset_w + j*scale_w); None when the layer moves
        pixels in a way this cannot say. Shape-preserving layers map pixels to themselves."""
        if self.built and self.input_shape == self.output_shape:
            return ((1.0, 0.0), (1.0, 0.0))
        return None

    # --- weights ---------------------------------------------------------------------------

    def add_weight(self, name, shape, initializer, regularizer=None, trainable=True) -> Variable:
        what = (
            f"{type(self).__name__} {self.name!r}: its {name} weight of shape {tuple(shape)} "
            f"(check {self._size_args} and the input shape)"
        )
        check_size(size_of(shape), what)
        saving.charge_weight(size_of(shape), what)  # a model rebuilt from a file: its budget
        init = initializers.get(initializer)
        var = Variable(
            f"{self.name}/{name}", init(tuple(shape)), trainable, regularizers.get(regularizer)
        )
        self._variables.append(var)
        return var

    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self._trainable = flag(value, "trainable")

    @property
    def _param_grads_enabled(self) -> bool:
        """Whether backward should produce weight gradients (trainable, not in no_param_grads)."""
        return self._trainable and getattr(_grad_mode, "params", True)

    @property
    def weights(self) -> list[Variable]:
        return list(self._variables)

    @property
    def trainable_weights(self) -> list[Variable]:
        return [v for v in self._variables if v.trainable and self._trainable]

    @property
    def non_trainable_weights(self) -> list[Variable]:
        return [v for v in self._variables if not (v.trainable and self._trainable)]

    def get_weights(self) -> list[np.ndarray]:
        return [v.value.copy() for v in self._variables]

    def set_weights(self, weights) -> None:
        if isinstance(weights, (str, bytes, np.ndarray)) or not hasattr(weights, "__iter__"):
            raise TypeError(f"weights must be a list of arrays, got {type(weights).__name__}")
        weights = list(weights)
        if len(weights) != len(self._variables):
            raise ValueError(
                f"layer {self.name!r} has {len(self._variables)} weights "
                f"({', '.join(str(v.shape) for v in self._variables) or 'none'}); "
                f"got {len(weights)} arrays"
            )
        saving.assign_weights(self._variables, weights, f"layer {self.name!r}: set_weights")

    def count_params(self) -> int:
        if not self.built:
            raise ValueError(
                f"layer {self.name!r} is not built yet: give it an input_shape or call it first"
            )
        return int(sum(v.value.size for v in self._variables))

    # --- shapes ----------------------------------------------------------------------------

    def build_for(self, input_shape) -> tuple:
        """Build once for ``input_shape`` (no batch dim); return the output shape."""
        return self._build_once(_shape_tuple(input_shape, "input_shape"))

    def _build_once(self, input_shape) -> tuple:
        """Build on the first call (input_shape: a checked tuple, or a list of them for a
        layer over several inputs); later calls must bring the same shape(s)."""
        if self.built:
            if input_shape != self.input_shape:

                def text(shape):  # with the batch dimension, as users see shapes
                    return [text(s) for s in shape] if isinstance(shape, list) else (None, *shape)

                raise ValueError(
                    f"layer {self.name!r} was built for inputs of shape "
                    f"{text(self.input_shape)}, got {text(input_shape)}"
                )
            return self.output_shape
        out = tuple(self.compute_output_shape(input_shape))
        self.build(input_shape)
        self.input_shape, self.output_shape, self.built = input_shape, out, True
        return out

    def build(self, input_shape) -> None:
        """Create weights for ``input_shape`` (batch dim excluded). Default: none."""

    def compute_output_shape(self, input_shape) -> tuple:
        return input_shape

    # --- compute ---------------------------------------------------------------------------

    def forward(self, x: np.ndarray, training: bool = False):
        """(y, ctx) for a batch x; ctx goes to ``backward``."""
        return self._forward(self._inputs(x), training)

    def backward(self, ctx, dy: np.ndarray, need_input_grad: bool = True):
        """dL/dx (None if not needed); adds dL/dw into trainable variables' .grad."""
        return self._backward(ctx, self._grad(dy), need_input_grad)

    def _inputs(self, x):
        """What ``_forward`` receives: one batch (a layer over several inputs takes a list)."""
        return self._batch(x)

    def _batch(self, x) -> np.ndarray:
        """x as a float32 array with a batch dimension (TypeError/ValueError naming x)."""
        if (
            type(x) is np.ndarray
            and x.dtype == _FLOAT32
            and x.ndim
            and not (self._needs_build and not self.built)
        ):
            return x  # the common case first: the ops below check layouts themselves
        x = as_float32(x, "x")
        if x.ndim < 1:
            raise ValueError(f"layer {self.name!r} needs a batch of inputs, got a scalar")
        if self._needs_build and not self.built:
            raise ValueError(
                f"layer {self.name!r} is not built: call it on a batch (layer(x)) or give it "
                "an input shape (layer.build_for(shape)) before calling forward"
            )
        return x

    def _grad(self, dy, shape=None) -> np.ndarray:
        """dy (dL/d output) as a float32 array, of ``shape`` when given."""
        if type(dy) is not np.ndarray or dy.dtype != _FLOAT32:
            dy = as_float32(dy, "dy")
        if shape is not None and dy.shape != tuple(shape):
            raise ValueError(
                f"layer {self.name!r}: dy must have the shape of the layer's output "
                f"{tuple(shape)}, got {dy.shape}"
            )
        return dy

    def _forward(self, x, training):
        """(y, ctx): x is a float32 batch (see ``_inputs``); ctx is passed to ``_backward``."""
        raise NotImplementedError

    def _backward(self, ctx, dy, need_input_grad):
        """dL/dx (None when not need_input_grad) from a float32 dy; adds dL/dw into the
        weights' .grad when ``_param_grads_enabled``. Check dy's shape with ``_grad``."""
        raise NotImplementedError

    def __call__(self, x, training: bool = False) -> np.ndarray:
        """Apply the layer to a batch (NumPy array with a batch dimension)."""
        if is_symbolic(x):  # a graph node (the functional API)
            return call_symbolic(self, x)
        x = as_float32(x, "x")
        if x.ndim < 1:
            raise ValueError(f"layer {self.name!r} needs a batch of inputs, got a scalar")
        self.build_for(x.shape[1:])
        return self.forward(x, training)[0]

    # --- config ----------------------------------------------------------------------------

    def get_config(self) -> dict:
        cfg = {"name": self.name, "trainable": self._trainable}
        if self._declared_input_shape is not None:
            cfg["input_shape"] = list(self._declared_input_shape)
        return cfg

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"


class InputLayer(Layer):
    """Declares the input shape of a model (no weights; the identity)."""

    def __init__(self, shape=None, name=None, input_shape=None, **kwargs):
        shape = shape if shape is not None else input_shape
        if shape is None:
            raise ValueError("InputLayer needs a shape, e.g. Input(shape=(28, 28, 1))")
        super().__init__(name=name, **kwargs)
        self.shape = _shape_tuple(shape, "shape")
        self.build_for(self.shape)

    def _forward(self, x, training):
        return x, x.shape

    def _backward(self, ctx, dy, need_input_grad):
        return self._grad(dy, ctx)

    def get_config(self):
        return {"name": self.name, "shape": list(self.shape)}


def Input(shape, name=None) -> SymbolicTensor:  # noqa: N802 (Keras's name)
    """A model input of ``shape`` (batch dimension excluded), as ``keras.Input``: a
    ``SymbolicTensor`` (defined in ``pyconv.node``, re-exported here) to call layers on."""
    return symbolic_input(InputLayer(shape=shape, name=name))
