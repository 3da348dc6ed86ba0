"""Random masks of upstream's `random_subnet: True` (no search): Bernoulli at density
prune_rate, or Smart-Ratio layer densities with `smart_ratio`; the ticket is then fine-tuned
from the initial weights like a searched one (pruners/search/finetune.py)."""
from __future__ import annotations

import torch

from models.masks import density_text, prunable_layers
from pruners import Algorithm
from pruners.search.finetune import finish_search, plan_finish
from pruners.search.scores import layer_sizes
from pruners.search.smart_ratio import counts_for_config
from utils.seeds import seeded_generator

@torch.no_grad()
def random_subnet_masks(model, density: float, generator: torch.Generator) -> dict:
    """Bernoulli(density) masks, independently per weight (upstream's random subnet)."""
    return {name: torch.bernoulli(torch.full(tuple(layer.weight.shape), density),
                                  generator=generator).to(layer.mask.device)
            for name, layer in prunable_layers(model).items()}


@torch.no_grad()
def exact_count_masks(model, counts: dict[str, int], generator: torch.Generator) -> dict:
    """Per layer, exactly `counts[name]` ones at uniformly random positions."""
    out = {}
    for name, layer in prunable_layers(model).items():
        flat = torch.zeros(layer.weight.numel())
        flat[torch.randperm(flat.numel(), generator=generator)[:counts[name]]] = 1.0
        out[name] = flat.view_as(layer.weight).to(layer.mask.device)
    return out


def smart_ratio_layer_counts(cfg, sizes: dict[str, int]) -> dict[str, int]:
    """Smart-Ratio weights kept per layer name."""
    counts = counts_for_config(cfg, list(sizes.values()))
    return dict(zip(sizes, counts))


def run_random_subnet(ctx, model) -> dict:
    """Draw the random (or Smart-Ratio) mask over the initial weights, then fine-tune."""
    cfg = ctx.cfg
    generator = seeded_generator(ctx.seed, "random_subnet")
    if cfg.algo_name == "smart_ratio":
        sizes = {n: layer.weight.numel() for n, layer in prunable_layers(model).items()}
        counts = smart_ratio_layer_counts(cfg, sizes)
        return finish_search(ctx, model, {}, lambda: exact_count_masks(model, counts,
                                                                       generator))
    return finish_search(ctx, model, {}, lambda: random_subnet_masks(model, cfg.prune_rate,
                                                                     generator))


def plan_random_subnet(cfg, splits, model=None) -> list[str]:
    sizes = layer_sizes(cfg, splits)
    total = sum(sizes.values())
    if cfg.algo_name == "smart_ratio":
        counts = smart_ratio_layer_counts(cfg, sizes)
        kept = sum(counts.values())
        layers = ", ".join(f"{100.0 * c / sizes[n]:.2f}" for n, c in counts.items())
        version = " (v2: first and last layer at Gem-Miner's densities)" \
            if cfg.sr_version == 2 else ""
        ticket = (f"ticket: Smart-Ratio mask{version}, exactly {kept:,} of {total:,} weights, "
                  f"{density_text(100.0 * kept / total)}; layer densities % in order: {layers}")
    else:
        ticket = (f"ticket: random mask, each weight kept with probability {cfg.prune_rate:g} "
                  f"(expected {density_text(100.0 * cfg.prune_rate)})")
    return plan_finish(cfg, splits, ticket)


RANDOM_SUBNET = Algorithm("random_subnet", run_random_subnet, plan_random_subnet)
SMART_RATIO = Algorithm("smart_ratio", run_random_subnet, plan_random_subnet)
