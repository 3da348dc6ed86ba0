"""Device and precision selection from the config."""
from __future__ import annotations

import torch

from utils.errors import ConfigError


def select_device(cfg) -> torch.device:
    """cuda:<gpu> when asked for or available (device: auto), else cpu."""
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        device = torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            raise ConfigError(f"{cfg.where('device')}: cuda requested but CUDA is not "
                              f"available on this machine")
        count = torch.cuda.device_count()
        if cfg.gpu >= count:
            raise ConfigError(f"{cfg.where('gpu')} must be below the {count} visible GPU(s), "
                              f"got {cfg.gpu}")
        device = torch.device("cuda", cfg.gpu)
    return device


def autocast_dtype(cfg, device: torch.device) -> torch.dtype | None:
    """bf16 for `precision: bf16`, or `auto` on CUDA (also `mixed_precision`); else None."""
    if cfg.precision == "bf16":
        return torch.bfloat16
    if cfg.precision == "auto" and device.type == "cuda":
        return torch.bfloat16
    return None
