"""Config checks of `prune_granularity` (channel, n:m); no torch import.

`validate_granularity(config)` is called by `args_helper.validate`, so an impossible
combination stops with one line naming the key before anything is written.
"""
from __future__ import annotations

from models.registry import CHANNEL_ARCHS
from utils.errors import ConfigError


def validate_granularity(config) -> None:
    """Raise ConfigError for a granularity the run's algorithm or architecture cannot do;
    note options that it makes irrelevant."""
    from pruners.registry import GRANULARITY_ALGOS, IMP_ALGOS, TARGET_ALGOS

    v, algo, where = config.values, config.algo_name, config.where
    kind = v["prune_granularity"]
    if kind == "weight":
        unused = [k for k in ("prune_n", "prune_m") if config.explicit(k)]
        if unused and algo in GRANULARITY_ALGOS:
            config.warnings.append(f"note: {where(unused[0])} has no effect unless "
                                   f"prune_granularity is n:m")
        return
    if algo in ("grasp", "early_bird"):
        raise ConfigError(f"{where('prune_granularity')}: {kind} is not available for algo "
                          f"'{algo}' (weight only; channel and n:m: "
                          f"{', '.join(GRANULARITY_ALGOS)})")
    if algo not in GRANULARITY_ALGOS:
        return                      # args_helper already noted "no effect"
    for key, why in (("prune_bias", "biases are pruned per weight"),
                     ("adaptive_prune_rate", "it chooses fractions of single weights")):
        if v.get(key):
            raise ConfigError(f"{where(key)} cannot be combined with prune_granularity "
                              f"{kind} ({why})")
    if algo == "random" and v["random_distribution"] == "erk":
        raise ConfigError(f"{where('random_distribution')}: erk sets per-weight layer "
                          f"densities; use uniform with prune_granularity {kind}")
    if kind == "channel":
        if v["arch"] not in CHANNEL_ARCHS:
            raise ConfigError(f"{where('prune_granularity')}: channel pruning is not "
                              f"available for arch {v['arch']} (available: "
                              f"{', '.join(CHANNEL_ARCHS)})")
        return
    if v["prune_n"] >= v["prune_m"]:
        key = "prune_n" if config.explicit("prune_n") else "prune_m"
        raise ConfigError(f"{where(key)}: prune_n ({v['prune_n']}) must be smaller than "
                          f"prune_m ({v['prune_m']})")
    fixed = [k for k in ("target_sparsity", "prune_rate", "prune_scope")
             if config.explicit(k) and v[k] is not None
             and (k != "prune_rate" or algo in IMP_ALGOS)
             and (k != "target_sparsity" or algo in IMP_ALGOS + TARGET_ALGOS)]
    if fixed:
        config.warnings.append(f"note: {', '.join(where(k) for k in fixed)}: no effect with "
                               f"prune_granularity n:m (every pruned layer keeps "
                               f"{v['prune_n']} of every {v['prune_m']}; IMP levels: "
                               f"imp_rounds)")
