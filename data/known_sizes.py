"""The published split sizes of the datasets that come as files, so `--dry-run` can plan a
run (steps per epoch, the model's input, the IMP schedule) before anything is downloaded.

`PlannedSplits` offers what a plan reads from a dataset object (data/splits.py: name,
num_classes, channels, image_size, num_train, sizes()) but holds no images: asking it for
loaders is an error.  The validation rule is the loaders' own (`use_full_data`, `val_size`,
each dataset's default hold-out).
"""
from __future__ import annotations

from dataclasses import dataclass

from utils.errors import DataError

# images held out of the training set for validation when `val_size` is unset (the loaders'
# DEFAULT_VAL; TinyImageNet validates on half of its official val set instead)
DEFAULT_HOLDOUT = {"MNIST": 5000, "CIFAR10": 5000, "CIFAR100": 5000, "ImageNet": 10_000,
                   "FfcvImageNet": 10_000}
# name: (official train images, official test images, classes, channels, image side)
PUBLISHED = {
    "MNIST": (60_000, 10_000, 10, 1, 28),
    "CIFAR10": (50_000, 10_000, 10, 3, 32),
    "CIFAR100": (50_000, 10_000, 100, 3, 32),
    "TinyImageNet": (100_000, 10_000, 200, 3, 64),
    "ImageNet": (1_281_167, 50_000, 1000, 3, 224),
    "FfcvImageNet": (1_281_167, 50_000, 1000, 3, 224),
}


@dataclass(frozen=True)
class PlannedSplits:
    """Split sizes without the images (a dry run's stand-in for a missing dataset)."""

    name: str
    num_train: int
    num_val: int
    num_test: int
    num_classes: int
    channels: int
    image_size: int
    note: str = ""

    def sizes(self) -> str:
        return (f"train {self.num_train} / val {self.num_val} / test {self.num_test} images "
                f"(published sizes{self.note})")

    def make_loaders(self, *_args, **_kwargs):
        raise DataError(f"{self.name}: the dataset files are needed to train (a dry run "
                        f"planned without them)")


def planned_splits(cfg, missing: str = "") -> PlannedSplits | None:
    """The split sizes `cfg` would get from the official files of its dataset, or None for
    a dataset without published sizes.  `missing` (the loader's message) is kept as a note."""
    if cfg.dataset not in PUBLISHED:
        return None
    train, test, classes, channels, side = PUBLISHED[cfg.dataset]
    if cfg.dataset == "TinyImageNet":       # the official val set split in two halves
        val, test = test // 2, test // 2
    elif cfg.use_full_data:
        val = 0
    else:
        val = DEFAULT_HOLDOUT[cfg.dataset] if cfg.val_size is None else cfg.val_size
        if val >= train:
            raise DataError(f"val_size {val} must be smaller than the {train} training "
                            f"images of {cfg.dataset}")
        train -= val
    note = f"; files not found under {cfg.data}" if missing else ""
    return PlannedSplits(cfg.dataset, train, val, test, classes, channels, side, note)
