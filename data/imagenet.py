"""ImageNet (ILSVRC-2012) from class folders, streamed.

Layout: <root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG (the validation images
arranged into class folders), <root> being <data>/imagenet, <data>/ImageNet,
<data>/ILSVRC2012 or <data> itself.  Classes are the train folders in sorted order.

Splits: val/ is the test set; the validation set is `val_size` images (default 10,000)
held out of train/ by a shuffle seeded with `split_seed`, unless `use_full_data`.
Training: random-resized crop 224 + horizontal flip; evaluation: shorter side 256, central
224×224 crop.
"""
from __future__ import annotations

import os

from data.image_folder import (ResizeCenterCrop, ResizedCropFlip, class_folders,
                               scan_class_folders)
from data.splits import holdout_indices
from data.stream import StreamSplits, effective_workers
from utils.errors import DataError, DataMissing

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
IMAGE_SIZE, RESIZE = 224, 256
DEFAULT_VAL = 10_000


def candidate_dirs(root: str) -> list[str]:
    return [os.path.join(root, name) for name in ("imagenet", "ImageNet", "ILSVRC2012")] + [
        root]


def find_imagenet_dir(root: str) -> str | None:
    for folder in candidate_dirs(root):
        if all(os.path.isdir(os.path.join(folder, sub)) for sub in ("train", "val")):
            return folder
    return None


def hold_out_validation(cfg, samples: list, default_val: int, where: str):
    """(train samples, validation samples) by the config's rule (none with use_full_data)."""
    if cfg.use_full_data:
        return samples, []
    val_size = default_val if cfg.val_size is None else cfg.val_size
    train_idx, val_idx = holdout_indices(len(samples), val_size, cfg.split_seed, where)
    return [samples[i] for i in train_idx.tolist()], [samples[i] for i in val_idx.tolist()]


def read_imagenet_folders(folder: str) -> tuple[list, list, list]:
    """(classes, train samples, test samples) from folder/train and folder/val."""
    train_dir, val_dir = os.path.join(folder, "train"), os.path.join(folder, "val")
    classes = class_folders(train_dir)
    if not classes:
        raise DataError(f"{train_dir} holds no class folders")
    val_classes = class_folders(val_dir)
    if not val_classes:
        raise DataError(f"{val_dir} holds no class folders; arrange the validation images "
                        f"into val/<wnid>/ folders (as train/ is)")
    unknown = sorted(set(val_classes) - set(classes))
    if unknown:
        raise DataError(f"{val_dir}/{unknown[0]}: class folder not in train/")
    train = scan_class_folders(train_dir, classes)
    test = scan_class_folders(val_dir, classes)
    for samples, where in ((train, train_dir), (test, val_dir)):
        if not samples:
            raise DataError(f"{where} holds no images")
    return classes, train, test


def load_imagenet_splits(cfg) -> StreamSplits:
    folder = find_imagenet_dir(cfg.data)
    if folder is None:
        looked = ", ".join(candidate_dirs(cfg.data))
        raise DataMissing(
            f"ImageNet files not found (looked for train/ and val/ class folders in "
            f"{looked}); download ILSVRC-2012 from image-net.org and arrange train/<wnid>/ "
            f"and val/<wnid>/ under {os.path.join(cfg.data, 'imagenet')}")
    classes, train, test = read_imagenet_folders(folder)
    train, val = hold_out_validation(cfg, train, DEFAULT_VAL, os.path.join(folder, "train"))
    return StreamSplits("ImageNet", classes, train, val, test,
                        train_transform=ResizedCropFlip(IMAGE_SIZE),
                        eval_transform=ResizeCenterCrop(RESIZE, IMAGE_SIZE),
                        image_size=IMAGE_SIZE, mean=MEAN, std=STD,
                        workers=effective_workers(cfg))
