"""Weight and score initialisations of upstream (REFERENCE.md §3).

fan = fan_in or fan_out (`mode`); with `scale_fan`, fan ← fan·(1 − prune_rate);
gain = nn.init.calculate_gain(nonlinearity) (√2 for relu).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from models.layers import MASKED_LAYER_TYPES

WEIGHT_INITS = ("signed_constant", "unsigned_constant", "kaiming_normal", "kaiming_uniform",
                "xavier_normal", "xavier_constant", "standard")
SCORE_INITS = ("unif", "half", "bern", "bimodal", "skew", "all_one", "kaiming_uniform")


def _fan(weight: torch.Tensor, mode: str, scale_fan: bool, prune_rate: float) -> float:
    fan = nn.init._calculate_correct_fan(weight, mode)
    return fan * (1.0 - prune_rate) if scale_fan else fan


@torch.no_grad()
def init_weight_(layer: nn.Module, kind: str, mode: str = "fan_in",
                 nonlinearity: str = "relu", scale_fan: bool = False,
                 prune_rate: float = 0.5) -> None:
    """Initialise one masked layer's weight in place with the named scheme."""
    w = layer.weight
    gain = nn.init.calculate_gain(nonlinearity)
    if kind == "standard":
        layer.reset_parameters()
        return
    if kind in ("signed_constant", "unsigned_constant"):
        std = gain / math.sqrt(_fan(w, mode, scale_fan, prune_rate))
        if kind == "signed_constant":
            w.copy_(torch.sign(torch.randn_like(w)) * std)
            w[w == 0] = std  # randn is never exactly 0 in practice; keep every entry ±std
        else:
            w.fill_(std)
    elif kind == "kaiming_normal":
        std = gain / math.sqrt(_fan(w, mode, scale_fan, prune_rate))
        w.normal_(0.0, std)
    elif kind == "kaiming_uniform":
        bound = gain * math.sqrt(3.0 / _fan(w, mode, scale_fan, prune_rate))
        w.uniform_(-bound, bound)
    elif kind == "xavier_normal":
        nn.init.xavier_normal_(w)
    elif kind == "xavier_constant":
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
        std = math.sqrt(2.0 / (fan_in + fan_out))
        w.copy_(torch.sign(torch.randn_like(w)) * std)
        w[w == 0] = std
    else:
        raise ValueError(f"unknown init {kind!r}; choose from {', '.join(WEIGHT_INITS)}")


@torch.no_grad()
def init_scores_(scores: torch.Tensor, kind: str) -> None:
    """Fill a scores tensor in place with the named distribution."""
    if kind == "unif":
        scores.uniform_(0.0, 1.0)
    elif kind == "half":
        scores.fill_(0.5)
    elif kind == "all_one":
        scores.fill_(1.0)
    elif kind == "bern":
        scores.copy_(torch.bernoulli(torch.full_like(scores, 0.5)))
    elif kind == "bimodal":
        scores.copy_(torch.distributions.Beta(0.1, 0.1).sample(scores.shape))
    elif kind == "skew":
        scores.copy_(torch.distributions.Beta(1.0, 5.0).sample(scores.shape))
    elif kind == "kaiming_uniform":
        nn.init.kaiming_uniform_(scores, a=math.sqrt(5))
    else:
        raise ValueError(f"unknown score_init {kind!r}; choose from {', '.join(SCORE_INITS)}")


def initialize_model(model: nn.Module, kind: str, mode: str = "fan_in",
                     nonlinearity: str = "relu", scale_fan: bool = False,
                     prune_rate: float = 0.5) -> None:
    """Apply the weight init to every masked layer (BatchNorm keeps PyTorch's init)."""
    for module in model.modules():
        if isinstance(module, MASKED_LAYER_TYPES):
            init_weight_(module, kind, mode, nonlinearity, scale_fan, prune_rate)
