"""Iterative magnitude pruning (REFERENCE.md §4): `imp` (= `imp_wr`), `imp_wr`, `imp_lrr`,
`imp_ft` — the `Algorithm`: train all levels (pruners/imp/levels.py) with their analyses
(analysis.py), then what follows the last level (finish.py); the dry-run plan, the checks made
before anything is written, whether a finished run covers a config, and `replicates: M`
(packed.py).

Each level lasts `iter_period` epochs and is a resumable phase.  Records: levels.csv (with the
training examples and iterations of every level), checkpoints/level_XX.pt (masks, start and
trained weights) with level_XX.json (density and analyses), checkpoints/rewind.pt, ticket.pt
(final masks + the weights the final level started from), controls.csv, stability.csv,
analysis/.
"""
from __future__ import annotations

import os

from models.flops import output_positions
from pruners import Algorithm
from pruners.imp.analysis import analysis_spec, ensure_level_analysis
from pruners.imp.finish import finish_imp
from pruners.imp.level_files import level_path, read_info
from pruners.imp.levels import begin_level, end_level
from pruners.imp.packed import run_imp_packed
from pruners.imp.plan import (control_levels, describe, input_shape, level_key, plan_for,
                              stability_levels)
from pruners.imp.prac import PracRun
from utils.errors import ConfigError, DamagedFileError
from utils.phases import run_phase


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


IMP = Algorithm("imp", run_imp, plan_imp, prepare=prepare_imp, covers=covers_imp,
                run_packed=run_imp_packed)
