"""IMP for `replicates: M`: the M copies' levels are trained packed, each copy pruned by its
own trained weights and rewound to its own rewind point.

Level by level: every copy that has not finished the level is pruned and set to its start
weights exactly as `pruners.imp.run.run_imp` does for one run; those copies train the level
together (`utils.packed_phase`); each copy then records the level in its own run directory
and runs its per-level analyses.  After the last level each copy, one at a time, runs what
follows the levels in a single run (barrier matrix, stability copies, controls, ticket).
Every random draw after the levels uses a generator seeded from the copy's own seed, so a
copy's files equal those of the single run with its seed (to float rounding).
"""
from __future__ import annotations

import os

from pruners.imp.analysis import ensure_level_analysis, pending_stability_jobs
from pruners.imp.controls import pending_control_jobs
from pruners.imp.finish import finish_imp
from pruners.imp.level_files import level_path, read_info
from pruners.imp.levels import begin_level, end_level
from pruners.imp.plan import control_levels, describe, level_spec, plan_for, stability_levels
from utils.packed_phase import run_jobs_packed, run_phase_packed


def run_imp_packed(ctxs: list, models: list, logger) -> list[dict]:
    """All levels of every copy, then each copy's controls and ticket; per-copy summary
    fields (as `run_imp` returns them)."""
    plans = [plan_for(ctx.cfg, ctx.splits, model) for ctx, model in zip(ctxs, models)]
    for ctx, plan in zip(ctxs, plans):
        for line in describe(plan):
            ctx.logger.info(line)
    level = 0
    while True:
        todo = [k for k, ctx in enumerate(ctxs) if not os.path.isfile(level_path(ctx, level))]
        if todo:
            begun = {k: begin_level(ctxs[k], models[k], plans[k], level) for k in todo}
            spec = level_spec(ctxs[todo[0]].cfg, plans[todo[0]], level)
            results = run_phase_packed([ctxs[k] for k in todo], [models[k] for k in todo],
                                       spec, after_step=[begun[k].after_step for k in todo],
                                       hook_steps={plans[todo[0]].rewind_step}, logger=logger)
            for k, result in zip(todo, results):
                end_level(ctxs[k], models[k], plans[k], begun[k], result)
        kept = []
        for ctx, model in zip(ctxs, models):
            ensure_level_analysis(ctx, model, level)
            kept.append(read_info(ctx, level)["kept"])
        logger.info(f"level {level}: {kept[0]:,} weights kept"
                    + ("" if len(set(kept)) == 1 else f" (per copy: {kept})"))
        last = {plan.is_last(level, n) for plan, n in zip(plans, kept)}
        if len(last) > 1:
            raise RuntimeError(f"the copies' IMP schedules diverged at level {level} (weights "
                               f"kept per copy: {kept}); run the seeds separately")
        if last.pop():
            break
        level += 1
    last = level
    # the stability copies and controls, in the order finish_imp runs them, trained packed;
    # finish_imp then finds them done and records them
    jobs = []
    for ctx, model, plan in zip(ctxs, models, plans):
        jobs.append(pending_stability_jobs(ctx, model, plan,
                                           stability_levels(ctx.cfg, plan, last))
                    + pending_control_jobs(ctx, model, plan,
                                           control_levels(ctx.cfg, plan, last)))
    run_jobs_packed(ctxs, models, jobs, logger)
    return [finish_imp(ctx, model, plan, last)
            for ctx, model, plan in zip(ctxs, models, plans)]
