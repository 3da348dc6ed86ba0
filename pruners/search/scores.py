"""Score machinery shared by Gem-Miner (hc, hc_iter) and edge-popup.

A score search trains one score per prunable weight while the weights stay frozen.  The
forward pass of a masked layer uses `weight * score_fn(scores) * mask` (models/layers.py);
this module provides the score functions (straight-through binary masks), the permanent flags
(the layers' `mask` buffers, changed here without touching the weights), which parameters
train, and binary copies of a score network for evaluation.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn as nn

from models.masks import prunable_layers


def straight_through(scores: torch.Tensor, binary: torch.Tensor) -> torch.Tensor:
    """`binary` in the forward pass; the gradient passes to `scores` unchanged."""
    return binary.detach() + (scores - scores.detach())


def quantized_score_fn(threshold: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Gem-Miner's quantised forward: 1[score > threshold], straight-through gradient."""
    def score_fn(scores: torch.Tensor) -> torch.Tensor:
        return straight_through(scores, (scores > threshold).to(scores.dtype))
    return score_fn


@torch.no_grad()
def rounded_scores(scores: torch.Tensor, scheme: str, threshold: float, noise_std: float,
                   generator: torch.Generator) -> torch.Tensor:
    """Upstream's rounding of scores (a float CPU tensor): naive 1[s > threshold], prob
    Bernoulli(s), all_ones 1; Gaussian noise of std `noise_std` is added first (`noise`)."""
    s = scores.detach().float().cpu()
    if noise_std > 0:
        s = s + noise_std * torch.randn(s.shape, generator=generator)
    if scheme == "naive":
        return (s > threshold).float()
    if scheme == "prob":
        return torch.bernoulli(s.clamp(0.0, 1.0), generator=generator)
    if scheme == "all_ones":
        return torch.ones_like(s)
    raise ValueError(f"unknown round {scheme!r}")


def continuous_score_fn(scores: torch.Tensor) -> torch.Tensor:
    """The continuous relaxation: the forward pass multiplies the weight by the score."""
    return scores


def count_for_fraction(fraction: float, n: int) -> int:
    """ceil(fraction · n), immune to float noise such as 0.3 · 10 = 3.0000000000000004."""
    return math.ceil(round(fraction * n, 9))


def score_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """The scores of every prunable layer, by layer name."""
    return {name: layer.scores for name, layer in prunable_layers(model).items()
            if layer.scores is not None}


def train_scores_only(model: nn.Module, also_weights: bool = False) -> None:
    """Make the scores the only trainable parameters (all parameters with `also_weights`)."""
    for name, param in model.named_parameters():
        param.requires_grad_(also_weights or name.endswith("scores"))


def train_weights_only(model: nn.Module) -> None:
    """Make every parameter except the scores trainable (fine-tuning) and drop score_fns."""
    for name, param in model.named_parameters():
        param.requires_grad_(not name.endswith("scores"))
    for layer in prunable_layers(model).values():
        layer.score_fn = None


@torch.no_grad()
def clamp_scores_(model: nn.Module, low: float = 0.0, high: float = 1.0) -> None:
    """Clamp every score into [low, high] in place (one multi-tensor op per bound: this runs
    after every optimizer step)."""
    scores = list(score_params(model).values())
    if scores:
        torch._foreach_clamp_min_(scores, low)
        torch._foreach_clamp_max_(scores, high)


@torch.no_grad()
def set_flags(model: nn.Module, flags: dict[str, torch.Tensor]) -> None:
    """Overwrite the layers' permanent masks (flags) without touching the frozen weights."""
    layers = prunable_layers(model)
    for name, flag in flags.items():
        layers[name].mask.copy_(flag.to(layers[name].mask.dtype))


def flags_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """The current flags (mask buffers) by layer name (views, not copies)."""
    return {name: layer.mask for name, layer in prunable_layers(model).items()}


def binary_copy(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of `model` that uses plain `weight * mask` with the given binary masks (pruned
    weights zeroed): the network a rounded or selected mask actually defines."""
    clone = copy.deepcopy(model)
    for name, layer in prunable_layers(clone).items():
        layer.score_fn = None
        layer.set_mask(masks[name])
    return clone


def masks_density_pct(masks: dict[str, torch.Tensor]) -> float:
    """Share of ones over all given masks, in %."""
    kept = sum(int(m.count_nonzero()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    return 100.0 * kept / total if total else 100.0


class TopScoreSelector:
    """Edge-popup's binary masks: exactly `keep` flagged entries with the largest |score|,
    either per layer (`keep` maps layer → count) or over all layers together (`keep` is a
    function of the number of flagged weights).  Ties go to the earlier entry (as
    `models.masks.keep_top`).

    `update()` recomputes the masks from the current scores on the device, without reading
    anything back (the counts are device tensors set by `refresh()` whenever the flags
    change), so it can run inside a recorded training step: it is the step's
    `before_forward` hook, and the layers' score functions read its result.  `masks()`
    returns freshly computed masks for the host (evaluation copies, flags, the ticket)."""

    def __init__(self, model: nn.Module, keep: dict[str, int] | Callable[[int], int]):
        self.layers = prunable_layers(model)
        self.keep = keep
        self.counts: dict[str, torch.Tensor] = {}
        self.refresh()
        with torch.no_grad():
            self.current: dict[str, torch.Tensor] = self._compute()

    @torch.no_grad()
    def refresh(self) -> None:
        """Set the kept counts from the current flags (call after the flags change)."""
        active = {n: int(layer.mask.count_nonzero()) for n, layer in self.layers.items()}
        device = next(iter(self.layers.values())).weight.device
        if callable(self.keep):
            wanted = {"*": self.keep(sum(active.values()))}
        else:
            wanted = {n: min(self.keep[n], active[n]) for n in self.layers}
        for name, count in wanted.items():
            if name in self.counts and self.counts[name].device == device:
                self.counts[name].fill_(count)
            else:
                self.counts[name] = torch.tensor(count, device=device)

    def _compute(self) -> dict[str, torch.Tensor]:
        if callable(self.keep):
            return _top_by_rank(self.layers, self.counts["*"])
        out = {}
        for name, layer in self.layers.items():
            out.update(_top_by_rank({name: layer}, self.counts[name]))
        return out

    @torch.no_grad()
    def update(self) -> None:
        """Recompute the masks the forward pass uses from the current scores (device only)."""
        for name, mask in self._compute().items():
            self.current[name].copy_(mask)

    @torch.no_grad()
    def masks(self) -> dict[str, torch.Tensor]:
        """The masks of the current scores, by layer name (new tensors)."""
        return self._compute()

    def score_fn(self, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """The score function of layer `name`: its binary mask, straight-through to |s|."""
        def score_fn(scores: torch.Tensor) -> torch.Tensor:
            return straight_through(scores.abs(), self.current[name].to(scores.dtype))
        return score_fn


def _top_by_rank(layers: dict, keep: torch.Tensor) -> dict[str, torch.Tensor]:
    """Masks keeping the `keep` (a device tensor) flagged entries with the largest |score|
    over `layers` together; ties keep the earlier entry (a stable descending sort, as
    `models.masks.keep_top`).  No value is read back to the host."""
    names = list(layers)
    flat = torch.cat([layers[n].scores.detach().abs().flatten().float() for n in names])
    active = torch.cat([layers[n].mask.flatten() != 0 for n in names])
    key = torch.where(active, flat, torch.full_like(flat, float("-inf")))
    order = torch.sort(key, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(0, order, torch.arange(order.numel(), device=order.device))
    chosen = (rank < keep) & active
    out, start = {}, 0
    for name in names:
        mask = layers[name].mask
        size = mask.numel()
        out[name] = chosen[start:start + size].view(mask.shape).to(mask.dtype)
        start += size
    return out


def step_removal(active: int, step: int, steps: int, fraction: float,
                 final: int | None = None) -> int:
    """Weights removed by pruning step `step` (1-based) of `steps` from `active` weights:
    ceil(fraction · active), never going below `final`; the last step lands exactly on
    `final` when it is given."""
    remove = count_for_fraction(fraction, active)
    if final is not None:
        remove = active - final if step == steps else min(remove, active - final)
    return max(remove, 0)


def level_counts(total: int, steps: int, fraction: float, final: int | None = None) -> list:
    """Active-weight counts after 0, 1, ..., `steps` pruning steps (see `step_removal`)."""
    counts = [total]
    for step in range(1, steps + 1):
        counts.append(counts[-1] - step_removal(counts[-1], step, steps, fraction, final))
    return counts


def layer_sizes(cfg, splits) -> dict[str, int]:
    """Prunable weights per layer of `cfg.arch` on `splits` (builds the model once, leaving
    the global random state untouched)."""
    from models import InputSpec, build_model

    with torch.random.fork_rng(devices=[]):
        model = build_model(cfg, InputSpec(splits.num_classes, splits.channels,
                                           splits.image_size))
    return {name: layer.weight.numel() for name, layer in prunable_layers(model).items()}


