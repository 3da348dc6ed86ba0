"""N:M masks: in every group of m consecutive weights along a layer's input dimension exactly
n are kept — the pattern NVIDIA's sparse tensor cores run (2:4).

Groups: a linear weight (out, in) is cut into rows of in/m groups; a convolution weight
(out, in, kh, kw) into groups of m consecutive input channels at every (out, kh, kw) position —
the reduction dimension of the convolution as a GEMM over channels-last input.  A layer is
eligible when its input dimension (in_features, or in_channels) is a multiple of m; the others
stay dense.  Ties are broken deterministically (the earlier entry of a group is kept), and a
new mask keeps n of the entries still active in each group, so masks are nested.
"""
from __future__ import annotations

import torch

from models.nm_pack import grouped, ungrouped


def nm_eligible(weight_shape, m: int) -> bool:
    """Whether a weight of this shape splits into groups of m along its input dimension."""
    return len(weight_shape) >= 2 and weight_shape[1] % m == 0


def keep_n_per_group(scores: torch.Tensor, mask: torch.Tensor, n: int, m: int,
                     largest: bool = True) -> torch.Tensor:
    """A new mask (dtype of `mask`) keeping, in every group, the n active entries with the
    largest (or smallest) scores; a group with fewer than n active entries keeps them all."""
    key = grouped(scores.detach().float(), m)
    active = grouped(mask != 0, m)
    key = key if largest else -key
    key = torch.where(active, key, torch.full_like(key, float("-inf")))
    order = torch.sort(key, dim=1, descending=True, stable=True).indices
    chosen = torch.zeros_like(active)
    chosen.scatter_(1, order[:, :n], True)
    chosen &= active
    return ungrouped(chosen, mask.shape).to(mask.dtype)


def random_nm_mask(shape, n: int, m: int, generator: torch.Generator,
                   dtype=torch.float32) -> torch.Tensor:
    """n of every m chosen uniformly at random in each group (CPU generator)."""
    scores = torch.rand(tuple(shape), generator=generator)
    return keep_n_per_group(scores, torch.ones(tuple(shape), dtype=dtype), n, m)


def shuffle_groups(mask: torch.Tensor, m: int, generator: torch.Generator) -> torch.Tensor:
    """The layer's group patterns permuted among its groups (the n:m structure and the
    layer's density stay)."""
    groups = grouped(mask, m)
    perm = torch.randperm(groups.shape[0], generator=generator).to(groups.device)
    return ungrouped(groups[perm], mask.shape)


def kept_per_group(mask: torch.Tensor, m: int) -> torch.Tensor:
    """Nonzero entries of every group (a vector over the groups)."""
    return grouped(mask != 0, m).sum(dim=1)
