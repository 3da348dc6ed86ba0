"""The small mask API every algorithm works through.

Prunable weights are the `weight` of every masked convolution and linear layer (first layer,
classifier and projection shortcuts included).  Layers are named by their module path
(`layer1.0.conv1`, `fc`).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from models.layers import MASKED_LAYER_TYPES, MaskedConv2d


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Masked layers by name, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, MASKED_LAYER_TYPES)}


def get_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every layer's mask."""
    return {name: layer.mask.detach().clone() for name, layer in prunable_layers(model).items()}


def set_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Install masks (by layer name) and zero the weights they remove."""
    layers = prunable_layers(model)
    unknown = set(masks) - set(layers)
    if unknown:
        raise KeyError(f"no prunable layer named {sorted(unknown)[0]!r}")
    for name, mask in masks.items():
        layers[name].set_mask(mask.to(layers[name].mask.device))


@torch.no_grad()
def apply_masks_to_weights(layers: dict[str, nn.Module]) -> None:
    """weight ← weight · mask for every given layer (device-only: usable inside a recorded
    training step; the tensors are looked up at call time)."""
    torch._foreach_mul_([layer.weight for layer in layers.values()],
                        [layer.mask for layer in layers.values()])


def count_weights(model: nn.Module) -> tuple[int, int]:
    """(remaining, total) prunable weights according to the masks."""
    remaining = total = 0
    for layer in prunable_layers(model).values():
        remaining += int(layer.mask.count_nonzero())
        total += layer.mask.numel()
    return remaining, total


def density_pct(model: nn.Module) -> float:
    """Share of prunable weights kept, in % (100 for a dense network)."""
    remaining, total = count_weights(model)
    return 100.0 * remaining / total if total else 100.0


def layer_density_report(model: nn.Module) -> list[dict]:
    """Per layer: name, type, params, exact zeros of the effective weight, density %."""
    rows = []
    for name, layer in prunable_layers(model).items():
        with torch.no_grad():
            nonzero = int(layer.effective_weight().count_nonzero())
        params = layer.weight.numel()
        rows.append({"layer": name,
                     "type": "conv" if isinstance(layer, MaskedConv2d) else "linear",
                     "shape": "x".join(map(str, layer.weight.shape)),
                     "params": params, "zeros": params - nonzero,
                     "density_pct": 100.0 * nonzero / params})
    total = sum(r["params"] for r in rows)
    zeros = sum(r["zeros"] for r in rows)
    rows.append({"layer": "total", "type": "", "shape": "", "params": total, "zeros": zeros,
                 "density_pct": 100.0 * (total - zeros) / total if total else 100.0})
    return rows


def format_density_report(rows: list[dict]) -> str:
    """The per-layer report as an aligned text table."""
    width = max(len(r["layer"]) for r in rows)
    lines = [f"{'layer':<{width}}  {'type':<6} {'params':>10} {'zeros':>10} {'density %':>10}"]
    for r in rows:
        lines.append(f"{r['layer']:<{width}}  {r['type']:<6} {r['params']:>10,} "
                     f"{r['zeros']:>10,} {r['density_pct']:>10.2f}")
    return "\n".join(lines)


def density_text(pct: float) -> str:
    """'density X % / sparsity Y %' with two decimals."""
    return f"density {pct:.2f} % / sparsity {100.0 - pct:.2f} %"


def _candidates(scores: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]):
    """Concatenate the scores of still-active entries (layer order, then flat index)."""
    names = list(scores)
    flat_scores = torch.cat([scores[n].detach().flatten().float() for n in names])
    flat_active = torch.cat([masks[n].flatten() != 0 for n in names])
    sizes = [scores[n].numel() for n in names]
    return names, flat_scores, flat_active, sizes


def keep_top(scores: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], keep: int,
             largest: bool = True) -> dict[str, torch.Tensor]:
    """New masks keeping exactly `keep` of the currently active entries: those with the
    largest (or smallest) scores over all given layers together.

    Ties are broken deterministically: among equal scores the entry that comes first (layers
    in the given order, then row-major index) is kept.  Entries already pruned stay pruned,
    so the new masks are nested in the old ones.
    """
    names, flat, active, sizes = _candidates(scores, masks)
    n_active = int(active.sum())
    if not 0 <= keep <= n_active:
        raise ValueError(f"cannot keep {keep} of {n_active} active weights")
    key = flat if largest else -flat
    key = torch.where(active, key, torch.full_like(key, float("-inf")))
    # stable descending sort: equal keys keep their original (index) order
    order = torch.sort(key, descending=True, stable=True).indices
    chosen = torch.zeros_like(active)
    chosen[order[:keep]] = True
    chosen &= active
    out, start = {}, 0
    for name, size in zip(names, sizes):
        out[name] = chosen[start:start + size].view_as(masks[name]).to(masks[name].dtype)
        start += size
    return out


def prune_lowest(scores: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                 count: int) -> dict[str, torch.Tensor]:
    """New masks with exactly `count` more entries removed: the active ones with the lowest
    scores (global over the given layers; deterministic ties as in `keep_top`)."""
    n_active = sum(int(masks[n].count_nonzero()) for n in scores)
    return keep_top(scores, masks, n_active - count, largest=True)


def magnitudes(model: nn.Module) -> dict[str, torch.Tensor]:
    """|effective weight| of every prunable layer."""
    with torch.no_grad():
        return {name: layer.effective_weight().abs()
                for name, layer in prunable_layers(model).items()}


def round_half_up(x: float) -> int:
    """Round to the nearest integer, halves up (2.5 → 3), unlike Python's round."""
    return int(math.floor(x + 0.5))


def pruning_pool(model: nn.Module, ignore=()) -> dict[str, nn.Module]:
    """The prunable layers minus those named in `ignore` (kept dense).
    Raises KeyError naming an unknown layer and listing the valid names."""
    layers = prunable_layers(model)
    unknown = [name for name in ignore if name not in layers]
    if unknown:
        raise KeyError(f"no prunable layer named {unknown[0]!r}; prunable layers: "
                       f"{', '.join(layers)}")
    return {name: layer for name, layer in layers.items() if name not in set(ignore)}


def magnitude_masks(layers: dict[str, nn.Module], *, keep: int | None = None,
                    layer_keep: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
    """New weight masks for `layers` keeping the active weights of largest |w|: exactly
    `keep` over all layers together, or `layer_keep[name]` in each layer.  Ties are broken
    deterministically (see `keep_top`); masks are nested in the current ones."""
    with torch.no_grad():
        scores = {n: layer.effective_weight().abs() for n, layer in layers.items()}
    masks = {n: layer.mask for n, layer in layers.items()}
    if layer_keep is None:
        return keep_top(scores, masks, keep)
    out = {}
    for name in scores:
        out.update(keep_top({name: scores[name]}, {name: masks[name]}, layer_keep[name]))
    return out


def bias_magnitude_masks(layers: dict[str, nn.Module], *, scope: str = "global",
                         fraction: float) -> dict[str, torch.Tensor]:
    """Bias masks removing round(fraction × active) biases of smallest |b| — over all layers
    with a bias together (global) or per layer (local)."""
    with_bias = {n: layer for n, layer in layers.items() if layer.bias is not None}
    with torch.no_grad():
        scores = {n: layer.effective_bias().abs() for n, layer in with_bias.items()}
    masks = {n: layer.bias_mask for n, layer in with_bias.items()}
    if not scores:
        return {}
    if scope == "global":
        active = sum(int(m.count_nonzero()) for m in masks.values())
        return keep_top(scores, masks, active - round_half_up(fraction * active))
    out = {}
    for name in scores:
        active = int(masks[name].count_nonzero())
        out.update(keep_top({name: scores[name]}, {name: masks[name]},
                            active - round_half_up(fraction * active)))
    return out
