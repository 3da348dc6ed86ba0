"""One IMP level (REFERENCE.md §4): prune the previous level's trained network, set the start
weights, and after training record the level.

Level 0 trains the dense network.  Every later level keeps the weights planned in
pruners/imp/plan.py — the largest |w| of the previous level's trained weights among the
survivors — and then
  IMP-WR  sets the survivors (and BatchNorm statistics) to their values at the rewind point,
          iteration `imp_rewind_iter` of level 0, and continues the schedule from there;
  IMP-LRR keeps the trained weights and replays the whole learning-rate schedule;
  IMP-FT  keeps the trained weights and trains at the schedule's final learning rate.
With `data_subset: prac` the levels after level 0 train on a pruning-aware critical subset of
the training data (pruners/imp/prac.py).  A recorded level is checkpoints/level_XX.pt and
level_XX.json (pruners/imp/level_files.py), a levels.csv row, TensorBoard points and a log
line (pruners/imp/level_report.py).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from models.flops import count_flops
from models.granularity import channel_density_pct, select_masks
from models.masks import bias_magnitude_masks, magnitudes, prunable_layers, pruning_pool, set_masks
from pruners.imp.level_files import info_path, level_path, read_info
from pruners.imp.level_report import report_level
from pruners.imp.plan import ImpPlan, input_shape, level_key, level_spec
from pruners.imp.prac import PracRun
from utils.checkpoint import load_checkpoint, save_checkpoint, write_json
from utils.phases import PhaseSpec
from utils.step import NO_HOOKS, InStepHooks


def _clone_state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _start_level0(ctx, model, plan: ImpPlan):
    """Level 0 starts from the initial weights; returns the after_step hook that saves the
    rewind point (WR)."""
    init_path = ctx.path("checkpoints", "init.pt")
    if os.path.isfile(init_path):
        model.load_state_dict(load_checkpoint(init_path, ctx.device)["model"])
    rewind_path = ctx.path("checkpoints", "rewind.pt")
    if plan.variant != "wr":
        return None
    if plan.rewind_step == 0:
        save_checkpoint({"model": model.state_dict(), "step": 0}, rewind_path)
        return None

    def capture(step: int) -> None:
        if step == plan.rewind_step:
            save_checkpoint({"model": model.state_dict(), "step": step}, rewind_path)
    return capture


def _prune(ctx, model, plan: ImpPlan, level: int) -> tuple[dict, dict, dict]:
    """Masks of `level` from the weights the model holds (the previous level's trained ones),
    bias masks, and what the adaptive rule decided (if on)."""
    cfg = ctx.cfg
    pool = pruning_pool(model, plan.ignore)
    info: dict = {}
    if plan.adaptive:
        from analysis.adaptive import choose_fraction

        goal = plan.goal
        floor = None if goal is None else (goal.layer_keep if plan.scope == "local"
                                           else goal.pool_keep)
        choice = choose_fraction(model, pool, ctx.loaders.train_eval,
                                 batches=cfg.hessian_batches, scope=plan.scope,
                                 low=cfg.min_prune_rate, high=cfg.max_prune_rate,
                                 epsilon=cfg.adaptive_epsilon, floor=floor)
        masks, fraction = choice["masks"], choice["fraction"]
        info = {"prune_fraction": fraction, "predicted_loss_increase": choice["predicted"],
                "measured_loss_increase": choice["measured"]}
        ctx.logger.info(f"level {level}: adaptive fraction {fraction:.4f} (predicted loss "
                        f"increase {choice['predicted']:.4g}, measured "
                        f"{choice['measured']:.4g}, ε {cfg.adaptive_epsilon:g})")
    else:
        masks = select_masks(model, plan.units, magnitudes(model), plan.targets[level])
        fraction = plan.prune_rate
    bias_masks = {}
    if cfg.prune_bias:
        bias_masks = bias_magnitude_masks(pool, scope=plan.scope, fraction=fraction)
    return masks, bias_masks, info


def _start_level(ctx, model, plan: ImpPlan, level: int,
                 prac: PracRun | None = None) -> tuple[dict, dict | None]:
    """Prune the previous level's trained network and set the level's start weights;
    returns the adaptive rule's record (empty for fixed rates) and, with PrAC, the level's
    training subset (chosen from the previous level before it is rewound)."""
    previous = load_checkpoint(level_path(ctx, level - 1), ctx.device)
    model.load_state_dict(previous["trained"])
    masks, bias_masks, info = _prune(ctx, model, plan, level)
    subset = None
    if prac is not None:
        subset = prac.choose(model, level, masks, bias_masks, level_path(ctx, 0))
    if plan.variant == "wr":
        rewind_path = ctx.path("checkpoints", "rewind.pt")
        if not os.path.isfile(rewind_path):
            raise RuntimeError(f"{rewind_path} is missing: the rewind point of level 0 was "
                               f"not saved; rerun with --force")
        rewind = load_checkpoint(rewind_path, ctx.device)["model"]
        keep_masks = {k: v for k, v in model.state_dict().items()
                      if k.endswith("mask")}        # earlier levels' masks
        model.load_state_dict({**rewind, **keep_masks})
    set_masks(model, masks)
    layers = prunable_layers(model)
    for name, mask in bias_masks.items():
        layers[name].set_bias_mask(mask)
    return info, subset


def _finish_level(ctx, model, plan: ImpPlan, level: int, start: dict, prune: dict,
                  result: dict, data: dict) -> int:
    """Write level_XX.json (density, pruning record, training data) and
    checkpoints/level_XX.pt; returns the prunable weights kept."""
    masks = {n: layer.mask.detach().clone() for n, layer in prunable_layers(model).items()}
    kept = sum(int(m.count_nonzero()) for m in masks.values())
    density = 100.0 * kept / plan.total
    info = read_info(ctx, level)
    info.update(level=level, kept=kept, density_pct=density, prune=prune, data=data,
                flops=count_flops(model, input_shape(ctx.model_spec)))
    if plan.unit == "channels":
        info["channel_density_pct"] = channel_density_pct(plan.units, masks)
    write_json(info_path(ctx, level), info)
    save_checkpoint({"level": level, "density_pct": density, "masks": masks, "start": start,
                     "trained": model.state_dict(), "result": result},
                    level_path(ctx, level))
    return kept


@dataclass
class BegunLevel:
    """A level set up for training: its number, the rewind-capture hook (level 0 of IMP-WR),
    the pruning record, the start weights, its phase, the training subset (None: every
    example), the in-step hooks (PrAC statistics) and the record of its training data."""

    level: int
    after_step: Callable[[int], None] | None
    prune: dict
    start: dict
    spec: PhaseSpec
    subset: object = None
    hooks: InStepHooks = NO_HOOKS
    data: dict | None = None


def begin_level(ctx, model, plan: ImpPlan, level: int,
                prac: PracRun | None = None) -> BegunLevel:
    """Prune (levels > 0) and set the level's start weights in `model`; with PrAC choose the
    level's training subset and prepare its statistics."""
    after_step, prune, chosen = None, {}, None
    if level == 0:
        after_step = _start_level0(ctx, model, plan)
    else:
        prune, chosen = _start_level(ctx, model, plan, level, prac)
    spec = level_spec(ctx.cfg, plan, level)
    examples = ctx.splits.num_train
    data: dict = {"train_examples": examples}
    subset, hooks = None, NO_HOOKS
    if prac is not None:
        prac.begin(level, level_key(level))
        hooks = prac.level_hooks(level)
        if chosen is not None:
            subset, examples = chosen["indices"], len(chosen["indices"])
            spec = prac.phase(spec, examples)
            data = {"train_examples": examples, "subset_hard": chosen["hard"],
                    "subset_disagree": chosen["disagree"]}
    return BegunLevel(level, after_step, prune, _clone_state(model), spec, subset, hooks,
                      data)


def end_level(ctx, model, plan: ImpPlan, begun: BegunLevel, result: dict,
              prac: PracRun | None = None) -> None:
    """Record a trained level: its PrAC statistics, level_XX.json / .pt (with the training
    examples and the iterations it ran), levels.csv, TensorBoard, log line."""
    if prac is not None:
        prac.end(begun.level)
    data = dict(begun.data or {}, iterations=result["step"] - begun.spec.start_step)
    _finish_level(ctx, model, plan, begun.level, begun.start, begun.prune, result, data)
    report_level(ctx, model, plan, begun.level)
