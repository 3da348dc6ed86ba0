"""Upstream's `only_sanity`: re-run the two sanity checks of finished mask searches from their
saved tickets, without searching again.

`sanity_folder` is one run directory of a score search (or random baseline) of this project,
or a folder of them (upstream: a folder of result folders, each with model_before_finetune).
For every source run, in sorted order, the ticket it saved (checkpoints/before_finetune.pt:
the mask and the weights the sparse network starts from) is loaded and fine-tuned twice with
this config's fine-tuning settings, exactly as a search run's own sanity checks:
`sanity_reinit` (same mask, weights re-drawn kaiming-normal) and `sanity_shuffle` (the mask
shuffled within each layer over the source's initial weights, checkpoints/init.pt).  Phases
are keyed by source, so the run resumes like any other; metrics.csv rows carry the source's
index in the `level` column and sanity.csv lists the results per source.
"""
from __future__ import annotations

import dataclasses
import math
import os

from models.masks import density_pct, density_text
from pruners import Algorithm
from pruners.search.finetune import SANITY_CHECKS, finetune_phase
from pruners.search.scores import train_weights_only
from pruners.ticket_controls import reinitialize_weights, shuffle_masks_onto_initial_weights
from pruners.upstream_checks import sanity_sources
from utils.checkpoint import load_checkpoint
from utils.errors import ConfigError
from utils.logging import write_csv
from utils.phases import run_phase
from utils.seeds import seeded_generator

COLUMNS = ["source", "run_dir", "check", "ticket_density_pct", "density_pct", "val_acc",
           "test_acc", "best_val_acc", "test_acc_at_best_val"]


def _ticket_state(source: str) -> dict:
    return load_checkpoint(os.path.join(source, "checkpoints", "before_finetune.pt"))["model"]


def load_ticket(model, source: str) -> None:
    """Put the ticket saved by run directory `source` into `model` (its weights, masks and
    BatchNorm statistics; the source's scores are not part of this network)."""
    state = _ticket_state(source)
    model.load_state_dict({key: state[key] for key in model.state_dict()})


def check_sources(cfg, model) -> list[str]:
    """The source runs, each checked to hold a ticket that fits `model`; ConfigError if not."""
    sources = sanity_sources(cfg.sanity_folder)
    own = model.state_dict()
    for source in sources:
        try:
            state = _ticket_state(source)
        except Exception as exc:  # noqa: BLE001 (an unreadable file is a usage error)
            raise ConfigError(f"sanity_folder: cannot load {source}/checkpoints/"
                              f"before_finetune.pt: {str(exc).splitlines()[0][:160]}") from None
        missing = [k for k in own if k not in state]
        wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
        if missing or wrong:
            detail = f"missing {missing[0]}" if missing else f"shape mismatch at {wrong[0]}"
            raise ConfigError(f"sanity_folder: the ticket of {source} does not fit arch "
                              f"{cfg.arch} on {cfg.dataset} ({detail})")
    return sources


def prepare_only_sanity(cfg, splits, model, logger) -> None:
    check_sources(cfg, model)


def _control(ctx, model, source: str, key: str) -> None:
    """Turn the loaded ticket into sanity check `key` (deterministic per run and source)."""
    generator = seeded_generator(ctx.seed, f"{key}:{os.path.basename(os.path.normpath(source))}")
    if key == "sanity_reinit":
        reinitialize_weights(model, "kaiming_normal", generator)
    else:
        initial = load_checkpoint(os.path.join(source, "checkpoints", "init.pt"))["model"]
        shuffle_masks_onto_initial_weights(model, initial, generator)


def run_only_sanity(ctx, model) -> dict:
    cfg = ctx.cfg
    rows = []
    for index, source in enumerate(check_sources(cfg, model), start=1):
        load_ticket(model, source)
        ticket_density = density_pct(model)
        ctx.logger.info(f"sanity checks {index}: {source} (ticket "
                        f"{density_text(ticket_density)})")
        for key in SANITY_CHECKS:
            load_ticket(model, source)
            train_weights_only(model)
            _control(ctx, model, source, key)
            spec = dataclasses.replace(finetune_phase(cfg, key), key=f"{key}:{index}",
                                       level=index)
            result = run_phase(ctx, model, spec)
            rows.append({"source": index, "run_dir": source, "check": key,
                         "ticket_density_pct": ticket_density,
                         **{k: result[k] for k in ("density_pct", "val_acc", "test_acc",
                                                   "best_val_acc", "test_acc_at_best_val")}})
    write_csv(ctx.path("sanity.csv"), COLUMNS, rows)
    _log_table(ctx, rows)
    return {"density_pct": rows[0]["ticket_density_pct"], "only_sanity": rows,
            "sanity_sources": [r["run_dir"] for r in rows[::len(SANITY_CHECKS)]]}


def _log_table(ctx, rows: list[dict]) -> None:
    def pct(value):
        return "   n/a" if value is None or math.isnan(value) else f"{value:6.2f}"

    lines = [f"{'source':<6}  {'check':<15}  {'density %':>9}  {'val %':>6}  {'test %':>6}"]
    lines += [f"{r['source']:<6}  {r['check']:<15}  {pct(r['density_pct']):>9}  "
              f"{pct(r['val_acc'])}  {pct(r['test_acc'])}" for r in rows]
    ctx.logger.info("\n" + "\n".join(lines))


def plan_only_sanity(cfg, splits, model=None) -> list[str]:
    spec = finetune_phase(cfg)
    steps = math.ceil(splits.num_train / cfg.batch_size)
    lines = [f"only_sanity: no search; for each source run, its saved ticket is fine-tuned "
             f"as sanity_reinit (weights re-drawn kaiming_normal) and sanity_shuffle (mask "
             f"shuffled within each layer, initial weights), each {spec.epochs} epochs × "
             f"~{steps} steps; {spec.optimizer.describe()}; lr {spec.schedule.describe()}"]
    for index, source in enumerate(sanity_sources(cfg.sanity_folder), start=1):
        if model is not None:
            load_ticket(model, source)
            detail = f"ticket {density_text(density_pct(model))}"
        else:
            detail = "ticket"
        lines.append(f"  source {index}: {source} ({detail})")
    return lines


ONLY_SANITY = Algorithm("only_sanity", run_only_sanity, plan_only_sanity,
                        prepare=prepare_only_sanity)
