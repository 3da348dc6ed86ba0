"""Named random draws of a run: one generator per purpose, derived from the run's seed, so a
draw never depends on the global random state and is the same on every resume."""
from __future__ import annotations

import hashlib

import torch


def seeded_generator(seed: int, salt: str) -> torch.Generator:
    """A CPU generator for one named random choice of a run (independent of the global
    random state, identical on every resume)."""
    digest = hashlib.sha256(f"{seed}:{salt}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 2)
