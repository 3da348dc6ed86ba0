"""Baselines: dense training (`algo: training`, upstream's `weight_training: True`) from a
fresh network or from a saved ticket (`ticket: PATH`), and the random masks of
`random_subnet: True` (Bernoulli at density prune_rate, or Smart-Ratio layer densities with
`smart_ratio`), fine-tuned from the initial weights."""
from __future__ import annotations

import math

import torch

from models.masks import prunable_layers
from pruners import Algorithm
from pruners.epoch_checkpoints import plan_fixed_epochs, save_fixed_epoch
from pruners.finetune import finish_search, plan_finish
from pruners.scores import density_text, layer_sizes, seeded_generator
from pruners.smart_ratio import counts_for_config
from utils.phases import PhaseJob, PhaseSpec, run_phase
from utils.schedules import optimizer_from_config, schedule_from_config


def training_phase(cfg) -> PhaseSpec:
    return PhaseSpec(key="train", phase="train", epochs=cfg.epochs,
                     optimizer=optimizer_from_config(cfg), schedule=schedule_from_config(cfg))


def run_training(ctx, model) -> dict:
    """Train every weight of the network (masks stay as built: all ones unless a pretrained
    checkpoint brought masks) and save checkpoints/final.pt (and the models after the epochs
    of ckpt_at_fixed_epochs)."""
    after_epoch = None
    if ctx.cfg.ckpt_at_fixed_epochs:
        def after_epoch(epoch: int) -> None:
            save_fixed_epoch(ctx, model, epoch)
    result = run_phase(ctx, model, training_phase(ctx.cfg), after_epoch=after_epoch)
    ctx.save_model(model, "final.pt")
    return result


def training_jobs(ctx, model) -> list[PhaseJob]:
    """The one phase of `training` (for packed replicates; `run_training` then finds it done
    and saves final.pt)."""
    if "train" in ctx.state.completed:
        return []
    return [PhaseJob("train", lambda: training_phase(ctx.cfg))]


def plan_training(cfg, splits, model=None) -> list[str]:
    spec = training_phase(cfg)
    steps = math.ceil(splits.num_train / cfg.batch_size)
    return [f"phase train: {spec.epochs} epochs × ~{steps} steps (batch {cfg.batch_size}); "
            f"{spec.optimizer.describe()}; lr {spec.schedule.describe()}",
            "density 100.00 % / sparsity 0.00 % (all weights trained)", *plan_fixed_epochs(cfg)]


def prepare_training(cfg, splits, model, logger) -> None:
    """Load a saved ticket into the freshly built network when `ticket` is set."""
    if cfg.ticket:
        from pruners.tickets import apply_ticket

        apply_ticket(cfg, model, logger)


TRAINING = Algorithm("training", run_training, plan_training, prepare=prepare_training,
                     jobs=training_jobs)


# ----------------------------------------------------------------------------- random masks
# upstream's `random_subnet: True`: a random mask, then fine-tuning (no search)


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
