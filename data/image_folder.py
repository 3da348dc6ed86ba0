"""Image files on disk: class-folder scanning, per-image transforms with explicit random
draws, and a torch Dataset that decodes one file into a uint8 (C, H, W) tensor.

Transforms take the PIL image and a numpy Generator, so an image's augmentation depends only
on the seed the loader hands out with its index, never on which worker process decodes it.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
from PIL import Image

from utils.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def class_folders(root: str) -> list[str]:
    """Names of the (non-hidden) sub-folders of `root`, sorted: the class list."""
    return sorted(entry.name for entry in os.scandir(root)
                  if entry.is_dir() and not entry.name.startswith("."))


def images_under(folder: str) -> list[str]:
    """Every image file below `folder` (any depth), sorted by path."""
    found = []
    for parent, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(parent, f) for f in files if is_image_file(f)]
    return sorted(found)


def scan_class_folders(root: str, classes: list[str]) -> list[tuple[str, int]]:
    """(path, label) for every image in root/<class>/..., label = position in `classes`."""
    samples = []
    for label, name in enumerate(classes):
        samples += [(path, label) for path in images_under(os.path.join(root, name))]
    return samples


# ----------------------------------------------------------------------------- transforms


class FitSize:
    """Evaluation for fixed-size sets: resize to size×size only if the image differs."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        if img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.BILINEAR)
        return img


class PadCropFlip:
    """Random crop of size×size from the image zero-padded by `padding`, then a horizontal
    flip with probability 1/2 (torchvision RandomCrop(size, padding) + RandomHorizontalFlip)."""

    def __init__(self, size: int, padding: int):
        self.size, self.padding = size, padding

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        img = FitSize(self.size)(img, rng)
        p = self.padding
        dy, dx = (int(v) for v in rng.integers(0, 2 * p + 1, size=2))
        canvas = Image.new("RGB", (self.size + 2 * p, self.size + 2 * p))
        canvas.paste(img, (p, p))
        img = canvas.crop((dx, dy, dx + self.size, dy + self.size))
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return img


def random_resized_box(width: int, height: int, rng: np.random.Generator,
                       scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(left, top, w, h) of a crop covering a random share `scale` of the area with a random
    aspect ratio (log-uniform in `ratio`); after 10 failed draws, the largest central crop
    whose aspect ratio lies in `ratio` (the Inception / torchvision rule)."""
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return (int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)),
                    w, h)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


class ResizedCropFlip:
    """ImageNet training: random-resized crop to size×size, horizontal flip with p = 1/2."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        left, top, w, h = random_resized_box(img.width, img.height, rng)
        img = img.resize((self.size, self.size), Image.BILINEAR,
                         box=(left, top, left + w, top + h))
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return img


class ResizeCenterCrop:
    """ImageNet evaluation: shorter side to `resize`, then the central crop×crop."""

    def __init__(self, resize: int, crop: int):
        self.resize, self.crop = resize, crop

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        w, h = img.size
        if w <= h:
            size = (self.resize, int(self.resize * h / w))
        else:
            size = (int(self.resize * w / h), self.resize)
        img = img.resize(size, Image.BILINEAR)
        left = int(round((size[0] - self.crop) / 2.0))
        top = int(round((size[1] - self.crop) / 2.0))
        return img.crop((left, top, left + self.crop, top + self.crop))


# ----------------------------------------------------------------------------- dataset


class ImageFileDataset(torch.utils.data.Dataset):
    """Decodes `samples[index]` for an item `(index, seed)`: (uint8 C×H×W tensor, label)."""

    def __init__(self, samples: list[tuple[str, int]], transform):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item):
        index, seed = item
        path, label = self.samples[index]
        try:
            with Image.open(path) as handle:
                img = handle.convert("RGB")
        except OSError as exc:
            raise DataError(f"{path}: cannot read the image ({exc})") from None
        img = self.transform(img, np.random.default_rng(seed))
        # transposed by numpy: torch ops here would start a thread pool in every worker
        pixels = np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))
        return torch.from_numpy(pixels), label
