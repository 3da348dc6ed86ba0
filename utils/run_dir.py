"""Run directories: `<log_dir>[/<subfolder>]/<name>-<algo>-s<seed>[t<trial>]-<hash8>/`, and
whether one is finished.

The name says what ran (config name, algorithm, seed; the trial number when it is not 1);
the hash of the science options (`Config.run_hash`) tells configs apart that differ in
anything else.  Runs made before names carried the algorithm and seed live in
`<name>-<hash8>/`: such a directory, when it exists, is still the config's run directory
(so it resumes, or is reported finished), unless `--force` asks for a fresh one.
"""
from __future__ import annotations

import json
import os

from args_helper import Config


def run_dir_name(cfg: Config) -> str:
    """`<name>-<algo>-s<seed>[t<trial>]-<hash8>` (path separators in the name become '_')."""
    name = cfg.name.replace(os.sep, "_").replace("/", "_")
    seed = f"s{cfg.seed}" + ("" if cfg.trial_num == 1 else f"t{cfg.trial_num}")
    return f"{name}-{cfg.algo_name}-{seed}-{cfg.run_hash()}"


def legacy_run_dir_name(cfg: Config) -> str:
    """The name runs got before it carried the algorithm and seed: `<name>-<hash8>`."""
    return f"{cfg.name}-{cfg.run_hash()}"


def run_dir_for(cfg: Config) -> str:
    """The directory this config's run lives in (same science config → same directory)."""
    parts = [cfg.log_dir] + ([cfg.subfolder] if cfg.subfolder else [])
    current = os.path.join(*parts, run_dir_name(cfg))
    legacy = os.path.join(*parts, legacy_run_dir_name(cfg))
    if not os.path.exists(current) and not cfg.force and os.path.isdir(legacy):
        return legacy
    return current


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


def is_finished(run_dir: str) -> bool:
    summary = read_summary(run_dir)
    return bool(summary) and summary.get("status") == "done"
