"""The schedule of an IMP run: how many levels, how many weights each level keeps, where the
rewind point lies — computed from the config before anything is trained, so --dry-run can
print it and the pruning can execute it with exact counts.

Counting rule: each level removes round(prune_rate × remaining) of the weights still active
in the pruned layers (halves round up) — over all pruned layers together (prune_scope:
global) or in every layer separately (local).  In target mode the last level removes exactly
what is left above the target, so the final density is the target to the weight.  With
`adaptive_prune_rate` the fraction of each level is chosen at run time (analysis/adaptive.py);
the plan then fixes only the number of levels, or the target to stop at.

Granularity (models/granularity.py): with `channel` the counts above are output channels of
the channel-prunable layers (and no layer loses its last one); with `n:m` level 0 is dense and
the later levels keep n_L of every m weights, n_L falling from m to n: one level (n:m at once,
the default) or imp_rounds − 1 levels, n_L = m − ⌈(m − n)·L/(imp_rounds − 1)⌉.

`level_spec` is the training phase of a level (and of a control or stability copy at it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from data.loader import steps_per_epoch
from models.flops import flops_of_counts, flops_text
from models.granularity import NM, Units, nm_keep, planned_flops, units_of
from models.masks import round_half_up
from utils.errors import ConfigError
from utils.phases import PhaseSpec
from utils.schedules import LRSchedule, optimizer_from_config, schedule_from_config

VARIANTS = {"imp": "wr", "imp_wr": "wr", "imp_lrr": "lrr", "imp_ft": "ft"}
VARIANT_NAMES = {"wr": "IMP-WR (weight rewinding)", "lrr": "IMP-LRR (learning-rate rewinding)",
                 "ft": "IMP-FT (fine-tuning)"}
DEFAULT_PRUNE_RATE = 0.2


@dataclass(frozen=True)
class LevelTarget:
    """What one level keeps: `kept` prunable weights in all (dense layers included);
    `pool_keep` in the pruned layers (global scope) or `layer_keep` per layer (local).
    Channel granularity: the counts are channels; n:m: `per_group` is n_L."""

    kept: int
    pool_keep: int
    layer_keep: dict | None
    per_group: int | None = None


@dataclass(frozen=True)
class ImpPlan:
    variant: str                  # wr | lrr | ft
    epochs: int                   # per level (iter_period)
    steps_per_epoch: int
    rewind_step: int              # iteration of level 0 that WR rewinds to
    prune_rate: float
    scope: str
    ignore: tuple
    total: int                    # all prunable weights
    targets: tuple                # LevelTarget per level (adaptive: level 0 only)
    level_count: int | None       # None: adaptive, until the target is reached
    max_levels: int               # an upper bound on the number of levels
    adaptive: bool = False
    goal: LevelTarget | None = None   # target mode: what the final level keeps
    units: Units | None = None        # granularity and the units counted (None: weights)

    @property
    def levels(self) -> int:
        """The number of levels (adaptive target mode: its upper bound)."""
        return self.level_count or self.max_levels

    @property
    def unit(self) -> str:
        """What the targets count: weights or channels."""
        return "weights" if self.units is None else self.units.unit

    @property
    def unit_total(self) -> int:
        """All units the targets count (the prunable weights, or the channels)."""
        return self.total if self.units is None else self.units.total

    def density_pct(self, level: int) -> float:
        """Planned density of `level` in its units (fixed-rate plans; adaptive: level 0)."""
        return 100.0 * self.targets[level].kept / self.unit_total

    def is_last(self, level: int, kept: int) -> bool:
        """Whether `level`, keeping `kept` prunable weights in all, ends the run."""
        if self.level_count is not None:
            return level >= self.level_count - 1
        return kept <= self.goal.kept or level >= self.max_levels - 1


def rewind_iterations(value, steps_per_epoch: int) -> int:
    """imp_rewind_iter → iterations: an int, or '<N>ep' = N × steps per epoch."""
    if isinstance(value, str) and value.endswith("ep"):
        return int(value[:-2]) * steps_per_epoch
    return int(value)


def level_targets(sizes: dict, pool: list, scope: str, rate: float,
                  target_density: float | None, levels: int | None,
                  min_keep: int = 0) -> list[LevelTarget]:
    """Per level: the units (weights, or channels) kept.  Stops after `levels` levels, or
    when the target density (a fraction of all units) is reached.  Every pruned layer keeps
    at least `min_keep` (1 for channels).  Raises ValueError when the rate can make no
    progress or the target lies below that floor."""
    total = sum(sizes.values())
    ignored = total - sum(sizes[n] for n in pool)
    if scope == "global":
        remaining = total - ignored
        floor = min_keep * len(pool)
        goal = None if target_density is None else round_half_up(target_density * total) - ignored
        if goal is not None and goal < floor:
            raise ValueError(f"density {100 * target_density:g} % cannot be reached: every "
                             f"one of the {len(pool)} pruned layers keeps at least {min_keep}")
        out = [LevelTarget(total, remaining, None)]
        while (levels is None and remaining > goal) or (levels is not None and len(out) < levels):
            remove = min(round_half_up(rate * remaining), remaining - floor)
            if goal is not None:
                remove = min(remove, remaining - goal)
            if remove <= 0:
                raise ValueError(f"prune_rate {rate} removes no unit of the remaining "
                                 f"{remaining}")
            remaining -= remove
            out.append(LevelTarget(remaining + ignored, remaining, None))
        return out
    remaining = {n: sizes[n] for n in pool}
    goals = None if target_density is None else {
        n: max(min_keep, round_half_up(target_density * sizes[n])) for n in pool}
    out = [LevelTarget(total, sum(remaining.values()), dict(remaining))]
    while (levels is None and any(remaining[n] > goals[n] for n in pool)) or \
            (levels is not None and len(out) < levels):
        removed = 0
        for n in pool:
            cut = min(round_half_up(rate * remaining[n]), remaining[n] - min_keep)
            if goals is not None:
                cut = min(cut, remaining[n] - goals[n])
            cut = max(cut, 0)
            remaining[n] -= cut
            removed += cut
        if removed <= 0:
            raise ValueError(f"prune_rate {rate} removes no unit of any layer")
        kept = sum(remaining.values())
        out.append(LevelTarget(kept + ignored, kept, dict(remaining)))
    return out


def nm_level_targets(units: Units, levels: int) -> list[LevelTarget]:
    """n:m levels: level 0 dense, level L keeps m − ⌈(m − n)·L/(levels − 1)⌉ of every m
    (exactly n at the last level); ValueError when a level would remove nothing."""
    n, m = units.granularity.n, units.granularity.m
    if levels < 2:
        raise ValueError(f"n:m needs at least 2 levels (dense, then {n}:{m}), got {levels}")
    if levels - 1 > m - n:
        raise ValueError(f"{levels} levels cannot each remove weights: {n}:{m} takes at most "
                         f"{m - n} steps of one weight per group of {m}")
    out = [LevelTarget(units.total, sum(units.sizes[p] for p in units.pool), None)]
    for level in range(1, levels):
        keep = nm_keep(units, m - math.ceil((m - n) * level / (levels - 1)))
        out.append(LevelTarget(keep.kept, keep.pool_keep, keep.layer_keep, keep.per_group))
    return out


def _level_count(cfg, target, nm: bool) -> int | None:
    """Levels fixed by imp_rounds, n:m's default 2, or upstream's epochs // iter_period;
    None in target mode."""
    if cfg.imp_rounds > 0:
        return cfg.imp_rounds
    if nm:
        return 2
    if target is not None:
        return None
    levels = cfg.epochs // cfg.iter_period          # upstream's rule
    if levels < 1:
        raise ConfigError(
            f"{cfg.where('iter_period')}: IMP would run 0 levels (epochs {cfg.epochs} // "
            f"iter_period {cfg.iter_period} = 0, upstream's rule); set imp_rounds "
            f"(levels, e.g. imp_rounds: 20) or target_sparsity (a density in %)")
    return levels


def make_plan(cfg, units: Units, steps_per_epoch: int) -> ImpPlan:
    """The plan for `cfg` on a model with these prunable units (models/granularity.py);
    ConfigError on a config that cannot run (zero levels, both length options, a rewind
    point past level 0, ...)."""
    variant = VARIANTS[cfg.algo_name]
    ignore = tuple(cfg.prune_ignore or ())
    nm = units.granularity.kind == NM
    sizes, pool = units.sizes, units.pool
    rate = DEFAULT_PRUNE_RATE if cfg.prune_rate is None else cfg.prune_rate
    if not 0 < rate < 1:
        raise ConfigError(f"{cfg.where('prune_rate')} must be in (0, 1) for IMP, got {rate}")
    target = None if cfg.target_sparsity is None or nm else cfg.target_sparsity / 100.0
    if cfg.imp_rounds > 0 and target is not None:
        raise ConfigError(f"{cfg.where('imp_rounds')}: give either imp_rounds or "
                          f"target_sparsity for IMP, not both")
    levels = _level_count(cfg, target, nm)
    total = units.total
    if target is not None:
        ignored = total - sum(sizes[n] for n in pool)
        if round_half_up(target * total) < ignored or target >= 1:
            raise ConfigError(f"{cfg.where('target_sparsity')}: density {cfg.target_sparsity}"
                              f" % cannot be reached (dense layers alone hold "
                              f"{100.0 * ignored / total:.2f} %, or the target is not below "
                              f"100 %)")
    adaptive = cfg.adaptive_prune_rate
    if adaptive and cfg.min_prune_rate > cfg.max_prune_rate:
        raise ConfigError(f"{cfg.where('min_prune_rate')} must not exceed max_prune_rate "
                          f"({cfg.max_prune_rate}), got {cfg.min_prune_rate}")
    try:
        if nm:
            targets = nm_level_targets(units, levels)
        else:
            # adaptive: the slowest schedule (min_prune_rate) bounds the number of levels
            targets = level_targets(sizes, pool, cfg.prune_scope,
                                    cfg.min_prune_rate if adaptive else rate, target, levels,
                                    min_keep=1 if units.unit == "channels" else 0)
    except ValueError as exc:
        key = "imp_rounds" if nm else ("target_sparsity" if "cannot be reached" in str(exc)
                                       else "prune_rate")
        raise ConfigError(f"{cfg.where(key)}: {exc}") from None
    goal = targets[-1] if target is not None else None
    level_count = None if adaptive and target is not None else len(targets)
    rewind = 0
    if variant == "wr":
        rewind = rewind_iterations(cfg.imp_rewind_iter, steps_per_epoch)
        level_steps = cfg.iter_period * steps_per_epoch
        if rewind >= level_steps:
            raise ConfigError(f"{cfg.where('imp_rewind_iter')}: rewind point {rewind} lies "
                              f"beyond level 0 ({level_steps} iterations = iter_period "
                              f"{cfg.iter_period} × {steps_per_epoch} steps per epoch)")
    weight_total = sum(units.weight_sizes.values())
    return ImpPlan(variant, cfg.iter_period, steps_per_epoch, rewind, rate, cfg.prune_scope,
                   ignore, weight_total, tuple(targets[:1] if adaptive else targets),
                   level_count, len(targets), adaptive, goal, units)


def chosen_levels(cfg, key: str, last_level: int, max_level: int) -> list[int]:
    """The levels named by option `key` (imp_control_levels, stability_levels), default the
    last level; ConfigError for a level outside 1..max_level."""
    levels = getattr(cfg, key) or [last_level]
    for level in levels:
        if not 1 <= level <= max_level:
            raise ConfigError(f"{cfg.where(key)}: level {level} is not a pruned level "
                              f"(1..{max_level})")
    return sorted(set(levels))


def control_levels(cfg, plan: ImpPlan, last_level: int | None = None) -> list[int]:
    """Levels that get the controls (default: the last); [] without controls."""
    if not cfg.imp_controls:
        return []
    last = plan.levels - 1 if last_level is None else last_level
    return chosen_levels(cfg, "imp_control_levels", last, plan.levels - 1)


def stability_levels(cfg, plan: ImpPlan, last_level: int | None = None) -> list[int]:
    """Levels that get the stability copies (default: the last); [] when off."""
    if cfg.stability_copies < 2:
        return []
    last = plan.levels - 1 if last_level is None else last_level
    return chosen_levels(cfg, "stability_levels", last, plan.levels - 1)


def describe(plan: ImpPlan, positions: dict | None = None) -> list[str]:
    """Human-readable plan lines for --dry-run and the log; with the layers' output
    `positions` (models/flops.py) every level whose FLOPs the counts decide shows them."""
    rate = "adaptive pruning fraction" if plan.adaptive else f"prune_rate {plan.prune_rate:g}"
    units = plan.units
    if units is not None and units.granularity.kind == NM:
        rate = f"{units.granularity.describe()}, dense layers where m does not divide"
    elif units is not None and units.unit == "channels":
        rate += f", {units.granularity.describe()} of {', '.join(units.pool)}"
    count = f"{plan.levels} levels" if plan.level_count else \
        f"up to {plan.max_levels} levels (until the target)"
    scope = "" if units is not None and units.granularity.kind == NM else f" ({plan.scope})"
    lines = [f"{VARIANT_NAMES[plan.variant]}: {count} × {plan.epochs} epochs "
             f"(~{plan.steps_per_epoch} steps each); {rate}{scope}"
             + (f", dense layers: {', '.join(plan.ignore)}" if plan.ignore else "")]
    if plan.variant == "wr":
        epoch, batch = divmod(plan.rewind_step, plan.steps_per_epoch)
        lines.append(f"rewind point: iteration {plan.rewind_step} of level 0 (epoch {epoch}, "
                     f"batch {batch})" + (" = the initial weights" if plan.rewind_step == 0
                                          else ""))
    if plan.adaptive and plan.goal is not None:
        lines.append(f"  stops at density {100.0 * plan.goal.kept / plan.total:.3f} %")
    what = "channel density" if plan.unit == "channels" else "density"
    for level, t in enumerate(plan.targets):
        d = plan.density_pct(level)
        line = (f"  level {level:>2}: {what} {d:7.3f} % / sparsity {100 - d:7.3f} %  "
                f"({t.kept:,} of {plan.unit_total:,} {plan.unit})")
        if t.per_group is not None:
            line += f", {t.per_group}:{units.granularity.m}"
        if positions is not None and units is not None:
            record = planned_flops(units, t, positions, plan.scope) if level else \
                flops_of_counts(positions, units.weight_sizes, {})
            if record is not None:
                line += f"; {flops_text(record)}"
        lines.append(line)
    if positions is not None and units is not None and plan.level_count and \
            planned_flops(units, plan.targets[-1], positions, plan.scope) is None:
        lines.append("  FLOPs of the pruned levels: decided by the global ranking at run time "
                     "(levels.csv)")
    return lines


def plan_for(cfg, splits, model) -> ImpPlan:
    """The plan of a run of `cfg` with this data and model."""
    return make_plan(cfg, units_of(cfg, model), steps_per_epoch(splits.num_train,
                                                                cfg.batch_size))


def input_shape(spec) -> tuple:
    """(channels, height, width) of one input image of a run (InputSpec or splits)."""
    return (spec.channels, spec.image_size, spec.image_size)


def level_key(level: int) -> str:
    return f"level_{level:02d}"


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
