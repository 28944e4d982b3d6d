"""A model to and from files: what ``Model.save``/``save_weights``/``load_weights``,
``load_model`` and ``model_from_json`` put into the archive of ``pyconv.saving`` and read
back (the architecture as config JSON, the weights in order, the compile arguments, the
optimizer's slots, the random generators' states). ``pyconv.saving`` owns the file format
itself: the atomic zip archive, the manifest checks, the size budget.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from . import losses as losses_mod
from . import optimizers as optimizers_mod
from . import saving
from ._shapes import flag
from .utils import check_not_keras_path

if TYPE_CHECKING:
    from .models import Model


def to_json(model, **kwargs) -> str:
    """``model.to_json()``: the architecture (no weights); ``kwargs`` go to ``json.dumps``."""
    spec = {"class_name": type(model).__name__, "config": model.get_config(),
            "format": "pyconv-architecture"}  # fmt: skip
    return json.dumps(spec, **kwargs)


def model_from_json(json_string, custom_objects=None) -> Model:
    """A new model (fresh weights) with the architecture ``model.to_json()`` wrote, as
    ``keras.models.model_from_json``. custom_objects: {name: class} of your own layers."""
    if not isinstance(json_string, (str, bytes, bytearray)):
        raise TypeError(f"json_string must be a str, got {type(json_string).__name__}")
    if custom_objects is not None and not isinstance(custom_objects, dict):
        raise TypeError(f"custom_objects must be a dict, got {type(custom_objects).__name__}")
    try:
        spec = json.loads(json_string)
    except ValueError as e:
        raise ValueError(f"json_string is not valid JSON: {e}") from None
    if (
        not isinstance(spec, dict)
        or not isinstance(spec.get("class_name"), str)
        or not isinstance(spec.get("config"), dict)
    ):
        raise ValueError('json_string must hold {"class_name": ..., "config": {...}}')
    name = spec["class_name"]
    cls = (custom_objects or {}).get(name) or _model_class(name)
    if cls is None:
        raise ValueError(f"unknown model class {name!r} (Sequential or Functional)")
    return cls.from_config(spec["config"], custom_objects)


def _model_class(name):
    """Sequential or Functional by name (imported here: they import this module)."""
    from .graph import Functional
    from .models import Sequential

    return {"Sequential": Sequential, "Functional": Functional}.get(name)


def generators(model) -> dict:
    """Every random generator training draws from, by a key stable across save/load:
    "fit" (shuffling) and "layer:NAME" (a layer's own ``_rng``: dropout masks, the
    random augmentation layers)."""
    gens = {} if model._rng is None else {"fit": model._rng}
    for layer in model.layers:
        g = getattr(layer, "_rng", None)
        if isinstance(g, np.random.Generator):
            gens[f"layer:{layer.name}"] = g
    return gens


def restore_generators(model, states: dict, where: str) -> None:
    """Put back the generators ``generators`` saved (``where`` names the file in errors)."""
    for key, state in states.items():
        g = saving.generator_from_state(state, f"{where}: random state {key!r}")
        if key == "fit":
            model._rng = g
        elif key.startswith("layer:"):
            for layer in model.layers:
                if layer.name == key[6:] and hasattr(layer, "_rng"):
                    layer._rng = g


def save_model(model, filepath, include_optimizer=True) -> None:
    """``model.save``: the manifest (architecture, weight entries, compile arguments,
    metadata, generator states, optimizer slots) and the arrays, in one atomic archive."""
    check_not_keras_path(filepath, "save")
    include_optimizer = flag(include_optimizer, "include_optimizer")
    model._require_built("save")
    entries, arrays = saving.weight_arrays(model.weights)
    manifest = {
        "format": "pyconv-model",
        "model": {"class_name": type(model).__name__, "config": model.get_config()},
        "weights": entries,
        "compile": None,
        "metadata": model.metadata,
    }
    try:
        json.dumps(model.metadata)
    except (TypeError, ValueError) as e:
        raise TypeError(f"model.metadata must be JSON-serializable: {e}") from None
    rng_state = {key: saving.generator_state(g) for key, g in generators(model).items()}
    if rng_state:
        manifest["rng_state"] = rng_state
    if model.compiled:
        specs = [m for m in model._metric_specs if isinstance(m, str)]
        manifest["compile"] = {
            "loss": losses_mod.serialize(model.loss)
            if len(model._losses) == 1
            else [losses_mod.serialize(l) for l in model._losses],
            "loss_weights": model._loss_weights,
            "metrics": specs,
            "optimizer": optimizers_mod.serialize(model.optimizer),
        }
        if include_optimizer:
            slots = {}
            for vi, var in enumerate(model.weights):
                for slot, value in model.optimizer.slots.get(var.name, {}).items():
                    key = f"opt{vi:04d}_{slot}"
                    slots.setdefault(var.name, {})[slot] = key
                    arrays[key] = value
            manifest["optimizer_state"] = {
                "iterations": model.optimizer.iterations,
                "slots": slots,
            }
    saving.write_archive(filepath, manifest, arrays)


def save_weights(model, filepath) -> None:
    """Only the weights (in order), written atomically; read back with load_weights."""
    check_not_keras_path(filepath, "save_weights")
    model._require_built("save_weights")
    entries, arrays = saving.weight_arrays(model.weights)
    saving.write_archive(filepath, {"format": "pyconv-weights", "weights": entries}, arrays)


def load_weights(model, filepath) -> None:
    """Load weights saved by save_weights or save into this (same-architecture) model."""
    model._require_built("load_weights")
    with saving.Archive(filepath, "weights") as ar:
        saving.load_weight_arrays(ar, model.weights)


def load_model(filepath, custom_objects=None, compile=True) -> Model:
    """Rebuild a model saved with ``model.save``: architecture, weights, optimizer state.

    Anything wrong with the file (hostile or damaged included) raises ``ModelFileError``
    naming it; the manifest's declared sizes are checked before anything is read or built."""
    if custom_objects is not None and not isinstance(custom_objects, dict):
        raise TypeError(
            "custom_objects must be a dict of names to classes, got "
            f"{type(custom_objects).__name__}"
        )
    with saving.Archive(filepath, "model") as ar:
        if ar.manifest.get("format") != "pyconv-model":
            raise saving.ModelFileError(f"{ar.path!r} holds only weights; use model.load_weights()")
        n_values = saving.check_model_manifest(ar)
        try:
            with saving.weight_budget(n_values, repr(ar.path)):
                return _rebuild_model(ar, custom_objects or {}, compile)
        except saving.ModelFileError:
            raise
        except Exception as e:  # whatever a constructor makes of a hostile configuration
            raise saving.ModelFileError(
                f"{ar.path!r}: cannot rebuild the model it describes ({type(e).__name__}: {e})"
            ) from e


def _rebuild_model(ar, custom_objects: dict, compile: bool) -> Model:
    m = ar.manifest
    spec = m["model"]
    cls = custom_objects.get(spec["class_name"]) or _model_class(spec["class_name"])
    if cls is None:
        raise saving.ModelFileError(f"{ar.path!r}: unknown model class {spec['class_name']!r}")
    model = cls.from_config(spec.get("config", {}), custom_objects)
    saving.load_weight_arrays(ar, model.weights)
    model.metadata = dict(m.get("metadata") or {})
    if m.get("rng_state") is not None:
        restore_generators(model, m["rng_state"], repr(ar.path))
    comp = m.get("compile")
    if compile and comp:
        loss = comp["loss"]
        model.compile(
            optimizer=optimizers_mod.get(comp["optimizer"]),
            loss=[losses_mod.get(l) for l in loss]
            if isinstance(loss, list)
            else losses_mod.get(loss),
            loss_weights=comp.get("loss_weights"),
            metrics=comp.get("metrics") or None,
        )
        if m.get("optimizer_state"):
            saving.restore_optimizer_state(ar, model.optimizer, model.weights)
    return model
