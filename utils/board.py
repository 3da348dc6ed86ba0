"""The TensorBoard layout of a run directory.

    <run>/events.out.tfevents.*            the run: config (text), HParams (science options +
                                            the numbers compared between runs), per-level IMP
                                            scalars (step = level), the run's figures (images)
    <run>/phases/<key>/events.out.tfevents.*   one sub-run per phase (IMP level, control,
                                            search, fine-tuning, sanity check, ...): its
                                            curves with step = epoch of that phase, per-layer
                                            density, and weight / score / mask histograms at
                                            the phase's end

`tensorboard --logdir runs` then lists each phase as a run of its own, so the curves of all
levels (or fine-tuning and its sanity checks) overlay in one chart, each from its own first
epoch.
"""
from __future__ import annotations

import os

import torch

from utils.logging import PHASES_DIR
from utils.outcomes import COMPARED


def phase_writer(ctx, key: str, step: int):
    """The writer of phase `key`, about to record `step`: when the phase has events from an
    interrupted earlier attempt, those at or after `step` are discarded (they were never
    saved in last.pt)."""
    logger = ctx.logger
    if logger.tb is None:
        return None
    folder = os.path.join(ctx.run_dir, PHASES_DIR, key)
    return logger.phase_writer(key, purge_step=step if os.path.isdir(folder) else None)


def phase_scalars(ctx, key: str, values: dict, step: int) -> None:
    """Scalars of phase `key` at `step` (its epoch)."""
    writer = phase_writer(ctx, key, step)
    if writer is not None:
        ctx.logger.scalars(values, step, writer)


def phase_histogram(ctx, key: str, tag: str, values: torch.Tensor, step: int) -> None:
    """A histogram of phase `key` at `step` (its epoch)."""
    writer = phase_writer(ctx, key, step)
    if writer is not None:
        ctx.logger.histogram(tag, values, step, writer)


def log_epoch(ctx, spec, row: dict, extra: dict) -> None:
    """One epoch of a phase (a metrics row): its curves, the per-layer density when it
    changed, and at the phase's last epoch the weight, score and mask histograms."""
    step = row["epoch"]
    writer = phase_writer(ctx, spec.key, step)
    if writer is None:
        return
    log = ctx.logger
    log.scalars({"train/loss": row["train_loss"], "train/acc": row["train_acc"],
                 "val/loss": row["val_loss"], "val/acc": row["val_acc"],
                 "test/loss": row["test_loss"], "test/acc": row["test_acc"],
                 "lr": row["lr"], "density_pct": row["density_pct"],
                 "sparsity_pct": row["sparsity_pct"],
                 **{f"{spec.phase}/{k}": v for k, v in extra.items()}}, step, writer)
    model = getattr(ctx, "model", None)
    if model is None:
        return
    last = step == spec.epochs
    densities = layer_densities(model)
    if last or densities != log.phase_state.get("layer_density"):
        log.scalars({f"layer_density/{name}": d for name, d in densities.items()}, step,
                    writer)
        log.phase_state["layer_density"] = densities
    if last:
        phase_end_histograms(log, writer, model, step)
        writer.flush()


def layer_densities(model) -> dict:
    """Per prunable layer: the density (%) of its mask."""
    from models.masks import prunable_layers

    return {name: 100.0 * float(layer.mask.count_nonzero()) / layer.mask.numel()
            for name, layer in prunable_layers(model).items()}


@torch.no_grad()
def phase_end_histograms(log, writer, model, step: int) -> None:
    """Per prunable layer: the surviving weights (`weights/`), the scores of score-based
    algorithms (`scores/`) and the mask's 0/1 values (`masks/`, whose two bars are the
    removed and kept counts)."""
    from models.masks import prunable_layers

    for name, layer in prunable_layers(model).items():
        mask = layer.mask.detach()
        log.histogram(f"weights/{name}", layer.weight.detach()[mask != 0].float().cpu(), step,
                      writer)
        if getattr(layer, "scores", None) is not None:
            log.histogram(f"scores/{name}", layer.scores.detach().float().cpu().flatten(),
                          step, writer)
        log.histogram(f"masks/{name}", mask.float().cpu().flatten(), step, writer)


def log_config(logger, cfg) -> None:
    """The resolved config as a text panel ("config")."""
    logger.text("config", "```yaml\n" + cfg.to_yaml().rstrip() + "\n```")


def hparam_schema(options) -> tuple[dict, list]:
    """What every run declares to TensorBoard's HParams tab, from the option schema
    (args_helper.OPTIONS): an example value per science option of any algorithm (0.0 for
    numbers, "" for the rest: its type) plus `algo`, and the names of the compared numbers
    (utils/outcomes.py), controls of every kind included."""
    examples = {"algo": ""}
    controls = []
    for opt in options:
        if opt.name.endswith("_controls"):
            controls += [c for c in opt.choices if c not in controls]
        if opt.science and opt.yaml and opt.status not in ("legacy", "unsupported"):
            examples[opt.name] = 0.0 if opt.kind in ("int", "float") else ""
    metrics = [f"hparam/{name}" for name in COMPARED] + \
        [f"hparam/control_{name}_test_acc" for name in controls]
    return examples, metrics


def science_hparams(cfg, examples: dict) -> dict:
    """This run's values of the science options that matter for its algorithm (numbers as
    numbers, the rest as text; an unset number is left out), with the effective algorithm
    name as `algo`."""
    out = {"algo": cfg.algo_name}
    for name, value in cfg.science_settings().items():
        if isinstance(examples.get(name), float):
            out[name] = None if value is None or isinstance(value, bool) else float(value)
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        else:
            out[name] = "unset" if value is None else (
                " ".join(map(str, value)) if isinstance(value, list) else str(value))
    return out


def log_hparams(logger, cfg, summary: dict, schema: tuple) -> None:
    """HParams: the science options of the run's algorithm and the numbers compared between
    runs (the result, density, IMP's dense accuracy and lowest matching density, the
    untrained ticket, the sanity checks and the controls), each under `hparam/`; every run
    declares the same columns (`schema`, from `hparam_schema`), so runs of different
    algorithms share one table."""
    from utils.outcomes import headline

    examples, metrics = schema
    logger.hparams(science_hparams(cfg, examples),
                   {f"hparam/{k}": v for k, v in headline(summary).items()},
                   experiment=(examples, metrics))
