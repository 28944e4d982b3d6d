"""The zoo networks the benchmarks time, written in PyTorch by hand (torchvision is not a
dependency): the same layers, shapes and trainable parameter counts as ``pyconv.zoo``'s
(checked by ``check_param_counts``), NCHW as PyTorch's modules take them.

pyconv's networks end in a softmax and train with sparse categorical cross-entropy; these
end in logits and train with ``cross_entropy`` (PyTorch's idiom for the same loss).
"""

from __future__ import annotations

import torch
import torch.nn as nn


def mnist_cnn():
    """Keras's MNIST CNN (zoo.mnist_cnn): conv32-conv64-pool-dense128, 1,199,882 params."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Dropout(0.25), nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(128, 10),
    )  # fmt: skip


def cifar10_cnn():
    """Lecture 004's CIFAR-10 CNN (zoo.cifar10_cnn): 3 x ([conv-ReLU-BN] x 2, pool,
    dropout), dense 512-BN, dense 10."""
    mods, c = [], 3
    for filters, rate in ((32, 0.2), (64, 0.3), (128, 0.4)):
        mods += [nn.Conv2d(c, filters, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(filters),
                 nn.Conv2d(filters, filters, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(filters),
                 nn.MaxPool2d(2), nn.Dropout(rate)]  # fmt: skip
        c = filters
    mods += [nn.Flatten(), nn.Linear(2048, 512), nn.ReLU(), nn.BatchNorm1d(512),
             nn.Dropout(0.5), nn.Linear(512, 10)]  # fmt: skip
    return nn.Sequential(*mods)


def _conv_bn(cin, cout, k, stride=1, pad=None):
    """conv (no bias) + batch norm, padding k // 2 as zoo._conv_bn."""
    return [nn.Conv2d(cin, cout, k, stride, k // 2 if pad is None else pad, bias=False),
            nn.BatchNorm2d(cout)]  # fmt: skip


class BasicBlock(nn.Module):
    """ResNet-18 block (zoo._basic_block): 3x3 - 3x3, 1x1 projection when the shape changes."""

    def __init__(self, cin, c, stride):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(cin, c, 3, stride), nn.ReLU(), *_conv_bn(c, c, 3))
        changes = stride != 1 or cin != c
        self.proj = nn.Sequential(*_conv_bn(cin, c, 1, stride)) if changes else nn.Identity()

    def forward(self, x):
        return torch.relu(self.body(x) + self.proj(x))


class Bottleneck(nn.Module):
    """ResNet-50 v1.5 block (zoo._bottleneck_block): 1x1 - 3x3 (the stride) - 1x1 x4."""

    def __init__(self, cin, c, stride):
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(cin, c, 1), nn.ReLU(), *_conv_bn(c, c, 3, stride), nn.ReLU(),
            *_conv_bn(c, 4 * c, 1),
        )  # fmt: skip
        changes = stride != 1 or cin != 4 * c
        self.proj = nn.Sequential(*_conv_bn(cin, 4 * c, 1, stride)) if changes else nn.Identity()

    def forward(self, x):
        return torch.relu(self.body(x) + self.proj(x))


def _resnet(block, depths, expansion, num_classes=1000):
    mods = [*_conv_bn(3, 64, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for stage, (filters, depth) in enumerate(zip((64, 128, 256, 512), depths)):
        for i in range(depth):
            mods.append(block(cin, filters, 2 if stage > 0 and i == 0 else 1))
            cin = filters * expansion
    mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*mods)


def resnet18():
    """zoo.resnet18: 11,689,512 trainable parameters."""
    return _resnet(BasicBlock, (2, 2, 2, 2), 1)


def resnet50():
    """zoo.resnet50 (v1.5): 25,557,032 trainable parameters."""
    return _resnet(Bottleneck, (3, 4, 6, 3), 4)


def vgg16(image_size=224):
    """zoo.vgg16 (no batch norm, no dropout): 138,357,544 parameters at 224 px. The flatten
    after the last pool is over C, H, W rather than pyconv's H, W, C: the same layer sizes."""
    mods, c = [], 3
    for filters, convs in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for _ in range(convs):
            mods += [nn.Conv2d(c, filters, 3, padding=1), nn.ReLU()]
            c = filters
        mods.append(nn.MaxPool2d(2))
    flat = 512 * (image_size // 32) ** 2
    mods += [nn.Flatten(), nn.Linear(flat, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
             nn.Linear(4096, 1000)]  # fmt: skip
    return nn.Sequential(*mods)


BUILDERS = {"mnist_cnn": mnist_cnn, "cifar10_cnn": cifar10_cnn, "resnet18": resnet18,
            "resnet50": resnet50, "vgg16": vgg16}  # fmt: skip


def trainable_params(net) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def check_param_counts(names=None):
    """Raises AssertionError unless every network here has as many trainable parameters as
    the pyconv.zoo network of the same name (a cheap check that the architectures match)."""
    from pyconv import zoo

    for name in names or BUILDERS:
        model = zoo.build(name)
        ours = int(sum(v.value.size for v in model.trainable_weights))
        theirs = trainable_params(BUILDERS[name]())
        if ours != theirs:
            raise AssertionError(f"{name}: pyconv {ours:,} vs PyTorch {theirs:,} parameters")


if __name__ == "__main__":
    check_param_counts()
    print("parameter counts match:", ", ".join(BUILDERS))
