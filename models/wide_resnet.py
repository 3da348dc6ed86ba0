"""Wide ResNet WRN-d-k of Zagoruyko & Komodakis (2016) for small images; `WideResNet28` is
WRN-28-2 (upstream's only variant): 3×3 stem of 16 channels, three stages of (d−4)/6
pre-activation blocks of widths 16k / 32k / 64k, 1×1 projection shortcuts (prunable) where
the width or stride changes, BN-ReLU, global average pool, linear classifier.  No dropout.
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from models.layers import LayerFactory


class PreActBlock(nn.Module):
    """BN-ReLU-conv3×3-BN-ReLU-conv3×3 plus identity or 1×1 projection shortcut."""

    def __init__(self, f: LayerFactory, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = f.batchnorm(in_planes)
        self.conv1 = f.conv3x3(in_planes, planes, stride)
        self.bn2 = f.batchnorm(planes)
        self.conv2 = f.conv3x3(planes, planes)
        self.shortcut = (f.conv1x1(in_planes, planes, stride)
                         if stride != 1 or in_planes != planes else None)

    def forward(self, x):
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        # the projection sees the pre-activated input, the identity the raw input
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-depth-widen for images of any size (the final map is averaged)."""

    def __init__(self, f: LayerFactory, depth: int, widen: int, num_classes: int,
                 in_channels: int):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"Wide ResNet depth must be 6n+4, got {depth}")
        blocks = (depth - 4) // 6
        self.conv1 = f.conv3x3(in_channels, 16)
        stages, in_planes = [], 16
        for planes, stride in ((16 * widen, 1), (32 * widen, 2), (64 * widen, 2)):
            layers = []
            for i in range(blocks):
                layers.append(PreActBlock(f, in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.block1, self.block2, self.block3 = stages
        self.bn = f.batchnorm(in_planes)
        self.fc = f.linear(in_planes, num_classes)

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1).flatten(1)
        return self.fc(out)


def wide_resnet28(f: LayerFactory, num_classes: int, in_channels: int, image_size: int):
    """WRN-28-2."""
    return WideResNet(f, 28, 2, num_classes, in_channels)
