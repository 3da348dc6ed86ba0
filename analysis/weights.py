"""Weight sets: loading them from any file this project writes, and combining them."""
from __future__ import annotations

import os

import torch

from utils.checkpoint import load_checkpoint
from utils.errors import ConfigError

# which entry of a saved file holds the weights, in order of preference
_ENTRIES = ("model", "trained", "weights")


def load_weight_set(spec: str) -> dict:
    """A state_dict from `PATH` or `PATH:ENTRY`: final.pt / init.pt / rewind.pt ("model"),
    checkpoints/level_XX.pt ("trained", or ":start"), ticket.pt ("weights"), or a plain
    state_dict.  ConfigError naming the file when it holds none."""
    path, entry = spec, ""
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isidentifier() and os.path.isfile(head):
        path, entry = head, tail
    try:
        blob = load_checkpoint(path)
    except Exception as exc:  # noqa: BLE001 (any unreadable file is a usage error)
        raise ConfigError(f"cannot load weights from {path}: "
                          f"{str(exc).splitlines()[0][:160]}") from None
    if entry:
        if entry not in blob:
            raise ConfigError(f"{path} has no entry {entry!r} (entries: {', '.join(blob)})")
        return blob[entry]
    for name in _ENTRIES:
        if isinstance(blob, dict) and isinstance(blob.get(name), dict):
            return blob[name]
    if isinstance(blob, dict) and all(torch.is_tensor(v) for v in blob.values()):
        return blob
    raise ConfigError(f"{path} holds no weights (expected one of: {', '.join(_ENTRIES)})")


def effective_state(state: dict) -> dict:
    """The state with every masked weight replaced by mask ⊙ weight (and the bias by
    bias_mask ⊙ bias) and all masks set to one: the network the forward pass computes."""
    out = dict(state)
    for key, value in state.items():
        if key.endswith(".mask"):
            base = key[:-len(".mask")]
            out[f"{base}.weight"] = state[f"{base}.weight"] * value
            out[key] = torch.ones_like(value)
        elif key.endswith(".bias_mask"):
            base = key[:-len(".bias_mask")]
            out[f"{base}.bias"] = state[f"{base}.bias"] * value
            out[key] = torch.ones_like(value)
    return out


def combine(states: list[dict], coefficients: list[float]) -> dict:
    """Σ c_i · state_i for floating-point entries (integer buffers from the first state)."""
    first = states[0]
    out = {}
    for key, value in first.items():
        if value.is_floating_point():
            out[key] = sum(c * s[key].to(value.dtype) for c, s in zip(coefficients, states))
        else:
            out[key] = value.clone()
    return out


def flat_difference(a: dict, b: dict, keys: list[str]) -> torch.Tensor:
    """a − b over `keys`, flattened into one vector."""
    return torch.cat([(a[k] - b[k]).flatten().float() for k in keys])


def prunable_weight_keys(state: dict) -> list[str]:
    """The `.weight` entries that have a mask (the prunable weights)."""
    return [k[:-len(".mask")] + ".weight" for k in state if k.endswith(".mask")]
