"""Keras-style layers. Each is a forward/backward pair over NumPy batches (see base.py)."""

from .base import Input, InputLayer, Layer, SymbolicTensor, Variable
from .conv import Conv2D
from .core import ELU, Activation, Dense, Dropout, Flatten, LeakyReLU, ReLU, Reshape, Softmax
from .merge import Add, Concatenate, EuclideanDistance, Merge, Multiply, Subtract
from .normalization import BatchNormalization
from .pooling import AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D, MaxPooling2D
from .preprocessing import RandomFlip, RandomRotation, RandomTranslation, RandomZoom

# Keras's aliases
Convolution2D = Conv2D
MaxPool2D = MaxPooling2D
AvgPool2D = AveragePooling2D
GlobalAvgPool2D = GlobalAveragePooling2D
GlobalMaxPool2D = GlobalMaxPooling2D

LAYER_CLASSES = {
    cls.__name__: cls
    for cls in (
        InputLayer, Conv2D, Dense, Flatten, Reshape, Dropout, Activation, ReLU, LeakyReLU, ELU,
        Softmax, BatchNormalization, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D,
        GlobalMaxPooling2D, RandomFlip, RandomRotation, RandomTranslation, RandomZoom,
        Add, Subtract, Multiply, Concatenate, EuclideanDistance,
    )
}  # fmt: skip


def deserialize(spec: dict, custom_objects: dict | None = None) -> Layer:
    """A layer from ``{"class_name": ..., "config": ...}`` (custom classes by name)."""
    name = spec.get("class_name")
    cls = (custom_objects or {}).get(name) or LAYER_CLASSES.get(name)
    if cls is None:
        raise ValueError(
            f"unknown layer class {name!r}; pass custom layers as custom_objects={{'{name}': cls}}"
        )
    return cls.from_config(dict(spec.get("config", {})))


def serialize(layer: Layer) -> dict:
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


__all__ = [
    "Add", "Concatenate", "EuclideanDistance", "Merge", "Multiply", "Subtract",
    "Activation", "AveragePooling2D", "AvgPool2D", "BatchNormalization", "Conv2D",
    "Convolution2D", "Dense", "Dropout", "ELU", "Flatten", "GlobalAveragePooling2D",
    "GlobalAvgPool2D", "GlobalMaxPool2D", "GlobalMaxPooling2D", "Input", "InputLayer", "Layer",
    "LeakyReLU", "MaxPool2D", "MaxPooling2D", "RandomFlip", "RandomRotation", "RandomTranslation",
    "RandomZoom", "ReLU", "Reshape", "Softmax", "SymbolicTensor",
    "Variable", "deserialize", "serialize",
]  # fmt: skip
