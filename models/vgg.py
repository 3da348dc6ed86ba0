"""VGG-16 with BatchNorm (13 masked 3×3 convolutions, five 2×2 max-pools) as upstream built it
for CIFAR, and its TinyImageNet name.

Upstream ended the features with a 1×1 convolution to 10 outputs and flattened whatever map
was left: right on 32×32 input (1×1 map), but 64×64 input gave a 2×2 map and 4× the logits
(800 for 200 classes).  Here the final map is averaged to 1×1 first, so the classifier
(a masked linear layer, 512 × num_classes weights as upstream's) always emits num_classes
logits, whatever the input size (at least 32×32).
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from models.channels import ChannelGroup, sequential_groups
from models.layers import LayerFactory, MaskedConv2d

VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                512, 512, 512, "M")
MIN_SIDE = 32   # five 2×2 max-pools


class VGG(nn.Module):
    """Conv-BN-ReLU stacks with max-pools from `layout`, global average pool, linear."""

    def __init__(self, f: LayerFactory, layout, num_classes: int, in_channels: int,
                 image_size: int):
        super().__init__()
        pools = sum(1 for item in layout if item == "M")
        if image_size < 2 ** pools:
            raise ValueError(f"VGG with {pools} max-pools needs images of at least "
                             f"{2 ** pools}×{2 ** pools} pixels, got {image_size}")
        layers, channels = [], in_channels
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [f.conv3x3(channels, item), f.batchnorm(item), nn.ReLU()]
                channels = item
        self.features = nn.Sequential(*layers)
        self.classifier = f.linear(channels, num_classes)

    def forward(self, x):
        out = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(out)

    def channel_groups(self) -> list[ChannelGroup]:
        """Every convolution's filters: each conv feeds the next, the last the classifier
        (after average pooling, one column per channel)."""
        convs = [(f"features.{i}", f"features.{i + 1}")
                 for i, layer in enumerate(self.features) if isinstance(layer, MaskedConv2d)]
        return sequential_groups(convs, "classifier")


def vgg16(f: LayerFactory, num_classes: int, in_channels: int, image_size: int):
    return VGG(f, VGG16_LAYOUT, num_classes, in_channels, image_size)


def tinyvgg16(f: LayerFactory, num_classes: int, in_channels: int, image_size: int):
    """Upstream's TinyImageNet name: the same network, meant for 64×64 input."""
    return VGG(f, VGG16_LAYOUT, num_classes, in_channels, image_size)
