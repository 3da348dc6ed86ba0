"""Masked networks → plain PyTorch networks: every masked layer replaced by an `nn.Conv2d` /
`nn.Linear` holding its effective weight, and (channel tickets) the removed channels taken
out physically — the producer's filters or rows, their BatchNorm entries and the consumers'
input columns (models/channels.py) — so the network is smaller and computes the same outputs.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from models.channels import channel_groups
from models.layers import MASKED_LAYER_TYPES, MaskedConv2d


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def _plain_layer(layer: nn.Module, rows: torch.Tensor | None,
                 cols: torch.Tensor | None) -> nn.Module:
    """A plain copy of a masked layer with its effective weight, keeping output `rows` and
    input `cols` (None: all)."""
    with torch.no_grad():
        weight = layer.effective_weight().detach()
        bias = layer.effective_bias()
        bias = None if bias is None else bias.detach()
        if rows is not None:
            weight = weight[rows]
            bias = None if bias is None else bias[rows]
        if cols is not None:
            weight = weight[:, cols]
    out_features, in_features = weight.shape[0], weight.shape[1]
    if isinstance(layer, MaskedConv2d):
        if layer.groups != 1 and (rows is not None or cols is not None):
            raise ValueError("grouped convolutions cannot lose channels here")
        plain = nn.Conv2d(in_features * layer.groups, out_features, layer.kernel_size,
                          stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                          groups=layer.groups, bias=bias is not None,
                          padding_mode=layer.padding_mode)
    else:
        plain = nn.Linear(in_features, out_features, bias=bias is not None)
    plain = plain.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        plain.weight.copy_(weight)
        if bias is not None:
            plain.bias.copy_(bias)
    plain.train(layer.training)
    return plain


def _sliced_norm(norm: nn.BatchNorm2d, keep: torch.Tensor) -> nn.BatchNorm2d:
    out = nn.BatchNorm2d(int(keep.numel()), eps=norm.eps, momentum=norm.momentum,
                         affine=norm.affine, track_running_stats=norm.track_running_stats)
    out = out.to(device=keep.device if norm.running_mean is None else norm.running_mean.device)
    with torch.no_grad():
        if norm.affine:
            out.weight.copy_(norm.weight[keep])
            out.bias.copy_(norm.bias[keep])
        if norm.track_running_stats:
            out.running_mean.copy_(norm.running_mean[keep])
            out.running_var.copy_(norm.running_var[keep])
            out.num_batches_tracked.copy_(norm.num_batches_tracked)
    out.train(norm.training)
    return out


def kept_channels(model: nn.Module) -> dict[str, torch.Tensor]:
    """Per channel producer (models/channels.py): the indices of its output channels that
    keep a weight, ascending."""
    layers = dict(model.named_modules())
    return {g.producer: layers[g.producer].mask.flatten(1).any(dim=1).nonzero().flatten()
            for g in channel_groups(model)}


def plain_copy(model: nn.Module, remove_channels: bool = False) -> nn.Module:
    """A copy of `model` built from plain layers holding the effective weights (pruned
    entries zero); with `remove_channels`, without the channels no weight is left in
    (the model must define channel_groups)."""
    out = copy.deepcopy(model)
    rows: dict = {}
    cols: dict = {}
    if remove_channels:
        modules = dict(out.named_modules())
        keep = kept_channels(model)
        for group in channel_groups(model):
            index = keep[group.producer]
            rows[group.producer] = index
            columns = (index[:, None] * group.columns
                       + torch.arange(group.columns, device=index.device)).flatten()
            for consumer in group.consumers:
                cols[consumer] = columns
            if group.norm is not None:
                _set_module(out, group.norm, _sliced_norm(modules[group.norm], index))
    for name, layer in list(out.named_modules()):
        if isinstance(layer, MASKED_LAYER_TYPES):
            _set_module(out, name, _plain_layer(layer, rows.get(name), cols.get(name)))
    return out


def parameter_count(model: nn.Module) -> int:
    """Elements of every parameter and buffer except masks (what a plain model stores)."""
    total = sum(p.numel() for p in model.parameters())
    return total + sum(b.numel() for n, b in model.named_buffers()
                       if not n.endswith("mask") and b.is_floating_point())
