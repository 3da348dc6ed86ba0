"""Architectures built from masked layers, and `build_model` (config → initialised model)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
import torch.nn as nn

from models.init import init_scores_, initialize_model
from models.layers import MASKED_LAYER_TYPES, LayerFactory
from models.registry import ARCHITECTURES, PLAIN_INITS


@dataclass(frozen=True)
class InputSpec:
    """What the model needs to know about the data: classes, channels, square image side."""

    num_classes: int
    channels: int
    image_size: int


def architecture(name: str):
    """The constructor registered under `name`."""
    module_name, func = ARCHITECTURES[name].split(":")
    return getattr(importlib.import_module(module_name), func)


def build_model(cfg, spec: InputSpec, with_scores: bool = False,
                score_init: str | None = None) -> nn.Module:
    """Build and initialise `cfg.arch` for the data described by `spec`; with `with_scores`
    every masked layer also gets scores drawn with `score_init` (default: cfg.score_init).

    With `fixed_init`, weights (and scores) are drawn under `seed_fixed_init` and the global
    random state is left as it was, so every trial shares the same initial network.
    Upstream's plain-layer architectures (PLAIN_INITS) ignore `init`, `mode`, `nonlinearity`
    and `scale_fan` and get the initialisation upstream gave them.
    """
    def make() -> nn.Module:
        factory = LayerFactory(bias=cfg.bias, bn_type=cfg.bn_type)
        model = architecture(cfg.arch)(factory, spec.num_classes, spec.channels,
                                       spec.image_size)
        prune_rate = 0.5 if cfg.prune_rate is None else cfg.prune_rate
        if cfg.arch in PLAIN_INITS:
            initialize_model(model, PLAIN_INITS[cfg.arch], "fan_in", "relu", False)
        else:
            initialize_model(model, cfg.init, cfg.mode, cfg.nonlinearity, cfg.scale_fan,
                             prune_rate)
        if with_scores:
            for layer in model.modules():
                if isinstance(layer, MASKED_LAYER_TYPES):
                    init_scores_(layer.enable_scores(), score_init or cfg.score_init)
        return model

    if cfg.fixed_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed_fixed_init)
            return make()
    return make()
