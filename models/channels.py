"""Which output channels of a network can be removed whole, and what reads them.

A `ChannelGroup` names a masked layer (the producer) whose output channels — convolution
filters or linear rows — may be removed, the BatchNorm that normalises them (removed with
them) and the masked layers that read them (the consumers, whose input columns for a removed
channel go too, so the pruned network computes exactly what a physically smaller network
computes).  Architectures that support channel pruning define `channel_groups()`.

Only channels that no residual addition reads are listed: in a ResNet the channels of the
stem and of every block's last convolution (and projection shortcut) are summed into the
residual stream, where removing one from one branch would not remove it from the sum, so
only the inner convolutions of each block (conv1 of a basic block; conv1 and conv2 of a
bottleneck) are channel-pruned, as in Li et al. (2017).  Classifiers keep every output.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn


@dataclass(frozen=True)
class ChannelGroup:
    """Output channels of `producer` that can be removed whole.

    consumers: masked layers reading them, `columns` input columns per channel (1 for a
    convolution or a linear layer after pooling; H·W for a linear layer reading a flattened
    C×H×W map, channel c owning columns [c·columns, (c+1)·columns)).  norm: the BatchNorm
    module between producer and consumers, or None."""

    producer: str
    consumers: tuple[str, ...]
    norm: str | None = None
    columns: int = 1


def channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """The channel groups of `model` (in module order); ValueError for an architecture
    without channel structure."""
    method = getattr(model, "channel_groups", None)
    if method is None:
        raise ValueError(f"{type(model).__name__} does not define which channels can be "
                         f"removed (channel_groups)")
    return list(method())


def sequential_groups(convs: list[tuple[str, str | None]], last_consumer: str,
                      columns: int = 1) -> list[ChannelGroup]:
    """Groups of a chain of layers each feeding the next: (layer, its BatchNorm) in order,
    the last one feeding `last_consumer` with `columns` columns per channel."""
    groups = []
    for i, (name, norm) in enumerate(convs):
        last = i == len(convs) - 1
        consumer = last_consumer if last else convs[i + 1][0]
        groups.append(ChannelGroup(name, (consumer,), norm, columns if last else 1))
    return groups
