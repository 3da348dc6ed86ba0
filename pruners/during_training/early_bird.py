"""Early-bird tickets (`algo: early_bird`; You et al. 2020), with unstructured weight masks.

Dense training (the run's optimizer and schedule, `epochs` epochs).  After every epoch e the
global (or per-layer, `prune_scope`) magnitude mask m_e at exactly `target_sparsity` % is
computed, and its normalised Hamming distance to the masks of earlier epochs,

    dist(a, b) = |a ⊕ b| / (2 · min(k, N − k)),

where |a ⊕ b| counts the entries of the pruned layers in which the masks differ, N is the
number of those entries and k the number each mask keeps.  2 · min(k, N − k) is the largest
possible difference of two masks keeping k, so dist ∈ [0, 1] means the same at every density;
at 50 % density it equals the plain |a ⊕ b| / N of You et al. (dividing by N instead would make
every distance at 2 % density at most 0.04, below any usual eb_epsilon).  It is recorded:
`distance_prev` = dist(m_e, m_{e−1}) and `window_max` = max over j = 1..W of
dist(m_e, m_{e−j}) (W = eb_window; defined once W earlier masks exist, i.e. from epoch W + 1).
The ticket is drawn after the first epoch with window_max < eb_epsilon: m_e is installed and
training continues sparse (same optimizer and schedule) for the remaining epochs.  If that
never happens the ticket is drawn after the last epoch (summary: eb_converged false).
The last W masks and the curve live in `state.extra`, so a killed run resumes exactly.
Records: ticket.pt and checkpoints/before_finetune.pt at the draw (the mask and the weights of
that epoch, pruned ones zero: what the sparse training starts from), early_bird.csv (epoch,
distance_prev, window_max, drawn), TensorBoard
train/distance_prev and train/window_max, a log line per epoch, summary eb_epoch /
eb_converged and both curves.
"""
from __future__ import annotations

import math
from functools import partial

import torch

from models.masks import (apply_masks_to_weights, density_pct, density_text, magnitude_masks,
                          prunable_layers, set_masks)
from models.prune_targets import (check_target, keep_at, layer_densities, layer_sizes_of,
                                  report_collapse)
from pruners import Algorithm
from pruners.tickets import save_ticket
from pruners.training import plan_training, training_phase
from utils.logging import write_csv
from utils.phases import run_phase
from utils.step import InStepHooks


def hamming_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a ⊕ b| / (2 · min(k, N − k)) for two flat binary masks that keep k of N entries each
    (0 when k is 0 or N)."""
    kept = int(a.bool().sum())
    largest = 2 * min(kept, a.numel() - kept)
    return float((a.bool() != b.bool()).sum()) / largest if largest else 0.0


def window_step(history: list, mask: torch.Tensor, window: int) -> tuple[float, float]:
    """(distance to the previous mask, largest distance to the last `window` masks) for a new
    mask given the earlier ones (oldest first); NaN where not defined yet."""
    prev = hamming_distance(mask, history[-1]) if history else math.nan
    if len(history) < window:
        return prev, math.nan
    return prev, max(hamming_distance(mask, old) for old in history[-window:])


def early_bird_epoch(masks: list, window: int, epsilon: float) -> int | None:
    """The (1-based) epoch at which the early-bird ticket is drawn for a sequence of per-epoch
    masks: the first whose window_max is below `epsilon`; None if none is."""
    for epoch in range(1, len(masks) + 1):
        _, widest = window_step(masks[:epoch - 1], masks[epoch - 1], window)
        if not math.isnan(widest) and widest < epsilon:
            return epoch
    return None


def run_early_bird(ctx, model) -> dict:
    """Dense training until the mask settles, then sparse; returns the summary fields."""
    cfg, state, log = ctx.cfg, ctx.state, ctx.logger
    sizes = layer_sizes_of(model)
    pool = check_target(cfg, sizes)
    keep = keep_at(sizes, pool, cfg.prune_scope, cfg.target_sparsity / 100.0)
    layers = prunable_layers(model)
    pool_layers = {n: layers[n] for n in pool}
    extra = state.extra
    extra.setdefault("eb_history", [])
    extra.setdefault("eb_curve", [])

    def current_masks() -> dict:
        return magnitude_masks(pool_layers, keep=keep.pool_keep, layer_keep=keep.layer_keep)

    def after_epoch(epoch: int) -> dict:
        if extra.get("eb_epoch") is not None:
            return {}
        masks = current_masks()
        flat = torch.cat([masks[n].flatten().bool().cpu() for n in pool])
        prev, widest = window_step(extra["eb_history"], flat, cfg.eb_window)
        extra["eb_history"] = (extra["eb_history"] + [flat])[-cfg.eb_window:]
        converged = not math.isnan(widest) and widest < cfg.eb_epsilon
        drawn = converged or epoch == cfg.epochs
        extra["eb_curve"].append({"epoch": epoch, "distance_prev": prev, "window_max": widest,
                                  "drawn": drawn})
        log.info(f"early-bird epoch {epoch}: mask distance to the previous epoch "
                 f"{prev:.4f}, largest over the last {cfg.eb_window} {widest:.4f} "
                 f"(eb_epsilon {cfg.eb_epsilon:g})")
        if drawn:
            set_masks(model, masks)
            extra["eb_epoch"], extra["eb_converged"] = epoch, converged
            extra["eb_history"] = []
            log.info(f"early-bird ticket drawn after epoch {epoch} "
                     + (f"(largest distance to the last {cfg.eb_window} masks {widest:.4f} < "
                        f"eb_epsilon {cfg.eb_epsilon:g})" if converged else
                        "(NOT converged: the mask never settled; drawn after the last epoch)")
                     + f": {density_text(density_pct(model))}")
            extra["eb_collapsed"] = report_collapse(ctx, model, "at the early-bird draw")
            save_ticket(ctx, model, {"eb_epoch": epoch, "eb_converged": converged})
        return {"distance_prev": prev, "window_max": widest}

    # in every step: pruned weights back to exactly zero once the ticket is drawn (before the
    # draw the masks are all ones and this is an identity)
    keep_zero = InStepHooks(after_update=(partial(apply_masks_to_weights, pool_layers),))
    spec = training_phase(cfg)
    result = run_phase(ctx, model, spec, after_epoch=after_epoch, hooks=keep_zero)
    curve = extra["eb_curve"]
    write_csv(ctx.path("early_bird.csv"), ["epoch", "distance_prev", "window_max", "drawn"],
              curve)
    ctx.save_model(model, "final.pt")
    return {"eb_epoch": extra.get("eb_epoch"), "eb_converged": extra.get("eb_converged"),
            "eb_window": cfg.eb_window, "eb_epsilon": cfg.eb_epsilon,
            "eb_window_max": [c["window_max"] for c in curve],
            "eb_distance_prev": [c["distance_prev"] for c in curve],
            "target_density_pct": cfg.target_sparsity, "density_pct": density_pct(model),
            "layer_density_pct": layer_densities(model),
            "collapsed_layers": extra.get("eb_collapsed", []),
            **{k: result[k] for k in ("train_acc", "train_loss", "val_acc", "test_acc",
                                      "best_val_acc", "test_acc_at_best_val",
                                      "best_val_epoch")}}


def plan_early_bird(cfg, splits, model) -> list[str]:
    sizes = layer_sizes_of(model)
    total = sum(sizes.values())
    pool = check_target(cfg, sizes)
    keep = keep_at(sizes, pool, cfg.prune_scope, cfg.target_sparsity / 100.0)
    lines = [f"early-bird: dense training; after every epoch the {cfg.prune_scope} magnitude "
             f"mask keeping exactly {keep.kept:,} of {total:,} weights "
             f"({density_text(100.0 * keep.kept / total)}) is compared with the last "
             f"{cfg.eb_window} epochs' masks; drawn when the largest normalised Hamming "
             f"distance is below {cfg.eb_epsilon:g} "
             + (f"(earliest after epoch {cfg.eb_window + 1}, at the latest after epoch "
                f"{cfg.epochs})" if cfg.eb_window < cfg.epochs else
                f"(the window never fills in {cfg.epochs} epochs: drawn after the last)")
             + "; then training continues sparse"]
    return lines + [line for line in plan_training(cfg, splits, model)
                    if not line.startswith("density")]


def prepare_early_bird(cfg, splits, model, logger) -> None:
    """Check prune_ignore and the target before anything is written."""
    check_target(cfg, layer_sizes_of(model))


EARLY_BIRD = Algorithm("early_bird", run_early_bird, plan_early_bird,
                       prepare=prepare_early_bird)
