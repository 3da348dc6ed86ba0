"""FLOPs of the prunable layers, counted exactly from their shapes, output sizes and masks.

Convention (ShrinkBench's): one FLOP is one multiply-add, counted for the masked convolution
and linear layers only (biases, BatchNorm, activations, pooling and residual additions are
left out), for ONE input image.  A layer computes `kept weights × output positions`
multiply-adds — a convolution's output positions are the pixels of its output map, a linear
layer's the rows it is applied to (1 per image after flattening or pooling).  Dense FLOPs use
every weight; remaining FLOPs the mask's nonzero entries; the theoretical speed-up is their
ratio.  Output sizes come from one forward pass of a zero image in eval mode (BatchNorm
statistics and the train/eval flag are restored), so any architecture is counted alike.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from models.layers import MASKED_LAYER_TYPES


def _masked_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, MASKED_LAYER_TYPES)}


@torch.no_grad()
def output_positions(model: nn.Module, input_shape: tuple) -> dict[str, int]:
    """Per masked layer (module order): how many output positions it computes for one image
    of `input_shape` = (channels, height, width) — H_out·W_out for a convolution, the number
    of rows for a linear layer."""
    layers = _masked_layers(model)
    seen: dict[str, int] = {}

    def hook(name):
        def record(module, inputs, output):
            if output.dim() >= 3 and isinstance(module, nn.Conv2d):
                seen[name] = math.prod(output.shape[2:])
            else:
                seen[name] = math.prod(output.shape[1:-1]) if output.dim() > 2 else 1
        return record

    handles = [layer.register_forward_hook(hook(name)) for name, layer in layers.items()]
    was_training = model.training
    reference = next(iter(layer.weight for layer in layers.values()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None else torch.float32
    try:
        model.eval()
        model(torch.zeros((1, *input_shape), device=device, dtype=dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    missing = [name for name in layers if name not in seen]
    if missing:
        raise ValueError(f"layer {missing[0]!r} is not used by the forward pass, its FLOPs "
                         f"cannot be counted")
    return {name: seen[name] for name in layers}


def layer_flops(model: nn.Module, positions: dict[str, int]) -> list[dict]:
    """Per masked layer: name, output positions, dense and remaining multiply-adds."""
    rows = []
    for name, layer in _masked_layers(model).items():
        kept = int(layer.mask.count_nonzero())
        rows.append({"layer": name, "positions": positions[name],
                     "dense_flops": layer.mask.numel() * positions[name],
                     "flops": kept * positions[name]})
    return rows


def flops_record(dense: int, remaining: int) -> dict:
    """{dense_flops, flops, flops_pct, theoretical_speedup} from the two totals."""
    return {"dense_flops": dense, "flops": remaining,
            "flops_pct": 100.0 * remaining / dense if dense else 100.0,
            "theoretical_speedup": dense / remaining if remaining else float("inf")}


def count_flops(model: nn.Module, input_shape: tuple,
                positions: dict[str, int] | None = None) -> dict:
    """Dense and remaining multiply-adds of the prunable layers for one image of
    `input_shape` (channels, height, width), their ratio in % and the theoretical speed-up."""
    positions = output_positions(model, input_shape) if positions is None else positions
    rows = layer_flops(model, positions)
    return flops_record(sum(r["dense_flops"] for r in rows), sum(r["flops"] for r in rows))


def flops_of_counts(positions: dict[str, int], sizes: dict[str, int],
                    kept: dict[str, int]) -> dict:
    """The FLOPs record of a network whose layer `name` keeps `kept[name]` of its
    `sizes[name]` weights (layers missing from `kept` dense): for planned masks."""
    dense = sum(sizes[n] * positions[n] for n in sizes)
    remaining = sum(kept.get(n, sizes[n]) * positions[n] for n in sizes)
    return flops_record(dense, remaining)


@torch.no_grad()
def plain_flops(model: nn.Module, input_shape: tuple) -> int:
    """Multiply-adds of every convolution and linear layer of a plain (unmasked) network
    for one image of `input_shape`: all its weights × output positions."""
    total = {"flops": 0}

    def record(module, inputs, output):
        positions = math.prod(output.shape[2:]) if isinstance(module, nn.Conv2d) else \
            (math.prod(output.shape[1:-1]) if output.dim() > 2 else 1)
        total["flops"] += module.weight.numel() * positions

    handles = [m.register_forward_hook(record) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    weight = next(model.parameters())
    try:
        model.eval()
        model(torch.zeros((1, *input_shape), device=weight.device, dtype=weight.dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total["flops"]


def format_flops(value: float) -> str:
    """A FLOP count with a unit: 40.55 M, 1.82 G, 52.4 k."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f}"


def flops_text(record: dict) -> str:
    """'FLOPs 20.50 M of 40.55 M (50.55 %), theoretical speed-up 1.98×'."""
    return (f"FLOPs {format_flops(record['flops'])} of {format_flops(record['dense_flops'])} "
            f"({record['flops_pct']:.2f} %), theoretical speed-up "
            f"{record['theoretical_speedup']:.2f}×")
