"""MNIST from the standard idx files (train-images-idx3-ubyte, ... optionally .gz).

Looked for under <data>/MNIST/raw (torchvision's layout), <data>/MNIST, <data>/mnist and
<data>; downloaded with torchvision when missing and `download` is on.  No augmentation;
5,000 training images are held out for validation unless `use_full_data`.
"""
from __future__ import annotations

import gzip
import os

import numpy as np
import torch

from data.download import download_with_torchvision
from data.splits import ImageSplits, split_train_val
from utils.errors import DataError, DataMissing

FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}
MEAN, STD = (0.1307,), (0.3081,)
DEFAULT_VAL = 5000


def candidate_dirs(root: str) -> list[str]:
    return [os.path.join(root, "MNIST", "raw"), os.path.join(root, "MNIST"),
            os.path.join(root, "mnist"), root]


def _find(folder: str, stem: str) -> str | None:
    for name in (stem, stem + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def find_mnist_dir(root: str) -> str | None:
    """The first candidate folder that holds all four idx files (plain or .gz)."""
    for folder in candidate_dirs(root):
        if all(_find(folder, stem) for stem in FILES.values()):
            return folder
    return None


def read_idx(path: str) -> np.ndarray:
    """Read an idx file (uint8 data): magic, dimensions, then the array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an idx file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) if dims else 0
    data = np.frombuffer(raw, dtype=np.uint8, offset=offset)
    if data.size != expected:
        raise DataError(f"{path}: header says {dims} but the file holds {data.size} values")
    return data.reshape(dims)


def load_mnist_splits(cfg) -> ImageSplits:
    folder = find_mnist_dir(cfg.data)
    if folder is None and cfg.download:
        download_with_torchvision("MNIST", cfg.data, os.path.join(cfg.data, "MNIST"))
        folder = find_mnist_dir(cfg.data)
    if folder is None:
        looked = ", ".join(candidate_dirs(cfg.data))
        raise DataMissing(
            f"MNIST files not found (looked in {looked}); run once with network access and "
            f"download: true, or place train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte"
            f"[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] in "
            f"{os.path.join(cfg.data, 'MNIST', 'raw')}")
    arrays = {key: read_idx(_find(folder, stem)) for key, stem in FILES.items()}
    for split in ("train", "test"):
        if len(arrays[f"{split}_images"]) != len(arrays[f"{split}_labels"]):
            raise DataError(f"{folder}: {split} images and labels differ in count")
    x = torch.from_numpy(arrays["train_images"].copy()).unsqueeze(1)
    y = torch.from_numpy(arrays["train_labels"].astype(np.int64))
    test_x = torch.from_numpy(arrays["test_images"].copy()).unsqueeze(1)
    test_y = torch.from_numpy(arrays["test_labels"].astype(np.int64))
    train_x, train_y, val_x, val_y = split_train_val(cfg, x, y, DEFAULT_VAL, folder)
    return ImageSplits("MNIST", train_x, train_y, val_x, val_y, test_x, test_y,
                       num_classes=10, mean=MEAN, std=STD)
