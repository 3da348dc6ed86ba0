"""Masked convolution and linear layers, and the two BatchNorm flavours of upstream.

A masked layer holds `weight`, a permanent 0/1 `mask` buffer (upstream's `flag`, all ones at
build time), a `bias_mask` buffer when it has a bias (only IMP with prune_bias changes it)
and, once `enable_scores` is called, a trainable `scores` tensor.  The forward
pass uses the effective weight

    weight * mask                       (no score function set), or
    weight * score_fn(scores) * mask    (score-based algorithms set `score_fn`).

Because the mask multiplies the weight inside the forward, the gradient of a pruned weight is
exactly zero; together with `apply_mask_to_weight` (zero the weight when the mask is set) this
keeps pruned weights exactly zero under SGD momentum, weight decay and Adam.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


class MaskedLayerMixin:
    """Mask/score bookkeeping shared by MaskedConv2d and MaskedLinear."""

    weight: nn.Parameter
    mask: torch.Tensor
    scores: nn.Parameter | None
    score_fn: Callable[[torch.Tensor], torch.Tensor] | None

    def _init_mask(self) -> None:
        self.register_buffer("mask", torch.ones_like(self.weight, requires_grad=False))
        if self.bias is not None:
            self.register_buffer("bias_mask", torch.ones_like(self.bias, requires_grad=False))
        else:
            self.bias_mask = None
        self.register_parameter("scores", None)
        self.score_fn = None

    def enable_scores(self) -> nn.Parameter:
        """Create the trainable `scores` tensor (same shape as the weight, zeros until init)."""
        if self.scores is None:
            self.scores = nn.Parameter(torch.zeros_like(self.weight))
        return self.scores

    def effective_weight(self) -> torch.Tensor:
        """The weight the forward pass uses."""
        if self.score_fn is not None and self.scores is not None:
            return self.weight * self.score_fn(self.scores) * self.mask
        return self.weight * self.mask

    def effective_bias(self) -> torch.Tensor | None:
        """The bias the forward pass uses (masked when biases are pruned)."""
        return None if self.bias is None else self.bias * self.bias_mask

    @torch.no_grad()
    def set_bias_mask(self, mask: torch.Tensor) -> None:
        """Replace the bias mask and zero the pruned biases."""
        self.bias_mask.copy_(mask.to(self.bias_mask.dtype))
        self.bias.mul_(self.bias_mask)

    @torch.no_grad()
    def set_mask(self, mask: torch.Tensor) -> None:
        """Replace the mask (0/1 values) and zero the pruned weights."""
        if mask.shape != self.weight.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != weight shape "
                             f"{tuple(self.weight.shape)}")
        self.mask.copy_(mask.to(self.mask.dtype))
        self.apply_mask_to_weight()

    @torch.no_grad()
    def apply_mask_to_weight(self) -> None:
        """Zero the weights the mask removes (so saved weights are exactly zero there)."""
        self.weight.mul_(self.mask)


class MaskedConv2d(MaskedLayerMixin, nn.Conv2d):
    """nn.Conv2d whose forward uses `effective_weight()`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_mask()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.effective_bias())


class MaskedLinear(MaskedLayerMixin, nn.Linear):
    """nn.Linear whose forward uses `effective_weight()`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_mask()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.effective_bias())


MASKED_LAYER_TYPES = (MaskedConv2d, MaskedLinear)


class NonAffineBatchNorm(nn.BatchNorm2d):
    """BatchNorm without learnable scale and shift (running statistics still update)."""

    def __init__(self, num_features: int):
        super().__init__(num_features, affine=False)


class AffineBatchNorm(nn.BatchNorm2d):
    """Standard BatchNorm with learnable scale and shift."""

    def __init__(self, num_features: int):
        super().__init__(num_features, affine=True)


BATCHNORMS = {"NonAffineBatchNorm": NonAffineBatchNorm, "AffineBatchNorm": AffineBatchNorm}


class LayerFactory:
    """Builds the layers of an architecture with the config's bias and BatchNorm choices."""

    def __init__(self, bias: bool = False, bn_type: str = "AffineBatchNorm"):
        self.bias = bias
        self.bn_class = BATCHNORMS[bn_type]

    def conv(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1,
             padding: int | None = None, groups: int = 1) -> MaskedConv2d:
        pad = kernel // 2 if padding is None else padding
        return MaskedConv2d(in_ch, out_ch, kernel, stride=stride, padding=pad, groups=groups,
                            bias=self.bias)

    def conv3x3(self, in_ch: int, out_ch: int, stride: int = 1) -> MaskedConv2d:
        return self.conv(in_ch, out_ch, 3, stride)

    def conv1x1(self, in_ch: int, out_ch: int, stride: int = 1) -> MaskedConv2d:
        return self.conv(in_ch, out_ch, 1, stride, padding=0)

    def linear(self, in_features: int, out_features: int) -> MaskedLinear:
        return MaskedLinear(in_features, out_features, bias=self.bias)

    def batchnorm(self, channels: int) -> nn.BatchNorm2d:
        return self.bn_class(channels)
