"""Gradual magnitude pruning during training (`algo: gradual`; Zhu & Gupta 2017).

One training run (the run's optimizer and schedule, `epochs` epochs).  With S steps per epoch,
pruning runs from step t0 = prune_start_epoch · S to t1 = prune_end_epoch · S: after the
optimizer steps t0, t0 + Δ, t0 + 2Δ, ... (Δ = prune_every_steps) and after t1 itself, the
network is pruned by global (or per-layer) magnitude to the density

    d(t) = 1 − s_f · f((t − t0) / (t1 − t0)),   s_f = 1 − target_sparsity / 100,

with f(p) = 1 − (1 − p)³ (cubic, Zhu & Gupta's polynomial schedule), p (linear) or
(1 − cos πp) / 2 (cosine); one_shot prunes to the target once, after step t0 (t0 = 0: before
training).  Counts are exact (see models/prune_targets.py), masks nested, and pruned weights
are re-zeroed after every optimizer step (stale momentum cannot revive them).  The masks live
in the model, so last.pt carries them and a killed run resumes exactly.

With prune_granularity channel, d(t) is a density of the channels (models/granularity.py);
with n:m every step keeps n(t) = m − round((m − n) · f(p)) of every m, reaching n:m at t1.
"""
from __future__ import annotations

import math
from functools import partial

from data.loader import steps_per_epoch
from models.flops import count_flops, flops_text, output_positions
from models.granularity import (CHANNEL, NM, WEIGHT, Units, channel_density_pct, keep_for,
                                nm_keep, planned_flops, select_masks, units_of)
from models.masks import (apply_masks_to_weights, density_pct, density_text, get_masks, magnitudes,
                          prunable_layers, round_half_up, set_masks)
from models.prune_targets import (check_target, collapsed_layers, keep_at, layer_densities,
                                  layer_sizes_of, report_collapse)
from pruners import Algorithm
from pruners.target_checks import gradual_window
from pruners.training import plan_training, training_phase
from utils.errors import ConfigError
from utils.logging import write_csv
from utils.phases import run_phase
from utils.step import InStepHooks


def sparsity_progress(schedule: str, p: float) -> float:
    """Fraction of the final sparsity reached at progress p ∈ [0, 1] of the pruning window."""
    p = min(max(p, 0.0), 1.0)
    if schedule == "one_shot":
        return 1.0
    if schedule == "linear":
        return p
    if schedule == "cosine":
        return 0.5 * (1.0 - math.cos(math.pi * p))
    return 1.0 - (1.0 - p) ** 3


def pruning_events(cfg, sizes: dict, steps: int, units: Units | None = None) -> list[dict]:
    """Every pruning step: {step, epoch (fractional), density (fraction), keep}; steps that
    would remove nothing are left out.  `units` (channel or n:m granularity) replace the
    weight `sizes`."""
    granular = units is not None and units.granularity.kind != WEIGHT
    pool = units.pool if granular else check_target(cfg, sizes)
    start, end = gradual_window(cfg.values)
    t0, t1 = start * steps, end * steps
    if cfg.prune_schedule == "one_shot":
        candidates = [t0]
    else:
        candidates = sorted(set(range(t0, t1, cfg.prune_every_steps)) | {t1})
    events, kept = [], (units.total if granular else sum(sizes.values()))
    for t in candidates:
        p = 1.0 if t1 == t0 else (t - t0) / (t1 - t0)
        progress = 1.0 if t == candidates[-1] else sparsity_progress(cfg.prune_schedule, p)
        if granular and units.granularity.kind == NM:
            n, m = units.granularity.n, units.granularity.m
            keep = nm_keep(units, m - round_half_up((m - n) * progress))
            density = keep.kept / units.total
        else:
            final_sparsity = 1.0 - cfg.target_sparsity / 100.0
            density = 1.0 - final_sparsity * progress
            if t == candidates[-1]:
                density = cfg.target_sparsity / 100.0       # exactly the target at the end
            keep = keep_for(units, cfg.prune_scope, density) if granular else \
                keep_at(sizes, pool, cfg.prune_scope, density)
        if keep.kept < kept:
            events.append({"step": t, "epoch": t / steps, "density": density, "keep": keep})
            kept = keep.kept
    return events


def run_gradual(ctx, model) -> dict:
    """Train while pruning on the schedule; returns the summary fields."""
    cfg, state, log = ctx.cfg, ctx.state, ctx.logger
    sizes = layer_sizes_of(model)
    units = units_of(cfg, model)
    steps = len(ctx.loaders.train)
    events = pruning_events(cfg, sizes, steps, units)
    by_step = {e["step"]: e for e in events}
    layers = prunable_layers(model)
    # the layers whose masks change (channel pruning also clears consumers' columns)
    pool_layers = {n: layers[n] for n in units.pool} if units.granularity.kind != CHANNEL \
        else layers
    seen_collapse: set = set(collapsed_layers(model))
    spec = ctx.model_spec
    positions = output_positions(model, (spec.channels, spec.image_size, spec.image_size))

    def prune(event: dict) -> None:
        keep = event["keep"]
        set_masks(model, select_masks(model, units, magnitudes(model), keep))
        flops = count_flops(model, (), positions)
        log.scalars({"gradual/density_pct": density_pct(model),
                     "gradual/flops_pct": flops["flops_pct"],
                     "gradual/theoretical_speedup": flops["theoretical_speedup"]},
                    event["step"])
        log.info(f"gradual pruning after step {event['step']} (epoch {event['epoch']:.2f}): "
                 f"kept {keep.kept:,} {units.unit}, {density_text(density_pct(model))}, "
                 f"FLOPs {flops['flops_pct']:.2f} %")
        new = set(collapsed_layers(model)) - seen_collapse
        if new:
            seen_collapse.update(report_collapse(ctx, model, f"at step {event['step']}"))

    def after_step(step: int) -> None:
        if step in by_step:
            prune(by_step[step])

    # in every step: pruned weights back to exactly zero (momentum or weight decay would
    # revive them); before the first pruning event the masks are all ones, an identity
    keep_zero = InStepHooks(after_update=(partial(apply_masks_to_weights, pool_layers),))

    started = "train" in state.completed or (
        state.resume is not None and state.resume["phase_key"] == "train")
    if 0 in by_step and not started:
        prune(by_step[0])                                 # one_shot at epoch 0
    result = run_phase(ctx, model, training_phase(cfg), after_step=after_step,
                       hooks=keep_zero)
    density, kept = ("channel_density_pct", "channels_kept") if units.unit == "channels" \
        else ("density_pct", "kept")
    write_csv(ctx.path("pruning_steps.csv"), ["step", "epoch", density, kept],
              [{"step": e["step"], "epoch": round(e["epoch"], 4),
                density: 100.0 * e["keep"].kept / units.total,
                kept: e["keep"].kept} for e in events])
    ctx.save_model(model, "final.pt")
    collapsed = report_collapse(ctx, model, "at the end of gradual pruning") \
        if collapsed_layers(model) else []
    start, end = gradual_window(cfg.values)
    granular = {}
    if units.granularity.kind == CHANNEL:
        granular["channel_density_pct"] = channel_density_pct(units, get_masks(model))
    return {"prune_schedule": cfg.prune_schedule, "prune_start_step": start * steps,
            "prune_end_step": end * steps, "prune_events": len(events),
            "target_density_pct": cfg.target_sparsity, "density_pct": density_pct(model),
            **granular,
            "layer_density_pct": layer_densities(model), "collapsed_layers": collapsed,
            **{k: result[k] for k in ("train_acc", "train_loss", "val_acc", "test_acc",
                                      "best_val_acc", "test_acc_at_best_val",
                                      "best_val_epoch")}}


def plan_gradual(cfg, splits, model) -> list[str]:
    sizes = layer_sizes_of(model)
    units = units_of(cfg, model)
    total, unit = units.total, units.unit
    steps = steps_per_epoch(splits.num_train, cfg.batch_size)
    events = pruning_events(cfg, sizes, steps, units)
    start, end = gradual_window(cfg.values)
    granular = "" if units.granularity.kind == WEIGHT else \
        f", granularity {units.granularity.describe()}"
    head = (f"gradual magnitude pruning ({cfg.prune_schedule}, {cfg.prune_scope} scope"
            f"{granular}): {len(events)} pruning steps")
    if cfg.prune_schedule == "one_shot":
        head += f", once after step {start * steps} (epoch {start})"
    else:
        head += (f" from step {start * steps} (epoch {start}) to step {end * steps} "
                 f"(epoch {end}), every {cfg.prune_every_steps} steps")
    lines = [head]
    shown = events if len(events) <= 8 else events[:5] + [None] + events[-2:]
    for e in shown:
        if e is None:
            lines.append("  ...")
            continue
        group = "" if e["keep"].per_group is None else \
            f", {e['keep'].per_group}:{units.granularity.m}"
        lines.append(f"  after step {e['step']:>6} (epoch {e['epoch']:7.2f}): keep exactly "
                     f"{e['keep'].kept:,} of {total:,} {unit} "
                     f"({density_text(100.0 * e['keep'].kept / total)}{group})")
    if events:
        positions = output_positions(model, (splits.channels, splits.image_size,
                                             splits.image_size))
        record = planned_flops(units, events[-1]["keep"], positions, cfg.prune_scope)
        lines.append(f"  at the end: {flops_text(record)}" if record is not None else
                     "  FLOPs at the end: decided by the global ranking (summary.json)")
    return lines + [line for line in plan_training(cfg, splits, model)
                    if not line.startswith("density")]


def prepare_gradual(cfg, splits, model, logger) -> None:
    """Check prune_ignore and the target before anything is written."""
    units = units_of(cfg, model)
    if units.granularity.kind == WEIGHT:
        check_target(cfg, layer_sizes_of(model))
    elif units.granularity.kind == CHANNEL:
        try:
            keep_for(units, cfg.prune_scope, cfg.target_sparsity / 100.0)
        except ValueError as exc:
            raise ConfigError(f"{cfg.where('target_sparsity')}: {exc}") from None


GRADUAL = Algorithm("gradual", run_gradual, plan_gradual, prepare=prepare_gradual)
