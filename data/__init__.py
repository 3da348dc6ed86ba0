"""Datasets as train / val / test splits, and the loaders that feed them to a model."""
from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch

from data.loader import DeviceLoader
from data.registry import DATASETS
from data.splits import ImageSplits


def load_splits(cfg) -> ImageSplits:
    """Read (or generate) `cfg.dataset` into memory. Raises DataError when files are missing."""
    module_name, func = DATASETS[cfg.dataset].split(":")
    return getattr(importlib.import_module(module_name), func)(cfg)


@dataclass
class Loaders:
    """The training loader and the two evaluation loaders of a run."""

    train: DeviceLoader
    val: DeviceLoader
    test: DeviceLoader


EVAL_BATCH = 1000


def make_loaders(splits: ImageSplits, batch_size: int, device: torch.device,
                 seed: int) -> Loaders:
    """Put the splits on `device` and wrap them in loaders (training order seeded by `seed`)."""
    common = dict(mean=splits.mean, std=splits.std, device=device)
    return Loaders(
        train=DeviceLoader(splits.train_x, splits.train_y, batch_size, train=True,
                           crop_padding=splits.crop_padding, flip=splits.flip, seed=seed,
                           **common),
        val=DeviceLoader(splits.val_x, splits.val_y, EVAL_BATCH, train=False, **common),
        test=DeviceLoader(splits.test_x, splits.test_y, EVAL_BATCH, train=False, **common))
