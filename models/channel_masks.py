"""Channel masks: whole output channels (convolution filters, linear rows) removed, with the
input columns that read them (see models/channels.py for which channels can go).

A channel is alive while its producer's mask row has a nonzero entry.  Channel scores are the
per-weight scores summed over the channel's filter — for magnitude pruning the L1 norm.  Counts
are exact (the project's rule, in channels) and no layer ever loses its last channel: at the
global scope every layer first keeps its best channel and the rest of the count is ranked over
all layers; at the local scope a layer keeps at least one.  Ties go to the earlier channel
(layer order, then index), and only alive channels can be kept, so masks are nested.
"""
from __future__ import annotations

import torch

from models.channels import ChannelGroup
from models.masks import keep_top


def alive_channels(masks: dict[str, torch.Tensor], producers: list[str]) -> dict:
    """Per producer: a bool vector, True where the output channel keeps a weight."""
    return {name: masks[name].flatten(1).any(dim=1) for name in producers}


def channel_scores(scores: dict[str, torch.Tensor], producers: list[str]) -> dict:
    """Per producer: the weight scores summed over each output channel (float64)."""
    return {name: scores[name].detach().double().flatten(1).sum(dim=1) for name in producers}


def keep_channels(scores: dict, alive: dict, *, keep: int | None = None,
                  layer_keep: dict | None = None, largest: bool = True) -> dict:
    """Per producer: bool vectors keeping exactly `keep` alive channels over all producers
    (global) or `layer_keep[name]` in each (local, capped at what is alive), the highest
    scores (lowest with largest=False), and at least one channel per producer."""
    names = list(scores)
    if layer_keep is not None:
        out = {}
        for name in names:
            count = max(1, min(layer_keep[name], int(alive[name].sum())))
            out.update(keep_top({name: scores[name]}, {name: alive[name]}, count,
                                largest=largest))
        return out
    if keep < len(names):
        raise ValueError(f"cannot keep {keep} channels in {len(names)} layers: every layer "
                         f"keeps at least one")
    best = {}
    for name in names:
        best.update(keep_top({name: scores[name]}, {name: alive[name]}, 1, largest=largest))
    rest = {name: alive[name] & ~best[name] for name in names}
    chosen = keep_top(scores, rest, keep - len(names), largest=largest)
    return {name: chosen[name] | best[name] for name in names}


def channel_weight_masks(masks: dict[str, torch.Tensor], groups: list[ChannelGroup],
                         keep: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weight masks of every producer and consumer after removing the channels `keep` drops
    (producers missing from `keep` keep their channels): the producer's rows and the
    consumers' input columns of a removed channel are zeroed, on top of `masks`."""
    out = {}
    for group in groups:
        if group.producer not in keep:
            continue
        gone = ~keep[group.producer].to(masks[group.producer].device)
        producer = out.get(group.producer, masks[group.producer]).clone()
        producer[gone] = 0
        out[group.producer] = producer
        columns = gone.repeat_interleave(group.columns)
        for name in group.consumers:
            consumer = out.get(name, masks[name]).clone()
            consumer[:, columns] = 0
            out[name] = consumer
    return out


def random_channel_scores(sizes: dict[str, int], generator: torch.Generator) -> dict:
    """Uniform random scores per channel (CPU generator: the same draw on every device)."""
    return {name: torch.rand(size, generator=generator, dtype=torch.float64)
            for name, size in sizes.items()}


def shuffle_channels(alive: dict, generator: torch.Generator) -> dict:
    """Each producer's alive vector permuted uniformly at random (same count per layer)."""
    return {name: vector[torch.randperm(vector.numel(), generator=generator)
                         .to(vector.device)].clone()
            for name, vector in alive.items()}
