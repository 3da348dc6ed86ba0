"""CIFAR-10 / CIFAR-100 from the standard "python version" pickle batches.

CIFAR-10: cifar-10-batches-py/{data_batch_1..5, test_batch}; CIFAR-100:
cifar-100-python/{train, test} (fine labels).  Looked for directly under <data> and under
<data>/cifar10, <data>/CIFAR10 (cifar100, CIFAR100); downloaded with torchvision when missing
and `download` is on.  The pickles are read with an unpickler that only admits numpy arrays
and plain containers.  Augmentation: random crop 32 with zero padding 4, horizontal flip.
"""
from __future__ import annotations

import os
import pickle

import numpy as np
import torch

from data.download import download_with_torchvision
from data.splits import ImageSplits, split_train_val
from utils.errors import DataError, DataMissing

DEFAULT_VAL = 5000
SPECS = {
    "CIFAR10": dict(folder="cifar-10-batches-py", aliases=("cifar10", "CIFAR10"),
                    train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"],
                    label_key="labels", classes=10,
                    mean=(0.491, 0.482, 0.447), std=(0.247, 0.243, 0.262)),
    "CIFAR100": dict(folder="cifar-100-python", aliases=("cifar100", "CIFAR100"),
                     train=["train"], test=["test"], label_key="fine_labels", classes=100,
                     mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761)),
}
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that refuses everything but numpy arrays and builtin containers."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_batch(path: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickle batch → (uint8 images N×3×32×32, int64 labels)."""
    try:
        with open(path, "rb") as handle:
            entry = _ArrayUnpickler(handle, encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DataError(f"{path}: not a CIFAR pickle batch ({exc})") from None
    entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry or label_key not in entry:
        raise DataError(f"{path}: CIFAR batch lacks 'data' or '{label_key}'")
    images = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    labels = np.asarray(entry[label_key], dtype=np.int64)
    if len(images) != len(labels):
        raise DataError(f"{path}: {len(images)} images but {len(labels)} labels")
    return images, labels


def candidate_dirs(root: str, spec: dict) -> list[str]:
    return [os.path.join(root, spec["folder"])] + [
        os.path.join(root, alias, spec["folder"]) for alias in spec["aliases"]]


def find_cifar_dir(root: str, spec: dict) -> str | None:
    for folder in candidate_dirs(root, spec):
        if all(os.path.isfile(os.path.join(folder, f)) for f in spec["train"] + spec["test"]):
            return folder
    return None


def _load(cfg, name: str) -> ImageSplits:
    spec = SPECS[name]
    folder = find_cifar_dir(cfg.data, spec)
    if folder is None and cfg.download:
        download_with_torchvision(name, cfg.data, os.path.join(cfg.data, spec["folder"]))
        folder = find_cifar_dir(cfg.data, spec)
    if folder is None:
        looked = ", ".join(candidate_dirs(cfg.data, spec))
        raise DataMissing(
            f"{name} files not found (looked in {looked}); run once with network access and "
            f"download: true, or extract the python version of {name} "
            f"({spec['folder']}/ with {', '.join(spec['train'] + spec['test'])}) into "
            f"{cfg.data}")

    def read(files):
        parts = [read_batch(os.path.join(folder, f), spec["label_key"]) for f in files]
        return (torch.from_numpy(np.concatenate([p[0] for p in parts])),
                torch.from_numpy(np.concatenate([p[1] for p in parts])))

    x, y = read(spec["train"])
    test_x, test_y = read(spec["test"])
    for labels, split in ((y, "train"), (test_y, "test")):
        if len(labels) and (labels.min() < 0 or labels.max() >= spec["classes"]):
            raise DataError(f"{folder}: {split} labels outside 0..{spec['classes'] - 1}")
    train_x, train_y, val_x, val_y = split_train_val(cfg, x, y, DEFAULT_VAL, folder)
    return ImageSplits(name, train_x, train_y, val_x, val_y, test_x, test_y,
                       num_classes=spec["classes"], mean=spec["mean"], std=spec["std"],
                       crop_padding=4, flip=True)


def load_cifar10_splits(cfg) -> ImageSplits:
    return _load(cfg, "CIFAR10")


def load_cifar100_splits(cfg) -> ImageSplits:
    return _load(cfg, "CIFAR100")
