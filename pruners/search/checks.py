"""Config checks of the score-search family and its baselines (issue 4); no torch import.

`validate_search(config)` is called by `args_helper.validate`, so every bad combination stops
with one line naming the key before anything is written.  It may also append warnings.
"""
from __future__ import annotations

import math

from utils.errors import ConfigError

# Gem-Miner's per-layer densities (%) of the first conv and the classifier of ResNet-20 at
# 1.44 % and 3.72 % density, published with upstream (resnet20_layerwise_sparsity.csv, columns
# 1_4 and 3_72); upstream's Smart-Ratio v2 read the same numbers from its hc_iter.csv.
SR_V2_FIRST_LAST_PCT = {1.44: (34.49074074074074, 25.9375), 3.72: (41.43518518518518, 54.6875)}


def prune_steps(epochs: int, iter_period: int) -> int:
    """N = ⌊(epochs − 1) / iter_period⌋: pruning steps of hc_iter / global_ep_iter."""
    return (epochs - 1) // iter_period


def step_fraction(target_pct: float, steps: int) -> float:
    """p = 1 − (T/100)^(1/N): the fraction of active weights removed per step."""
    return 1.0 - (target_pct / 100.0) ** (1.0 / steps)


def ep_density(values: dict, algo: str) -> float | None:
    """The density (fraction kept) an edge-popup run ends at; None for global_ep_iter with
    override_prune_rate (its per-step rate is given instead, see `ep_step_fraction`)."""
    if not values["override_prune_rate"]:
        return values["target_sparsity"] / 100.0
    if algo == "ep":                       # upstream: prune_rate = fraction kept per layer
        return values["prune_rate"]
    if algo == "global_ep":                # upstream: prune_rate = fraction removed
        return 1.0 - values["prune_rate"]
    return None


def sr_version2_density(values: dict) -> float:
    """The density (%) of a Smart-Ratio v2 run, matched to the tabulated Gem-Miner targets."""
    density = round(100.0 * (1.0 - values["smart_ratio"]), 6)
    for known in SR_V2_FIRST_LAST_PCT:
        if math.isclose(density, known, abs_tol=1e-6):
            return known
    return density


# upstream's default target_sparsity (a density in %) for the score searches
UPSTREAM_TARGET_DENSITY_PCT = 0.5
# upstream's default prune_rate (its argument parser's --prune-rate)
UPSTREAM_PRUNE_RATE = 0.5


def _default_prune_rate(config, key: str, meaning: str) -> None:
    """Fill in upstream's prune_rate 0.5 for a config that needs one and leaves it out."""
    config.values["prune_rate"] = UPSTREAM_PRUNE_RATE
    config.warnings.append(f"note: {config.where(key)} without prune_rate uses upstream's "
                           f"default prune_rate {UPSTREAM_PRUNE_RATE:g} ({meaning})")


def validate_search(config) -> None:
    """Fill in the score searches' target density when unset (upstream's 0.5 %); raise
    ConfigError for an impossible score-search or baseline setup; add warnings."""
    from pruners.registry import SCORE_ALGOS

    v = config.values
    algo = config.algo_name
    where = config.where
    if algo in SCORE_ALGOS and v["target_sparsity"] is None:
        v["target_sparsity"] = UPSTREAM_TARGET_DENSITY_PCT
    if algo in ("hc_iter", "global_ep_iter"):
        steps = prune_steps(v["epochs"], v["iter_period"])
        scheduled = algo == "global_ep_iter" or v["prune_type"] != "FixThresholding"
        if steps < 1 and scheduled:
            raise ConfigError(
                f"{where('epochs')}: {algo} prunes after epochs iter_period, 2·iter_period, ... "
                f"(0-based) and epochs {v['epochs']} with iter_period {v['iter_period']} leave "
                f"no pruning step, so the target density is never reached; use epochs >= "
                f"{v['iter_period'] + 1} or a smaller iter_period")
    if algo == "hc" and v["unflag_before_finetune"]:
        raise ConfigError(
            f"{where('unflag_before_finetune')}: unflag_before_finetune is not allowed for "
            f"algo 'hc' (hc never clears flags, so unflagging would fine-tune the dense "
            f"network); set it to false or use algo 'hc_iter'")
    if algo in ("ep", "global_ep", "global_ep_iter"):
        _check_edge_popup(config, algo)
    if algo == "random_subnet" and v["prune_rate"] is None:
        _default_prune_rate(config, "random_subnet",
                            "each weight kept with probability 0.5, density 50 %")
    if algo == "smart_ratio":
        _check_smart_ratio(config)


def _check_edge_popup(config, algo: str) -> None:
    v = config.values
    if v["override_prune_rate"]:
        if v["prune_rate"] is None:
            _default_prune_rate(config, "override_prune_rate", {
                "ep": "half of each layer kept",
                "global_ep": "half of all weights removed",
                "global_ep_iter": "half of the active weights removed per step"}[algo])
        if algo != "global_ep_iter" and ep_density(v, algo) <= 0:
            raise ConfigError(f"{config.where('prune_rate')}: prune_rate {v['prune_rate']} "
                              f"leaves no weight ({_ep_rate_meaning(algo)})")
        if algo == "global_ep_iter" and v["prune_rate"] >= 1:
            raise ConfigError(f"{config.where('prune_rate')} must be below 1 for "
                              f"global_ep_iter (fraction removed per step)")
        return
    if config.explicit("prune_rate") and v["prune_rate"] is not None:
        config.warnings.append(
            f"warning: {config.where('prune_rate')} is ignored without override_prune_rate "
            f"(as upstream); the run keeps target_sparsity {v['target_sparsity']:g} % of the "
            f"weights. Set override_prune_rate: true to use prune_rate")
    if algo != "global_ep_iter":
        config.warnings.append(
            f"note: {algo} without override_prune_rate keeps target_sparsity "
            f"{v['target_sparsity']:g} % of the weights (upstream replaced prune_rate by "
            f"hc_iter's per-step rate here, which kept an unrelated fraction)")


def _ep_rate_meaning(algo: str) -> str:
    return {"ep": "the fraction of each layer kept, e.g. 0.05",
            "global_ep": "the fraction of all weights removed, e.g. 0.95",
            "global_ep_iter": "the fraction of active weights removed per step, e.g. 0.2"}[algo]


def _check_smart_ratio(config) -> None:
    v = config.values
    if not 0 < v["smart_ratio"] < 1:
        raise ConfigError(f"{config.where('smart_ratio')} must be in (0, 1) (the fraction "
                          f"pruned, e.g. 0.9856 for 1.44 % density), got {v['smart_ratio']:g}")
    if v["sr_version"] not in (1, 2):
        raise ConfigError(f"{config.where('sr_version')}: sr_version {v['sr_version']} is not "
                          f"supported (1: Smart-Ratio; 2: ResNet-20 with Gem-Miner's first and "
                          f"last layer densities); upstream's versions 3+ read unpublished "
                          f"CSV files")
    if v["sr_version"] == 2:
        if v["arch"] != "resnet20":
            raise ConfigError(f"{config.where('sr_version')}: sr_version 2 is defined for "
                              f"arch resnet20 only, got {v['arch']}")
        if sr_version2_density(v) not in SR_V2_FIRST_LAST_PCT:
            known = " or ".join(f"{1 - d / 100:.4f}" for d in SR_V2_FIRST_LAST_PCT)
            raise ConfigError(f"{config.where('smart_ratio')}: sr_version 2 knows Gem-Miner's "
                              f"layer densities only for smart_ratio {known}, got "
                              f"{v['smart_ratio']:g}")
