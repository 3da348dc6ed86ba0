"""How many training epochs a run has in all — every phase, level, control, sanity check and
stability copy — for the run-wide progress line and its ETA (utils/progress.py)."""
from __future__ import annotations

from pruners.registry import (AT_INIT_ALGOS, DURING_TRAINING_ALGOS, FINETUNE_ALGOS,
                              IMP_ALGOS, SCORE_ALGOS)


def planned_epochs(cfg, splits, model) -> int | None:
    """Epochs the run trains over all its phases (an upper bound where the run decides at
    run time, e.g. adaptive IMP until a target), or None when unknown."""
    algo = cfg.algo_name
    if algo in IMP_ALGOS:
        return _imp_epochs(cfg, splits, model)
    if algo in FINETUNE_ALGOS:
        search = cfg.epochs if algo in SCORE_ALGOS else 0
        if cfg.skip_fine_tune:
            return search
        sanity = algo in SCORE_ALGOS and not cfg.skip_sanity_checks   # pruners/search/finetune.py
        return search + cfg.epochs * (3 if sanity else 1)
    if algo in AT_INIT_ALGOS:
        return cfg.epochs * (1 + len(cfg.at_init_controls or []))
    if algo == "training" or algo in DURING_TRAINING_ALGOS:
        return cfg.epochs
    return None


def _imp_epochs(cfg, splits, model) -> int:
    """Level 0 in full; later levels, their controls and stability copies from the rewind
    epoch on (IMP-WR) or in full."""
    from pruners.imp.plan import control_levels, plan_for, stability_levels

    plan = plan_for(cfg, splits, model)
    later = plan.epochs - (plan.rewind_step // plan.steps_per_epoch
                           if plan.variant == "wr" else 0)

    def length(level: int) -> int:
        return plan.epochs if level == 0 else later

    total = sum(length(level) for level in range(plan.levels))
    trained_controls = [c for c in cfg.imp_controls or [] if c != "supermask"]
    total += sum(length(level) * len(trained_controls) for level in control_levels(cfg, plan))
    total += sum(length(level) * cfg.stability_copies for level in stability_levels(cfg, plan))
    return total
