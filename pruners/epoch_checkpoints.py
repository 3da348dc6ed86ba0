"""Upstream's `ckpt_at_fixed_epochs`: model files after chosen epochs of the training or search
phase (upstream saved `wt_model_after_epoch_<e>.pth` after 0-based epoch e)."""
from __future__ import annotations


def checkpoint_name(epoch: int) -> str:
    """The file for the model after `epoch` (1-based) epochs: after_epoch_XXX.pt."""
    return f"after_epoch_{epoch:03d}.pt"


def save_fixed_epoch(ctx, model, epoch: int) -> str | None:
    """After 1-based epoch `epoch`, save checkpoints/after_epoch_XXX.pt when upstream's
    0-based number epoch − 1 is listed in ckpt_at_fixed_epochs; returns the path written."""
    listed = ctx.cfg.ckpt_at_fixed_epochs
    if not listed or epoch - 1 not in listed:
        return None
    path = ctx.save_model(model, checkpoint_name(epoch))
    ctx.logger.info(f"saved {path} (ckpt_at_fixed_epochs: {epoch - 1}, 0-based)")
    return path


def plan_fixed_epochs(cfg) -> list[str]:
    """Dry-run line naming the files ckpt_at_fixed_epochs will write (none: no line)."""
    listed = sorted(e for e in (cfg.ckpt_at_fixed_epochs or []) if e < cfg.epochs)
    if not listed:
        return []
    names = ", ".join(f"checkpoints/{checkpoint_name(e + 1)}" for e in listed)
    return [f"ckpt_at_fixed_epochs {listed} (0-based): {names}"]
