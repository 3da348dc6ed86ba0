"""A found ticket (a mask and the weights the sparse network starts from) as a file, shared
by every family that writes or reads one.

`save_ticket` writes ticket.pt and checkpoints/before_finetune.pt from the network holding the
ticket (mask searches, pruning at init, early-bird).  `apply_ticket` reuses a saved ticket
(`algo: training` with `ticket: PATH`, a ticket.pt of IMP or of a mask search): its masks and
start weights are loaded into the network built by this config — another seed, optimizer or
dataset ("one ticket to win them all").  A classifier whose class count differs is
re-initialised (kept dense) and the log says so; any other mismatch is a config error."""
from __future__ import annotations

from models.masks import get_masks, prunable_layers
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.context import model_record
from utils.errors import ConfigError
from utils.train import evaluate


def apply_ticket(cfg, model, logger) -> None:
    """Load `cfg.ticket` into `model` (before anything is written); ConfigError if it does
    not fit."""
    where = cfg.where("ticket")
    try:
        blob = load_checkpoint(cfg.ticket)
    except Exception as exc:  # noqa: BLE001 (any unreadable file is a usage error)
        raise ConfigError(f"{where}: cannot load {cfg.ticket}: "
                          f"{str(exc).splitlines()[0][:160]}") from None
    if not isinstance(blob, dict) or "weights" not in blob or "masks" not in blob:
        raise ConfigError(f"{where}: {cfg.ticket} is not a ticket.pt (no masks/weights)")
    if blob.get("arch") != cfg.arch:
        raise ConfigError(f"{where}: the ticket is for arch {blob.get('arch')}, the config "
                          f"builds {cfg.arch}")
    classifier = list(prunable_layers(model))[-1]
    own = model.state_dict()
    state = {k: v for k, v in blob["weights"].items() if k in own}
    skipped = []
    for key, value in list(state.items()):
        if value.shape == own[key].shape:
            continue
        if key.startswith(classifier + "."):
            skipped.append(key)
            del state[key]
        else:
            raise ConfigError(f"{where}: the ticket does not fit this network at {key} "
                              f"({tuple(value.shape)} vs {tuple(own[key].shape)}; another "
                              f"input size or channel count?)")
    if skipped:
        for key in [k for k in state if k.startswith(classifier + ".")]:
            del state[key]       # re-initialise the whole classifier, mask included
        logger.info(f"ticket: classifier '{classifier}' re-initialised and kept dense "
                    f"(the ticket has {blob['input']['num_classes']} classes, this dataset "
                    f"{own[classifier + '.weight'].shape[0]})")
    model.load_state_dict(state, strict=False)
    level = "" if blob.get("level") is None else f"level {blob['level']}, "
    logger.info(f"ticket: loaded {cfg.ticket} ({level}density "
                f"{blob.get('density_pct', float('nan')):.3f} %)")


def evaluate_model(ctx, model) -> dict:
    """Validation and test accuracy (%) of `model`."""
    return {"val_acc": evaluate(model, ctx.loaders.val, ctx.autocast_dtype)["acc"],
            "test_acc": evaluate(model, ctx.loaders.test, ctx.autocast_dtype)["acc"]}


def load_model_file(model, path: str) -> None:
    """Load the weights, masks and statistics saved by `ctx.save_model`."""
    model.load_state_dict(load_checkpoint(path)["model"])


def save_ticket(ctx, model, search: dict) -> None:
    """Write ticket.pt and checkpoints/before_finetune.pt from the model holding the ticket."""
    ctx.save_model(model, "before_finetune.pt")
    record = model_record(ctx.cfg, model, ctx.model_spec)
    record["weights"] = record["model"]       # the key `ticket: PATH` reads (shared storage)
    record["masks"] = {name: mask.bool() for name, mask in get_masks(model).items()}
    record["search"] = search
    save_checkpoint(record, ctx.path("ticket.pt"))
