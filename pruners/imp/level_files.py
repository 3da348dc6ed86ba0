"""The files of a recorded IMP level: checkpoints/level_XX.pt (masks, start and trained
weights, training result) and checkpoints/level_XX.json (density, pruning record, training
data, analyses)."""
from __future__ import annotations

import json

from utils.errors import DamagedFileError


def level_path(ctx, level: int) -> str:
    return ctx.path("checkpoints", f"level_{level:02d}.pt")


def info_path(ctx, level: int) -> str:
    return ctx.path("checkpoints", f"level_{level:02d}.json")


def read_info(ctx, level: int) -> dict:
    """The level's JSON record; {} before the level is recorded, DamagedFileError when the
    file is there but unreadable."""
    path = info_path(ctx, level)
    try:
        with open(path, encoding="utf-8") as handle:
            info = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise DamagedFileError(path, f"not a readable level record ({exc})") from None
    if not isinstance(info, dict):
        raise DamagedFileError(path, "not a level record (no JSON object)")
    return info
