"""Upstream's plain-layer architectures (`Conv4Normal`, `resnet20Normal`, `resnet32Normal`,
`TinyResNet18Normal`, `vgg16_normal`): the reference networks upstream trained densely
(`weight_training: True`), built from ordinary `nn.Conv2d` / `nn.Linear` / `nn.BatchNorm2d`
instead of its score layers.

What distinguishes them from the same-named score networks, as upstream wrote them:
  * the layer options of the config are not read: BatchNorm is always affine (`bn_type` is
    ignored), convolutions have no bias (`vgg16_normal`: with bias), and the classifier is an
    `nn.Linear` with bias (`Conv4Normal`: its 1×1-conv "linear" layers have none);
  * the config's `init` is not read: `Conv4Normal`, `TinyResNet18Normal` and `vgg16_normal`
    keep PyTorch's default initialisation, `resnet20Normal` / `resnet32Normal` draw every conv
    and linear weight from kaiming-normal (fan_in, gain √2) — see `PLAIN_INITS` in
    models/registry.py, applied by `build_model`.
Here they are built from masked layers whose masks stay all ones (so every weight trains, as
with plain layers, and the run directory reports densities like any other run); the number of
classes comes from the dataset (upstream hard-coded 10 or 200).  Each constructor ignores the
LayerFactory it is given and uses the plain one above.
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from models.layers import LayerFactory, MaskedLinear
from models.resnet import BasicBlock, ResNet
from models.resnet_cifar import CifarResNet
from models.small import Conv4

VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                512, 512, 512, "M")


def _plain(bias: bool = False) -> LayerFactory:
    return LayerFactory(bias=bias, bn_type="AffineBatchNorm")


def _biased_classifier(in_features: int, num_classes: int) -> MaskedLinear:
    return MaskedLinear(in_features, num_classes, bias=True)


def conv4_normal(f: LayerFactory, num_classes: int, in_channels: int, image_size: int):
    """Conv4 of plain bias-free layers (upstream's fully connected part is bias-free 1×1
    convolutions, which compute exactly these linear layers)."""
    return Conv4(_plain(), num_classes, in_channels, image_size)


def _cifar_resnet_normal(depth: int, num_classes: int, in_channels: int) -> nn.Module:
    model = CifarResNet(_plain(), depth, num_classes, in_channels)
    model.fc = _biased_classifier(model.fc.in_features, num_classes)
    return model


def resnet20_normal(f: LayerFactory, num_classes: int, in_channels: int, image_size: int):
    return _cifar_resnet_normal(20, num_classes, in_channels)


def resnet32_normal(f: LayerFactory, num_classes: int, in_channels: int, image_size: int):
    return _cifar_resnet_normal(32, num_classes, in_channels)


def tiny_resnet18_normal(f: LayerFactory, num_classes: int, in_channels: int,
                         image_size: int):
    """The ImageNet-layout ResNet-18 (7×7 stem, max-pool, 1×1 projection shortcuts)."""
    model = ResNet(_plain(), BasicBlock, [2, 2, 2, 2], num_classes, in_channels,
                   imagenet_stem=True)
    model.fc = _biased_classifier(model.fc.in_features, num_classes)
    return model


class VGG16Normal(nn.Module):
    """13 biased 3×3 convolutions with ReLU (no BatchNorm), five max-pools, one linear layer
    on the 512-channel map averaged to 1×1 (upstream flattened the 1×1 map of 32×32 input)."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int):
        super().__init__()
        if image_size < 32:
            raise ValueError(f"vgg16_normal needs images of at least 32×32 pixels, got "
                             f"{image_size}")
        f = _plain(bias=True)
        layers, channels = [], in_channels
        for item in VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [f.conv3x3(channels, item), nn.ReLU()]
                channels = item
        self.features = nn.Sequential(*layers)
        self.classifier = _biased_classifier(channels, num_classes)

    def forward(self, x):
        return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


def vgg16_normal(f: LayerFactory, num_classes: int, in_channels: int, image_size: int):
    return VGG16Normal(num_classes, in_channels, image_size)
