"""Datasets as train / val / test splits, and the loaders that feed them to a model."""
from __future__ import annotations

import importlib

import torch

from data.loader import DeviceLoader, Loaders
from data.registry import DATASETS
from data.splits import ImageSplits

__all__ = ["DeviceLoader", "ImageSplits", "Loaders", "load_splits", "make_loaders"]


def load_splits(cfg):
    """Read (or generate) `cfg.dataset`. Raises DataError when files are missing."""
    module_name, func = DATASETS[cfg.dataset].split(":")
    return getattr(importlib.import_module(module_name), func)(cfg)


def make_loaders(splits, batch_size: int, device: torch.device, seed: int) -> Loaders:
    """The train / val / test loaders of `splits` on `device` (training order seeded)."""
    return splits.make_loaders(batch_size, device, seed)
