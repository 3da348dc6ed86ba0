"""Scores of the pruning-at-initialisation baselines, ERK layer densities, and the (one-shot
or iterative) pruning loop that turns scores into masks with exact counts.

Every score function takes the network it scores and returns one tensor per prunable layer
(by name).  Entries already pruned score 0 and are never revived (masks are nested).  The
caller passes a *copy* of the network it is going to train (see `prune_at_init`), so scoring
never changes the trained network's weights or BatchNorm running statistics.

  snip            |g ⊙ w|, g = ∂L/∂w summed over the scoring minibatches (Lee et al. 2019)
  grasp           −w ⊙ (H g), H the Hessian of L, g = ∂L/∂w (detached); the *highest* scores
                  are removed (Wang et al. 2020)
  synflow         |w ⊙ ∂R/∂w| of the linearised network: every parameter and BatchNorm
                  statistic replaced by its absolute value, BatchNorm in eval mode, float64,
                  R = sum of the outputs for one all-ones input — no data (Tanaka et al. 2020)
  magnitude_init  |w|
  random          i.i.d. uniform scores from the run's seeded generator
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.granularity import WEIGHT, Units, select_masks
from models.masks import prunable_layers, set_masks
from models.prune_targets import Keep, masks_keeping

Batches = list  # [(images, labels), ...]


def _weights(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: layer.weight for name, layer in prunable_layers(model).items()}


def _require_grad(model: nn.Module) -> None:
    for param in model.parameters():
        param.requires_grad_(True)


def loss_gradient(model: nn.Module, batches: Batches) -> dict[str, torch.Tensor]:
    """∂L/∂w of every prunable weight, summed over `batches` (mean cross-entropy per batch)."""
    _require_grad(model)
    weights = _weights(model)
    total = {n: torch.zeros_like(w) for n, w in weights.items()}
    for images, labels in batches:
        grads = torch.autograd.grad(F.cross_entropy(model(images), labels),
                                    list(weights.values()))
        for name, grad in zip(weights, grads):
            total[name] += grad
    return total


def snip_scores(model: nn.Module, batches: Batches) -> dict[str, torch.Tensor]:
    """SNIP's connection sensitivity |g ⊙ w|."""
    grads = loss_gradient(model, batches)
    weights = _weights(model)
    return {n: (grads[n] * weights[n]).detach().abs() for n in weights}


def hessian_gradient_product(model: nn.Module, batches: Batches
                             ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(g, H g): the loss gradient over `batches` and the Hessian of the same loss applied to
    it, by double back-propagation (g is held constant in the second pass)."""
    grads = loss_gradient(model, batches)
    weights = _weights(model)
    params = list(weights.values())
    hg = {n: torch.zeros_like(w) for n, w in weights.items()}
    for images, labels in batches:
        first = torch.autograd.grad(F.cross_entropy(model(images), labels), params,
                                    create_graph=True)
        inner = sum((grads[n].detach() * g).sum() for n, g in zip(weights, first))
        second = torch.autograd.grad(inner, params)
        for name, value in zip(weights, second):
            hg[name] += value
    return grads, hg


def grasp_scores(model: nn.Module, batches: Batches) -> dict[str, torch.Tensor]:
    """GraSP's scores −w ⊙ (H g); pruning removes the highest."""
    _, hg = hessian_gradient_product(model, batches)
    weights = _weights(model)
    return {n: (-weights[n] * hg[n]).detach() for n in weights}


def synflow_scores(model: nn.Module, input_shape: tuple) -> dict[str, torch.Tensor]:
    """SynFlow's |w ⊙ ∂R/∂w| on a linearised float64 copy of `model` (see module docstring);
    `input_shape` is (channels, height, width).  Uses no data."""
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    _require_grad(net)
    weights = _weights(net)
    device = next(iter(weights.values())).device
    ones = torch.ones((1, *input_shape), dtype=torch.float64, device=device)
    grads = torch.autograd.grad(net(ones).sum(), list(weights.values()))
    return {n: (g * w).detach().abs().float() for (n, w), g in zip(weights.items(), grads)}


def magnitude_scores(model: nn.Module) -> dict[str, torch.Tensor]:
    """|w| of the effective (masked) weights."""
    with torch.no_grad():
        return {n: layer.effective_weight().abs()
                for n, layer in prunable_layers(model).items()}


def random_scores(model: nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Uniform random scores (CPU generator, so the draw is the same on every device)."""
    out = {}
    for name, layer in prunable_layers(model).items():
        out[name] = torch.rand(tuple(layer.weight.shape), generator=generator).to(
            layer.weight.device) * layer.mask
    return out


def random_channel_scores_at_init(model: nn.Module,
                                  generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-weight scores whose sum over each output channel is one uniform draw per channel
    (so channel pruning by summed scores picks channels uniformly, whatever the fan-in)."""
    out = {}
    for name, layer in prunable_layers(model).items():
        shape = tuple(layer.weight.shape)
        per_channel = torch.rand(shape[0], generator=generator, dtype=torch.float64)
        fan_in = layer.weight[0].numel()
        out[name] = (per_channel / fan_in).view(-1, *([1] * (len(shape) - 1))).expand(
            shape).to(layer.weight.device)
    return out


# --------------------------------------------------------------------------- ERK


def erk_raw_density(shape) -> float:
    """The Erdős–Rényi-kernel factor of a layer: (sum of its dimensions) / (their product):
    (n_out + n_in + k_h + k_w) / (n_out · n_in · k_h · k_w) for a convolution,
    (n_out + n_in) / (n_out · n_in) for a linear layer."""
    dims = list(shape)
    return sum(dims) / math.prod(dims)


def erk_densities(shapes: dict, keep: int) -> tuple[dict[str, float], float]:
    """Real-valued ERK layer densities keeping `keep` weights over the given layers, and the
    scale ε: density_l = ε · raw_l, except layers where that exceeds 1, which are dense (the
    largest is made dense first and ε recomputed, until none exceeds 1)."""
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: erk_raw_density(s) for n, s in shapes.items()}
    dense: set = set()
    while True:
        budget = keep - sum(sizes[n] for n in dense)
        free = [n for n in shapes if n not in dense]
        if not free:
            return {n: 1.0 for n in shapes}, float("inf")
        eps = budget / sum(raw[n] * sizes[n] for n in free)
        over = [n for n in free if eps * raw[n] > 1.0]
        if not over:
            break
        dense.add(max(over, key=lambda n: raw[n]))
    return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}, eps


def erk_counts(shapes: dict, keep: int) -> dict[str, int]:
    """Exact per-layer counts at the ERK densities summing to `keep`: floors of
    density × size, the remainder given one by one to the largest fractional parts (ties to
    the earlier layer)."""
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    densities, _ = erk_densities(shapes, keep)
    real = {n: densities[n] * sizes[n] for n in shapes}
    counts = {n: min(sizes[n], math.floor(real[n] + 1e-9)) for n in shapes}
    rest = keep - sum(counts.values())
    order = sorted(shapes, key=lambda n: -(real[n] - counts[n]))
    for name in order:
        if rest <= 0:
            break
        if counts[name] < sizes[name]:
            counts[name] += 1
            rest -= 1
    return counts


# --------------------------------------------------------------------------- the pruning loop


def prune_at_init(model: nn.Module, pool: list[str], keeps: list[Keep],
                  score: Callable[[nn.Module], dict], largest: bool = True,
                  on_round: Callable[[int, nn.Module], None] | None = None,
                  units: Units | None = None) -> None:
    """Prune `model` in place: for every entry of `keeps` (one per round) score a copy of the
    network as it is (earlier rounds' masks applied) with `score(copy)` and keep exactly that
    many active weights of the layers in `pool` — the highest scores (or lowest with
    `largest=False`); with `units` at their granularity (models/granularity.py: channels
    by their summed scores, or n of every m).  `on_round(r, model)` runs after round r
    (1-based)."""
    layers = prunable_layers(model)
    for r, keep in enumerate(keeps, 1):
        scores = score(copy.deepcopy(model))
        if units is not None and units.granularity.kind != WEIGHT:
            masks = select_masks(model, units, scores, keep, largest=largest)
        else:
            current = {n: layers[n].mask for n in pool}
            masks = masks_keeping({n: scores[n] for n in pool}, current, keep, largest=largest)
        set_masks(model, masks)
        if on_round is not None:
            on_round(r, model)
