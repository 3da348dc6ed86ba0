"""Curvature-adaptive pruning fraction for IMP (`adaptive_prune_rate: true`).

Rule: at a trained solution w (gradient ≈ 0), removing the weights that magnitude pruning at
fraction f would remove perturbs the weights by δ_f = w − m_f⊙w and, to second order,
raises the training loss by ½ δ_fᵀ H δ_f.  Each level prunes the largest f in
[min_prune_rate, max_prune_rate] whose predicted increase stays at or below
`adaptive_epsilon`, found by bisection (assuming the prediction grows with f); when even
min_prune_rate exceeds it, min_prune_rate is used.  Only Hessian-vector products are used.
The predicted and the measured increase (loss of the pruned minus the unpruned network on the
same batches) are recorded for every level.  This follows the paper's observation that flatter
solutions (smaller top eigenvalues) tolerate larger pruning steps.
"""
from __future__ import annotations

import copy

import torch

from analysis.hessian import HessianOperator
from models.masks import keep_top, prunable_layers, round_half_up, set_masks


def fraction_masks(pool: dict, fraction: float, scope: str, floor=None) -> dict:
    """Magnitude masks removing `fraction` of the active weights of the pool layers (over all
    of them, or per layer), never keeping fewer than `floor` (global: an int; local: a dict)."""
    with torch.no_grad():
        scores = {n: layer.effective_weight().abs() for n, layer in pool.items()}
    masks = {n: layer.mask for n, layer in pool.items()}
    if scope == "global":
        active = sum(int(m.count_nonzero()) for m in masks.values())
        keep = active - round_half_up(fraction * active)
        return keep_top(scores, masks, max(keep, floor or 0))
    out = {}
    for name in pool:
        active = int(masks[name].count_nonzero())
        keep = active - round_half_up(fraction * active)
        out.update(keep_top({name: scores[name]}, {name: masks[name]},
                            max(keep, (floor or {}).get(name, 0))))
    return out


def predicted_increase(op: HessianOperator, model, masks: dict) -> float:
    """½ δᵀ H δ for δ = the weights that `masks` would remove."""
    layers = prunable_layers(model)
    delta = []
    for name, layer in layers.items():
        if name in masks:
            delta.append((layer.weight * (layer.mask - masks[name])).detach())
        else:
            delta.append(torch.zeros_like(layer.weight))
    hv = op.hvp(delta)
    return 0.5 * float(sum((d * h).sum() for d, h in zip(delta, hv)))


def choose_fraction(model, pool: dict, loader, *, batches: int, scope: str, low: float,
                    high: float, epsilon: float, floor=None, steps: int = 8) -> dict:
    """The adaptive fraction for the next level: {"fraction", "masks", "predicted",
    "measured"} (loss increases in nats, on `batches` training batches)."""
    op = HessianOperator(model, loader, batches)

    def trial(f):
        masks = fraction_masks(pool, f, scope, floor)
        return masks, predicted_increase(op, model, masks)

    masks, predicted = trial(high)
    fraction = high
    if predicted > epsilon:
        lo_masks, lo_pred = trial(low)
        fraction, masks, predicted = low, lo_masks, lo_pred
        lo, hi = low, high
        if lo_pred <= epsilon:
            for _ in range(steps):
                mid = 0.5 * (lo + hi)
                mid_masks, mid_pred = trial(mid)
                if mid_pred <= epsilon:
                    lo, fraction, masks, predicted = mid, mid, mid_masks, mid_pred
                else:
                    hi = mid
    pruned = copy.deepcopy(model)
    set_masks(pruned, masks)
    measured = HessianOperator(pruned, loader, batches).loss() - op.loss()
    return {"fraction": fraction, "masks": masks, "predicted": predicted,
            "measured": measured}
