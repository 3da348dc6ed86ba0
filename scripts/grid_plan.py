"""Where each run of a grid lives and whether it still has to run — for imp_exec.sh and
cifar_exec.sh, in one process for the whole grid (no data loaded, nothing written).

    python scripts/grid_plan.py < JOBS

JOBS: one run per line, its main.py arguments as shell words.  Output: one line per job,
tab-separated `STATUS<TAB>RUN_DIR<TAB>MESSAGE`, STATUS being
  new       no run directory yet
  resume    an unfinished run is there (main.py continues it)
  extend    a finished run that this config asks more of (IMP levels, controls, analyses)
  finished  done: the grid skips it (its log is left as it is)
  error     main.py would reject the arguments (MESSAGE says why; RUN_DIR is -)
With `replicates: M` RUN_DIR lists the copies' directories separated by ' | ' and the status
is the least finished copy's.
"""
from __future__ import annotations

import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ORDER = ("new", "resume", "extend", "finished")


def _splits_for_plan(cfg, cache: dict):
    """Split sizes for `cfg` without reading a large dataset (published sizes when known)."""
    import data
    from data.known_sizes import planned_splits

    key = (cfg.dataset, cfg.data, cfg.use_full_data, cfg.val_size, cfg.split_seed,
           cfg.synthetic_size)
    if key not in cache:
        cache[key] = planned_splits(cfg) or data.load_splits(cfg, plan_only=True)
    return cache[key]


def job_status(cfg, run_dir: str, cache: dict) -> str:
    """new / resume / extend / finished for one single-run config in `run_dir`, after the
    checks main.py makes before it writes anything (ConfigError / DataError otherwise)."""
    import torch

    from models import InputSpec, build_model
    from pruners import get_algorithm
    from utils.errors import ConfigError
    from utils.logging import RunLogger
    from utils.run_dir import is_finished, read_summary

    algorithm = None if cfg.evaluate else get_algorithm(cfg.algo_name)
    splits = _splits_for_plan(cfg, cache)
    torch.manual_seed(cfg.run_seed)
    score_init = algorithm.score_init(cfg) if algorithm is not None else None
    try:
        model = build_model(cfg, InputSpec(splits.num_classes, splits.channels,
                                           splits.image_size),
                            with_scores=score_init is not None, score_init=score_init)
    except ValueError as exc:
        raise ConfigError(f"{cfg.where('arch')}: {exc}") from None
    if algorithm is not None and algorithm.prepare is not None:
        with open(os.devnull, "w") as quiet:
            algorithm.prepare(cfg, splits, model, RunLogger(quiet=True, stream=quiet))
    if cfg.force or not os.path.isdir(run_dir):      # --force: always a fresh directory
        return "new"
    if not is_finished(run_dir):
        return "resume"
    if algorithm is None or algorithm.covers is None:
        return "finished"
    return "finished" if algorithm.covers(read_summary(run_dir), cfg, splits, model) \
        else "extend"


def plan_line(words: list[str], cache: dict) -> str:
    """The output line of one job."""
    import args_helper
    from pruners.replicates import copy_configs
    from utils.errors import UsageError
    from utils.run_dir import run_dir_for

    try:
        cfg = args_helper.resolve(words)
        copies = copy_configs(cfg) if cfg.replicates > 1 else [cfg]
        dirs = [args_helper.run_dir_of(c.resume) if c.resume else run_dir_for(c)
                for c in copies]
        statuses = [job_status(c, d, cache) for c, d in zip(copies, dirs)]
    except UsageError as exc:
        return f"error\t-\t{exc}"
    status = min(statuses, key=ORDER.index)
    return f"{status}\t{' | '.join(dirs)}\t"


def main() -> int:
    cache: dict = {}
    for line in sys.stdin:
        if line.strip():
            print(plan_line(shlex.split(line), cache), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
