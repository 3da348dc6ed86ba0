"""Small networks: Conv4 (edge-popup's 4-conv net) and the LeNet-300-100 MLP.

Input channels and size come from the dataset, so the first linear layer's width follows.
"""
from __future__ import annotations

import torch.nn as nn

from models.channels import ChannelGroup
from models.layers import LayerFactory


class Conv4(nn.Module):
    """conv64-conv64-pool-conv128-conv128-pool-fc256-fc256-fc (no BatchNorm)."""

    def __init__(self, f: LayerFactory, num_classes: int, in_channels: int, image_size: int):
        super().__init__()
        self.features = nn.Sequential(
            f.conv3x3(in_channels, 64), nn.ReLU(), f.conv3x3(64, 64), nn.ReLU(),
            nn.MaxPool2d(2),
            f.conv3x3(64, 128), nn.ReLU(), f.conv3x3(128, 128), nn.ReLU(),
            nn.MaxPool2d(2))
        side = image_size // 4
        if side < 1:
            raise ValueError(f"Conv4 needs images of at least 4×4 pixels, got {image_size}")
        self.classifier = nn.Sequential(
            nn.Flatten(), f.linear(128 * side * side, 256), nn.ReLU(),
            f.linear(256, 256), nn.ReLU(), f.linear(256, num_classes))
        self.side = side

    def forward(self, x):
        return self.classifier(self.features(x))

    def channel_groups(self) -> list[ChannelGroup]:
        """Every conv filter and hidden unit; the last conv's channels each own side² input
        columns of the flattened map."""
        return [ChannelGroup("features.0", ("features.2",)),
                ChannelGroup("features.2", ("features.5",)),
                ChannelGroup("features.5", ("features.7",)),
                ChannelGroup("features.7", ("classifier.1",), columns=self.side ** 2),
                ChannelGroup("classifier.1", ("classifier.3",)),
                ChannelGroup("classifier.3", ("classifier.5",))]


class LeNet300100(nn.Module):
    """Fully connected 300-100 network on the flattened image."""

    def __init__(self, f: LayerFactory, num_classes: int, in_channels: int, image_size: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), f.linear(in_channels * image_size * image_size, 300), nn.ReLU(),
            f.linear(300, 100), nn.ReLU(), f.linear(100, num_classes))

    def forward(self, x):
        return self.net(x)

    def channel_groups(self) -> list[ChannelGroup]:
        """The 300 and 100 hidden units (rows of the first two layers)."""
        return [ChannelGroup("net.1", ("net.3",)), ChannelGroup("net.3", ("net.5",))]


def conv4(f: LayerFactory, num_classes: int, in_channels: int, image_size: int):
    return Conv4(f, num_classes, in_channels, image_size)


def lenet_300_100(f: LayerFactory, num_classes: int, in_channels: int, image_size: int):
    return LeNet300100(f, num_classes, in_channels, image_size)
