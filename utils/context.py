"""The run context passed explicitly to every algorithm (no module-level globals)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.logging import RunLogger, write_metrics_csv

CHECKPOINT_FORMAT = 1


@dataclass
class RunState:
    """What a run has done so far; saved inside checkpoints/last.pt after every epoch.

    rows: metrics rows; completed: phase key → result of each finished phase; global_epoch:
    epochs run over all phases (the TensorBoard step); extra: small algorithm state;
    position/resume: the phase in progress and its checkpoint when resuming.
    """

    rows: list = field(default_factory=list)
    completed: dict = field(default_factory=dict)
    global_epoch: int = 0
    extra: dict = field(default_factory=dict)
    resume: dict | None = None

    def to_dict(self) -> dict:
        return {"rows": self.rows, "completed": self.completed,
                "global_epoch": self.global_epoch, "extra": self.extra}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "RunState":
        saved = ckpt["state"]
        return cls(rows=list(saved["rows"]), completed=dict(saved["completed"]),
                   global_epoch=int(saved["global_epoch"]), extra=dict(saved["extra"]),
                   resume=ckpt)


@dataclass
class RunContext:
    """Everything an algorithm needs: config, device, data, run directory, logger, state."""

    cfg: object
    device: torch.device
    run_dir: str
    logger: RunLogger
    splits: object
    loaders: object
    model_spec: object
    autocast_dtype: torch.dtype | None
    seed: int
    state: RunState
    quiet: bool = False
    rank: int = 0
    world_size: int = 1
    disagreements: list = field(default_factory=list)   # phases whose ranks' masks differed
    fast: object = None        # utils.fast.FastPath: channels_last / compile choices + cache
    packed_engine: object = None   # the FastPath packed copies share (utils/packed_phase.py)
    model: object = None       # the network the algorithm trains (TensorBoard histograms)
    progress: object = None    # utils.progress.RunProgress: run-wide epochs and ETA

    @property
    def captures_steps(self) -> bool:
        """Whether training steps may be recorded as CUDA graphs (then in-step hooks and
        extra losses must avoid host synchronisation)."""
        return self.fast is not None and self.fast.cuda_graphs and self.world_size == 1

    def path(self, *parts: str) -> str:
        return os.path.join(self.run_dir, *parts)

    @property
    def last_path(self) -> str:
        return self.path("checkpoints", "last.pt")

    def save_model(self, model: torch.nn.Module, filename: str) -> str:
        """Save `model` as checkpoints/<filename> (see `model_record`); returns the path."""
        path = self.path("checkpoints", filename)
        save_checkpoint(model_record(self.cfg, model, self.model_spec), path)
        return path

    def save_last(self, model: torch.nn.Module, optimizer, phase_key: str, epoch: int,
                  step: int, best: dict) -> None:
        """Write the full resume state (atomically), then metrics.csv from the same rows."""
        ckpt = {
            "format": CHECKPOINT_FORMAT, "state": self.state.to_dict(),
            "phase_key": phase_key, "epoch": epoch, "step": step, "best": best,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "torch_rng": torch.get_rng_state(),
            # what resuming relies on: the config and the checkpoint files written so far
            "config_hash": self.cfg.run_hash(),
            "files": checkpoint_files(self.run_dir),
        }
        if self.device.type == "cuda":
            ckpt["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        save_checkpoint(ckpt, self.last_path)
        write_metrics_csv(self.path("metrics.csv"), self.state.rows)


def checkpoint_files(run_dir: str) -> list[str]:
    """The files in <run_dir>/checkpoints (last.pt and temporaries left out), sorted."""
    folder = os.path.join(run_dir, "checkpoints")
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(n for n in names if n != "last.pt" and not n.startswith(".")
                  and os.path.isfile(os.path.join(folder, n)))


def model_record(cfg, model: torch.nn.Module, spec) -> dict:
    """A self-describing model file: weights (masks included) + architecture + config."""
    from models.masks import density_pct

    return {"model": model.state_dict(), "arch": cfg.arch,
            "input": {"num_classes": spec.num_classes, "channels": spec.channels,
                      "image_size": spec.image_size},
            "density_pct": density_pct(model), "config": cfg.yaml_values()}


def load_run_state(run_dir: str) -> RunState:
    """The saved state of an unfinished run in `run_dir`, or a fresh state."""
    path = os.path.join(run_dir, "checkpoints", "last.pt")
    if not os.path.isfile(path):
        return RunState()
    return RunState.from_checkpoint(load_checkpoint(path))
