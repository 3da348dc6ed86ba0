"""CIFAR-shaped synthetic images (3×32×32, 10 classes) for smoke runs and benchmarks.

Each class has a fixed smooth colour pattern; an image is its class pattern, shifted by a
few pixels, plus smooth noise and a brightness change, so the task is learnable but not
trivial.  Everything is drawn from fixed seeds: the same `synthetic_size` gives the same data.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from data.augment import random_crop
from data.splits import ImageSplits, split_train_val

NUM_CLASSES = 10
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def _smooth(n: int, generator: torch.Generator, side: int = 32, coarse: int = 6):
    base = torch.rand(n, 3, coarse, coarse, generator=generator)
    return F.interpolate(base, size=(side, side), mode="bilinear", align_corners=False)


def make_images(count: int, seed: int):
    """`count` images and labels drawn with `seed` (class patterns use a fixed seed)."""
    patterns = _smooth(NUM_CLASSES, torch.Generator().manual_seed(20221))
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (count,), generator=g)
    images = torch.empty(count, 3, 32, 32, dtype=torch.uint8)
    for start in range(0, count, 1024):
        idx = labels[start:start + 1024]
        pattern = random_crop(patterns[idx], 3, g)
        noise = _smooth(len(idx), g)
        brightness = 0.8 + 0.4 * torch.rand(len(idx), 1, 1, 1, generator=g)
        value = (0.55 * pattern + 0.45 * noise) * brightness
        images[start:start + 1024] = (value.clamp(0, 1) * 255).round().to(torch.uint8)
    return images, labels


def load_synthetic_splits(cfg) -> ImageSplits:
    train_x, train_y = make_images(cfg.synthetic_size, seed=1)
    test_x, test_y = make_images(max(cfg.synthetic_size // 5, 10), seed=2)
    train_x, train_y, val_x, val_y = split_train_val(cfg, train_x, train_y,
                                                     cfg.synthetic_size // 10, "synthetic")
    return ImageSplits("synthetic", train_x, train_y, val_x, val_y, test_x, test_y,
                       num_classes=NUM_CLASSES, mean=MEAN, std=STD, crop_padding=4, flip=True)
