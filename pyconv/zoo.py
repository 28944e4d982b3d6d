"""The lectures' networks, built with the Keras-style API, and how to train each.

| builder | input | parameters | from |
| --- | --- | ---: | --- |
| ``mnist_mlp()`` | (784,) | 932,362 | lecture 004's Keras MNIST MLP |
| ``mnist_cnn()`` | (28, 28, 1) | 1,199,882 | the Keras MNIST CNN (conv32-conv64-pool-dense128) |
| ``cifar10_cnn()`` | (32, 32, 3) | 1,345,066 (1,920 frozen) | lecture 004's CIFAR-10 CNN |
| ``smiley_cnn()`` | (50, 50, 1) | 206,723 | lecture 000's smiley-face classifier |
| ``lenet5()`` | (28, 28, 1) | 61,706 | LeCun et al. 1998 (5x5 convs, avg pooling, tanh) |
| ``fashion_cnn()`` | (28, 28, 1) | 872,426 | a batch-norm CNN for Fashion-MNIST (our choice) |

``RECIPES`` holds, per network, the data set, optimizer, loss, epochs, batch size and
augmentation that ``pyconv train`` uses (and RESULTS.md reports).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import layers as L
from .augment import ImageAugmenter
from .models import Sequential


def mnist_mlp(num_classes=10) -> Sequential:
    """Lecture 004: 784-512-512-512-10 with ReLU and dropout 0.2 (932,362 parameters)."""
    return Sequential(
        [
            L.Dense(512, activation="relu", input_shape=(784,)),
            L.Dropout(0.2),
            L.Dense(512, activation="relu"),
            L.Dropout(0.2),
            L.Dense(512, activation="relu"),
            L.Dropout(0.2),
            L.Dense(num_classes, activation="softmax"),
        ],
        name="mnist_mlp",
    )


def mnist_cnn(input_shape=(28, 28, 1), num_classes=10) -> Sequential:
    """The Keras MNIST CNN (1,199,882 parameters)."""
    return Sequential(
        [
            L.Conv2D(32, 3, activation="relu", input_shape=input_shape),
            L.Conv2D(64, 3, activation="relu"),
            L.MaxPooling2D(2),
            L.Dropout(0.25),
            L.Flatten(),
            L.Dense(128, activation="relu"),
            L.Dropout(0.5),
            L.Dense(num_classes, activation="softmax"),
        ],
        name="mnist_cnn",
    )


def _conv_bn_blocks(model: Sequential, spec) -> None:
    """(filters, dropout) pairs -> [conv-BN] x 2, max-pool, dropout, as in lecture 004."""
    for filters, rate in spec:
        for _ in range(2):
            model.add(L.Conv2D(filters, 3, padding="same", activation="relu"))
            model.add(L.BatchNormalization())
        model.add(L.MaxPooling2D(2))
        model.add(L.Dropout(rate))


def cifar10_cnn(input_shape=(32, 32, 3), num_classes=10) -> Sequential:
    """Lecture 004's CIFAR-10 CNN: 3 x ([conv-BN] x 2, pool, dropout .2/.3/.4), dense 512-BN
    -dropout .5, softmax (1,345,066 parameters, 1,920 of them non-trainable)."""
    model = Sequential([L.Input(input_shape)], name="cifar10_cnn")
    _conv_bn_blocks(model, ((32, 0.2), (64, 0.3), (128, 0.4)))
    for layer in (L.Flatten(), L.Dense(512, activation="relu"), L.BatchNormalization(),
                  L.Dropout(0.5), L.Dense(num_classes, activation="softmax")):  # fmt: skip
        model.add(layer)
    return model


def fashion_cnn(input_shape=(28, 28, 1), num_classes=10) -> Sequential:
    """2 x ([conv-BN] x 2, pool, dropout .25), dense 256-BN-dropout .5 (872,426 params)."""
    model = Sequential([L.Input(input_shape)], name="fashion_cnn")
    _conv_bn_blocks(model, ((32, 0.25), (64, 0.25)))
    for layer in (L.Flatten(), L.Dense(256, activation="relu"), L.BatchNormalization(),
                  L.Dropout(0.5), L.Dense(num_classes, activation="softmax")):  # fmt: skip
        model.add(layer)
    return model


def smiley_cnn(input_shape=(50, 50, 1)) -> Sequential:
    """Lecture 000's smiley-face CNN, one sigmoid output (206,723 parameters). The slide's
    shapes (50 -> 50 -> 25 -> 23 -> 21 -> 10 -> 9 -> 8 -> 4) mean 'same' padding on the first
    two 3x3 convs, 'valid' afterwards, and 2x2 kernels in the 64-filter convs."""
    return Sequential(
        [
            L.Conv2D(16, 3, padding="same", activation="relu", input_shape=input_shape),
            L.Conv2D(16, 3, padding="same", activation="relu"),
            L.MaxPooling2D(2),
            L.Dropout(0.25),
            L.Conv2D(32, 3, activation="relu"),
            L.Conv2D(32, 3, activation="relu"),
            L.MaxPooling2D(2),
            L.Dropout(0.25),
            L.Conv2D(64, 2, activation="relu"),
            L.Conv2D(64, 2, activation="relu"),
            L.MaxPooling2D(2),
            L.Dropout(0.25),
            L.Flatten(),
            L.Dense(128, activation="relu"),
            L.Dropout(0.5),
            L.Dense(265, activation="relu"),
            L.Dropout(0.5),
            L.Dense(1, activation="sigmoid"),
        ],
        name="smiley_cnn",
    )


def lenet5(input_shape=(28, 28, 1), num_classes=10) -> Sequential:
    """LeNet-5 on 28x28 inputs (the first conv pads to keep 28x28, as the 32x32 original):
    conv6 5x5 - avgpool - conv16 5x5 - avgpool - 120 - 84 - 10, tanh (61,706 parameters)."""
    return Sequential(
        [
            L.Conv2D(6, 5, padding="same", activation="tanh", input_shape=input_shape),
            L.AveragePooling2D(2),
            L.Conv2D(16, 5, activation="tanh"),
            L.AveragePooling2D(2),
            L.Flatten(),
            L.Dense(120, activation="tanh"),
            L.Dense(84, activation="tanh"),
            L.Dense(num_classes, activation="softmax"),
        ],
        name="lenet5",
    )


BUILDERS = {
    "mnist_mlp": mnist_mlp,
    "mnist_cnn": mnist_cnn,
    "cifar10_cnn": cifar10_cnn,
    "fashion_cnn": fashion_cnn,
    "smiley_cnn": smiley_cnn,
    "lenet5": lenet5,
}


@dataclass
class Recipe:
    """How ``pyconv train`` trains a network (each can be overridden on the command line)."""

    dataset: str
    epochs: int
    batch_size: int = 128
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    loss: str = "sparse_categorical_crossentropy"
    augment: dict = field(default_factory=dict)  # ImageAugmenter arguments for --augment
    flatten_input: bool = False  # the MLP takes (784,) vectors

    def augmenter(self, seed=None) -> ImageAugmenter:
        return ImageAugmenter(**self.augment, seed=seed)

    def learning_rate_at(self, epoch: int, epochs: int, base: float | None = None) -> float:
        """Cosine decay from the base rate to 2% of it over the run: a pure function of the
        epoch, so a resumed run follows the same schedule as an uninterrupted one."""
        base = self.learning_rate if base is None else base
        frac = min(max(epoch / max(epochs, 1), 0.0), 1.0)
        return base * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * frac)))


_DIGITS_AUG = dict(rotation_range=10, width_shift_range=0.1, height_shift_range=0.1, zoom_range=0.1)
RECIPES = {
    "mnist_mlp": Recipe("mnist", 20, flatten_input=True),
    "mnist_cnn": Recipe("mnist", 20, augment=_DIGITS_AUG),  # 12 epochs: 99.27%, 20: 99.42%
    "lenet5": Recipe("mnist", 12, augment=_DIGITS_AUG),
    "fashion_cnn": Recipe(
        "fashion_mnist",
        20,
        augment=dict(horizontal_flip=True, width_shift_range=0.08, height_shift_range=0.08),
    ),  # fmt: skip
    "cifar10_cnn": Recipe(
        "cifar10",
        100,
        batch_size=64,
        augment=dict(
            horizontal_flip=True, rotation_range=15, width_shift_range=0.1, height_shift_range=0.1
        ),
    ),  # fmt: skip
    "smiley_cnn": Recipe("", 20, loss="binary_crossentropy"),
}


def build(name: str, **kwargs) -> Sequential:
    """A zoo network by name (``build("mnist_cnn")``)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown network {name!r}; choose from {', '.join(BUILDERS)}")
    return BUILDERS[name](**kwargs)
