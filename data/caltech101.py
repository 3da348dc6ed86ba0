"""Caltech-101 (101 object categories of variable-size JPEGs) read from its folders, streamed.

Layout (torchvision's `Caltech101` download, or the unpacked 101_ObjectCategories archive):
    <data>/caltech101/101_ObjectCategories/<category>/image_XXXX.jpg   (torchvision), or
    <data>/101_ObjectCategories/<category>/*.jpg                        (upstream's layout)
The `BACKGROUND_Google` folder is not a category (as upstream and torchvision): the classes are
the other category folders in sorted order (101 in the real set).

Splits, as upstream's data/caltech101.py drew them with scikit-learn's train_test_split: 20 %
of all images, stratified by class, seed 42, form the validation set; of the remaining 80 %,
25 % (seed 42, not stratified) form the test set and the rest (60 % of all images) the
training set.  Images are listed in sorted path order (upstream listed them in the
filesystem's directory order, so its split depended on the machine).  `use_full_data` and
`val_size` do not apply (the split is fixed).  Every image is resized to 224×224 and
normalised with the ImageNet statistics, for training as for evaluation (upstream used no
augmentation).
"""
from __future__ import annotations

import os

import numpy as np

from data.image_folder import FitSize, class_folders, images_under
from data.stream import StreamSplits, effective_workers
from utils.errors import DataError

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
IMAGE_SIZE = 224
FOLDER = "101_ObjectCategories"
BACKGROUND = "BACKGROUND_Google"
SPLIT_SEED = 42
VAL_FRACTION, TEST_FRACTION_OF_REST = 0.2, 0.25


def candidate_dirs(root: str) -> list[str]:
    return [os.path.join(root, "caltech101", FOLDER), os.path.join(root, FOLDER)]


def find_caltech_dir(root: str) -> str | None:
    for folder in candidate_dirs(root):
        if os.path.isdir(folder):
            return folder
    return None


def read_caltech(folder: str) -> tuple[list[str], list[tuple[str, int]]]:
    """(classes, (path, label) of every image in sorted path order)."""
    classes = [name for name in class_folders(folder) if name != BACKGROUND]
    if not classes:
        raise DataError(f"{folder} holds no category folders")
    samples = []
    for label, name in enumerate(classes):
        files = images_under(os.path.join(folder, name))
        if not files:
            raise DataError(f"{folder}/{name} holds no images")
        samples += [(path, label) for path in files]
    samples.sort()
    return classes, samples


def upstream_split(labels: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) indices: upstream's two train_test_split calls (see module doc)."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    try:
        rest, val = train_test_split(indices, test_size=VAL_FRACTION, stratify=labels,
                                     random_state=SPLIT_SEED)
        train, test = train_test_split(rest, test_size=TEST_FRACTION_OF_REST,
                                       random_state=SPLIT_SEED)
    except ValueError as exc:     # too few images per class for a stratified split
        raise DataError(f"{where}: cannot draw upstream's stratified 60/20/20 split "
                        f"({str(exc).splitlines()[0]})") from None
    return train, val, test


def load_caltech101_splits(cfg) -> StreamSplits:
    folder = find_caltech_dir(cfg.data)
    if folder is None:
        looked = ", ".join(candidate_dirs(cfg.data))
        raise DataError(f"Caltech-101 files not found (looked for {FOLDER}/ in {looked}); "
                        f"download it with torchvision.datasets.Caltech101(root="
                        f"'{cfg.data}', download=True) or unpack 101_ObjectCategories.tar.gz "
                        f"into {cfg.data}")
    classes, samples = read_caltech(folder)
    labels = np.array([label for _, label in samples])
    train, val, test = upstream_split(labels, folder)
    train, val, test = ([samples[i] for i in idx.tolist()] for idx in (train, val, test))
    fit = FitSize(IMAGE_SIZE)
    return StreamSplits("Caltech101", classes, train, val, test,
                        train_transform=fit, eval_transform=fit, image_size=IMAGE_SIZE,
                        mean=MEAN, std=STD, workers=effective_workers(cfg))
