"""Run directories: `<log_dir>[/<subfolder>]/<name>-<hash8>/`, and whether one is finished."""
from __future__ import annotations

import json
import os

from args_helper import Config


def run_dir_for(cfg: Config) -> str:
    """The directory this config's run lives in (same science config → same directory)."""
    parts = [cfg.log_dir] + ([cfg.subfolder] if cfg.subfolder else [])
    return os.path.join(*parts, f"{cfg.name}-{cfg.run_hash()}")


def fresh_run_dir(base: str) -> str:
    """`base` if unused, else the first unused `base-r2`, `base-r3`, ... (for --force)."""
    if not os.path.exists(base):
        return base
    k = 2
    while os.path.exists(f"{base}-r{k}"):
        k += 1
    return f"{base}-r{k}"


def read_summary(run_dir: str) -> dict | None:
    path = os.path.join(run_dir, "summary.json")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


FINISHED_STATUSES = ("done", "diverged")


def is_finished(run_dir: str) -> bool:
    """Whether the run ended: done, or diverged (a rerun would diverge the same way)."""
    summary = read_summary(run_dir)
    return bool(summary) and summary.get("status") in FINISHED_STATUSES
