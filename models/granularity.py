"""Pruning granularity (`prune_granularity`): what the magnitude-style pruners count, rank and
remove.

  weight   single weights (the default; the behaviour of every earlier version)
  channel  whole output channels — convolution filters, linear rows — of the layers an
           architecture lists in `channel_groups()` (models/channels.py), with the input
           columns that read them; ranked by the per-weight scores summed over the channel
           (for magnitude pruning: the L1 norm).  target_sparsity and prune_rate count
           CHANNELS of those layers; the reported density_pct stays the weight density.
  n:m      exactly prune_n of every prune_m consecutive weights along the input dimension
           (models/nm_masks.py) in every pruned layer whose input dimension m divides; the
           density is fixed by n/m.

A `Units` object is the bookkeeping of one run: the countable units per layer, the pruned
layers (the pool) and, for channels, the channel groups.  `keep_for` gives the exact counts
at a density, `select_masks` the masks that keep them, and `random_masks_for` /
`shuffled_masks_for` the controls at the same granularity.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from models.channel_masks import (alive_channels, channel_scores, channel_weight_masks,
                                  keep_channels, random_channel_scores, shuffle_channels)
from models.channels import ChannelGroup, channel_groups
from models.flops import flops_of_counts
from models.masks import prunable_layers
from models.nm_masks import (kept_per_group, keep_n_per_group, nm_eligible, random_nm_mask,
                             shuffle_groups)
from models.prune_targets import Keep, keep_at, masks_keeping, pool_names
from utils.errors import ConfigError

WEIGHT, CHANNEL, NM = "weight", "channel", "n:m"


@dataclass(frozen=True)
class Granularity:
    """weight | channel | n:m (with n of every m kept)."""

    kind: str = WEIGHT
    n: int = 0
    m: int = 0

    def describe(self) -> str:
        if self.kind == CHANNEL:
            return "channel (whole output channels)"
        if self.kind == NM:
            return f"{self.n}:{self.m} (exactly {self.n} of every {self.m} consecutive weights)"
        return "weight"

    def label(self) -> str:
        """The value recorded in summaries: weight, channel or n:m as 2:4."""
        return f"{self.n}:{self.m}" if self.kind == NM else self.kind


def granularity_of(cfg) -> Granularity:
    """The run's granularity from prune_granularity / prune_n / prune_m."""
    kind = cfg.values.get("prune_granularity") or WEIGHT
    if kind == NM:
        return Granularity(NM, cfg.prune_n, cfg.prune_m)
    return Granularity(kind)


@dataclass(frozen=True)
class Units:
    """What a run counts: `sizes` units per layer (weights; output channels of the channel
    producers), the pruned layers `pool`, every prunable layer's weight `shapes`, and the
    channel groups (channel granularity)."""

    granularity: Granularity
    unit: str
    sizes: dict
    pool: list
    shapes: dict
    groups: list = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.sizes.values())

    @property
    def weight_sizes(self) -> dict:
        return {n: math.prod(s) for n, s in self.shapes.items()}


def units_of(cfg, model) -> Units:
    """The run's units; ConfigError naming the key for a bad prune_ignore, an architecture
    without channel structure, or an n:m run without an eligible layer."""
    g = granularity_of(cfg)
    shapes = {n: tuple(layer.weight.shape) for n, layer in prunable_layers(model).items()}
    weights = {n: math.prod(s) for n, s in shapes.items()}
    pool = pool_names(cfg, weights)
    if g.kind == CHANNEL:
        try:
            groups = channel_groups(model)
        except ValueError:
            raise ConfigError(f"{cfg.where('prune_granularity')}: arch {cfg.arch} has no "
                              f"channel structure for channel pruning") from None
        sizes = {grp.producer: shapes[grp.producer][0] for grp in groups}
        channel_pool = [n for n in sizes if n in pool]
        if not channel_pool:
            raise ConfigError(f"{cfg.where('prune_ignore')}: every layer whose channels can "
                              f"be removed is ignored ({', '.join(sizes)})")
        return Units(g, "channels", sizes, channel_pool, shapes, groups)
    if g.kind == NM:
        eligible = [n for n in pool if nm_eligible(shapes[n], g.m)]
        if not eligible:
            raise ConfigError(f"{cfg.where('prune_m')}: no pruned layer has an input "
                              f"dimension divisible by {g.m}")
        return Units(g, "weights", weights, eligible, shapes)
    return Units(g, "weights", weights, pool, shapes)


def nm_keep(units: Units, n: int) -> Keep:
    """The exact counts of n kept in every group of m of the pool's layers."""
    m = units.granularity.m
    layer_keep = {name: units.sizes[name] // m * n for name in units.pool}
    pool_keep = sum(layer_keep.values())
    dense = units.total - sum(units.sizes[name] for name in units.pool)
    return Keep(pool_keep + dense, pool_keep, layer_keep, per_group=n)


def keep_for(units: Units, scope: str, density: float) -> Keep:
    """The exact counts at `density` (a fraction of the units; n:m: fixed by n/m)."""
    if units.granularity.kind == NM:
        return nm_keep(units, units.granularity.n)
    return keep_at(units.sizes, units.pool, scope, density,
                   min_keep=1 if units.granularity.kind == CHANNEL else 0)


def select_masks(model, units: Units, scores: dict, keep: Keep,
                 largest: bool = True) -> dict[str, torch.Tensor]:
    """New masks keeping exactly `keep` of the units still active, those with the highest
    (or lowest) scores (per weight; summed per channel).  Nested in the current masks."""
    masks = {n: layer.mask for n, layer in prunable_layers(model).items()}
    pool, kind = units.pool, units.granularity.kind
    if kind == CHANNEL:
        kept = keep_channels(channel_scores(scores, pool), alive_channels(masks, pool),
                             keep=keep.pool_keep, layer_keep=keep.layer_keep, largest=largest)
        return channel_weight_masks(masks, units.groups, kept)
    if kind == NM:
        return {n: keep_n_per_group(scores[n], masks[n], keep.per_group, units.granularity.m,
                                    largest) for n in pool}
    return masks_keeping({n: scores[n] for n in pool}, {n: masks[n] for n in pool}, keep,
                         largest=largest)


def _ones(units: Units, device) -> dict:
    return {n: torch.ones(s, device=device) for n, s in units.shapes.items()}


def random_masks_for(units: Units, ticket: dict, scope: str,
                     generator: torch.Generator) -> dict:
    """A random mask at the ticket's granularity and size (channel, n:m only): the same
    number of channels (global: in all; local: per layer), or a random n of every m."""
    device = next(iter(ticket.values())).device
    pool, kind = units.pool, units.granularity.kind
    if kind == CHANNEL:
        alive = alive_channels(ticket, pool)
        counts = {n: int(alive[n].sum()) for n in pool}
        scores = random_channel_scores({n: units.sizes[n] for n in pool}, generator)
        every = {n: torch.ones(units.sizes[n], dtype=torch.bool) for n in pool}
        kept = keep_channels(scores, every, keep=sum(counts.values()),
                             layer_keep=counts if scope == "local" else None)
        kept = {n: v.to(device) for n, v in kept.items()}
        return channel_weight_masks(_ones(units, device), units.groups, kept)
    m = units.granularity.m
    return {n: random_nm_mask(units.shapes[n], int(kept_per_group(ticket[n], m).max()), m,
                              generator).to(device) for n in pool}


def shuffled_masks_for(units: Units, ticket: dict, generator: torch.Generator) -> dict:
    """The ticket's mask shuffled at its granularity (channel, n:m only): each layer's
    channels permuted, or its group patterns permuted among its groups."""
    device = next(iter(ticket.values())).device
    if units.granularity.kind == CHANNEL:
        kept = shuffle_channels(alive_channels(ticket, units.pool), generator)
        return channel_weight_masks(_ones(units, device), units.groups, kept)
    return {n: shuffle_groups(ticket[n], units.granularity.m, generator) for n in units.pool}


def channel_density_pct(units: Units, masks: dict) -> float:
    """Share of the channels (of the channel producers) still alive, in %."""
    alive = alive_channels(masks, list(units.sizes))
    return 100.0 * sum(int(v.sum()) for v in alive.values()) / units.total


def planned_flops(units: Units, keep: Keep, positions: dict, scope: str) -> dict | None:
    """The FLOPs record a mask keeping `keep` will have, when the counts alone decide it
    (n:m, or the local scope); None when the ranking decides (global scope)."""
    kind = units.granularity.kind
    weights = units.weight_sizes
    if kind == NM:
        return flops_of_counts(positions, weights, keep.layer_keep)
    if scope != "local" or keep.layer_keep is None:
        return None
    if kind == WEIGHT:
        return flops_of_counts(positions, weights, keep.layer_keep)
    return flops_of_counts(positions, weights, channel_weight_counts(units, keep.layer_keep))


def channel_weight_counts(units: Units, channels: dict) -> dict:
    """Weights kept per layer when producer p keeps `channels[p]` channels (others all)."""
    kept_channels = {p: channels.get(p, size) for p, size in units.sizes.items()}
    rows = {n: s[0] for n, s in units.shapes.items()}
    cols = {n: s[1] for n, s in units.shapes.items()}
    group: ChannelGroup
    for group in units.groups:
        rows[group.producer] = kept_channels[group.producer]
        for consumer in group.consumers:
            cols[consumer] = kept_channels[group.producer] * group.columns
    return {n: rows[n] * cols[n] * math.prod(s[2:]) for n, s in units.shapes.items()}
