"""CIFAR ResNets of He et al. (2016) as upstream built them: 3×3 stem, three stages of
widths 16/32/64, parameter-free option-A shortcuts (subsample + zero-pad channels).
`resnet32_double` doubles every width (32/64/128), as the Smart-Ratio paper's ResNet-32."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from models.channels import ChannelGroup
from models.layers import LayerFactory


class OptionABlock(nn.Module):
    """Basic block whose shortcut subsamples and zero-pads channels (no parameters)."""

    def __init__(self, f: LayerFactory, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = f.conv3x3(in_planes, planes, stride)
        self.bn1 = f.batchnorm(planes)
        self.conv2 = f.conv3x3(planes, planes)
        self.bn2 = f.batchnorm(planes)
        self.stride = stride
        self.extra_channels = planes - in_planes

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x
        if self.stride != 1:
            shortcut = shortcut[:, :, ::self.stride, ::self.stride]
        if self.extra_channels:
            half = self.extra_channels // 2
            shortcut = F.pad(shortcut, (0, 0, 0, 0, half, self.extra_channels - half))
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images; `width` multiplies the stage widths 16/32/64."""

    def __init__(self, f: LayerFactory, depth: int, num_classes: int, in_channels: int,
                 width: int = 1):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = f.conv3x3(in_channels, 16 * width)
        self.bn1 = f.batchnorm(16 * width)
        stages, in_planes = [], 16 * width
        for planes, stride in ((16 * width, 1), (32 * width, 2), (64 * width, 2)):
            layers = []
            for i in range(blocks):
                layers.append(OptionABlock(f, in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = f.linear(in_planes, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)

    def channel_groups(self) -> list[ChannelGroup]:
        """The inner channels of every block (conv1 → bn1 → conv2); the residual stream's
        channels stay (see models/channels.py)."""
        return [ChannelGroup(f"{name}.conv1", (f"{name}.conv2",), f"{name}.bn1")
                for name, block in self.named_modules() if isinstance(block, OptionABlock)]


def resnet20(f: LayerFactory, num_classes: int, in_channels: int, image_size: int):
    return CifarResNet(f, 20, num_classes, in_channels)


def resnet32(f: LayerFactory, num_classes: int, in_channels: int, image_size: int):
    return CifarResNet(f, 32, num_classes, in_channels)


def resnet32_double(f: LayerFactory, num_classes: int, in_channels: int, image_size: int):
    return CifarResNet(f, 32, num_classes, in_channels, width=2)
