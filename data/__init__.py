"""Datasets as train / val / test splits, and the loaders that feed them to a model."""
from __future__ import annotations

import copy
import dataclasses
import importlib

import torch

from data.loader import DeviceLoader, Loaders
from data.registry import DATASETS
from data.splits import ImageSplits

__all__ = ["DeviceLoader", "ImageSplits", "Loaders", "load_splits", "loaders_sharing", "make_loaders"]


def load_splits(cfg, plan_only: bool = False):
    """Read (or generate) `cfg.dataset`. Raises DataError when files are missing.

    `plan_only` (a dry run): never download, and when the files are missing fall back to the
    dataset's published split sizes (data/known_sizes.py), which is all a plan needs."""
    module_name, func = DATASETS[cfg.dataset].split(":")
    load = getattr(importlib.import_module(module_name), func)
    if not plan_only:
        return load(cfg)
    from data.known_sizes import planned_splits
    from utils.errors import DataMissing

    try:
        return load(cfg.replace(download=False))
    except DataMissing as exc:
        planned = planned_splits(cfg, missing=str(exc))
        if planned is None:
            raise
        return planned


def make_loaders(splits, batch_size: int, device: torch.device, seed: int) -> Loaders:
    """The train / val / test loaders of `splits` on `device` (training order seeded)."""
    return splits.make_loaders(batch_size, device, seed)


def loaders_sharing(shared: Loaders, splits, batch_size: int, device: torch.device,
                    seed: int) -> Loaders:
    """Loaders for another run over the same splits: with device-resident data, the images on
    the device are shared and only the training order / augmentation seed is the run's own;
    otherwise fresh loaders."""
    if not isinstance(shared.train, DeviceLoader) or shared.train.batch_size != batch_size:
        return make_loaders(splits, batch_size, device, seed)
    train = copy.copy(shared.train)
    train.seed = seed
    return dataclasses.replace(shared, train=train)
