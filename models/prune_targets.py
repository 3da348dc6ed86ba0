"""Exact weight counts for pruning to a density, and masks that keep exactly those counts.

Counting rule (the same as IMP's target mode): at density d (a fraction) the network keeps
round(d × all prunable weights) weights (halves round up).  Layers in `prune_ignore` stay
dense, so the pruned layers keep that number minus the ignored layers' weights — over all
pruned layers together (`prune_scope: global`), or, with `local`, every pruned layer keeps
round(d × its weights).  Ties are broken deterministically (see `masks.keep_top`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from models.masks import keep_top, prunable_layers, round_half_up
from utils.errors import ConfigError


@dataclass(frozen=True)
class Keep:
    """What a mask at one density keeps: `kept` prunable weights in all (dense layers
    included); `pool_keep` in the pruned layers; `layer_keep` per pruned layer (local scope,
    or per-layer densities such as ERK), else None.  With prune_granularity channel the
    counts are output channels (models/granularity.py); with n:m `per_group` is the n kept
    in every group of m."""

    kept: int
    pool_keep: int
    layer_keep: dict | None = None
    per_group: int | None = None


def pool_names(cfg, sizes: dict) -> list[str]:
    """The pruned layers (prunable layers minus prune_ignore); ConfigError naming the key for
    an unknown layer, or when nothing is left to prune."""
    ignore = list(cfg.prune_ignore or ())
    unknown = [n for n in ignore if n not in sizes]
    if unknown:
        raise ConfigError(f"{cfg.where('prune_ignore')}: no prunable layer named "
                          f"{unknown[0]!r}; prunable layers: {', '.join(sizes)}")
    pool = [n for n in sizes if n not in ignore]
    if not pool:
        raise ConfigError(f"{cfg.where('prune_ignore')}: every prunable layer is ignored, "
                          f"nothing left to prune")
    return pool


def keep_at(sizes: dict, pool: list, scope: str, density: float, min_keep: int = 0) -> Keep:
    """The exact counts at `density` (a fraction in (0, 1]); ValueError when the dense
    layers alone hold more than that.  `min_keep`: the least every pruned layer keeps (1 for
    channels: no layer loses its last one)."""
    total = sum(sizes.values())
    ignored = total - sum(sizes[n] for n in pool)
    if scope == "local":
        layer_keep = {n: max(min_keep, round_half_up(density * sizes[n])) for n in pool}
        kept = sum(layer_keep.values())
        return Keep(kept + ignored, kept, layer_keep)
    pool_keep = round_half_up(density * total) - ignored
    if pool_keep < 0:
        raise ValueError(f"density {100 * density:g} % cannot be reached: the dense layers "
                         f"alone hold {100.0 * ignored / total:.2f} %")
    if pool_keep < min_keep * len(pool):
        raise ValueError(f"density {100 * density:g} % cannot be reached: every one of the "
                         f"{len(pool)} pruned layers keeps at least {min_keep}")
    return Keep(pool_keep + ignored, pool_keep, None)


def check_target(cfg, sizes: dict) -> list[str]:
    """The pool, after checking that target_sparsity is reachable (ConfigError naming the
    key otherwise)."""
    pool = pool_names(cfg, sizes)
    try:
        keep_at(sizes, pool, cfg.prune_scope, cfg.target_sparsity / 100.0)
    except ValueError as exc:
        raise ConfigError(f"{cfg.where('target_sparsity')}: {exc}") from None
    return pool


def check_keeps_a_weight(cfg, model) -> None:
    """ConfigError when `target_sparsity` (a density in %) keeps no weight at all of the
    model's prunable layers (e.g. 1e-300 %): such a network cannot classify anything."""
    sizes = layer_sizes_of(model)
    total = sum(sizes.values())
    density = cfg.target_sparsity / 100.0
    kept = (sum(round_half_up(density * n) for n in sizes.values())
            if cfg.prune_scope == "local" else round_half_up(density * total))
    if total and kept == 0:
        smallest = 50.0 / total if cfg.prune_scope != "local" else 50.0 / min(sizes.values())
        raise ConfigError(f"{cfg.where('target_sparsity')}: density {cfg.target_sparsity:g} % "
                          f"keeps none of the {total:,} prunable weights of {cfg.arch}; the "
                          f"smallest density that keeps one is {smallest:.3g} %")


def geometric_densities(density: float, rounds: int) -> list[float]:
    """Round r of `rounds` keeps density^(r/rounds): the geometric (exponential) schedule;
    the last entry is exactly `density`."""
    return [density ** (r / rounds) for r in range(1, rounds)] + [density]


def masks_keeping(scores: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                  keep: Keep, largest: bool = True) -> dict[str, torch.Tensor]:
    """New masks for the layers of `scores`: the active entries with the largest (or, with
    `largest=False`, smallest) scores, exactly `keep.pool_keep` over all of them together or
    `keep.layer_keep[name]` per layer (capped at what is still active).  Nested in `masks`."""
    if keep.layer_keep is None:
        return keep_top(scores, masks, keep.pool_keep, largest=largest)
    out = {}
    for name in scores:
        active = int(masks[name].count_nonzero())
        out.update(keep_top({name: scores[name]}, {name: masks[name]},
                            min(keep.layer_keep[name], active), largest=largest))
    return out


def layer_sizes_of(model) -> dict[str, int]:
    """Prunable weights per layer, in module order."""
    return {name: layer.weight.numel() for name, layer in prunable_layers(model).items()}


def layer_densities(model) -> dict[str, float]:
    """Density % of every prunable layer according to its mask."""
    return {name: 100.0 * int(layer.mask.count_nonzero()) / layer.mask.numel()
            for name, layer in prunable_layers(model).items()}


def collapsed_layers(model) -> list[str]:
    """Prunable layers whose mask keeps no weight at all (layer collapse)."""
    return [name for name, d in layer_densities(model).items() if d == 0.0]


def report_collapse(ctx, model, when: str) -> list[str]:
    """Log collapsed layers loudly; raise RuntimeError when `forbid_layer_collapse` is set.
    Returns the collapsed layer names."""
    collapsed = collapsed_layers(model)
    if collapsed:
        text = (f"LAYER COLLAPSE {when}: {len(collapsed)} layer(s) at 0 % density, the network "
                f"cannot pass a signal through them: {', '.join(collapsed)}")
        ctx.logger.info("!" * 78 + "\n" + text + "\n" + "!" * 78)
        if ctx.cfg.forbid_layer_collapse:
            raise RuntimeError(text + " (forbid_layer_collapse: true)")
    return collapsed
