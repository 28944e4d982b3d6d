"""The lectures' networks, built with the Keras-style API, and how to train each.

| builder | input | parameters | from |
| --- | --- | ---: | --- |
| ``mnist_mlp()`` | (784,) | 932,362 | lecture 004's Keras MNIST MLP |
| ``mnist_cnn()`` | (28, 28, 1) | 1,199,882 | the Keras MNIST CNN (conv32-conv64-pool-dense128) |
| ``cifar10_cnn()`` | (32, 32, 3) | 1,345,066 (1,920 frozen) | lecture 004's CIFAR-10 CNN |
| ``smiley_cnn()`` | (50, 50, 1) | 206,723 | lecture 000's smiley-face classifier |
| ``lenet5()`` | (28, 28, 1) | 61,706 | LeCun et al. 1998 (5x5 convs, avg pooling, tanh) |
| ``fashion_cnn()`` | (28, 28, 1) | 872,426 | a batch-norm CNN for Fashion-MNIST (our choice) |

The classic architectures (``CLASSIC``; layer graphs where they have skip connections),
ImageNet heads by default, each with ``input_shape=`` and ``num_classes=``; trainable
parameters, equal to torchvision's (batch norm's moving statistics come on top, as
non-trainable parameters):

| builder | input | trainable parameters | from |
| --- | --- | ---: | --- |
| ``resnet18()`` | (224, 224, 3) | 11,689,512 | He et al. 2016, torchvision's layout |
| ``resnet50()`` | (224, 224, 3) | 25,557,032 | the same, bottleneck blocks (v1.5) |
| ``cifar_resnet20()`` | (32, 32, 3) | 272,474 | He et al. 2016, sec. 4.2 (1x1 projections) |
| ``vgg16()`` | (224, 224, 3) | 138,357,544 | Simonyan and Zisserman 2015 |
| ``alexnet()`` | (224, 224, 3) | 61,100,840 | torchvision's AlexNet |
| ``siamese_network()`` | two (28, 28, 1) | 224,131 | lecture 000's twins with a 3-D bottleneck |

``RECIPES`` holds, per network, the data set, optimizer, loss, epochs, batch size and
augmentation that ``pyconv train`` uses (and RESULTS.md reports).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import layers as L
from .augment import ImageAugmenter
from .models import Model, Sequential


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


# --- the classic architectures (ImageNet heads by default) ---------------------------------
# Parameter counts are the trainable ones, equal to torchvision's for the same networks;
# pyconv (like Keras) also counts batch norm's moving mean and variance, as non-trainable.


def _conv_bn(x, filters, kernel, strides=1, padding=None, relu=True, name=None):
    """conv (no bias) - batch norm - optional ReLU, as torchvision's ResNets (PyTorch's
    symmetric padding k // 2, so weights imported from them line up)."""
    pad = kernel // 2 if padding is None else padding
    x = L.Conv2D(filters, kernel, strides=strides, padding=pad, use_bias=False,
                 name=None if name is None else name + "_conv")(x)  # fmt: skip
    x = L.BatchNormalization(epsilon=1e-5, momentum=0.9,
                             name=None if name is None else name + "_bn")(x)  # fmt: skip
    return L.ReLU()(x) if relu else x


def _basic_block(x, filters, strides, name):
    """ResNet-18/34 block: two 3x3 convs; a 1x1 projection shortcut when the shape changes."""
    shortcut = x
    y = _conv_bn(x, filters, 3, strides, name=name + "_1")
    y = _conv_bn(y, filters, 3, 1, relu=False, name=name + "_2")
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, strides, relu=False, name=name + "_proj")
    return L.ReLU()(L.Add(name=name + "_add")([y, shortcut]))


def _bottleneck_block(x, filters, strides, name):
    """ResNet-50 block (torchvision's v1.5: the stride on the 3x3 conv): 1x1 - 3x3 - 1x1 x4."""
    shortcut = x
    y = _conv_bn(x, filters, 1, 1, name=name + "_1")
    y = _conv_bn(y, filters, 3, strides, name=name + "_2")
    y = _conv_bn(y, 4 * filters, 1, 1, relu=False, name=name + "_3")
    if strides != 1 or x.shape[-1] != 4 * filters:
        shortcut = _conv_bn(x, 4 * filters, 1, strides, relu=False, name=name + "_proj")
    return L.ReLU()(L.Add(name=name + "_add")([y, shortcut]))


def _resnet(block, depths, input_shape, num_classes, name):
    inputs = L.Input(input_shape, name="input")
    x = _conv_bn(inputs, 64, 7, 2, padding=3, name="stem")
    x = L.MaxPooling2D(3, strides=2, padding=1)(x)
    for stage, (filters, depth) in enumerate(zip((64, 128, 256, 512), depths)):
        for i in range(depth):
            strides = 2 if stage > 0 and i == 0 else 1
            x = block(x, filters, strides, f"stage{stage + 1}_block{i + 1}")
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(num_classes, activation="softmax", name="predictions")(x)
    return Model(inputs, outputs, name=name)


def resnet18(input_shape=(224, 224, 3), num_classes=1000) -> Model:
    """ResNet-18 (He et al. 2016; torchvision's layout): 11,689,512 trainable parameters
    with the 1000-class head."""
    return _resnet(_basic_block, (2, 2, 2, 2), input_shape, num_classes, "resnet18")


def resnet50(input_shape=(224, 224, 3), num_classes=1000) -> Model:
    """ResNet-50 (torchvision's v1.5 layout): 25,557,032 trainable parameters with the
    1000-class head."""
    return _resnet(_bottleneck_block, (3, 4, 6, 3), input_shape, num_classes, "resnet50")


def cifar_resnet20(input_shape=(32, 32, 3), num_classes=10) -> Model:
    """The CIFAR ResNet-20 of He et al. 2016 (section 4.2): a 3x3 conv of 16, three stages
    of three basic blocks (16, 32, 64 filters, stride 2 between stages), global average
    pooling, softmax; 1x1 projection shortcuts where the shape changes (272,474 trainable
    parameters)."""
    inputs = L.Input(input_shape, name="input")
    x = _conv_bn(inputs, 16, 3, 1, name="stem")
    for stage, filters in enumerate((16, 32, 64)):
        for i in range(3):
            strides = 2 if stage > 0 and i == 0 else 1
            x = _basic_block(x, filters, strides, f"stage{stage + 1}_block{i + 1}")
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(num_classes, activation="softmax", name="predictions")(x)
    return Model(inputs, outputs, name="cifar_resnet20")


def vgg16(input_shape=(224, 224, 3), num_classes=1000) -> Sequential:
    """VGG-16 (Simonyan and Zisserman 2015; Keras's and torchvision's layout without batch
    norm): 138,357,544 parameters with the 1000-class head."""
    model = Sequential(name="vgg16")
    model.add(L.Input(input_shape))
    for filters, convs in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for _ in range(convs):
            model.add(L.Conv2D(filters, 3, padding="same", activation="relu"))
        model.add(L.MaxPooling2D(2))
    model.add(L.Flatten())
    model.add(L.Dense(4096, activation="relu"))
    model.add(L.Dense(4096, activation="relu"))
    model.add(L.Dense(num_classes, activation="softmax"))
    return model


def alexnet(input_shape=(224, 224, 3), num_classes=1000) -> Sequential:
    """AlexNet as torchvision builds it (Krizhevsky 2014's one-GPU variant): 61,100,840
    parameters with the 1000-class head. (torchvision's adaptive 6x6 average pooling is the
    identity at 224x224 and is left out.)"""
    return Sequential(
        [
            L.Input(input_shape),
            L.Conv2D(64, 11, strides=4, padding=2, activation="relu"),
            L.MaxPooling2D(3, strides=2),
            L.Conv2D(192, 5, padding=2, activation="relu"),
            L.MaxPooling2D(3, strides=2),
            L.Conv2D(384, 3, padding=1, activation="relu"),
            L.Conv2D(256, 3, padding=1, activation="relu"),
            L.Conv2D(256, 3, padding=1, activation="relu"),
            L.MaxPooling2D(3, strides=2),
            L.Flatten(),
            L.Dropout(0.5),
            L.Dense(4096, activation="relu"),
            L.Dropout(0.5),
            L.Dense(4096, activation="relu"),
            L.Dense(num_classes, activation="softmax"),
        ],
        name="alexnet",
    )


def siamese_network(input_shape=(28, 28, 1), embedding_dim=3):
    """Lecture 000's Siamese network: twin encoders with shared weights map two images to
    ``embedding_dim``-D embeddings (the lecture's bottleneck of 3); the model outputs their
    Euclidean distance, to be trained with ``losses.ContrastiveLoss`` (label 1 = same class).
    Returns (siamese model, encoder model); the encoder shares the twins' layers, so after
    training it maps single images to their embeddings. 224,131 parameters (one set)."""
    encoder_layers = [
        L.Conv2D(32, 3, activation="relu"),
        L.MaxPooling2D(2),
        L.Conv2D(64, 3, activation="relu"),
        L.MaxPooling2D(2),
        L.Flatten(),
        L.Dense(128, activation="relu"),
        L.Dense(embedding_dim, name="embedding"),
    ]

    def encode(x):
        for layer in encoder_layers:
            x = layer(x)
        return x

    left, right = L.Input(input_shape, name="left"), L.Input(input_shape, name="right")
    distance = L.EuclideanDistance(name="distance")([encode(left), encode(right)])
    siamese = Model([left, right], distance, name="siamese")
    image = L.Input(input_shape, name="image")
    encoder = Model(image, encode(image), name="encoder")
    return siamese, encoder


BUILDERS = {
    "mnist_mlp": mnist_mlp,
    "mnist_cnn": mnist_cnn,
    "cifar10_cnn": cifar10_cnn,
    "fashion_cnn": fashion_cnn,
    "smiley_cnn": smiley_cnn,
    "lenet5": lenet5,
}
# The classic architectures (no training recipe: ``pyconv train`` does not offer them).
CLASSIC = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "cifar_resnet20": cifar_resnet20,
    "vgg16": vgg16,
    "alexnet": alexnet,
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


def build(name: str, **kwargs) -> Model:
    """A zoo network by name (``build("mnist_cnn")``, ``build("resnet18", num_classes=10)``)."""
    builder = BUILDERS.get(name) or CLASSIC.get(name)
    if builder is None:
        raise ValueError(
            f"unknown network {name!r}; choose from {', '.join([*BUILDERS, *CLASSIC])}"
        )
    return builder(**kwargs)
