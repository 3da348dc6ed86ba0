"""Atomic file writes and safe checkpoint loading.

Every file is written to a temporary name in the same folder and renamed into place, so a
crash (even SIGKILL) leaves either the old or the new file, never half of one.  Checkpoints
are loaded with `torch.load(..., weights_only=True)`: they hold only tensors and plain data.
"""
from __future__ import annotations

import json
import os
import tempfile

import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path: str, write) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_checkpoint(obj, path: str) -> None:
    """torch.save `obj` to `path` atomically."""
    _atomic(path, lambda handle: torch.save(obj, handle))


def load_checkpoint(path: str, map_location="cpu"):
    """Load a checkpoint written by this project (or any weights-only torch file)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def write_text(path: str, text: str) -> None:
    """Write a text file atomically."""
    _atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def write_json(path: str, obj) -> None:
    """Write JSON (indented, keys in insertion order) atomically."""
    write_text(path, json.dumps(obj, indent=2) + "\n")
