"""Iterative magnitude pruning (REFERENCE.md §4): `imp` (= `imp_wr`), `imp_wr`, `imp_lrr`,
`imp_ft`.

Level 0 trains the dense network.  Every later level keeps the weights planned in
pruners/imp_plan.py — the largest |w| of the previous level's trained weights among the
survivors — and then
  IMP-WR  sets the survivors (and BatchNorm statistics) to their values at the rewind point,
          iteration `imp_rewind_iter` of level 0, and continues the schedule from there;
  IMP-LRR keeps the trained weights and replays the whole learning-rate schedule;
  IMP-FT  keeps the trained weights and trains at the schedule's final learning rate.
Each level lasts `iter_period` epochs and is a resumable phase.  With `data_subset: prac` the
levels after level 0 train on a pruning-aware critical subset of the training data
(pruners/imp_prac.py).  Records: levels.csv (with the training examples and iterations of
every level),
checkpoints/level_XX.pt (masks, start and trained weights) with level_XX.json (density and
analyses), checkpoints/rewind.pt, ticket.pt (final masks + the weights the final level started
from), controls.csv, stability.csv, analysis/.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

from data.loader import steps_per_epoch
from models.flops import count_flops, output_positions
from models.granularity import channel_density_pct, select_masks, units_of
from models.masks import (bias_magnitude_masks, layer_density_report, magnitudes,
                          prunable_layers, pruning_pool, set_masks)
from pruners import Algorithm
from pruners.imp_analysis import (analysis_spec, barrier_matrix, ensure_level_analysis,
                                  info_path, read_info, run_stability)
from pruners.imp_plan import (ImpPlan, control_levels, describe, make_plan,
                              stability_levels)
from pruners.imp_prac import PracRun
from utils.checkpoint import load_checkpoint, save_checkpoint, write_json
from utils.errors import ConfigError, DamagedFileError
from utils.logging import write_csv
from utils.phases import PhaseSpec, run_phase
from utils.schedules import LRSchedule, optimizer_from_config, schedule_from_config
from utils.step import NO_HOOKS, InStepHooks

LEVEL_COLUMNS = ["level", "density_pct", "sparsity_pct", "test_acc", "val_acc",
                 "best_val_acc", "test_acc_at_best_val", "epochs", "seconds", "matching",
                 "flops", "flops_pct", "theoretical_speedup"]
# columns added when the run records them
OPTIONAL_COLUMNS = ["channel_density_pct", "train_examples", "iterations", "subset_hard",
                    "subset_disagree", "prune_fraction", "predicted_loss_increase",
                    "measured_loss_increase", "grad_norm", "grad_norm_rewind", "proj_dist",
                    "proj_dist_rel", "barrier_test", "barrier_train", "stability_barrier",
                    "hessian_trace"]


def layer_sizes(model) -> dict:
    return {name: layer.weight.numel() for name, layer in prunable_layers(model).items()}


def plan_for(cfg, splits, model) -> ImpPlan:
    return make_plan(cfg, units_of(cfg, model), steps_per_epoch(splits.num_train,
                                                                cfg.batch_size))


def input_shape(spec) -> tuple:
    """(channels, height, width) of one input image of a run (InputSpec or splits)."""
    return (spec.channels, spec.image_size, spec.image_size)


def level_key(level: int) -> str:
    return f"level_{level:02d}"


def level_path(ctx, level: int) -> str:
    return ctx.path("checkpoints", f"level_{level:02d}.pt")


def level_spec(cfg, plan: ImpPlan, level: int, key: str | None = None,
               phase: str = "level") -> PhaseSpec:
    """The training of one level (or of a control or stability run at that level)."""
    schedule = schedule_from_config(cfg, epochs=plan.epochs)
    start = 0
    if level > 0 and plan.variant == "wr":
        start = plan.rewind_step
    if level > 0 and plan.variant == "ft":
        schedule = LRSchedule("constant_lr", schedule.lr_at(plan.epochs - 1), plan.epochs)
    return PhaseSpec(key=key or level_key(level), phase=phase, epochs=plan.epochs,
                     optimizer=optimizer_from_config(cfg), schedule=schedule, level=level,
                     start_step=start)


# --------------------------------------------------------------------------- levels


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


def _report_level(ctx, model, plan: ImpPlan, level: int) -> None:
    """levels.csv and the level's TensorBoard points and log line."""
    rows = level_rows(ctx, plan)
    write_csv(ctx.path("levels.csv"), level_columns(rows), rows)
    row = rows[level]
    log = ctx.logger
    log.scalars({"imp/test_acc": row["test_acc"], "imp/val_acc": row["val_acc"],
                 "imp/best_val_acc": row["best_val_acc"],
                 "imp/density_pct": row["density_pct"], "imp/flops_pct": row["flops_pct"],
                 "imp/theoretical_speedup": row["theoretical_speedup"],
                 **{f"imp/{k}": row[k] for k in ("channel_density_pct", "train_examples",
                                                 "iterations") if row.get(k) is not None}},
                level)
    log.scalars({f"imp_layer_density/{r['layer']}": r["density_pct"]
                 for r in layer_density_report(model)}, level)
    channels = "" if row.get("channel_density_pct") is None else \
        f" (channels {row['channel_density_pct']:.2f} %)"
    log.info(f"level {level}: density {row['density_pct']:.3f} % / sparsity "
             f"{row['sparsity_pct']:.3f} %{channels}, FLOPs {row['flops_pct']:.2f} % "
             f"(×{row['theoretical_speedup']:.2f})  test {row['test_acc']:.2f} %  val "
             f"{_pct(row['val_acc'])} %  {row['matching']}"
             + (f"  ({row['iterations']:,} iteration(s) on {row['train_examples']:,} "
                f"examples)" if "iterations" in row else ""))


def level_rows(ctx, plan: ImpPlan, stability: list[dict] = ()) -> list[dict]:
    """One levels.csv row per finished level, from the run state and the level JSON files."""
    rows = []
    dense = None
    by_level = {s["level"]: s["barrier_test"] for s in stability}
    for level in range(plan.levels):
        result = ctx.state.completed.get(level_key(level))
        info = read_info(ctx, level)
        if result is None or "kept" not in info:
            break
        seconds = sum(r["seconds"] for r in ctx.state.rows if r.get("key") == level_key(level))
        if level == 0:
            dense = result["test_acc"]
            matching = "dense"
        else:
            ok = result["test_acc"] >= dense - ctx.cfg.matching_tolerance
            matching = "yes" if ok else "no"
        density = info["density_pct"]
        flops = info.get("flops") or {}
        row = {"level": level, "density_pct": density, "sparsity_pct": 100.0 - density,
               "flops": flops.get("flops"), "flops_pct": flops.get("flops_pct"),
               "theoretical_speedup": flops.get("theoretical_speedup"),
               "test_acc": result["test_acc"], "val_acc": result["val_acc"],
               "best_val_acc": result["best_val_acc"],
               "test_acc_at_best_val": result["test_acc_at_best_val"],
               "epochs": result["epochs"], "seconds": seconds, "matching": matching}
        row.update(info.get("data") or {})
        if "channel_density_pct" in info:
            row["channel_density_pct"] = info["channel_density_pct"]
        row.update(info.get("prune") or {})
        row.update(info.get("analysis") or {})
        if level in by_level:
            row["stability_barrier"] = by_level[level]
        rows.append(row)
    return rows


def level_columns(rows: list[dict]) -> list[str]:
    """The fixed levels.csv columns, then the optional ones some row has."""
    present = {key for row in rows for key in row}
    extra = [c for c in OPTIONAL_COLUMNS if c in present]
    hessian = sorted((c for c in present if c.startswith("hessian_top")),
                     key=lambda c: int(c[len("hessian_top"):]))
    return LEVEL_COLUMNS + extra + hessian


def run_imp(ctx, model) -> dict:
    """Train all levels (resuming finished ones), their analyses, the stability copies and
    controls, and write the ticket."""
    cfg = ctx.cfg
    plan = plan_for(cfg, ctx.splits, model)
    for line in describe(plan, output_positions(model, input_shape(ctx.model_spec))) \
            + prac_lines(cfg):
        ctx.logger.info(line)
    prac = PracRun(ctx, plan) if cfg.data_subset == "prac" else None
    level = 0
    while True:
        if not os.path.isfile(level_path(ctx, level)):
            begun = begin_level(ctx, model, plan, level, prac)
            if prac is not None:
                prac.train_on(begun.subset)
            try:
                result = run_phase(ctx, model, begun.spec, after_step=begun.after_step,
                                   hooks=begun.hooks)
            finally:
                if prac is not None:
                    prac.train_on(None)
            end_level(ctx, model, plan, begun, result, prac)
        elif level_key(level) not in ctx.state.completed:
            raise DamagedFileError(ctx.last_path, f"older than {level_path(ctx, level)} (it "
                                                  f"does not record level {level} as trained)")
        ensure_level_analysis(ctx, model, level)
        if plan.is_last(level, read_info(ctx, level)["kept"]):
            break
        level += 1
    return finish_imp(ctx, model, plan, level)


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
    _report_level(ctx, model, plan, begun.level)


def finish_imp(ctx, model, plan: ImpPlan, last: int) -> dict:
    """After the last level: the barrier matrix, stability copies, controls, levels.csv,
    ticket.pt and final.pt; returns the summary fields."""
    from pruners.imp_controls import run_controls

    cfg = ctx.cfg
    barrier_matrix(ctx, model, last + 1)
    stability = run_stability(ctx, model, plan, stability_levels(cfg, plan, last))
    controls = run_controls(ctx, model, plan, control_levels(cfg, plan, last))
    final = load_checkpoint(level_path(ctx, last), ctx.device)
    model.load_state_dict(final["trained"])
    rows = level_rows(ctx, plan, stability)
    write_csv(ctx.path("levels.csv"), level_columns(rows), rows)
    _save_ticket(ctx, plan, final, rows[-1]["density_pct"])
    ctx.save_model(model, "final.pt")
    ctx.logger.info("\n" + format_levels(rows, controls))
    return _summary_fields(ctx, rows, controls, stability, plan,
                           ctx.state.completed[level_key(last)])


def _save_ticket(ctx, plan: ImpPlan, final: dict, density: float) -> None:
    """ticket.pt: the final masks and the weights the final level started from."""
    spec = ctx.model_spec
    start = final["start"]
    bias_masks = {k[:-len(".bias_mask")]: v for k, v in start.items() if k.endswith("bias_mask")}
    save_checkpoint({"masks": final["masks"], "bias_masks": bias_masks, "weights": start,
                     "level": final["level"], "density_pct": density,
                     "variant": plan.variant, "arch": ctx.cfg.arch,
                     "input": {"num_classes": spec.num_classes, "channels": spec.channels,
                               "image_size": spec.image_size},
                     "config": ctx.cfg.yaml_values()}, ctx.path("ticket.pt"))


def format_levels(rows: list[dict], controls: list[dict]) -> str:
    """The end-of-run table: one line per level, matching flags, then the controls."""
    counted = all("iterations" in r for r in rows)
    grads = any(r.get("grad_norm") is not None for r in rows)
    lines = ["IMP levels (matching: test accuracy within the tolerance of the dense level 0)",
             f"{'level':>5} {'density %':>10} {'sparsity %':>11} {'test acc':>9} "
             f"{'val acc':>8} {'best val':>9}  {'matching':<8}"
             + (f" {'examples':>9} {'iterations':>10}" if counted else "")
             + (f" {'grad norm':>10}" if grads else "")]
    for r in rows:
        lines.append(f"{r['level']:>5} {r['density_pct']:>10.3f} {r['sparsity_pct']:>11.3f} "
                     f"{_pct(r['test_acc']):>9} {_pct(r['val_acc']):>8} "
                     f"{_pct(r['best_val_acc']):>9}  {r['matching']:<8}"
                     + (f" {r['train_examples']:>9,} {r['iterations']:>10,}" if counted else "")
                     + (f" {_num(r.get('grad_norm')):>10}" if grads else ""))
    if counted:
        lines.append(f"training iterations over all levels: "
                     f"{sum(r['iterations'] for r in rows):,}")
    for c in controls:
        lines.append(f"control at level {c['level']} ({c['density_pct']:.3f} %): "
                     f"{c['control']:<15} test {_pct(c['test_acc'])} %  "
                     f"(ticket {_pct(c['ticket_test_acc'])} %)"
                     + (f"  grad norm {_num(c['grad_norm'])} (ticket "
                        f"{_num(c.get('ticket_grad_norm'))})" if "grad_norm" in c else ""))
    return "\n".join(lines)


def _num(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.4g}"


def _pct(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.2f}"


def _summary_fields(ctx, rows, controls, stability, plan: ImpPlan, final: dict) -> dict:
    cfg = ctx.cfg
    last = rows[-1]
    matching = [r for r in rows[1:] if r["matching"] == "yes"]
    fields = {"test_acc": last["test_acc"], "val_acc": last["val_acc"],
            "train_acc": final["train_acc"], "train_loss": final["train_loss"],
            "best_val_acc": last["best_val_acc"],
            "test_acc_at_best_val": last["test_acc_at_best_val"],
            "best_val_epoch": final["best_val_epoch"],
            "density_pct": last["density_pct"], "variant": plan.variant,
            "levels": len(rows), "dense_test_acc": rows[0]["test_acc"],
            "lowest_matching_density_pct": min((r["density_pct"] for r in matching),
                                               default=None),
            "level_test_acc": [r["test_acc"] for r in rows],
            "level_density_pct": [r["density_pct"] for r in rows],
            "level_flops_pct": [r["flops_pct"] for r in rows],
            **({"channel_density_pct": last["channel_density_pct"],
                "level_channel_density_pct": [r.get("channel_density_pct") for r in rows]}
               if "channel_density_pct" in last else {}),
            "controls": [{k: c[k] for k in ("level", "control", "test_acc", "grad_norm")
                          if k in c} for c in controls],
            "analysis": {"spec": analysis_spec(cfg), "lmc_matrix": cfg.lmc_matrix,
                         "stability": [{"level": s["level"], "copies": s["copies"],
                                        "barrier_test": s["barrier_test"]}
                                       for s in stability]},
            "data_subset": cfg.data_subset}
    if all("iterations" in r for r in rows):
        fields.update(level_iterations=[r["iterations"] for r in rows],
                      level_train_examples=[r["train_examples"] for r in rows],
                      total_iterations=sum(r["iterations"] for r in rows))
    if cfg.grad_flow:
        fields["level_grad_norm"] = [r.get("grad_norm") for r in rows]
    return fields


def prac_lines(cfg) -> list[str]:
    """The plan lines that describe the training data of the levels."""
    if cfg.data_subset != "prac":
        return []
    rule = (f"forgotten more than {cfg.prac_threshold} time(s) or never learned"
            if cfg.prac_rule == "threshold" else
            f"the ⌊N·{1 - cfg.prac_data_rate:g}^L⌋ most forgotten")
    epochs = ("epochs scaled by the subset's share" if cfg.prac_epochs == "scaled"
              else "the full number of epochs")
    when = ("re-selected before every level" if cfg.prac_refresh
            else "selected once, before level 1")
    return [(f"data: level 0 on every training example; later levels on a PrAC subset "
             f"({rule}, plus the examples where the dense network and the pruned projection "
             f"disagree), {when}, {epochs}; controls and stability copies on every example")]


def plan_imp(cfg, splits, model) -> list[str]:
    plan = plan_for(cfg, splits, model)
    lines = describe(plan, output_positions(model, input_shape(splits))) + prac_lines(cfg)
    for what, levels in (("controls " + ", ".join(cfg.imp_controls or []),
                          control_levels(cfg, plan)),
                         (f"{cfg.stability_copies} stability copies",
                          stability_levels(cfg, plan))):
        if levels:
            lines.append(f"{what} at level(s) {', '.join(map(str, levels))}")
    analyses = [k for k in ("lmc_successive", "lmc_matrix", "hessian_trace", "grad_flow")
                if getattr(cfg, k)]
    if cfg.hessian_topk:
        analyses.append(f"hessian_topk {cfg.hessian_topk}")
    if cfg.landscape_grid:
        analyses.append(f"landscape_grid {cfg.landscape_grid}")
    if analyses:
        lines.append("analyses: " + ", ".join(analyses))
    return lines


def prepare_imp(cfg, splits, model, logger) -> None:
    """Validate the plan (prune_ignore names, control and stability levels) before anything
    is written."""
    plan = plan_for(cfg, splits, model)
    control_levels(cfg, plan)
    stability_levels(cfg, plan)
    if cfg.data_subset == "prac":
        from data.splits import ImageSplits

        if not isinstance(splits, ImageSplits):
            raise ConfigError(f"{cfg.where('data_subset')}: prac needs a dataset held on the "
                              f"training device (digits, MNIST, CIFAR10, CIFAR100, "
                              f"synthetic); {cfg.dataset} streams from files")


def covers_imp(summary: dict, cfg, splits, model) -> bool:
    """A finished run covers this config if it has the planned levels, every requested
    control and stability level, and its analyses were made with these settings (else the
    run is extended in place)."""
    plan = plan_for(cfg, splits, model)
    levels = summary.get("levels", 0)
    if plan.level_count is not None and levels < plan.level_count:
        return False
    last = levels - 1
    done = {(c["level"], c["control"]) for c in summary.get("controls") or []}
    wanted = {(level, name) for level in control_levels(cfg, plan, last)
              for name in cfg.imp_controls or []}
    analysis = summary.get("analysis") or {}
    stable = {s["level"] for s in analysis.get("stability", [])
              if s["copies"] >= cfg.stability_copies}
    return (wanted <= done and set(stability_levels(cfg, plan, last)) <= stable
            and analysis.get("spec") == analysis_spec(cfg)
            and (analysis.get("lmc_matrix") or not cfg.lmc_matrix))


def run_imp_packed(ctxs, models, logger) -> list[dict]:
    """`replicates: M` (pruners/imp_packed.py)."""
    from pruners.imp_packed import run_imp_packed as run

    return run(ctxs, models, logger)


IMP = Algorithm("imp", run_imp, plan_imp, prepare=prepare_imp, covers=covers_imp,
                run_packed=run_imp_packed)
