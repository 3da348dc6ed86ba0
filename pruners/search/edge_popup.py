"""Edge-popup: `ep`, `global_ep`, `global_ep_iter` (REFERENCE.md §4).

Weights stay frozen; a score per weight (kaiming-uniform init, as upstream) trains through a
straight-through top-k mask on |score|:
  ep              exactly `keep` entries per layer, keep = n − ⌊(1 − d)·n⌋ (upstream's count);
  global_ep       one global top-k, keeping exactly ceil(d · total) weights;
  global_ep_iter  a global top-k among the still-flagged weights whose count shrinks every
                  iter_period epochs (after 0-based epochs iter_period, 2·iter_period, ...),
                  the flags following the mask; after N steps it ends at the target.
Density d: with override_prune_rate, ep keeps prune_rate of each layer and global_ep removes
prune_rate of all weights (upstream's two meanings); without it, d = target_sparsity / 100.
Then the selected mask is the ticket: fine-tuned and sanity-checked (finetune.py).
"""
from __future__ import annotations

import math

import torch

from models.masks import density_pct, density_text, prunable_layers
from pruners import Algorithm
from pruners.epoch_checkpoints import plan_fixed_epochs, save_fixed_epoch
from pruners.search.checks import ep_density, prune_steps, step_fraction
from pruners.search.finetune import finish_search, last_row, plan_finish, search_phase, \
    write_phase_table
from pruners.search.scores import (TopScoreSelector, binary_copy, count_for_fraction, layer_sizes,
                                   level_counts, masks_density_pct, set_flags, train_scores_only)
from utils.board import phase_histogram, phase_scalars
from utils.phases import run_phase
from utils.step import InStepHooks

SEARCH_COLUMNS = ["flag_density_pct", "pruned"]


def ep_layer_keep(size: int, density: float) -> int:
    """Weights ep keeps in a layer of `size`: size − ⌊(1 − density)·size⌋ (upstream)."""
    return size - int((1.0 - density) * size)


def iter_levels(cfg, total: int) -> list[int]:
    """global_ep_iter: flagged weights after 0..N steps (the mask of period i keeps level
    i + 1, the last period keeps level N)."""
    steps = prune_steps(cfg.epochs, cfg.iter_period)
    if cfg.override_prune_rate:
        return level_counts(total, steps, cfg.prune_rate)
    return level_counts(total, steps, step_fraction(cfg.target_sparsity, steps),
                        count_for_fraction(cfg.target_sparsity / 100.0, total))


def make_selector(cfg, model) -> TopScoreSelector:
    """The mask rule of the configured edge-popup variant."""
    algo = cfg.algo_name
    sizes = {n: layer.weight.numel() for n, layer in prunable_layers(model).items()}
    total = sum(sizes.values())
    if algo == "ep":
        density = ep_density(cfg.values, algo)
        return TopScoreSelector(model, {n: ep_layer_keep(s, density) for n, s in sizes.items()})
    if algo == "global_ep":
        keep = count_for_fraction(ep_density(cfg.values, algo), total)
        return TopScoreSelector(model, lambda active: min(keep, active))
    levels = iter_levels(cfg, total)

    def keep_for(active: int) -> int:
        if active in levels:
            return levels[min(levels.index(active) + 1, len(levels) - 1)]
        return min(active, levels[-1])
    return TopScoreSelector(model, keep_for)


class _SearchHooks:
    def __init__(self, ctx, model, selector: TopScoreSelector):
        self.ctx, self.model, self.selector = ctx, model, selector
        self.cfg = ctx.cfg

    def after_epoch(self, epoch: int) -> dict:
        ctx, cfg, model = self.ctx, self.cfg, self.model
        epoch0 = epoch - 1
        if epoch0 % cfg.iter_period == 0:
            masks = self.selector.masks()
            active = [layer.scores.detach()[layer.mask != 0].abs().float().cpu()
                      for layer in prunable_layers(model).values()]
            phase_histogram(ctx, "search", "search/abs_scores_of_flagged_weights",
                            torch.cat(active), epoch)
            phase_scalars(ctx, "search", {f"search_layer_density/{n}":
                                          masks_density_pct({n: m})
                                          for n, m in masks.items()}, epoch)
        removed = 0
        steps = prune_steps(cfg.epochs, cfg.iter_period)
        if cfg.algo_name == "global_ep_iter" and epoch0 > 0 and epoch0 % cfg.iter_period == 0 \
                and epoch0 // cfg.iter_period <= steps:
            step = epoch0 // cfg.iter_period
            before = sum(int(layer.mask.count_nonzero())
                         for layer in prunable_layers(model).values())
            set_flags(model, self.selector.masks())     # flags ← the current mask
            self.selector.refresh()                      # the next count of the schedule
            removed = before - sum(int(layer.mask.count_nonzero())
                                   for layer in prunable_layers(model).values())
            ctx.logger.info(f"search: pruning step {step}/{steps} after epoch {epoch} removed "
                            f"{removed:,} weights; flags {density_text(density_pct(model))}")
            if cfg.checkpoint_at_prune:
                ctx.save_model(model, f"prune_{step:02d}.pt")
        save_fixed_epoch(ctx, model, epoch)
        return {"flag_density_pct": density_pct(model), "pruned": removed}

    def eval_model(self):
        return binary_copy(self.model, self.selector.masks())


def run_edge_popup(ctx, model) -> dict:
    """Score search with a top-k straight-through mask, then ticket, fine-tuning, sanity."""
    cfg = ctx.cfg
    train_scores_only(model, also_weights=not cfg.freeze_weights)
    selector = make_selector(cfg, model)
    for name, layer in prunable_layers(model).items():
        layer.score_fn = selector.score_fn(name)
    hooks = _SearchHooks(ctx, model, selector)
    result = run_phase(ctx, model, search_phase(cfg), after_epoch=hooks.after_epoch,
                       eval_model=hooks.eval_model,
                       hooks=InStepHooks(before_forward=(selector.update,)))
    write_phase_table(ctx, "search", "search.csv", SEARCH_COLUMNS)
    search = {"search_val_acc": result["val_acc"], "search_test_acc": result["test_acc"],
              "search_density_pct": last_row(ctx, "search").get("density_pct")}
    if not cfg.override_prune_rate:
        search["target_density_pct"] = cfg.target_sparsity
    return finish_search(ctx, model, search,
                         lambda: {n: m.clone() for n, m in selector.masks().items()})


def plan_edge_popup(cfg, splits, model=None) -> list[str]:
    algo = cfg.algo_name
    steps = math.ceil(splits.num_train / cfg.batch_size)
    spec = search_phase(cfg)
    sizes = layer_sizes(cfg, splits)
    total = sum(sizes.values())
    lines = [f"phase search: {cfg.epochs} epochs × ~{steps} steps (batch {cfg.batch_size}); "
             f"scores train (kaiming_uniform init; "
             f"{'weights frozen' if cfg.freeze_weights else 'weights train too'}); "
             f"{spec.optimizer.describe()}; lr {spec.schedule.describe()}"]
    if algo == "ep":
        density = ep_density(cfg.values, algo)
        kept = sum(ep_layer_keep(n, density) for n in sizes.values())
        lines.append(f"forward mask: per layer the top {density:g} of |score| "
                     f"(straight-through); {kept:,} of {total:,} weights, "
                     f"{density_text(100.0 * kept / total)}")
        ticket = f"ticket: the selected mask, {density_text(100.0 * kept / total)}"
    elif algo == "global_ep":
        kept = count_for_fraction(ep_density(cfg.values, algo), total)
        lines.append(f"forward mask: one global top-k of |score| over all layers, recomputed "
                     f"after every step (straight-through); {kept:,} of {total:,} weights, "
                     f"{density_text(100.0 * kept / total)}")
        ticket = f"ticket: the selected mask, {density_text(100.0 * kept / total)}"
    else:
        levels = iter_levels(cfg, total)
        n_steps = len(levels) - 1
        lines.append(f"forward mask: global top-k of |score| among the flagged weights; the "
                     f"count shrinks after epochs {cfg.iter_period + 1}, "
                     f"{2 * cfg.iter_period + 1}, ... (1-based; N = {n_steps} steps), the flags following "
                     f"the mask; {total:,} prunable weights")
        for i, count in enumerate(levels[1:], start=1):    # 1-based epochs of each mask
            first = 1 if i == 1 else (i - 1) * cfg.iter_period + 2
            last = i * cfg.iter_period + 1 if i < n_steps else cfg.epochs
            lines.append(f"  epochs {first:>4}-{last:<4}: {count:>12,} weights, "
                         f"{density_text(100.0 * count / total)}")
        ticket = f"ticket: the final mask, {density_text(100.0 * levels[-1] / total)}"
    return lines + plan_fixed_epochs(cfg) + plan_finish(cfg, splits, ticket)


def _score_init(cfg) -> str:
    return "kaiming_uniform"


EP = Algorithm("ep", run_edge_popup, plan_edge_popup, _score_init)
GLOBAL_EP = Algorithm("global_ep", run_edge_popup, plan_edge_popup, _score_init)
GLOBAL_EP_ITER = Algorithm("global_ep_iter", run_edge_popup, plan_edge_popup, _score_init)
