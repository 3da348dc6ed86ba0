"""Pruning at initialisation: `snip`, `grasp`, `synflow`, `magnitude_init`, `random`.

A run (1) prunes the freshly initialised network to exactly `target_sparsity` % — in one
round, or in `prune_iterations` rounds (synflow: `synflow_iterations`) whose densities shrink
geometrically, re-scoring the network at init after each round; (2) saves the ticket
(ticket.pt, checkpoints/before_finetune.pt: masks + initial weights, pruned ones zero);
(3) trains the weights under the frozen mask for `epochs` with the run's optimizer and
schedule (phase `train`); (4) trains each control of `at_init_controls` the same way.

Scores are computed on copies of the network, so the trained network's weights and
BatchNorm running statistics are exactly those of initialisation (pruned weights zeroed).
The mask is computed once and its record kept in `state.extra`; every training is a
resumable phase.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import replace

import torch

from models import build_model
from models.flops import flops_of_counts, flops_text, format_flops, output_positions
from models.granularity import (CHANNEL, NM, WEIGHT, channel_density_pct, granularity_of,
                                keep_for, nm_keep, planned_flops, shuffled_masks_for,
                                units_of)
from models.masks import density_pct, density_text, get_masks, prunable_layers, set_masks
from models.prune_targets import (Keep, check_target, geometric_densities, keep_at,
                                  layer_densities, report_collapse)
from pruners import Algorithm
from pruners.at_init.scores import (erk_counts, grasp_scores, magnitude_scores, prune_at_init,
                                    random_channel_scores_at_init, random_scores, snip_scores,
                                    synflow_scores)
from pruners.ticket_controls import shuffle_masks_onto_initial_weights
from pruners.tickets import evaluate_model, load_model_file, save_ticket
from pruners.training import plan_training, training_phase
from utils.errors import ConfigError
from utils.phases import PhaseJob, PhaseSpec, run_phase
from utils.seeds import seeded_generator

METHOD_TEXT = {
    "snip": "SNIP |g ⊙ w|",
    "grasp": "GraSP −w ⊙ Hg (highest removed)",
    "synflow": "SynFlow |w ⊙ ∂R/∂w| (data-free)",
    "magnitude_init": "magnitude |w| at init",
    "random": "random scores",
}
CONTROL_TEXT = {"reinit": "same mask, fresh weights",
                "shuffle_mask": "mask permuted within each layer, initial weights",
                "shuffle_weights": "surviving initial weights permuted within each layer"}


def rounds_of(cfg) -> int:
    """Scoring rounds: synflow_iterations for synflow, else prune_iterations."""
    return cfg.synflow_iterations if cfg.algo_name == "synflow" else cfg.prune_iterations


def schedule(cfg, model) -> tuple[list[str], list[Keep]]:
    """(pruned layers, exact counts of every round); ConfigError for a bad prune_ignore or an
    unreachable target."""
    units = units_of(cfg, model)
    if units.granularity.kind != WEIGHT:
        return units.pool, granular_keeps(cfg, units)
    shapes = {n: tuple(layer.weight.shape) for n, layer in prunable_layers(model).items()}
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    pool = check_target(cfg, sizes)
    keeps = []
    for density in geometric_densities(cfg.target_sparsity / 100.0, rounds_of(cfg)):
        keep = keep_at(sizes, pool, cfg.prune_scope, density)
        if cfg.algo_name == "random" and cfg.random_distribution == "erk":
            whole = keep_at(sizes, pool, "global", density)
            keep = Keep(whole.kept, whole.pool_keep,
                        erk_counts({n: shapes[n] for n in pool}, whole.pool_keep))
        keeps.append(keep)
    return pool, keeps


def granular_keeps(cfg, units) -> list[Keep]:
    """The rounds' counts at channel or n:m granularity: channels on the geometric schedule
    to target_sparsity (every layer keeps one at least), or n_r = m − ⌈(m − n)·r/k⌉ of
    every m after round r of k."""
    rounds = rounds_of(cfg)
    if units.granularity.kind == NM:
        n, m = units.granularity.n, units.granularity.m
        return [nm_keep(units, m - math.ceil((m - n) * r / rounds))
                for r in range(1, rounds + 1)]
    try:
        return [keep_for(units, cfg.prune_scope, density)
                for density in geometric_densities(cfg.target_sparsity / 100.0, rounds)]
    except ValueError as exc:
        raise ConfigError(f"{cfg.where('target_sparsity')}: {exc}") from None


def scoring_batches(ctx, count: int) -> list:
    """The first `count` training minibatches of a fixed, seeded order (augmented as in
    training); more than an epoch's worth continues into the next epochs of that order."""
    loader = ctx.loaders.train
    seed = zlib.crc32(f"{ctx.seed}:prune_batches".encode())
    batches, epoch = [], 0
    while len(batches) < count:
        loader.set_epoch(epoch, seed=seed)
        for batch in loader:
            batches.append(batch)
            if len(batches) == count:
                break
        epoch += 1
    return batches


def score_function(ctx, model):
    """(score(copy) → scores, largest): how the run's method scores a network copy."""
    cfg = ctx.cfg
    method = cfg.algo_name
    if method in ("snip", "grasp"):
        batches = scoring_batches(ctx, cfg.prune_batches)
        fn = snip_scores if method == "snip" else grasp_scores
        return (lambda net: fn(net.train(), batches)), method != "grasp"
    if method == "synflow":
        spec = ctx.model_spec
        shape = (spec.channels, spec.image_size, spec.image_size)
        return (lambda net: synflow_scores(net, shape)), True
    if method == "magnitude_init":
        return magnitude_scores, True
    generator = seeded_generator(ctx.seed, "random_at_init")
    if granularity_of(cfg).kind == CHANNEL:
        return (lambda net: random_channel_scores_at_init(net, generator)), True
    return (lambda net: random_scores(net, generator)), True


def make_ticket(ctx, model) -> dict:
    """Prune the initial network (all rounds) and return the record kept in state.extra."""
    cfg, log = ctx.cfg, ctx.logger
    pool, keeps = schedule(cfg, model)
    units = units_of(cfg, model)
    score, largest = score_function(ctx, model)
    rounds = len(keeps)
    shown = set(range(1, min(rounds, 5) + 1)) | {rounds}

    def on_round(r: int, net) -> None:
        if r in shown:
            log.info(f"prune at init round {r}/{rounds}: kept {keeps[r - 1].kept:,} "
                     f"{units.unit}, {density_text(density_pct(net))}")

    prune_at_init(model, pool, keeps, score, largest=largest, on_round=on_round, units=units)
    collapsed = report_collapse(ctx, model, f"after {cfg.algo_name} pruning at init")
    ticket = {**evaluate_model(ctx, model), "density_pct": density_pct(model),
              "layer_density_pct": layer_densities(model), "collapsed_layers": collapsed}
    if units.granularity.kind == CHANNEL:
        ticket["channel_density_pct"] = channel_density_pct(units, get_masks(model))
    save_ticket(ctx, model, {"scoring": cfg.algo_name, "rounds": rounds})
    log.info(f"ticket ({METHOD_TEXT[cfg.algo_name]}, {rounds} round(s)): "
             f"{density_text(ticket['density_pct'])}; untrained val {ticket['val_acc']:.2f} % "
             f"test {ticket['test_acc']:.2f} %; saved ticket.pt")
    return ticket


def control_seed(seed: int, name: str) -> int:
    return zlib.crc32(f"{seed}:at_init:{name}".encode())


def setup_control(ctx, model, name: str) -> None:
    """Turn the ticket held by `model` into control `name` (deterministic per run)."""
    generator = torch.Generator().manual_seed(control_seed(ctx.seed, name))
    masks = get_masks(model)
    if name == "reinit":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(control_seed(ctx.seed, name))
            fresh = build_model(ctx.cfg.replace(fixed_init=False), ctx.model_spec)
        model.load_state_dict(fresh.state_dict())
        set_masks(model, masks)
    elif name == "shuffle_mask":
        from utils.checkpoint import load_checkpoint

        initial = load_checkpoint(ctx.path("checkpoints", "init.pt"))["model"]
        units = units_of(ctx.cfg, model)
        if units.granularity.kind == WEIGHT:
            shuffle_masks_onto_initial_weights(model, initial, generator)
        else:
            shuffled = shuffled_masks_for(units, masks, generator)
            with torch.no_grad():
                for layer_name, layer in prunable_layers(model).items():
                    layer.weight.copy_(initial[f"{layer_name}.weight"].to(layer.weight.device))
            set_masks(model, {n: shuffled.get(n, torch.ones_like(m)) for n, m in masks.items()})
    elif name == "shuffle_weights":
        with torch.no_grad():
            for layer in prunable_layers(model).values():
                alive = layer.mask.bool()
                values = layer.weight[alive]
                perm = torch.randperm(values.numel(), generator=generator).to(values.device)
                layer.weight[alive] = values[perm]
    else:
        raise ValueError(name)


def at_init_jobs(ctx, model) -> list[PhaseJob]:
    """Prune at init (once) and list the trainings still to run: the ticket, then each
    control, all starting from checkpoints/before_finetune.pt."""
    cfg, state = ctx.cfg, ctx.state
    before = ctx.path("checkpoints", "before_finetune.pt")
    if "ticket" not in state.extra:
        state.extra["ticket"] = make_ticket(ctx, model)

    def start_ticket() -> PhaseSpec:
        load_model_file(model, before)
        return training_phase(cfg)

    def save_final() -> None:
        ctx.save_model(model, "final.pt")
        state.extra["final_saved"] = True

    def start_control(name: str) -> PhaseSpec:
        load_model_file(model, before)
        setup_control(ctx, model, name)
        key = f"control_{name}"
        return replace(training_phase(cfg), key=key, phase=key)

    jobs = []
    if "train" not in state.completed or not state.extra.get("final_saved"):
        jobs.append(PhaseJob("train", start_ticket, save_final))
    for name in cfg.at_init_controls or []:
        if f"control_{name}" not in state.completed:
            jobs.append(PhaseJob(f"control_{name}", lambda name=name: start_control(name)))
    return jobs


def run_at_init(ctx, model) -> dict:
    """Prune at init, train the ticket, train the controls; returns the summary fields."""
    cfg, state, log = ctx.cfg, ctx.state, ctx.logger
    for job in at_init_jobs(ctx, model):
        run_phase(ctx, model, job.start())
        if job.finish is not None:
            job.finish()
    ticket, trained = state.extra["ticket"], state.completed["train"]
    controls = []
    for name in cfg.at_init_controls or []:
        result = state.completed[f"control_{name}"]
        controls.append({"control": name, "density_pct": result["density_pct"],
                         "val_acc": result["val_acc"], "test_acc": result["test_acc"],
                         "best_val_acc": result["best_val_acc"]})
    load_model_file(model, ctx.path("checkpoints", "final.pt"))
    fields = {"scoring": cfg.algo_name, "scoring_rounds": rounds_of(cfg),
              "prune_scope": cfg.prune_scope, "target_density_pct": cfg.target_sparsity,
              "density_pct": ticket["density_pct"],
              "layer_density_pct": ticket["layer_density_pct"],
              "collapsed_layers": ticket["collapsed_layers"],
              "ticket_val_acc": ticket["val_acc"], "ticket_test_acc": ticket["test_acc"],
              **{k: trained[k] for k in ("train_acc", "train_loss", "val_acc", "test_acc",
                                         "best_val_acc", "test_acc_at_best_val",
                                         "best_val_epoch")},
              "controls": controls}
    if "channel_density_pct" in ticket:
        fields["channel_density_pct"] = ticket["channel_density_pct"]
    if cfg.algo_name == "random":
        fields["random_distribution"] = cfg.random_distribution
    for c in controls:
        fields[f"control_{c['control']}_test_acc"] = c["test_acc"]
    if cfg.grad_flow:
        fields.update(start_grad_norms(ctx, model))
        for c in controls:
            c["grad_norm"] = fields[f"control_{c['control']}_grad_norm"]
    _log_table(log, fields)
    return fields


def start_grad_norms(ctx, model) -> dict:
    """grad_flow: the gradient norm of the dense network at init, of the pruned network as
    its training starts and of each control as it starts (summary `*_grad_norm`)."""
    from pruners.start_grad_flow import dense_at_init, record_start_norms, ticket_start

    starts = {"dense_init": dense_at_init(ctx), "ticket": ticket_start(ctx)}
    for name in ctx.cfg.at_init_controls or []:
        starts[f"control_{name}"] = ticket_start(
            ctx, then=lambda net, name=name: setup_control(ctx, net, name))
    return record_start_norms(ctx, model, starts)


def _pct(value) -> str:
    return "   n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:6.2f}"


def _log_table(log, fields: dict) -> None:
    rows = [("ticket, untrained", fields["ticket_val_acc"], fields["ticket_test_acc"]),
            ("ticket, trained", fields["val_acc"], fields["test_acc"])]
    rows += [(f"control {c['control']}", c["val_acc"], c["test_acc"])
             for c in fields["controls"]]
    width = max(len(r[0]) for r in rows)
    lines = [f"{fields['scoring']} at {density_text(fields['density_pct'])}",
             f"{'network':<{width}}  {'val %':>6}  {'test %':>6}"]
    lines += [f"{name:<{width}}  {_pct(val)}  {_pct(test)}" for name, val, test in rows]
    if fields["collapsed_layers"]:
        lines.append(f"LAYER COLLAPSE: {', '.join(fields['collapsed_layers'])} at 0 % density")
    log.info("\n" + "\n".join(lines))


# --------------------------------------------------------------------------- dry run


def plan_at_init(cfg, splits, model) -> list[str]:
    pool, keeps = schedule(cfg, model)
    units = units_of(cfg, model)
    sizes, total, unit = units.sizes, units.total, units.unit
    method = cfg.algo_name
    how = METHOD_TEXT[method]
    if method in ("snip", "grasp"):
        how += f" on {cfg.prune_batches} training minibatch(es) of {cfg.batch_size}"
    if method == "random":
        how += f", {cfg.random_distribution} distribution"
    scope = "ERK layer densities" if method == "random" and \
        cfg.random_distribution == "erk" else f"{cfg.prune_scope} scope"
    if units.granularity.kind != WEIGHT:
        scope += f"; granularity {units.granularity.describe()}"
    ignored = [n for n in units.weight_sizes if n not in pool]
    schedule_text = " (n_r of every m after round r)" if units.granularity.kind == NM else \
        " (density target^(r/k) after round r)"
    lines = [f"prune at init: {how}; {scope}"
             + (f"; dense layers: {', '.join(ignored)}" if ignored else "")
             + f"; {len(keeps)} round(s)" + (" (one-shot)" if len(keeps) == 1 else
                                             schedule_text)]
    shown = list(range(len(keeps))) if len(keeps) <= 6 else [0, 1, 2, 3, 4, len(keeps) - 1]
    for i in shown:
        if i == len(keeps) - 1 and len(keeps) > 6:
            lines.append("  ...")
        k = keeps[i]
        what = density_text(100.0 * k.kept / total) if unit == "weights" else \
            f"channel {density_text(100.0 * k.kept / total)}"
        group = "" if k.per_group is None else f", {k.per_group}:{units.granularity.m}"
        lines.append(f"  round {i + 1:>3}: keep exactly {k.kept:,} of {total:,} {unit} "
                     f"({what}{group})")
    final = keeps[-1]
    if final.layer_keep is not None:
        lines.append(f"  layer densities % ({unit}): " + ", ".join(
            f"{n} {100.0 * final.layer_keep[n] / sizes[n]:.2f}" for n in pool))
    else:
        lines.append("  layer densities: decided by the scores (reported in the summary)")
    positions = output_positions(model, (splits.channels, splits.image_size,
                                         splits.image_size))
    dense = flops_of_counts(positions, units.weight_sizes, {})
    record = planned_flops(units, final, positions, cfg.prune_scope) \
        if not (method == "random" and cfg.random_distribution == "erk") else None
    lines.append(f"  {flops_text(record)}" if record is not None else
                 f"  dense FLOPs {format_flops(dense['dense_flops'])} (multiply-adds per "
                 f"image); the ticket's decided by the scores (summary.json)")
    lines.append("  scores are computed on a copy of the network: the trained network keeps "
                 "its initial weights and BatchNorm statistics")
    lines += [line for line in plan_training(cfg, splits, model)
              if not line.startswith("density")]
    if cfg.at_init_controls:
        lines.append("controls (each trained like the ticket): " + "; ".join(
            f"{c} ({CONTROL_TEXT[c]})" for c in cfg.at_init_controls))
    return lines


def prepare_at_init(cfg, splits, model, logger) -> None:
    """Check prune_ignore and the target before anything is written."""
    schedule(cfg, model)


def _algorithm(name: str) -> Algorithm:
    return Algorithm(name, run_at_init, plan_at_init, prepare=prepare_at_init,
                     jobs=at_init_jobs)


SNIP = _algorithm("snip")
GRASP = _algorithm("grasp")
SYNFLOW = _algorithm("synflow")
MAGNITUDE_INIT = _algorithm("magnitude_init")
RANDOM = _algorithm("random")
