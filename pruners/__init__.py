"""Algorithms: a registry name → `Algorithm` (a run function and a dry-run plan)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from pruners.registry import ALGORITHMS


def _no_scores(cfg) -> None:
    return None


@dataclass(frozen=True)
class Algorithm:
    """`run(ctx, model) -> dict` does the work and returns summary fields;
    `plan(cfg, splits, model) -> list[str]` describes the phases for --dry-run;
    `score_init(cfg)` names the score initialisation the model is built with (None: the
    algorithm uses no scores);
    `prepare(cfg, splits, model, logger)` (optional) validates and sets up the model before
    anything is written, raising ConfigError on bad input;
    `covers(summary, cfg, splits, model) -> bool` (optional) says whether a finished run
    already contains everything this config asks for (else it is extended);
    packed replicates (optional, one of): `jobs(ctx, model) -> list[PhaseJob]` sets a run up
    and lists the phases it still has to train (trained packed; `run` then finds them done),
    or `run_packed(ctxs, models, logger) -> list[dict]` drives M copies itself."""

    name: str
    run: Callable
    plan: Callable
    score_init: Callable = _no_scores
    prepare: Callable | None = None
    covers: Callable | None = None
    jobs: Callable | None = None
    run_packed: Callable | None = None


def get_algorithm(name: str) -> Algorithm:
    module_name, attr = ALGORITHMS[name].split(":")
    return getattr(importlib.import_module(module_name), attr)
