"""Re-estimating BatchNorm statistics of a network whose weights were changed by hand
(interpolated, projected), from a few training batches."""
from __future__ import annotations

import torch
import torch.nn as nn

RESET_SEED = 20230501   # the batches used for re-estimation are the same at every point


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, loader, batches: int) -> None:
    """Reset every BatchNorm's running statistics and recompute them as the plain average
    over the first `batches` training batches (fixed order and augmentation).  No-op when
    `batches` is 0 or the model has no BatchNorm."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if batches <= 0 or not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None            # cumulative average over the batches
    was_training = model.training
    model.train()
    loader.set_epoch(0, seed=RESET_SEED)
    for index, (images, _) in enumerate(loader):
        if index >= batches:
            break
        model(images)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)
