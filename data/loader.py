"""The device-resident loader (DESIGN.md §4): uint8 images live on the training device;
each epoch is a seeded permutation, and crop/flip/normalise run batched on that device.

The same seed and epoch give the same order and the same augmentation on the same device, so a
resumed run sees exactly the batches an uninterrupted one would.  Each batch draws its
augmentation from its own seeded generator, so an epoch can start at any batch
(`set_epoch(epoch, start_batch=k)`) and still see exactly batches k, k+1, ... of that epoch.

Training on a subset (`set_subset(indices)`, IMP with PrAC): an epoch is a seeded permutation
of the subset only, with the same seeding, augmentation and mid-epoch starts.  Per-example
statistics (`batch_indices()`): a device buffer that holds the example indices of the batch
just yielded, overwritten in place for every batch, so a step recorded as a CUDA graph reads
the current batch's indices at every replay.
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
        self.rank, self.world = 0, 1
        self.global_batch = batch_size   # images in the current global training batch
        self.subset: torch.Tensor | None = None       # training examples used (None: all)
        self._batch_indices: torch.Tensor | None = None

    def shard(self, rank: int, world: int) -> None:
        """Make this the loader of process `rank` of `world` (torchrun): training yields the
        rank's contiguous slice of each global batch of `batch_size` images (same order and
        augmentation on every rank); evaluation walks the rank's contiguous shard."""
        self.rank, self.world = rank, world

    def set_epoch(self, epoch: int, seed: int | None = None, start_batch: int = 0) -> None:
        """Select the epoch (optionally another seed) whose order/augmentation to draw, and the
        batch to start from (the batches before it are skipped, for mid-epoch starts)."""
        self.epoch = epoch
        self.start_batch = start_batch
        if seed is not None:
            self.seed = seed

    def set_subset(self, indices: torch.Tensor | None) -> None:
        """Train on these examples only (indices into the training set; None: all of them)."""
        self.subset = None if indices is None else \
            torch.as_tensor(indices, dtype=torch.long).to(self.device)

    def batch_indices(self) -> torch.Tensor:
        """The device buffer (batch_size long entries) whose first entries hold the indices of
        the training batch last yielded; created on first call, then filled for every batch."""
        if self._batch_indices is None:
            self._batch_indices = torch.zeros(self.batch_size, dtype=torch.long,
                                              device=self.device)
        return self._batch_indices

    @property
    def train_examples(self) -> int:
        """The examples an epoch of training draws from (the subset's size, or all)."""
        return len(self.labels) if self.subset is None else len(self.subset)

    def _min_last(self) -> int:
        """The smallest trailing training batch kept: 2 images, and one per rank."""
        return max(2, self.world)

    def __len__(self) -> int:
        if self.train:
            full, rest = divmod(self.train_examples, self.batch_size)
            return full + (1 if rest >= self._min_last() else 0)
        lo, hi = self._eval_range()
        return -(-(hi - lo) // self.batch_size)

    def _eval_range(self) -> tuple[int, int]:
        n = len(self.labels)
        return n * self.rank // self.world, n * (self.rank + 1) // self.world

    @property
    def num_images(self) -> int:
        return len(self.labels)

    def __iter__(self):
        n = self.train_examples if self.train else len(self.labels)
        if self.train:
            g = torch.Generator(device=self.device)
            g.manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(n, generator=g, device=self.device)
            if self.subset is not None:
                order = self.subset[order]
        if not self.train:
            lo, hi = self._eval_range()
            for start in range(lo, hi, self.batch_size):
                stop = min(start + self.batch_size, hi)
                yield normalize(self.images[start:stop], self.mean, self.std), \
                    self.labels[start:stop]
            return
        first = self.start_batch * self.batch_size
        for batch, start in enumerate(range(first, n, self.batch_size), self.start_batch):
            stop = min(start + self.batch_size, n)
            if stop - start < self._min_last():
                break
            idx = order[start:stop]
            if self._batch_indices is not None:
                self._batch_indices[:stop - start].copy_(idx)
            x, y = self.images[idx], self.labels[idx]
            if self.crop_padding or self.flip:
                g.manual_seed(epoch_seed(self.seed, self.epoch, batch))
                x = random_crop(x, self.crop_padding, g)
                if self.flip:
                    x = random_flip(x, g)
            self.global_batch = stop - start
            if self.world > 1:    # this rank's slice of the (identically augmented) batch
                lo = self.global_batch * self.rank // self.world
                hi = self.global_batch * (self.rank + 1) // self.world
                x, y = x[lo:hi], y[lo:hi]
            yield normalize(x, self.mean, self.std), y
