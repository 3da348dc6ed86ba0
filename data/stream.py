"""Streaming loader for image sets too large to hold on the device (TinyImageNet, ImageNet):
files are decoded and augmented by `workers` DataLoader processes, then moved to the device
and normalised there.  Same interface as DeviceLoader.

Each epoch's order and every image's augmentation seed are drawn in the main process from
(seed, epoch), so the same seed and epoch give the same batches whatever the worker count.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from data.augment import normalize
from data.image_folder import ImageFileDataset
from data.loader import Loaders, epoch_seed


class _EpochBatches:
    """Batch sampler: lists of (index, augmentation seed) for the loader's current epoch.

    Holds its StreamLoader weakly: a reference cycle would leave the DataLoader to the cyclic
    garbage collector, which closes the worker queues before the workers are told to stop
    (each shutdown then waits out a 5-second timeout)."""

    def __init__(self, loader: "StreamLoader"):
        self.loader = weakref.ref(loader)

    def __len__(self) -> int:
        return len(self.loader())

    def __iter__(self):
        return self.loader().epoch_batches()


class StreamLoader:
    """Iterate (normalised float32 images, int64 labels) batches, both on `device`.

    Training mode shuffles, augments and skips a trailing batch of a single image (as
    DeviceLoader); evaluation mode walks the samples in order with the evaluation transform.
    """

    def __init__(self, dataset: ImageFileDataset, batch_size: int, mean: tuple, std: tuple,
                 device: torch.device, *, train: bool, workers: int = 0, seed: int = 0):
        self.dataset = dataset
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.train = train
        self.workers = workers
        self.seed = seed
        self.epoch = 0
        self.start_batch = 0
        self._loader = None
        self.rank, self.world = 0, 1
        self.global_batch = batch_size   # images in the current global training batch

    def shard(self, rank: int, world: int) -> None:
        """Make this the loader of process `rank` of `world` (torchrun): training yields the
        rank's contiguous slice of each global batch (same order and augmentation seeds on
        every rank); evaluation walks the rank's contiguous shard."""
        self.rank, self.world = rank, world

    def set_epoch(self, epoch: int, seed: int | None = None, start_batch: int = 0) -> None:
        """Select the epoch (and optionally another seed) whose order/augmentation to draw;
        a training loader then starts at batch `start_batch` of that epoch (resume)."""
        self.epoch = epoch
        self.start_batch = start_batch
        if seed is not None:
            self.seed = seed

    def __len__(self) -> int:
        if not self.train:
            lo, hi = self._eval_range()
            return -(-(hi - lo) // self.batch_size)
        full, rest = divmod(len(self.dataset), self.batch_size)
        return full + (1 if rest >= max(2, self.world) else 0)

    def _eval_range(self) -> tuple[int, int]:
        n = len(self.dataset)
        return n * self.rank // self.world, n * (self.rank + 1) // self.world

    @property
    def num_images(self) -> int:
        return len(self.dataset)

    def epoch_batches(self):
        """Yield the batches of the current epoch as lists of (sample index, augmentation
        seed)."""
        n = len(self.dataset)
        if self.train:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(n, generator=g)
            seeds = torch.randint(0, 2 ** 62, (n,), generator=g)
        else:
            lo, hi = self._eval_range()
            for start in range(lo, hi, self.batch_size):
                stop = min(start + self.batch_size, hi)
                yield [(i, 0) for i in range(start, stop)]
            return
        first = self.start_batch * self.batch_size
        for start in range(first, len(self) * self.batch_size, self.batch_size):
            size = min(start + self.batch_size, n) - start
            lo = start + size * self.rank // self.world
            hi = start + size * (self.rank + 1) // self.world
            yield list(zip(order[lo:hi].tolist(), seeds[lo:hi].tolist()))

    def _data_loader(self) -> torch.utils.data.DataLoader:
        if self._loader is None:
            self._loader = torch.utils.data.DataLoader(
                self.dataset, batch_sampler=_EpochBatches(self), num_workers=self.workers,
                persistent_workers=self.train and self.workers > 0, pin_memory=self.device.type == "cuda")
        return self._loader

    def __iter__(self):
        n = len(self.dataset)
        for batch, (images, labels) in enumerate(self._data_loader(), self.start_batch):
            if self.train:   # (the sampler runs ahead of this loop under workers)
                self.global_batch = min(self.batch_size, n - batch * self.batch_size)
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            yield normalize(images, self.mean, self.std), labels


@dataclass
class StreamSplits:
    """A streamed dataset: (path, label) lists for train / val / test, the transforms that
    turn a file into a training or evaluation image, and the normalisation constants.
    Implements the dataset-object protocol of data/splits.py."""

    name: str
    classes: list
    train_samples: list
    val_samples: list
    test_samples: list
    train_transform: object
    eval_transform: object
    image_size: int
    mean: tuple
    std: tuple
    workers: int = 0
    channels: int = 3

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_train(self) -> int:
        return len(self.train_samples)

    def sizes(self) -> str:
        return (f"train {len(self.train_samples)} / val {len(self.val_samples)} / "
                f"test {len(self.test_samples)} images")

    def make_loaders(self, batch_size: int, device: torch.device, seed: int) -> Loaders:
        """StreamLoaders for the three splits (training order and augmentation seeded)."""
        def loader(samples, transform, train):
            return StreamLoader(ImageFileDataset(samples, transform), batch_size, self.mean,
                                self.std, device, train=train, workers=self.workers,
                                seed=seed)

        return Loaders(train=loader(self.train_samples, self.train_transform, True),
                       val=loader(self.val_samples, self.eval_transform, False),
                       test=loader(self.test_samples, self.eval_transform, False),
                       train_eval=loader(self.train_samples, self.eval_transform, False))


def effective_workers(cfg) -> int:
    """`workers`, or upstream's `num_workers` spelling when only that one was changed."""
    from args_helper import OPTIONS_BY_NAME

    if (cfg.workers == OPTIONS_BY_NAME["workers"].default
            and cfg.num_workers != OPTIONS_BY_NAME["num_workers"].default):
        return cfg.num_workers
    return cfg.workers
