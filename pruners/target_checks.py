"""Config checks of the algorithms that prune to `target_sparsity` — pruning at initialisation,
gradual pruning and early-bird tickets (issue 5) — and gradual pruning's window; no torch import.

`validate_target_pruning(config)` is called by `args_helper.validate`, so a bad combination
stops with one line naming the key before anything is written.
"""
from __future__ import annotations

from utils.errors import ConfigError


def gradual_window(values: dict) -> tuple[int, int]:
    """(first, last) epoch boundary of gradual pruning: pruning starts after
    `prune_start_epoch` epochs and reaches the target after `prune_end_epoch` epochs (unset:
    3/4 of the epochs, rounded down, at least prune_start_epoch + 1).  one_shot prunes
    everything at the start, so its window is (start, start)."""
    start = values["prune_start_epoch"]
    if values["prune_schedule"] == "one_shot":
        return start, start
    end = values["prune_end_epoch"]
    if end is None:
        end = max(start + 1, (3 * values["epochs"]) // 4)
    return start, end


def validate_target_pruning(config) -> None:
    """Raise ConfigError for an impossible at-init / gradual / early-bird setup."""
    from pruners.registry import TARGET_ALGOS

    v = config.values
    algo = config.algo_name
    where = config.where
    if algo not in TARGET_ALGOS:
        return
    if v["target_sparsity"] is None and v["prune_granularity"] != "n:m":
        raise ConfigError(f"{where('target_sparsity')}: algo '{algo}' needs target_sparsity, "
                          f"the density in % to keep (e.g. target_sparsity: 2 keeps 2 % of "
                          f"the weights)")
    if algo == "synflow" and v["prune_iterations"] > 1:
        raise ConfigError(f"{where('prune_iterations')}: synflow already prunes iteratively; "
                          f"set its rounds with synflow_iterations (got prune_iterations "
                          f"{v['prune_iterations']})")
    if algo == "random" and v["random_distribution"] == "erk" and config.explicit(
            "prune_scope") and v["prune_scope"] == "local":
        config.warnings.append(f"note: {where('prune_scope')} has no effect with "
                               f"random_distribution erk (ERK fixes every layer's density)")
    if algo == "gradual":
        _check_gradual(config)
    if algo == "early_bird" and v["eb_window"] >= v["epochs"]:
        config.warnings.append(
            f"note: {where('eb_window')} {v['eb_window']} leaves no epoch at which the "
            f"window is full (epochs {v['epochs']}); the ticket will be drawn after the last "
            f"epoch")


def _check_gradual(config) -> None:
    v = config.values
    epochs = v["epochs"]
    start, end = gradual_window(v)
    if v["prune_schedule"] == "one_shot":
        if start >= epochs:
            raise ConfigError(f"{config.where('prune_start_epoch')} must be below epochs "
                              f"({epochs}) so the pruned network trains, got {start}")
        if config.explicit("prune_end_epoch") and v["prune_end_epoch"] is not None:
            config.warnings.append(f"note: {config.where('prune_end_epoch')} has no effect "
                                   f"with prune_schedule one_shot")
        return
    if end > epochs:
        raise ConfigError(f"{config.where('prune_end_epoch')} must be at most epochs "
                          f"({epochs}), got {end}")
    if start >= end:
        key = "prune_start_epoch" if config.explicit("prune_start_epoch") else "prune_end_epoch"
        raise ConfigError(f"{config.where(key)}: prune_start_epoch ({start}) must be below "
                          f"prune_end_epoch ({end})")
