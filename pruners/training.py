"""Dense training (`algo: training`, upstream's `weight_training: True`) from a fresh network or
from a saved ticket (`ticket: PATH`); its phase is also the training phase of the families that
prune at initialisation or during training."""
from __future__ import annotations

import math

from pruners import Algorithm
from pruners.epoch_checkpoints import plan_fixed_epochs, save_fixed_epoch
from utils.phases import PhaseJob, PhaseSpec, run_phase
from utils.schedules import optimizer_from_config, schedule_from_config


def training_phase(cfg) -> PhaseSpec:
    return PhaseSpec(key="train", phase="train", epochs=cfg.epochs,
                     optimizer=optimizer_from_config(cfg), schedule=schedule_from_config(cfg))


def run_training(ctx, model) -> dict:
    """Train every weight of the network (masks stay as built: all ones unless a pretrained
    checkpoint brought masks) and save checkpoints/final.pt (and the models after the epochs
    of ckpt_at_fixed_epochs)."""
    def save_epoch(epoch: int) -> None:
        save_fixed_epoch(ctx, model, epoch)
    result = run_phase(ctx, model, training_phase(ctx.cfg),
                       after_epoch=save_epoch if ctx.cfg.ckpt_at_fixed_epochs else None)
    ctx.save_model(model, "final.pt")
    return result


def training_jobs(ctx, model) -> list[PhaseJob]:
    """The one phase of `training` (for packed replicates; `run_training` then finds it done
    and saves final.pt)."""
    if "train" in ctx.state.completed:
        return []
    return [PhaseJob("train", lambda: training_phase(ctx.cfg))]


def plan_training(cfg, splits, model=None) -> list[str]:
    spec = training_phase(cfg)
    steps = math.ceil(splits.num_train / cfg.batch_size)
    return [f"phase train: {spec.epochs} epochs × ~{steps} steps (batch {cfg.batch_size}); "
            f"{spec.optimizer.describe()}; lr {spec.schedule.describe()}",
            "density 100.00 % / sparsity 0.00 % (all weights trained)", *plan_fixed_epochs(cfg)]


def prepare_training(cfg, splits, model, logger) -> None:
    """Load a saved ticket into the freshly built network when `ticket` is set."""
    if cfg.ticket:
        from pruners.tickets import apply_ticket

        apply_ticket(cfg, model, logger)


TRAINING = Algorithm("training", run_training, plan_training, prepare=prepare_training,
                     jobs=training_jobs)
