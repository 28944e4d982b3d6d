"""Models: ``Model`` (the base of every model) and the layer stack (``Sequential``).

``Model`` owns everything that does not depend on how layers are wired, composed from:

- ``training/compile.py`` (``CompileMixin``): compile, losses, metrics, fused output losses;
- ``training/loop.py`` (``TrainingLoopMixin``): fit, evaluate, predict, train_on_batch;
- ``model_saving.py``: save, save_weights, load_weights, to_json, load_model, model_from_json;
- here: weights, layer lookup, summary, and looking inside (layer_outputs, backward_to).

A subclass supplies the wiring through two methods over a *tape* (``training/tape.py``: the
list of per-layer contexts of one forward pass):

    y, tape, penalty = model._forward(x, training)
    model._backward(tape, dy)

``Sequential`` implements them as a chain; a layer graph (functional ``Model(inputs,
outputs)``, ``pyconv.graph``) implements them as a walk over its nodes in topological
order, reusing all of the rest.
"""

from __future__ import annotations

import numpy as np

from . import inference, model_saving, saving
from ._shapes import as_int, flag
from .layers import InputLayer, Layer, SymbolicTensor, deserialize, serialize
from .layers.base import no_param_grads
from .model_saving import load_model, model_from_json  # noqa: F401 (public from here too)
from .training.compile import CompileMixin
from .training.loop import TrainingLoopMixin, as_batch_array, count_arg
from .training.tape import TapeEntry, apply_layer, backprop_layer, fold_activation_into_gradient
from .utils import shape_str, snake_case, unique_name


class Model(CompileMixin, TrainingLoopMixin):
    """Base class of Sequential and layer graphs: the wiring hooks they implement, weights,
    summary and looking inside; compile and the training loop come from its mixins."""

    def __new__(cls, *args, **kwargs):
        # Model(inputs, outputs) builds a layer graph, as keras.Model does
        if cls is Model and (args or "inputs" in kwargs or "outputs" in kwargs):
            from .graph import Functional

            return object.__new__(Functional)
        return object.__new__(cls)

    def __init__(self, *args, name=None, **kwargs):
        if args or kwargs:
            raise TypeError(
                "Model() takes (inputs, outputs[, name]) to build a layer graph, or nothing "
                f"(as a base class); got {len(args)} positional and {sorted(kwargs)} keywords"
            )
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        self.name = name or unique_name(snake_case(type(self).__name__))
        self._init_compile_state()
        self.stop_training = False  # fit's, set by callbacks (EarlyStopping, ...)
        self.history = None  # the last fit's History
        self._rng = None  # fit's shuffling generator, made on the first fit
        self.metadata: dict = {}  # JSON-serializable notes saved with the model (dataset, ...)
        self._inference_fusion = True
        self._inference_plan = None  # made by the first inference call (pyconv.inference)

    _multi_out = False  # a layer graph with several outputs sets it

    @property
    def inference_fusion(self) -> bool:
        """Whether predict, predict_on_batch and ``model(x)`` (inference mode) run this
        model's inference plan: batch norm folded into the convolution before it, ReLU fused,
        Dropout skipped (``pyconv.inference``). False runs the layers one by one, as the
        training forward pass does (for debugging or comparing);
        ``pyconv.inference.set_inference_fusion(False)`` does it for every model."""
        return self._inference_fusion

    @inference_fusion.setter
    def inference_fusion(self, value) -> None:
        self._inference_fusion = flag(value, "inference_fusion")

    # --- wiring (subclasses) ----------------------------------------------------------------

    @property
    def layers(self) -> list[Layer]:
        raise NotImplementedError

    @property
    def built(self) -> bool:
        raise NotImplementedError

    def _forward(self, x, training: bool, keep=frozenset()):
        """(y, tape, activity_penalty); the outputs of layers in ``keep`` stay on the tape."""
        raise NotImplementedError

    def _backward(self, tape, dy, stop_at=None):
        """Backpropagate dy (dL/d output) through the tape, adding weight gradients. With
        ``stop_at`` (a layer), stop above it and return dL/d(that layer's output)."""
        raise NotImplementedError

    def _ensure_built(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def _prepare_x(self, x, name="x"):
        """The model's input batch from what the user passed (a layer graph with several
        inputs takes a list of arrays and returns them bundled, sliced together)."""
        return as_batch_array(x, name)

    # --- weights ----------------------------------------------------------------------------

    def _unique_variables(self):
        seen, out = set(), []
        for layer in self.layers:
            for v in layer.weights:
                if id(v) not in seen:
                    seen.add(id(v))
                    out.append((layer, v))
        return out

    @property
    def weights(self):
        return [v for _, v in self._unique_variables()]

    @property
    def trainable_weights(self):
        return [v for layer, v in self._unique_variables() if v.trainable and layer.trainable]

    @property
    def non_trainable_weights(self):
        return [v for layer, v in self._unique_variables() if not (v.trainable and layer.trainable)]

    def get_weights(self) -> list[np.ndarray]:
        return [v.value.copy() for v in self.weights]

    def set_weights(self, weights) -> None:
        """Give every weight its array (get_weights's order): all of them checked first,
        then assigned together, so one bad array leaves the model as it was."""
        saving.assign_weights(self.weights, weights, f"model {self.name!r}: set_weights")

    def count_params(self) -> int:
        self._require_built("count_params")
        return int(sum(v.value.size for v in self.weights))

    def get_layer(self, name=None, index=None) -> Layer:
        if index is not None:
            index = as_int(index, "index")
            if not -len(self.layers) <= index < len(self.layers):
                raise ValueError(f"index {index} is out of range: the model has "
                                 f"{len(self.layers)} layers")  # fmt: skip
            return self.layers[index]
        if not isinstance(name, str):
            raise TypeError(f"get_layer() needs a layer name (str) or an index, got {name!r}")
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(
            f"no layer named {name!r}; layers: {', '.join(l.name for l in self.layers)}"
        )

    def _require_built(self, what: str) -> None:
        if not self.built:
            raise ValueError(
                f"model {self.name!r} is not built: give the first layer an input_shape, start "
                f"with pyconv.Input(shape), or call fit/predict before {what}()"
            )

    # --- outputs (the wiring compile and the loop rely on) ------------------------------------

    def _output_names(self) -> list[str]:
        """Names of the model's outputs (their layers' names); one for a Sequential."""
        return [self.layers[-1].name] if self.layers else ["output"]

    def _output_shapes(self) -> list[tuple]:
        """Per-sample shape of each output (the model is built)."""
        return [tuple(self.output_shape[1:])]

    def _prepare_y(self, y):
        """The targets from what the user passed (a layer graph with several outputs takes a
        list or dict of arrays and returns them bundled)."""
        return as_batch_array(y, "y")

    # --- calling ----------------------------------------------------------------------------

    def __call__(self, x, training=False):
        training = flag(training, "training")
        x = self._prepare_x(x, "x")
        self._ensure_built(x)
        x = x.astype(np.float32, copy=False)
        return self._forward(x, True)[0] if training else self._infer(x)

    def _infer(self, x):
        """The output for a float32 batch (``Inputs`` for several inputs) in inference mode,
        through the inference plan unless it is turned off (see ``inference_fusion``)."""
        if self._inference_fusion and inference.get_inference_fusion():
            for _ in range(2):
                plan = self._inference_plan
                if plan is None:
                    plan = self._inference_plan = inference.plan_for(self)
                    if plan is None:
                        break
                try:
                    outs = plan.run(x.arrays if hasattr(x, "arrays") else [x])
                except inference.Stale:  # a layer changed under the plan: plan again
                    self._inference_plan = None
                    continue
                return outs if self._multi_out else outs[0]
        return self._forward(x, False)[0]

    # --- looking inside -------------------------------------------------------------------

    def _resolve_layer(self, layer) -> Layer:
        if isinstance(layer, Layer):
            if not any(layer is l for l in self.layers):
                raise ValueError(f"layer {layer.name!r} is not in model {self.name!r}")
            return layer
        if isinstance(layer, str):
            return self.get_layer(layer)
        raise TypeError(f"layer must be a Layer or a layer name, got {type(layer).__name__}")

    def layer_outputs(self, x, layers=None, training=False) -> dict:
        """{layer name: that layer's output} for one forward pass of x (all layers if None)."""
        training = flag(training, "training")
        if layers is not None and not isinstance(layers, (list, tuple)):
            raise TypeError(
                f"layers must be a list of layers or layer names, got {type(layers).__name__}"
            )
        x = self._prepare_x(x, "x")
        self._ensure_built(x)
        wanted = self.layers if layers is None else [self._resolve_layer(l) for l in layers]
        keep = frozenset(id(l) for l in wanted)
        _, tape, _ = self._forward(x.astype(np.float32, copy=False), training, keep)
        return {e.layer.name: e.output for e in tape if id(e.layer) in keep}

    def backward_to(self, x, layer, output_gradient, logits=True):
        """Gradients of a scalar of the output w.r.t. an intermediate layer's output.

        Runs x forward (inference mode) and backward from the output down to ``layer``
        (a Layer or its name), without touching any weight gradient or other state.
        output_gradient: an array shaped like the output (dS/d output for each sample), or a
        callable(output) -> such an array; e.g. a one-hot of class c gives the gradient of
        the class-c score. logits=True applies it to the last layer's pre-activation when
        that is a softmax/sigmoid (the class *score*, as Grad-CAM uses), else to the output.
        Returns (layer output A, dS/dA, model output).
        """
        logits = flag(logits, "logits")
        x = self._prepare_x(x, "x")
        self._ensure_built(x)
        target = self._resolve_layer(layer)
        with no_param_grads():
            y, tape, _ = self._forward(x.astype(np.float32, copy=False), False, {id(target)})
            if logits and tape:  # the seed is dS/d(logits) of a softmax/sigmoid output
                fold_activation_into_gradient(tape[-1])
            seed = output_gradient(y) if callable(output_gradient) else output_gradient
            seed = np.asarray(seed)
            if seed.dtype.kind not in "biuf":
                raise TypeError(f"output_gradient must be a real array, got dtype {seed.dtype}")
            seed = seed.astype(np.float32)
            if seed.shape != y.shape:
                raise ValueError(
                    f"output_gradient must have the output's shape {y.shape}, got {seed.shape}"
                )
            out = next(e.output for e in tape if e.layer is target)
            grad = self._backward(tape, seed.copy(), stop_at=target)
        return out, grad, y

    # --- summary ----------------------------------------------------------------------------

    def _summary_rows(self) -> tuple[tuple, list[tuple]]:
        """(column heads, one row of strings per layer) of the summary table."""
        heads = ("Layer (type)", "Output Shape", "Param #")
        rows = [
            (f"{layer.name} ({type(layer).__name__})", shape_str((None, *layer.output_shape)),
             f"{layer.count_params():,}")
            for layer in self.layers
        ]  # fmt: skip
        return heads, rows

    def summary(self, line_length=None, print_fn=None):
        """Print Keras's table: layer (type), output shape, params (and, for a layer graph,
        what each layer is connected to); then the totals."""
        self._require_built("summary")
        if line_length is not None:
            line_length = count_arg(line_length, "line_length", 1)
        if print_fn is not None and not callable(print_fn):
            raise TypeError(f"print_fn must be callable, got {print_fn!r}")
        print_fn = print_fn or print
        heads, rows = self._summary_rows()
        # every column but the last padded to its widest entry + 3 (Keras's look)
        widths = [max(len(h), *(len(r[i]) for r in rows)) + 3 for i, h in enumerate(heads)]
        widths[-1] -= 3
        widths[0] -= 1  # the leading space

        def line(cells):
            return " " + "".join(c.ljust(w) for c, w in zip(cells[:-1], widths)) + cells[-1]

        width = max(line_length or 0, sum(widths) + 2)
        lines = [f'Model: "{self.name}"', "_" * width, line(heads), "=" * width]
        for i, r in enumerate(rows):
            lines.append(line(r))
            if i + 1 < len(rows):
                lines.append("")
        trainable = sum(v.value.size for v in self.trainable_weights)
        non_trainable = sum(v.value.size for v in self.non_trainable_weights)
        lines += ["=" * width, f"Total params: {trainable + non_trainable:,}",
                  f"Trainable params: {trainable:,}", f"Non-trainable params: {non_trainable:,}",
                  "_" * width]  # fmt: skip
        for text in lines:
            print_fn(text)

    # --- saving (model_saving.py) -----------------------------------------------------------

    def get_config(self) -> dict:
        raise NotImplementedError

    def to_json(self, **kwargs) -> str:
        """The architecture (no weights) as a JSON string, as Keras's ``model.to_json()``;
        ``model_from_json`` rebuilds it. ``kwargs`` go to ``json.dumps`` (e.g. indent=2)."""
        return model_saving.to_json(self, **kwargs)

    def save(self, filepath, include_optimizer=True) -> None:
        """Architecture, weights and optimizer state in one file, written atomically.

        The file also holds the state of the random generators training draws from
        (shuffling, dropout), so ``load_model`` + ``fit(initial_epoch=k)`` continues a run
        exactly as if it had not stopped. pyconv's own format, not Keras's: a name ending in
        .keras or .h5 is refused (use .pyconv)."""
        model_saving.save_model(self, filepath, include_optimizer)

    def save_weights(self, filepath) -> None:
        """Only the weights (in order), written atomically; read back with load_weights."""
        model_saving.save_weights(self, filepath)

    def load_weights(self, filepath) -> None:
        """Load weights saved by save_weights or save into this (same-architecture) model."""
        model_saving.load_weights(self, filepath)


class Sequential(Model):
    """A plain stack of layers, each feeding the next."""

    def __init__(self, layers=None, name=None):
        super().__init__(name=name)
        self._layers: list[Layer] = []
        self._input_layer: InputLayer | None = None
        self._input_shape: tuple | None = None
        for layer in layers or []:
            self.add(layer)

    @property
    def layers(self) -> list[Layer]:
        return list(self._layers)

    @property
    def built(self) -> bool:
        return self._input_shape is not None and all(l.built for l in self._layers)

    @property
    def input_shape(self):
        return None if self._input_shape is None else (None, *self._input_shape)

    @property
    def output_shape(self):
        self._require_built("output_shape")
        shape = self._input_shape if not self._layers else self._layers[-1].output_shape
        return (None, *shape)

    def add(self, layer) -> None:
        self._inference_plan = None
        if isinstance(layer, SymbolicTensor):
            layer = layer.layer
        if isinstance(layer, InputLayer):
            if self._layers or self._input_layer is not None:
                raise ValueError("an Input can only be the first element of a Sequential model")
            self._input_layer = layer
            self._build(layer.shape)
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add() takes a Layer, got {type(layer).__name__}")
        if any(layer is l for l in self._layers):
            raise ValueError(f"layer {layer.name!r} is already in this model")
        if any(layer.name == l.name for l in self._layers):
            raise ValueError(
                f"a layer named {layer.name!r} is already in this model; names must be unique"
            )
        self._layers.append(layer)
        if not self._layers[:-1] and self._input_shape is None and layer._declared_input_shape:
            self._build(layer._declared_input_shape)
        elif self._input_shape is not None:
            try:
                layer.build_for(
                    self._layers[-2].output_shape if len(self._layers) > 1 else self._input_shape
                )
            except Exception:
                self._layers.pop()
                raise

    def pop(self) -> Layer:
        if not self._layers:
            raise ValueError("there are no layers to pop")
        self._inference_plan = None
        return self._layers.pop()

    def _build(self, input_shape) -> None:
        self._inference_plan = None
        shape = tuple(input_shape)
        for layer in self._layers:
            shape = layer.build_for(shape)
        self._input_shape = tuple(input_shape)

    def build(self, input_shape) -> None:
        """Build for inputs of ``input_shape`` (with or without the leading None)."""
        shape = tuple(input_shape)
        if shape and shape[0] is None:
            shape = shape[1:]
        self._build(shape)

    def _ensure_built(self, x: np.ndarray) -> None:
        if self._input_shape is None:
            self._build(x.shape[1:])
        elif tuple(x.shape[1:]) != self._input_shape:
            raise ValueError(
                f"model {self.name!r} expects inputs of shape "
                f"{shape_str((None, *self._input_shape))}, "
                f"got x with shape {x.shape}"
            )
        elif not self.built:
            self._build(self._input_shape)

    def _forward(self, x, training, keep=frozenset()):
        tape: list[TapeEntry] = []
        penalties: list[float] = []
        for layer in self._layers:
            x = apply_layer(layer, x, training, tape, penalties, id(layer) in keep)
        return x, tape, float(sum(penalties))

    def _first_layer_needing_backward(self) -> int:
        """Layers below the lowest trainable layer need no backward at all (frozen bases)."""
        for i, layer in enumerate(self._layers):
            if layer.trainable_weights:
                return i
        return len(self._layers)

    def _backward(self, tape, dy, stop_at=None):
        # Each entry is dropped from the tape once used (and the ones below the first layer
        # that needs a backward at once), so a layer's saved activations are freed as soon
        # as its gradient is done: lower peak memory, and their buffers serve the next
        # gradients.
        last = len(tape) - 1
        if stop_at is not None:  # dL/d(output of stop_at): every layer above it, inputs too
            k = next(i for i, e in enumerate(tape) if e.layer is stop_at)
            for i in range(last, k, -1):
                dy = backprop_layer(tape[i], dy, True)
                tape[i] = None
            return dy
        first = self._first_layer_needing_backward()
        tape[:first] = [None] * first
        for i in range(last, first - 1, -1):
            dy = backprop_layer(tape[i], dy, i > first)
            tape[i] = None
        return None

    def get_config(self) -> dict:
        layers = [serialize(l) for l in self._layers]
        if self._input_layer is not None:
            layers.insert(0, serialize(self._input_layer))
        cfg = {"name": self.name, "layers": layers}
        if self._input_shape is not None:
            cfg["input_shape"] = list(self._input_shape)
        return cfg

    @classmethod
    def from_config(cls, config: dict, custom_objects=None):
        model = cls(name=config.get("name"))
        for spec in config.get("layers", []):
            model.add(deserialize(spec, custom_objects))
        if not model.built and config.get("input_shape") is not None:
            model._build(tuple(config["input_shape"]))
        return model


MODEL_CLASSES = {"Sequential": Sequential}  # built-in model classes (Functional: graph.py)
