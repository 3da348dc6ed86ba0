"""Score machinery shared by Gem-Miner (hc, hc_iter) and edge-popup.

A score search trains one score per prunable weight while the weights stay frozen.  The
forward pass of a masked layer uses `weight * score_fn(scores) * mask` (models/layers.py);
this module provides the score functions (straight-through binary masks), the permanent flags
(the layers' `mask` buffers, changed here without touching the weights), which parameters
train, and binary copies of a score network for evaluation.
"""
from __future__ import annotations

import copy
import hashlib
import math
from typing import Callable

import torch
import torch.nn as nn

from pruners.masks import keep_top, prunable_layers


def straight_through(scores: torch.Tensor, binary: torch.Tensor) -> torch.Tensor:
    """`binary` in the forward pass; the gradient passes to `scores` unchanged."""
    return binary.detach() + (scores - scores.detach())


def quantized_score_fn(threshold: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Gem-Miner's quantised forward: 1[score > threshold], straight-through gradient."""
    def score_fn(scores: torch.Tensor) -> torch.Tensor:
        return straight_through(scores, (scores > threshold).to(scores.dtype))
    return score_fn


def continuous_score_fn(scores: torch.Tensor) -> torch.Tensor:
    """The continuous relaxation: the forward pass multiplies the weight by the score."""
    return scores


def count_for_fraction(fraction: float, n: int) -> int:
    """ceil(fraction · n), immune to float noise such as 0.3 · 10 = 3.0000000000000004."""
    return math.ceil(round(fraction * n, 9))


def seeded_generator(seed: int, salt: str) -> torch.Generator:
    """A CPU generator for one named random choice of a run (independent of the global
    random state, identical on every resume)."""
    digest = hashlib.sha256(f"{seed}:{salt}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 2)


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
    function of the number of flagged weights).  Ties go to the earlier entry.  The masks are
    recomputed only when a score tensor or a flag changed in place (tensor version counters),
    so a forward pass after an optimizer step or a loaded checkpoint sees the current scores,
    and the layers of one forward pass share one computation."""

    def __init__(self, model: nn.Module, keep: dict[str, int] | Callable[[int], int]):
        self.layers = prunable_layers(model)
        self.keep = keep
        self._key = None
        self._masks: dict[str, torch.Tensor] = {}

    def _versions(self) -> tuple:
        return tuple((layer.scores._version, layer.mask._version)
                     for layer in self.layers.values())

    def masks(self) -> dict[str, torch.Tensor]:
        """The current binary masks by layer name."""
        key = self._versions()
        if key == self._key:
            return self._masks
        with torch.no_grad():
            flags = {n: layer.mask for n, layer in self.layers.items()}
            magnitudes = {n: layer.scores.detach().abs() for n, layer in self.layers.items()}
            if callable(self.keep):
                active = sum(int(f.count_nonzero()) for f in flags.values())
                self._masks = keep_top(magnitudes, flags, self.keep(active))
            else:
                self._masks = {}
                for n in self.layers:
                    active = int(flags[n].count_nonzero())
                    self._masks.update(keep_top({n: magnitudes[n]}, {n: flags[n]},
                                                min(self.keep[n], active)))
        self._key = key
        return self._masks

    def score_fn(self, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """The score function of layer `name`: its binary mask, straight-through to |s|."""
        def score_fn(scores: torch.Tensor) -> torch.Tensor:
            return straight_through(scores.abs(), self.masks()[name].to(scores.dtype))
        return score_fn


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


def density_text(pct: float) -> str:
    """'density X % / sparsity Y %' with two decimals."""
    return f"density {pct:.2f} % / sparsity {100.0 - pct:.2f} %"
