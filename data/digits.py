"""scikit-learn's bundled 8×8 handwritten digits (1,797 images, no download needed).

Pixel values 0–16 are rescaled to 0–255 uint8.  A fixed, seeded split keeps 360 images for
test and (by default) 180 for validation; the rest (1,257) train.
"""
from __future__ import annotations

import numpy as np
import torch

from data.splits import ImageSplits, channel_stats, holdout, split_train_val

TEST_SIZE = 360
DEFAULT_VAL = 180


def load_digits_splits(cfg) -> ImageSplits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    x = torch.from_numpy(images).unsqueeze(1).contiguous()
    y = torch.from_numpy(bunch.target.astype(np.int64))
    pool_x, pool_y, test_x, test_y = holdout(x, y, TEST_SIZE, cfg.split_seed + 1, "digits")
    train_x, train_y, val_x, val_y = split_train_val(cfg, pool_x, pool_y, DEFAULT_VAL,
                                                     "digits")
    mean, std = channel_stats(pool_x)
    return ImageSplits("digits", train_x, train_y, val_x, val_y, test_x, test_y,
                       num_classes=10, mean=mean, std=std)
