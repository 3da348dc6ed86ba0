"""Config checks of upstream's optional features: plain-layer architectures, periodic score
rounding (hc_warmup), score rewinding, BottomK on forward, dropping half the weights of a
warm start, per-epoch checkpoints, sanity-only runs and mode connectivity; no torch import.

`validate_upstream_features(config)` is called by `args_helper.validate`.  A combination
upstream could not run stops with one line naming the key; a feature that upstream silently
ignored in this configuration is ignored here too, with a one-line warning saying so.
"""
from __future__ import annotations

import os

from utils.errors import ConfigError

NEVER = 9999    # upstream's hc_warmup default: no periodic rounding

# the score networks of the same shape as upstream's plain-layer reference networks
PRUNABLE_TWIN = {"Conv4Normal": "Conv4", "resnet20Normal": "resnet20",
                 "resnet32Normal": "resnet32", "TinyResNet18Normal": "TinyResNet18",
                 "vgg16_normal": "vgg16 (with BatchNorm)"}
PLAIN_IGNORES = ("init", "mode", "nonlinearity", "scale_fan", "bn_type", "bias")
PLAIN_LAYERS = {"Conv4Normal": "no BatchNorm, bias-free layers",
                "resnet20Normal": "affine BatchNorm, biased classifier",
                "resnet32Normal": "affine BatchNorm, biased classifier",
                "TinyResNet18Normal": "affine BatchNorm, biased classifier",
                "vgg16_normal": "no BatchNorm, biased layers"}


def validate_upstream_features(config) -> None:
    """Raise ConfigError for an impossible use of an upstream feature; add warnings for the
    ones that have no effect in this configuration (as in upstream)."""
    algo = config.algo_name
    _check_plain_arch(config, algo)
    if algo == "hc":
        _check_hc_warmup(config)
    if algo == "hc_iter":
        _check_rewind(config)
        _check_bottom_k_on_forward(config)
    if algo in ("hc", "hc_iter"):
        _check_drop_half(config)
    _check_fixed_epochs(config)
    _check_only_sanity(config, algo)
    _check_mode_connect(config, algo)


def sanity_sources(folder: str) -> list[str]:
    """The finished mask-search run directories `only_sanity` reads: `folder` itself when it
    holds checkpoints/before_finetune.pt, else its sub-directories that do (sorted)."""
    def is_source(path: str) -> bool:
        return os.path.isfile(os.path.join(path, "checkpoints", "before_finetune.pt"))

    if is_source(folder):
        return [folder]
    return [os.path.join(folder, name) for name in sorted(os.listdir(folder))
            if is_source(os.path.join(folder, name))]


def _warn(config, text: str) -> None:
    config.warnings.append(f"warning: {text}")


def _check_plain_arch(config, algo: str) -> None:
    from models.registry import PLAIN_INITS
    from pruners.registry import SCORE_ALGOS

    arch = config.values["arch"]
    if arch not in PLAIN_INITS:
        return
    if algo in SCORE_ALGOS + ("random_subnet", "smart_ratio", "only_sanity"):
        raise ConfigError(
            f"{config.where('arch')}: {arch} is upstream's plain-layer reference network "
            f"(no scores or flags; upstream trained it with weight_training: true), so "
            f"{algo} cannot search it; use arch {PRUNABLE_TWIN[arch]} for a mask search")
    ignored = [k for k in PLAIN_IGNORES if config.explicit(k)]
    if ignored:
        config.warnings.append(
            f"note: arch {arch} keeps upstream's own layers and init ({PLAIN_LAYERS[arch]}, "
            f"{PLAIN_INITS[arch]} init); no effect: {', '.join(ignored)}")


def _check_hc_warmup(config) -> None:
    v, where = config.values, config.where
    if v["hc_warmup"] == NEVER:
        if config.explicit("hc_period") and v["hc_period"] != 1:
            _warn(config, f"{where('hc_period')} has no effect without hc_warmup (the scores "
                          f"are never rounded during the search)")
        return
    if v["hc_warmup"] >= v["epochs"]:
        _warn(config, f"{where('hc_warmup')} {v['hc_warmup']} >= epochs {v['epochs']}: the "
                      f"scores are never rounded during the search (as upstream)")


def _check_rewind(config) -> None:
    v, where = config.values, config.where
    if not v["rewind_score"]:
        if config.explicit("rewind_to_epoch") and v["rewind_to_epoch"] != -1:
            _warn(config, f"{where('rewind_to_epoch')} has no effect without rewind_score")
        return
    if v["prune_type"] == "FixThresholding":
        _warn(config, f"{where('rewind_score')} has no effect with prune_type "
                      f"FixThresholding (upstream rewound scores only after BottomK steps)")
        return
    last_step_epoch = v["iter_period"] * ((v["epochs"] - 1) // v["iter_period"])
    if not 0 <= v["rewind_to_epoch"] <= last_step_epoch:
        _warn(config, f"{where('rewind_score')} has no effect: rewind_to_epoch "
                      f"{v['rewind_to_epoch']} is not a 0-based epoch at or before the last "
                      f"pruning step (after epoch {last_step_epoch}), so no scores are ever "
                      f"saved to rewind to (as upstream)")


def _check_bottom_k_on_forward(config) -> None:
    v, where = config.values, config.where
    if not v["bottom_k_on_forward"]:
        return
    if v["prune_type"] != "BottomK":
        raise ConfigError(f"{where('bottom_k_on_forward')} needs prune_type BottomK (upstream "
                          f"computed the forward threshold only for global BottomK), got "
                          f"{v['prune_type']}")
    if not v["hc_quantized"]:
        _warn(config, f"{where('bottom_k_on_forward')} has no effect without hc_quantized "
                      f"(the continuous forward uses weight · score · flag, as upstream)")


def _check_drop_half(config) -> None:
    v, where = config.values, config.where
    if not v["drop_bottom_half_weights"]:
        return
    if not v["pretrained"]:
        _warn(config, f"{where('drop_bottom_half_weights')} has no effect without "
                      f"`pretrained` (upstream dropped half the weights only of a loaded "
                      f"network)")
    elif v["epochs"] < 2:
        _warn(config, f"{where('drop_bottom_half_weights')} has no effect with epochs "
                      f"{v['epochs']} (the weights are dropped after the first epoch)")


def _check_fixed_epochs(config) -> None:
    v, where = config.values, config.where
    epochs = v["ckpt_at_fixed_epochs"]
    if not epochs:
        return
    if any(e < 0 for e in epochs):
        raise ConfigError(f"{where('ckpt_at_fixed_epochs')} must list 0-based epochs >= 0, "
                          f"got {epochs}")
    late = [e for e in epochs if e >= v["epochs"]]
    if late:
        _warn(config, f"{where('ckpt_at_fixed_epochs')}: epochs {late} are not reached "
                      f"(epochs {v['epochs']}, 0-based); nothing is saved for them")


def _check_only_sanity(config, algo: str) -> None:
    v, where = config.values, config.where
    if algo != "only_sanity":
        if v["only_sanity"]:    # a flag of higher precedence (weight_training, ...) won
            _warn(config, f"{where('only_sanity')} has no effect for algo '{algo}'")
        elif v["sanity_folder"]:
            _warn(config, f"{where('sanity_folder')} has no effect without only_sanity")
        return
    folder = v["sanity_folder"]
    if not folder:
        raise ConfigError(f"{where('only_sanity')} needs sanity_folder (the finished mask-"
                          f"search run directory, or a folder of them, whose tickets to check)")
    if not os.path.isdir(folder):
        raise ConfigError(f"{where('sanity_folder')}: folder not found: {folder}")
    sources = sanity_sources(folder)
    if not sources:
        raise ConfigError(f"{where('sanity_folder')}: no mask-search run directory (one "
                          f"with checkpoints/before_finetune.pt) in {folder}")
    for source in sources:
        if not os.path.isfile(os.path.join(source, "checkpoints", "init.pt")):
            raise ConfigError(f"{where('sanity_folder')}: {source}/checkpoints/init.pt is "
                              f"missing (the mask-shuffle check needs the initial weights)")


def _check_mode_connect(config, algo: str) -> None:
    v, where = config.values, config.where
    if algo == "mode_connect":
        if not os.path.isfile(v["pretrained2"]):
            raise ConfigError(f"{where('pretrained2')}: file not found: {v['pretrained2']}")
        return
    if v["mode_connect"]:
        _warn(config, f"{where('mode_connect')} has no effect here: it compares two saved "
                      f"networks (evaluate: true, pretrained, pretrained2), as upstream; for "
                      f"a finished run see python -m analysis.interpolate")
    elif v["pretrained2"]:
        _warn(config, f"{where('pretrained2')} has no effect without mode_connect and "
                      f"evaluate")
