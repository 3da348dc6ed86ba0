"""Gradient flow at a network's starting point (Evci et al., "Gradient Flow in Sparse Neural
Networks and How Lottery Tickets Win").

The measured number is ‖∇θ L(θ)‖₂: the Euclidean norm of the gradient of the training loss L
with respect to every trainable parameter, where L is the mean over a fixed set of training
batches of each batch's mean cross-entropy.  The batches are the first `batches` batches of
`batch_size` training images in dataset order, without augmentation; the network is in
training mode (BatchNorm normalises with the batch statistics, as the first training step
would) and computes in float32 without autocast.  A masked weight enters the forward pass as
weight ⊙ mask, so its pruned entries get exactly zero gradient: the norm of a sparse network
is over its surviving weights (plus biases and BatchNorm parameters).

The model itself is not changed: the gradient is taken on a copy, so neither its BatchNorm
running statistics nor its `.grad` fields move.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F


def fixed_batches(loader, batch_size: int, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `count` batches of `batch_size` examples that `loader` yields in order
    (its batches are re-cut to `batch_size`; fewer when the data runs out)."""
    images, labels, have = [], [], 0
    for x, y in loader:
        images.append(x)
        labels.append(y)
        have += len(y)
        if have >= batch_size * count:
            break
    if not images:
        return []
    x, y = torch.cat(images), torch.cat(labels)
    return [(x[i:i + batch_size], y[i:i + batch_size])
            for i in range(0, min(len(y), batch_size * count), batch_size)
            if len(y[i:i + batch_size]) == batch_size or i == 0]


def training_batches(ctx) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A run's fixed gradient-flow batches: the first `grad_flow_batches` batches of
    `batch_size` of its training set, in order, without augmentation."""
    return fixed_batches(ctx.loaders.train_eval, ctx.cfg.batch_size, ctx.cfg.grad_flow_batches)


def norms_at_starts(model: torch.nn.Module, starts: dict, batches: list) -> dict[str, float]:
    """{name: ‖∇θ L‖₂ of the network that `starts[name](net)` makes of a copy `net` of
    `model`} (each starting point set up on its own copy; `model` is not changed)."""
    out = {}
    for name, set_up in starts.items():
        probe = copy.deepcopy(model)
        set_up(probe)
        out[name] = _gradient_norm_of(probe, batches)
    return out


def gradient_norm(model: torch.nn.Module, batches: list) -> float:
    """‖∇θ L‖₂ at the model's current values (see the module docstring); NaN without data."""
    return _gradient_norm_of(copy.deepcopy(model), batches)


def _gradient_norm_of(probe: torch.nn.Module, batches: list) -> float:
    """`gradient_norm` computed on `probe` itself (a copy the caller owns: its BatchNorm
    statistics and `.grad` fields change)."""
    if not batches:
        return float("nan")
    probe.train()
    params = [p for p in probe.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    with torch.enable_grad():
        for images, labels in batches:
            loss = F.cross_entropy(probe(images).float(), labels) / len(batches)
            loss.backward()
    total = torch.zeros((), dtype=torch.float64, device=batches[0][1].device)
    for p in params:
        if p.grad is not None:
            total += p.grad.detach().double().pow(2).sum()
    return float(total.sqrt())
