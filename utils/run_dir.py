"""Run directories: `<log_dir>[/<subfolder>]/<name>-<algo>-s<seed>[t<trial>]-<hash8>/`: where
a config's run lives, whether it is finished, its lock, and the checks that make resuming
exact or refused.

The name says what ran (config name, algorithm, seed; the trial number when it is not 1);
the hash of the science options (`Config.run_hash`) tells configs apart that differ in
anything else.  Runs made before names carried the algorithm and seed live in
`<name>-<hash8>/`: such a directory, when it exists, is still the config's run directory
(so it resumes, or is reported finished), unless `--force` asks for a fresh one.

Resuming relies on checkpoints/last.pt (the run state, the hash of the config it was run
with and the list of checkpoint files written before it) and on those files.  A run
directory that lost or damaged one of them is refused with one line naming the file (exit 2)
instead of continuing from a different state.
"""
from __future__ import annotations

import csv
import fcntl
import json
import os
import re
import tempfile

from args_helper import Config
from utils.checkpoint import is_temp_file, load_checkpoint
from utils.context import CHECKPOINT_FORMAT, RunState
from utils.errors import ConfigError, DamagedFileError

_NAME_HASH = re.compile(r"-([0-9a-f]{8})(?:-r[0-9]+)?$")
_STATE_KEYS = ("rows", "completed", "global_epoch", "extra")
_RESUME_KEYS = ("state", "phase_key", "epoch", "step", "best", "model", "optimizer",
                "torch_rng")
FRESH_START = "start again in a fresh directory with --force"


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
            summary = json.load(handle)
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


FINISHED_STATUSES = ("done", "diverged")


def is_finished(run_dir: str) -> bool:
    """Whether the run ended: done, or diverged (a rerun would diverge the same way)."""
    summary = read_summary(run_dir)
    return bool(summary) and summary.get("status") in FINISHED_STATUSES


# --------------------------------------------------------------------------- identity


def recorded_hash(run_dir: str) -> str | None:
    """The config hash a run directory was made for: from its name (`<name>-<hash8>`, also
    with `-rK`), else from its summary.json; None when neither tells."""
    match = _NAME_HASH.search(os.path.basename(os.path.normpath(run_dir)))
    if match:
        return match.group(1)
    summary = read_summary(run_dir) or {}
    value = summary.get("config_hash")
    return value if isinstance(value, str) else None


def check_resume_target(run_dir: str, cfg: Config) -> None:
    """`--resume RUN`: RUN must be a run directory of this tool made for this config
    (its config.yaml unedited, no option that changes the science); ConfigError if not."""
    where = cfg.where("resume")
    if not os.path.isdir(run_dir):
        raise ConfigError(f"{where}: no run directory at {cfg.resume}")
    if not os.path.isfile(os.path.join(run_dir, "config.yaml")):
        raise ConfigError(f"{where}: {run_dir} is not a run directory of this tool (no "
                          f"config.yaml)")
    recorded = recorded_hash(run_dir)
    if recorded is None:
        raise ConfigError(f"{where}: {run_dir} is not a run directory of this tool (its name "
                          f"does not end in -<hash8> and it has no summary.json)")
    if recorded != cfg.run_hash():
        raise ConfigError(f"{where}: {run_dir} holds a run with a different config (hash "
                          f"{recorded}, now {cfg.run_hash()}): its config.yaml was edited or "
                          f"an option changes the experiment; undo the change, or run the new "
                          f"config on its own (python main.py --config FILE)")


# --------------------------------------------------------------------------- writing


def check_writable(run_dir: str, where: str) -> None:
    """ConfigError unless the run directory can be created and written (a log_dir that is
    a file, on a read-only file system, or under /proc or /sys is refused)."""
    path = os.path.abspath(run_dir)
    probe = path
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise ConfigError(f"{where}: cannot create {run_dir}: {probe} is a file, not a folder")
    try:
        read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        raise ConfigError(f"{where}: cannot write {run_dir}: {probe} is on a read-only file "
                          f"system")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}: cannot write {run_dir}: no write permission in {probe}")
    if probe == path:
        return
    try:   # what os.access cannot tell (/proc, /sys, ...): create and remove a folder
        os.rmdir(tempfile.mkdtemp(prefix=".write-check-", dir=probe))
    except OSError as exc:
        raise ConfigError(f"{where}: cannot write {run_dir}: creating a folder in {probe} "
                          f"fails ({exc.strerror or exc})") from None


def take_lock(run_dir: str):
    """The run directory's lock (an open `.lock` held with flock), or None when the
    directory does not exist yet; ConfigError when another process holds it."""
    if not os.path.isdir(run_dir):
        return None
    try:   # no truncation: taking the lock changes nothing in the directory
        fd = os.open(os.path.join(run_dir, ".lock"), os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise ConfigError(f"cannot lock {run_dir}: {exc.strerror or exc}") from None
    handle = os.fdopen(fd, "r+b")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise ConfigError(f"{run_dir} is in use by another process (the same run is "
                          f"running); wait for it to finish, then run the command again"
                          ) from None
    return handle


def remove_temp_files(run_dir: str) -> list[str]:
    """Delete the temporaries of atomic writes that a killed process left (`.<file>.*.tmp`);
    returns their paths."""
    removed = []
    for folder, _, files in os.walk(run_dir):
        for name in files:
            if is_temp_file(name):
                path = os.path.join(folder, name)
                try:
                    os.remove(path)
                    removed.append(path)
                except OSError:
                    pass
    return removed


# --------------------------------------------------------------------------- resuming


def load_resume_state(run_dir: str, cfg: Config) -> RunState:
    """The state to continue from (fresh when the run has not saved one).  ConfigError, one
    line naming the file, when last.pt is damaged or belongs to another run, when it is
    missing although the run has results, or when a checkpoint it relies on is gone."""
    path = os.path.join(run_dir, "checkpoints", "last.pt")
    if not os.path.lexists(path):
        evidence = _progress(run_dir)
        if evidence:
            raise ConfigError(f"{path} is missing but {run_dir} holds results of an earlier "
                              f"attempt ({evidence}); restore it, or {FRESH_START}")
        return RunState()
    try:
        ckpt = load_checkpoint(path)
    except DamagedFileError as exc:
        raise ConfigError(f"{path} is {exc.problem}; the run cannot resume from it: restore "
                          f"it, or {FRESH_START}") from None
    problem = _resume_problem(ckpt)
    if problem:
        raise ConfigError(f"{path} is not a resume checkpoint of this tool ({problem}); "
                          f"restore it, or {FRESH_START}")
    saved_hash = ckpt.get("config_hash")
    if saved_hash is not None and saved_hash != cfg.run_hash():
        raise ConfigError(f"{path} belongs to another run (config hash {saved_hash}, this run "
                          f"{cfg.run_hash()}); restore this run's file, or {FRESH_START}")
    folder = os.path.join(run_dir, "checkpoints")
    missing = [n for n in ckpt.get("files") or () if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ConfigError(f"{os.path.join(folder, missing[0])} is missing{more}: the run wrote "
                          f"it before it stopped and needs it to continue; restore it, or "
                          f"{FRESH_START}")
    return RunState.from_checkpoint(ckpt)


def _resume_problem(ckpt) -> str | None:
    if not isinstance(ckpt, dict):
        return f"holds a {type(ckpt).__name__}"
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        return f"format {ckpt.get('format')!r}, expected {CHECKPOINT_FORMAT}"
    absent = [k for k in _RESUME_KEYS if k not in ckpt]
    if absent:
        return f"no {absent[0]!r}"
    state = ckpt["state"]
    if not isinstance(state, dict) or any(k not in state for k in _STATE_KEYS):
        return "no run state"
    if not isinstance(ckpt["model"], dict):
        return "no model weights"
    return None


def _progress(run_dir: str) -> str | None:
    """What shows that a run got past its first epoch (None if nothing does).  Files an
    algorithm writes before its first epoch (init.pt, rewind.pt, before_finetune.pt, ...)
    are written again, identically, by a fresh start; finished IMP levels and a final model
    are not."""
    folder = os.path.join(run_dir, "checkpoints")
    try:
        saved = sorted(n for n in os.listdir(folder)
                       if n == "final.pt" or (n.startswith("level_") and n.endswith(".pt")))
    except OSError:
        saved = []
    if saved:
        return f"checkpoints/{saved[0]}"
    try:
        with open(os.path.join(run_dir, "metrics.csv"), newline="", encoding="utf-8") as handle:
            rows = sum(1 for _ in csv.reader(handle)) - 1
    except (OSError, ValueError):
        rows = 0
    if rows > 0:
        return f"metrics.csv with {rows} epochs"
    if is_finished(run_dir):
        return "summary.json of a finished run"
    return None
