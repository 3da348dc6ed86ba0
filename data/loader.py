"""The device-resident loader (DESIGN.md §4): uint8 images live on the training device;
each epoch is a seeded permutation, and crop/flip/normalise run batched on that device.

The same seed and epoch give the same order and the same augmentation on the same device, so a
resumed run sees exactly the batches an uninterrupted one would.  Each batch draws its
augmentation from its own seeded generator, so an epoch can start at any batch
(`set_epoch(epoch, start_batch=k)`) and still see exactly batches k, k+1, ... of that epoch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from data.augment import normalize, random_crop, random_flip


@dataclass
class Loaders:
    """The training loader, the two evaluation loaders of a run, and `train_eval`: the
    training images in order without augmentation (training error of analyses)."""

    train: object
    val: object
    test: object
    train_eval: object = None


def epoch_seed(seed: int, epoch: int, batch: int = -1) -> int:
    """A generator seed for one epoch of one run (batch -1: its order) or for one batch's
    augmentation; distinct for every (seed, epoch, batch)."""
    return (seed * 1_000_003 + epoch * 7_919 + (batch + 1) * 104_729 + 12_345) % (2 ** 62)


def steps_per_epoch(num_images: int, batch_size: int) -> int:
    """Training batches per epoch: a trailing batch of a single image is skipped."""
    full, rest = divmod(num_images, batch_size)
    return full + (1 if rest > 1 else 0)


class DeviceLoader:
    """Iterate (normalised float32 images, int64 labels) batches from on-device uint8 tensors.

    Training mode (`train=True`) shuffles, augments and skips a trailing batch of a single
    image (BatchNorm cannot normalise one sample).  Evaluation mode walks the data in order.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 mean: tuple, std: tuple, device: torch.device, *, train: bool,
                 crop_padding: int = 0, flip: bool = False, seed: int = 0):
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.train = train
        self.crop_padding = crop_padding if train else 0
        self.flip = flip and train
        self.seed = seed
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, seed: int | None = None, start_batch: int = 0) -> None:
        """Select the epoch (optionally another seed) whose order/augmentation to draw, and the
        batch to start from (the batches before it are skipped, for mid-epoch starts)."""
        self.epoch = epoch
        self.start_batch = start_batch
        if seed is not None:
            self.seed = seed

    def __len__(self) -> int:
        if self.train:
            return steps_per_epoch(len(self.labels), self.batch_size)
        return -(-len(self.labels) // self.batch_size)

    @property
    def num_images(self) -> int:
        return len(self.labels)

    def __iter__(self):
        n = len(self.labels)
        if self.train:
            g = torch.Generator(device=self.device)
            g.manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(n, generator=g, device=self.device)
        first = self.start_batch * self.batch_size if self.train else 0
        for batch, start in enumerate(range(first, n, self.batch_size), self.start_batch):
            stop = min(start + self.batch_size, n)
            if self.train and stop - start < 2:
                break
            if self.train:
                idx = order[start:stop]
                x, y = self.images[idx], self.labels[idx]
                if self.crop_padding or self.flip:
                    g.manual_seed(epoch_seed(self.seed, self.epoch, batch))
                    x = random_crop(x, self.crop_padding, g)
                    if self.flip:
                        x = random_flip(x, g)
            else:
                x, y = self.images[start:stop], self.labels[start:stop]
            yield normalize(x, self.mean, self.std), y
