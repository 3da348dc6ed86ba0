"""ResNet-18/50/101 with projection shortcuts (1×1 conv + BN, prunable like every conv).

`ResNet18` / `ResNet50` / `ResNet101`: ImageNet stem (7×7 stride-2 conv + max-pool).
`TinyResNet18`: upstream's TinyImageNet ResNet-18, which is the ImageNet layout (a 64×64
input ends as a 2×2 map); upstream left its shortcut convolutions out of pruning, here they
are prunable.  For a 3×3-stem ResNet-18 on 64×64 input use `cResNet18`.
`cResNet18`: the CIFAR variant (3×3 stride-1 stem, no max-pool).
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from models.channels import ChannelGroup
from models.layers import LayerFactory


def _shortcut(f: LayerFactory, in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(f.conv1x1(in_planes, out_planes, stride), f.batchnorm(out_planes))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, f: LayerFactory, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = f.conv3x3(in_planes, planes, stride)
        self.bn1 = f.batchnorm(planes)
        self.conv2 = f.conv3x3(planes, planes)
        self.bn2 = f.batchnorm(planes)
        self.shortcut = _shortcut(f, in_planes, planes, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, f: LayerFactory, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = f.conv1x1(in_planes, planes)
        self.bn1 = f.batchnorm(planes)
        self.conv2 = f.conv3x3(planes, planes, stride)
        self.bn2 = f.batchnorm(planes)
        self.conv3 = f.conv1x1(planes, planes * 4)
        self.bn3 = f.batchnorm(planes * 4)
        self.shortcut = _shortcut(f, in_planes, planes * 4, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Four stages of widths 64/128/256/512 (× block expansion)."""

    def __init__(self, f: LayerFactory, block, blocks: list[int], num_classes: int,
                 in_channels: int, imagenet_stem: bool):
        super().__init__()
        if imagenet_stem:
            self.conv1 = f.conv(in_channels, 64, 7, stride=2, padding=3)
            self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = f.conv3x3(in_channels, 64)
            self.pool = nn.Identity()
        self.bn1 = f.batchnorm(64)
        stages, in_planes = [], 64
        for i, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks)):
            layers = []
            for j in range(count):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(block(f, in_planes, planes, stride))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = f.linear(512 * block.expansion, num_classes)

    def forward(self, x):
        out = self.pool(F.relu(self.bn1(self.conv1(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)

    def channel_groups(self) -> list[ChannelGroup]:
        """The inner channels of every block: conv1 (basic) or conv1 and conv2
        (bottleneck); the residual stream's channels stay (see models/channels.py)."""
        groups = []
        for name, block in self.named_modules():
            if isinstance(block, (BasicBlock, Bottleneck)):
                groups.append(ChannelGroup(f"{name}.conv1", (f"{name}.conv2",),
                                           f"{name}.bn1"))
            if isinstance(block, Bottleneck):
                groups.append(ChannelGroup(f"{name}.conv2", (f"{name}.conv3",),
                                           f"{name}.bn2"))
        return groups


def cifar_resnet18(f: LayerFactory, num_classes: int, in_channels: int, image_size: int):
    return ResNet(f, BasicBlock, [2, 2, 2, 2], num_classes, in_channels, imagenet_stem=False)


def resnet18(f: LayerFactory, num_classes: int, in_channels: int, image_size: int):
    return ResNet(f, BasicBlock, [2, 2, 2, 2], num_classes, in_channels, imagenet_stem=True)


def resnet50(f: LayerFactory, num_classes: int, in_channels: int, image_size: int):
    return ResNet(f, Bottleneck, [3, 4, 6, 3], num_classes, in_channels, imagenet_stem=True)


def resnet101(f: LayerFactory, num_classes: int, in_channels: int, image_size: int):
    return ResNet(f, Bottleneck, [3, 4, 23, 3], num_classes, in_channels, imagenet_stem=True)


def tiny_resnet18(f: LayerFactory, num_classes: int, in_channels: int, image_size: int):
    """Upstream's TinyImageNet ResNet-18: the ImageNet layout, classes from the dataset."""
    return ResNet(f, BasicBlock, [2, 2, 2, 2], num_classes, in_channels, imagenet_stem=True)
