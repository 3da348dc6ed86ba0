"""The in-memory form small image datasets take: uint8 train / val / test tensors.

Any dataset object handed to the runner offers: name, num_classes, channels, image_size,
num_train, sizes() and make_loaders(batch_size, device, seed) → Loaders(train, val, test,
train_eval), train_eval being the training images without augmentation, in order.
Loaders yield (normalised float images on the device, int64 labels on the device) and have
set_epoch(epoch, seed), __len__ (batches), num_images and device.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from utils.errors import DataError

EVAL_BATCH = 1000   # images per evaluation batch


@dataclass
class ImageSplits:
    """uint8 images (N, C, H, W) and int64 labels for train / val / test, plus how to feed them.

    `mean`/`std` are per-channel normalisation constants on the 0–1 scale; `crop_padding` and
    `flip` describe the training augmentation (random crop with zero padding, horizontal flip).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple
    std: tuple
    crop_padding: int = 0
    flip: bool = False

    @property
    def num_train(self) -> int:
        return len(self.train_y)

    @property
    def channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_x.shape[2]

    def sizes(self) -> str:
        return (f"train {len(self.train_y)} / val {len(self.val_y)} / "
                f"test {len(self.test_y)} images")

    def make_loaders(self, batch_size: int, device: torch.device, seed: int):
        """Put the splits on `device` and wrap them in DeviceLoaders (train order seeded by
        `seed`)."""
        from data.loader import DeviceLoader, Loaders

        common = dict(mean=self.mean, std=self.std, device=device)
        return Loaders(
            train=DeviceLoader(self.train_x, self.train_y, batch_size, train=True,
                               crop_padding=self.crop_padding, flip=self.flip, seed=seed,
                               **common),
            val=DeviceLoader(self.val_x, self.val_y, EVAL_BATCH, train=False, **common),
            test=DeviceLoader(self.test_x, self.test_y, EVAL_BATCH, train=False, **common),
            train_eval=DeviceLoader(self.train_x, self.train_y, EVAL_BATCH, train=False,
                                    **common))


def holdout_indices(n: int, val_size: int, seed: int, where: str):
    """(train indices, validation indices) of n items: `val_size` drawn by a seeded shuffle,
    each list in increasing order."""
    if val_size < 0 or val_size >= n:
        raise DataError(f"val_size {val_size} must be smaller than the {n} training "
                        f"images of {where}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[val_size:].sort().values, order[:val_size].sort().values


def holdout(x: torch.Tensor, y: torch.Tensor, val_size: int, seed: int, where: str):
    """Split (x, y) into train and a validation set of `val_size` images, by a seeded shuffle."""
    train_idx, val_idx = holdout_indices(len(y), val_size, seed, where)
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


def split_train_val(cfg, x: torch.Tensor, y: torch.Tensor, default_val: int, where: str):
    """Apply the config's validation rule: none with use_full_data, else val_size images."""
    if cfg.use_full_data:
        empty = x[:0]
        return x, y, empty, y[:0]
    val_size = default_val if cfg.val_size is None else cfg.val_size
    return holdout(x, y, val_size, cfg.split_seed, where)


def channel_stats(x: torch.Tensor) -> tuple[tuple, tuple]:
    """Per-channel mean and std of uint8 images on the 0–1 scale."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1).double() / 255.0
    return tuple(flat.mean(1).tolist()), tuple(flat.std(1).tolist())
