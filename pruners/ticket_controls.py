"""Controls that make a ticket meaningful, shared by IMP's controls and the mask searches'
sanity checks: re-drawn weights, masks or weights shuffled within each layer, random masks at
the same density.  Each takes an explicit torch.Generator so a control is reproducible, and
never touches the global random state.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models.init import init_weight_
from models.masks import get_masks, prunable_layers, set_masks


def shuffle_within_layers(tensors: dict[str, torch.Tensor],
                          generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Each tensor with its entries permuted uniformly at random (same multiset per layer)."""
    out = {}
    for name, tensor in tensors.items():
        flat = tensor.flatten()
        perm = torch.randperm(flat.numel(), generator=generator).to(flat.device)
        out[name] = flat[perm].view_as(tensor).clone()
    return out


def random_masks(shapes: dict[str, torch.Size], keep: int,
                 generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Masks keeping exactly `keep` entries chosen uniformly over all layers together."""
    total = sum(int(torch.Size(s).numel()) for s in shapes.values())
    if not 0 <= keep <= total:
        raise ValueError(f"cannot keep {keep} of {total} weights")
    chosen = torch.zeros(total, dtype=torch.bool)
    chosen[torch.randperm(total, generator=generator)[:keep]] = True
    out, start = {}, 0
    for name, shape in shapes.items():
        n = int(torch.Size(shape).numel())
        out[name] = chosen[start:start + n].view(shape).float()
        start += n
    return out


@torch.no_grad()
def reinitialize_weights(model: nn.Module, init: str, generator: torch.Generator,
                         mode: str = "fan_in", nonlinearity: str = "relu") -> None:
    """Re-draw every prunable layer's weight with `init` (under `generator`), keeping masks:
    pruned weights stay zero."""
    for layer in prunable_layers(model).values():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=generator)))
            init_weight_(layer, init, mode, nonlinearity)
        layer.apply_mask_to_weight()


@torch.no_grad()
def shuffle_masks_onto_initial_weights(model, initial_state: dict,
                                       generator: torch.Generator) -> None:
    """Permute each layer's mask uniformly at random (same density per layer) and give the
    network its initial, unpruned weights under the new masks."""
    layers = prunable_layers(model)
    shuffled = shuffle_within_layers(get_masks(model), generator)
    for name, layer in layers.items():
        layer.weight.copy_(initial_state[f"{name}.weight"].to(layer.weight.device))
    set_masks(model, shuffled)
