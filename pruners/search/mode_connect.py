"""Upstream's `mode_connect` (with `evaluate`, `pretrained` and `pretrained2`): how the error
changes on the way from one saved network to another, mapped onto this project's linear
interpolation analysis (analysis/interpolation.py).

Upstream asked whether two solutions are connected: for weight-trained networks it moved from
one weight vector to the other (`interpolate: linear`: the straight line; `prob`: each weight
taken from either end with a probability), for masks found by `hc` it mixed the two masks over
the same weights (score averages or Bernoulli mixtures of the two masks).  Here both are the
straight line between the networks' effective weights mask ⊙ weight: for two masks over the
same weights that is w ⊙ (γ·m₁ + (1 − γ)·m₂), the average of the masks; for two weight-trained
networks it is upstream's linear path.  At `lmc_points` values of γ (γ = 1: `pretrained`,
γ = 0: `pretrained2`) BatchNorm statistics are re-estimated on `bn_reset_batches` training
batches and the train and test errors measured; the error barrier (Unmasking the LTH, Def. 2.1)
is the largest rise above the straight line between the end points.  Upstream's random
(`prob`) mixtures are not drawn.  Files holding an hc / hc_iter search network (with scores)
are first turned into the network its rounded scores define (`round`, `quantize_threshold`),
as upstream rounded them.
"""
from __future__ import annotations

import os

import torch

from pruners import Algorithm
from utils.errors import ConfigError
from utils.logging import write_csv

COLUMNS = ["gamma", "train_error", "test_error", "train_loss", "test_loss"]


def network_state(cfg, path: str, model) -> dict:
    """The state_dict of the network saved in `path`, in `model`'s keys: masks folded with
    the rounded scores when the file holds a score search's network (algo hc / hc_iter)."""
    from analysis.weights import load_weight_set
    from pruners.registry import HC_ALGOS

    state = dict(load_weight_set(path))
    if cfg.algo in HC_ALGOS:
        for key in [k for k in state if k.endswith(".scores")]:
            base = key[:-len(".scores")]
            if cfg.round == "naive":
                rounded = (state[key] > cfg.quantize_threshold).to(state[f"{base}.mask"].dtype)
            elif cfg.round == "all_ones":
                rounded = torch.ones_like(state[f"{base}.mask"])
            else:
                raise ConfigError(f"mode_connect: round {cfg.round} draws random masks; use "
                                  f"naive or all_ones to connect {path}")
            state[f"{base}.mask"] = state[f"{base}.mask"] * rounded
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        detail = f"missing {missing[0]}" if missing else f"shape mismatch at {wrong[0]}"
        raise ConfigError(f"mode_connect: {path} does not fit arch {cfg.arch} ({detail})")
    return {k: state[k] for k in own}


def prepare_mode_connect(cfg, splits, model, logger) -> None:
    for path in (cfg.pretrained, cfg.pretrained2):
        network_state(cfg, path, model)


def run_mode_connect(ctx, model) -> dict:
    from analysis.interpolation import interpolate
    from analysis.plots import plot_curve

    cfg = ctx.cfg
    a = network_state(cfg, cfg.pretrained, model)
    b = network_state(cfg, cfg.pretrained2, model)
    curve = interpolate(model, a, b, ctx.loaders, points=cfg.lmc_points,
                        bn_reset_batches=cfg.bn_reset_batches,
                        autocast_dtype=ctx.autocast_dtype)
    write_csv(ctx.path("mode_connect.csv"), COLUMNS, curve.rows())
    name_a = os.path.basename(cfg.pretrained)
    name_b = os.path.basename(cfg.pretrained2)
    plot_curve(curve, ctx.path("mode_connect.png"), f"{name_a} ↔ {name_b}", name_a, name_b)
    ctx.logger.info(f"mode_connect: test error barrier {curve.test_barrier:.3f} points, train "
                    f"error barrier {curve.train_barrier:.3f} points ({cfg.lmc_points} "
                    f"points); mode_connect.csv, mode_connect.png")
    model.load_state_dict(a)
    return {"test_acc": 100.0 - curve.test_error[-1], "test_barrier": curve.test_barrier,
            "train_barrier": curve.train_barrier, "pretrained2_test_acc":
            100.0 - curve.test_error[0], "mode_connect_points": cfg.lmc_points}


def plan_mode_connect(cfg, splits, model=None) -> list[str]:
    return [f"mode_connect: {cfg.lmc_points} networks on the straight line between the "
            f"effective weights of {cfg.pretrained} (γ = 1) and {cfg.pretrained2} (γ = 0), "
            f"BatchNorm re-estimated on {cfg.bn_reset_batches} training batches each; train "
            f"and test error, error barrier; mode_connect.csv, mode_connect.png"]


MODE_CONNECT = Algorithm("mode_connect", run_mode_connect, plan_mode_connect,
                         prepare=prepare_mode_connect)
