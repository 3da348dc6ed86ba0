"""After a mask search (or a random baseline mask): save the ticket, fine-tune it, run the
sanity checks and assemble the summary.  Shared by Gem-Miner, edge-popup and the random /
Smart-Ratio baselines.

Files: `ticket.pt` and `checkpoints/before_finetune.pt` (mask + the weights the sparse net
starts from; pruned weights exactly zero), `checkpoints/final.pt` (the fine-tuned ticket).
Every training step is a phase (utils/phases.py), so a killed run resumes where it stopped;
work between phases is done once and its numbers kept in `state.extra`.
"""
from __future__ import annotations

import math
from typing import Callable

from models.masks import density_pct, density_text, set_masks
from pruners.search.scores import train_weights_only
from pruners.ticket_controls import reinitialize_weights, shuffle_masks_onto_initial_weights
from pruners.tickets import evaluate_model, load_model_file, save_ticket
from utils.checkpoint import load_checkpoint
from utils.logging import write_csv
from utils.phases import PhaseSpec, run_phase
from utils.schedules import LRSchedule, OptimizerSpec, default_milestones, \
    optimizer_from_config, schedule_from_config
from utils.seeds import seeded_generator

SANITY_CHECKS = ("sanity_reinit", "sanity_shuffle")


def search_phase(cfg) -> PhaseSpec:
    """The score-search phase: the run's optimizer, lr and schedule for `epochs` epochs."""
    return PhaseSpec(key="search", phase="search", epochs=cfg.epochs,
                     optimizer=optimizer_from_config(cfg), schedule=schedule_from_config(cfg))


def finetune_phase(cfg, key: str = "finetune") -> PhaseSpec:
    """A fine-tuning phase (also each sanity check): fine_tune_* optimizer and schedule for as
    many epochs as the search."""
    epochs = cfg.epochs
    milestones = cfg.milestones if cfg.milestones is not None else default_milestones(epochs)
    schedule = LRSchedule(cfg.fine_tune_lr_policy or cfg.lr_policy, cfg.fine_tune_lr, epochs,
                          tuple(milestones), cfg.lr_gamma)
    optimizer = OptimizerSpec(cfg.fine_tune_optimizer, cfg.momentum, cfg.fine_tune_wd,
                              cfg.nesterov)
    return PhaseSpec(key=key, phase=key, epochs=epochs, optimizer=optimizer,
                     schedule=schedule)


def runs_sanity_checks(cfg) -> bool:
    """Sanity checks follow the fine-tuning of score searches unless switched off."""
    from pruners.registry import SCORE_ALGOS

    return (cfg.algo_name in SCORE_ALGOS and not cfg.skip_sanity_checks
            and not cfg.skip_fine_tune)


def finish_search(ctx, model, search: dict, ticket_masks: Callable[[], dict]) -> dict:
    """Install the ticket (`ticket_masks()` → binary mask per layer), save it, fine-tune it
    (unless skip_fine_tune), run the sanity checks and return the summary fields.  `search`
    holds the search-phase numbers reported in the summary."""
    cfg, state, log = ctx.cfg, ctx.state, ctx.logger
    before_path = ctx.path("checkpoints", "before_finetune.pt")
    if "ticket" not in state.extra:
        masks = ticket_masks()
        train_weights_only(model)
        set_masks(model, masks)
        ticket = {**evaluate_model(ctx, model), "density_pct": density_pct(model)}
        save_ticket(ctx, model, search)
        state.extra["ticket"] = ticket
        log.info(f"ticket: {density_text(ticket['density_pct'])}; before fine-tuning val "
                 f"{ticket['val_acc']:.2f} %  test {ticket['test_acc']:.2f} %; "
                 f"saved ticket.pt")
    ticket = state.extra["ticket"]
    load_model_file(model, before_path)
    train_weights_only(model)

    fields = {"density_pct": ticket["density_pct"], **search,
              "ticket_val_acc": ticket["val_acc"], "ticket_test_acc": ticket["test_acc"]}
    if cfg.skip_fine_tune:
        ctx.save_model(model, "final.pt")
        fields.update(val_acc=ticket["val_acc"], test_acc=ticket["test_acc"])
        if cfg.grad_flow:
            fields.update(start_grad_norms(ctx, model))
        _log_table(ctx, fields)
        return fields

    tuned = run_phase(ctx, model, finetune_phase(cfg))
    if not state.extra.get("final_saved"):
        ctx.save_model(model, "final.pt")
        state.extra["final_saved"] = True
    fields.update({k: tuned[k] for k in ("train_acc", "val_acc", "test_acc", "best_val_acc",
                                         "test_acc_at_best_val", "best_val_epoch")})
    fields.update(finetuned_val_acc=tuned["val_acc"], finetuned_test_acc=tuned["test_acc"])
    if runs_sanity_checks(cfg):
        for key in SANITY_CHECKS:
            load_model_file(model, before_path)
            train_weights_only(model)
            _apply_control(ctx, model, key)
            result = run_phase(ctx, model, finetune_phase(cfg, key))
            fields[f"{key}_val_acc"] = result["val_acc"]
            fields[f"{key}_test_acc"] = result["test_acc"]
            fields[f"{key}_density_pct"] = result["density_pct"]
    load_model_file(model, ctx.path("checkpoints", "final.pt"))
    if cfg.grad_flow:
        fields.update(start_grad_norms(ctx, model))
    _log_table(ctx, fields)
    return fields


def start_grad_norms(ctx, model) -> dict:
    """grad_flow: the gradient norm of the dense network at init, of the ticket as
    fine-tuning starts and of each sanity check as it starts (summary `*_grad_norm`)."""
    from pruners.start_grad_flow import dense_at_init, record_start_norms, ticket_start

    starts = {"dense_init": dense_at_init(ctx, train_weights_only),
              "ticket": ticket_start(ctx, train_weights_only)}
    if runs_sanity_checks(ctx.cfg):
        for key in SANITY_CHECKS:
            starts[key] = ticket_start(ctx, train_weights_only,
                                       then=lambda net, key=key: _apply_control(ctx, net, key))
    return record_start_norms(ctx, model, starts)


def _apply_control(ctx, model, key: str) -> None:
    """Turn the ticket in `model` into a sanity-check network (deterministic per run)."""
    generator = seeded_generator(ctx.seed, key)
    if key == "sanity_reinit":             # same mask, weights re-drawn
        reinitialize_weights(model, "kaiming_normal", generator)
    elif key == "sanity_shuffle":          # the initial weights, mask shuffled per layer
        shuffle_masks_onto_initial_weights(model, load_checkpoint(
            ctx.path("checkpoints", "init.pt"))["model"], generator)
    else:
        raise ValueError(key)


def write_phase_table(ctx, key: str, filename: str, extra_columns: list[str]) -> None:
    """Write the rows of phase `key` (metrics plus the algorithm's extra numbers) as a CSV."""
    rows = [{**{k: row.get(k) for k in ("epoch", "lr", "density_pct", "sparsity_pct",
                                        "val_acc", "test_acc", "train_loss")},
             **row.get("extra", {})}
            for row in ctx.state.rows if row.get("key") == key]
    write_csv(ctx.path(filename), ["epoch", "lr", "density_pct", "sparsity_pct", "val_acc",
                                   "test_acc", "train_loss", *extra_columns], rows)


def last_row(ctx, key: str) -> dict:
    """The last metrics row of phase `key` ({} when none)."""
    return next((r for r in reversed(ctx.state.rows) if r.get("key") == key), {})


def _log_table(ctx, fields: dict) -> None:
    def pct(value):
        return "   n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
            else f"{value:6.2f}"

    rows = []
    if "search_test_acc" in fields:
        rows.append(("search (rounded/selected mask)", fields.get("search_density_pct"),
                     fields.get("search_val_acc"), fields.get("search_test_acc")))
    rows.append(("ticket before fine-tuning", fields["density_pct"],
                 fields["ticket_val_acc"], fields["ticket_test_acc"]))
    if "finetuned_test_acc" in fields:
        rows.append(("fine-tuned ticket", fields["density_pct"], fields["finetuned_val_acc"],
                     fields["finetuned_test_acc"]))
    for key, label in zip(SANITY_CHECKS, ("sanity: same mask, weights re-drawn",
                                          "sanity: mask shuffled per layer")):
        if f"{key}_test_acc" in fields:
            rows.append((label, fields[f"{key}_density_pct"], fields[f"{key}_val_acc"],
                         fields[f"{key}_test_acc"]))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'network':<{width}}  {'density %':>9}  {'sparsity %':>10}  {'val %':>6}  "
             f"{'test %':>6}"]
    for name, dens, val, test in rows:
        sparsity = None if dens is None else 100.0 - dens
        lines.append(f"{name:<{width}}  {pct(dens):>9}  {pct(sparsity):>10}  {pct(val)}  "
                     f"{pct(test)}")
    ctx.logger.info("\n" + "\n".join(lines))


def plan_finish(cfg, splits, ticket_line: str) -> list[str]:
    """Dry-run lines for the ticket, fine-tuning and sanity checks."""
    lines = [ticket_line]
    if cfg.skip_fine_tune:
        return lines + ["no fine-tuning (skip_fine_tune)"]
    spec = finetune_phase(cfg)
    steps = math.ceil(splits.num_train / cfg.batch_size)
    lines.append(f"phase finetune: {spec.epochs} epochs × ~{steps} steps; weights and "
                 f"BatchNorm train, mask frozen, no regulariser; "
                 f"{spec.optimizer.describe()}; lr {spec.schedule.describe()}")
    if runs_sanity_checks(cfg):
        lines.append("sanity checks (each a fine-tuning like the above): sanity_reinit "
                     "(same mask, weights re-drawn kaiming_normal), sanity_shuffle (mask "
                     "shuffled within each layer, initial weights)")
    return lines
