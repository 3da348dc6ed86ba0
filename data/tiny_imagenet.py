"""TinyImageNet (tiny-imagenet-200: 200 classes, 64×64 RGB JPEGs) read from its folders.

Layout (the official zip, or after load_tiny_imagenet.sh):
    <root>/wnids.txt                          (optional; must match the train folders)
    <root>/train/<wnid>/images/*.JPEG         (500 per class; any depth below <wnid>/)
    <root>/val/images/*.JPEG + val/val_annotations.txt       (official), or
    <root>/val/<wnid>/*.JPEG                                 (rearranged into class folders)
<root> is <data>/tiny-imagenet-200, <data>/TinyImageNet/tiny-imagenet-200 or
<data>/TinyImageNet.  Classes are the train folders in sorted order.

Splits (REFERENCE.md §5): train = the official training set (100,000 images); the official
validation set (50 per class) is split per class by file name: the first half (25) is our
validation set, the second half (25) our test set.  `use_full_data` and `val_size` do not
apply (nothing is held out of the training set).  Augmentation: random crop 64 with zero
padding 4, horizontal flip.
"""
from __future__ import annotations

import os

from data.image_folder import FitSize, PadCropFlip, class_folders, images_under, is_image_file
from data.stream import StreamSplits, effective_workers
from utils.errors import DataError, DataMissing

MEAN = (0.48025, 0.44807, 0.39755)
STD = (0.27699, 0.26906, 0.28208)
IMAGE_SIZE = 64
FOLDER = "tiny-imagenet-200"


def candidate_dirs(root: str) -> list[str]:
    return [os.path.join(root, FOLDER), os.path.join(root, "TinyImageNet", FOLDER),
            os.path.join(root, "TinyImageNet")]


def find_tiny_imagenet_dir(root: str) -> str | None:
    for folder in candidate_dirs(root):
        if all(os.path.isdir(os.path.join(folder, sub)) for sub in ("train", "val")):
            return folder
    return None


def read_classes(folder: str) -> list[str]:
    """The class list: sorted train folders, checked against wnids.txt when present."""
    classes = class_folders(os.path.join(folder, "train"))
    if not classes:
        raise DataError(f"{folder}/train holds no class folders")
    wnids_path = os.path.join(folder, "wnids.txt")
    if os.path.isfile(wnids_path):
        with open(wnids_path, encoding="utf-8") as handle:
            wnids = sorted(line.strip() for line in handle if line.strip())
        if wnids != classes:
            missing = sorted(set(wnids) - set(classes)) or sorted(set(classes) - set(wnids))
            raise DataError(f"{wnids_path} and the folders in {folder}/train disagree "
                            f"(e.g. {missing[0]})")
    return classes


def _annotated_val(val_dir: str, classes: list[str]) -> dict[str, list[str]]:
    """Official layout: val/images/* labelled by val/val_annotations.txt."""
    path = os.path.join(val_dir, "val_annotations.txt")
    per_class: dict[str, list[str]] = {name: [] for name in classes}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split("\t")
            if not line.strip():
                continue
            if len(fields) < 2:
                raise DataError(f"{path}:{number}: expected 'file<TAB>wnid ...'")
            name, wnid = fields[0].strip(), fields[1].strip()
            if wnid not in per_class:
                raise DataError(f"{path}:{number}: unknown class {wnid!r} (not in train/)")
            image = os.path.join(val_dir, "images", name)
            if not os.path.isfile(image):
                raise DataError(f"{path}:{number}: {image} is missing (a half-arranged "
                                f"val/? run ./load_tiny_imagenet.sh again to finish)")
            per_class[wnid].append(image)
    return per_class


def _foldered_val(val_dir: str, classes: list[str]) -> dict[str, list[str]]:
    """Rearranged layout: val/<wnid>/... image files."""
    unknown = sorted(set(class_folders(val_dir)) - set(classes) - {"images"})
    if unknown:
        raise DataError(f"{val_dir}/{unknown[0]}: class folder not in train/")
    return {name: images_under(os.path.join(val_dir, name)) for name in classes}


def split_official_val(per_class: dict[str, list[str]], classes: list[str], where: str):
    """Per class, files sorted by name: first half → val, second half → test."""
    val, test = [], []
    for label, name in enumerate(classes):
        files = sorted(per_class[name], key=os.path.basename)
        if len(files) < 2:
            raise DataError(f"{where}: class {name} has {len(files)} validation images; "
                            f"need at least 2 (the official set has 50)")
        half = len(files) // 2
        val += [(path, label) for path in files[:half]]
        test += [(path, label) for path in files[half:]]
    return val, test


def load_tiny_imagenet_splits(cfg) -> StreamSplits:
    folder = find_tiny_imagenet_dir(cfg.data)
    if folder is None:
        looked = ", ".join(candidate_dirs(cfg.data))
        raise DataMissing(
            f"TinyImageNet files not found (looked in {looked}); run "
            f"./load_tiny_imagenet.sh {cfg.data} (downloads, checks and arranges "
            f"{FOLDER}/), or unpack tiny-imagenet-200.zip into {cfg.data}")
    classes = read_classes(folder)
    train_dir, val_dir = os.path.join(folder, "train"), os.path.join(folder, "val")
    train = []
    for label, name in enumerate(classes):
        files = images_under(os.path.join(train_dir, name))
        if not files:
            raise DataError(f"{train_dir}/{name} holds no images")
        train += [(path, label) for path in files]
    has_loose = os.path.isdir(os.path.join(val_dir, "images")) and any(
        is_image_file(f) for f in os.listdir(os.path.join(val_dir, "images")))
    if has_loose:
        if not os.path.isfile(os.path.join(val_dir, "val_annotations.txt")):
            raise DataError(f"{val_dir}/images holds images but "
                            f"{val_dir}/val_annotations.txt is missing")
        per_class = _annotated_val(val_dir, classes)
    else:
        per_class = _foldered_val(val_dir, classes)
    val, test = split_official_val(per_class, classes, val_dir)
    return StreamSplits("TinyImageNet", classes, train, val, test,
                        train_transform=PadCropFlip(IMAGE_SIZE, 4),
                        eval_transform=FitSize(IMAGE_SIZE), image_size=IMAGE_SIZE,
                        mean=MEAN, std=STD, workers=effective_workers(cfg))
