"""MobileNetV2 (Sandler et al. 2018) adapted to small images, as in the common CIFAR ports
that upstream used.

`MobileNetV2` (CIFAR, 32×32): stride-1 3×3 stem of 32 channels, the paper's seven stages of
inverted residual blocks (expansion t, width c, repeats n, stride s) with the second stage's
stride lowered from 2 to 1, a 1×1 conv to 1280 channels, global average pool, linear.
Total stride 8: a 32×32 input ends as a 4×4 map.
`tinyMobileNetV2` (TinyImageNet, 64×64): the same network with a stride-2 stem, so a 64×64
input also ends as a 4×4 map; same weights and counts as `MobileNetV2`.

As in those ports (and unlike torchvision's ImageNet model), every block has its 1×1 expand
convolution, also at expansion 1, and a stride-1 block whose width changes gets a 1×1
projection shortcut (prunable); a block with stride 2 has no shortcut; equal widths use the
identity.
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from models.layers import LayerFactory

# (expansion t, output channels c, repeats n, stride of the first block s)
CIFAR_STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
                (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
STEM, HEAD = 32, 1280


class InvertedResidual(nn.Module):
    """1×1 expand - 3×3 depthwise - 1×1 linear projection, each followed by BatchNorm."""

    def __init__(self, f: LayerFactory, in_planes: int, out_planes: int, expansion: int,
                 stride: int):
        super().__init__()
        hidden = in_planes * expansion
        self.conv1 = f.conv1x1(in_planes, hidden)
        self.bn1 = f.batchnorm(hidden)
        self.conv2 = f.conv(hidden, hidden, 3, stride=stride, groups=hidden)
        self.bn2 = f.batchnorm(hidden)
        self.conv3 = f.conv1x1(hidden, out_planes)
        self.bn3 = f.batchnorm(out_planes)
        self.stride = stride
        self.shortcut = None
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(f.conv1x1(in_planes, out_planes),
                                          f.batchnorm(out_planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride != 1:
            return out
        return out + (x if self.shortcut is None else self.shortcut(x))


class MobileNetV2(nn.Module):
    def __init__(self, f: LayerFactory, num_classes: int, in_channels: int, stem_stride: int):
        super().__init__()
        self.conv1 = f.conv3x3(in_channels, STEM, stem_stride)
        self.bn1 = f.batchnorm(STEM)
        blocks, in_planes = [], STEM
        for expansion, planes, repeats, stride in CIFAR_STAGES:
            for i in range(repeats):
                blocks.append(InvertedResidual(f, in_planes, planes, expansion,
                                               stride if i == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*blocks)
        self.conv2 = f.conv1x1(in_planes, HEAD)
        self.bn2 = f.batchnorm(HEAD)
        self.fc = f.linear(HEAD, num_classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = F.relu(self.bn2(self.conv2(out)))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def mobilenet_v2(f: LayerFactory, num_classes: int, in_channels: int, image_size: int):
    """CIFAR MobileNetV2 (stride-1 stem)."""
    return MobileNetV2(f, num_classes, in_channels, stem_stride=1)


def tiny_mobilenet_v2(f: LayerFactory, num_classes: int, in_channels: int, image_size: int):
    """MobileNetV2 for 64×64 input (stride-2 stem)."""
    return MobileNetV2(f, num_classes, in_channels, stem_stride=2)
