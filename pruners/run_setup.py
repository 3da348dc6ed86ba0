"""Preparing one run of a config before anything is written: validate, choose the run
directory and take its lock, load the data, build the model and hand it to the algorithm's
checks (`prepare` → `Prepared`), or say that the run has finished; then create and claim the
directory (`claim_run_dir`).  Used by main.py for a single run and by the packed driver
(pruners/replicates.py) for each copy of `replicates: M`.
"""
from __future__ import annotations

import os
import sys

from utils.errors import ConfigError, UsageError


class Prepared:
    """Everything validated and loaded before the first file is written."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def prepare(cfg, dist_env=None, device=None, splits=None, shared_loaders=None,
            logger=None) -> Prepared | int | None:
    """Validate, pick the run directory and take its lock, load data and build the model.
    Writes nothing.  Returns None when there is nothing to run (dry run, or a finished run),
    or the exit code 3 for a run that finished as diverged.
    Under torchrun (`dist_env`) the loaders are sharded and `device` is this rank's; ranks
    other than 0 take no lock (they work in private copies).  Packed replicates pass the
    `splits` already loaded, `shared_loaders` whose device-resident images to reuse and each
    copy's own `logger`."""
    from utils.device import select_device
    from utils.logging import RunLogger
    from utils.run_dir import check_writable, fresh_run_dir, is_finished, run_dir_for, take_lock

    logger = RunLogger(quiet=cfg.quiet) if logger is None else logger
    for warning in cfg.warnings:
        logger.info(warning)
    device = select_device(cfg) if device is None else device
    run_dir = choose_run_dir(cfg, run_dir_for, fresh_run_dir)
    lock, unwritable = None, None
    if not cfg.dry_run and (dist_env is None or dist_env.rank == 0):
        try:
            check_writable(run_dir, cfg.where("log_dir"))
            lock = take_lock(run_dir)   # before anything of the run is read (None: new run)
        except ConfigError as exc:
            if not is_finished(run_dir):
                raise
            unwritable = exc    # a finished run on read-only storage may still be reported
    new = not os.path.isdir(run_dir)
    try:
        prepared = _load(cfg, run_dir, logger, device, dist_env, splits, shared_loaders)
    except BaseException:
        if lock is not None:
            lock.close()
        raise
    if not isinstance(prepared, Prepared):     # None, or 3: finished as diverged
        if lock is not None:
            lock.close()
        return prepared
    if unwritable is not None:      # it has more to do (an extended IMP run)
        raise unwritable
    prepared.lock, prepared.new = lock, new
    return prepared


def _load(cfg, run_dir, logger, device, dist_env, splits, shared_loaders) -> Prepared | None:
    """prepare() once the run directory is chosen (and locked)."""
    import random

    import numpy as np
    import torch

    import args_helper
    import data
    from models import InputSpec, build_model
    from pruners import get_algorithm
    from utils.device import autocast_dtype
    from utils.run_dir import is_finished, load_resume_state, read_summary

    algorithm = None if evaluates_only(cfg) else get_algorithm(cfg.algo_name)
    summary = read_summary(run_dir) if is_finished(run_dir) and not cfg.dry_run else None
    if summary is not None and (algorithm is None or algorithm.covers is None
                                or summary.get("status") == "diverged"):
        return report_finished(run_dir, summary)
    splits = data.load_splits(cfg, plan_only=cfg.dry_run) if splits is None else splits
    spec = InputSpec(splits.num_classes, splits.channels, splits.image_size)
    seed = cfg.run_seed
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    score_init = algorithm.score_init(cfg) if algorithm is not None else None
    try:
        model = build_model(cfg, spec, with_scores=score_init is not None,
                            score_init=score_init)
    except ValueError as exc:
        raise ConfigError(f"{cfg.where('arch')}: {exc}") from None
    if summary is not None and algorithm.covers(summary, cfg, splits, model):
        return report_finished(run_dir, summary)
    if cfg.target_sparsity is not None and algorithm is not None and cfg.algo_name in \
            args_helper.OPTIONS_BY_NAME["target_sparsity"].algos:
        from models.prune_targets import check_keeps_a_weight

        check_keeps_a_weight(cfg, model)
    if cfg.pretrained:
        _load_pretrained(cfg, model)
    if algorithm is not None and algorithm.prepare is not None:
        algorithm.prepare(cfg, splits, model, logger)
    loaders = None
    if dist_env is not None:
        from utils.distributed import shard_loaders

        loaders = data.make_loaders(splits, cfg.batch_size, device, seed)
        shard_loaders(loaders, dist_env, cfg.dataset)
    if cfg.dry_run:
        _print_plan(cfg, run_dir, splits, device, algorithm, model, dist_env)
        return None
    model.to(device)
    state = load_resume_state(run_dir, cfg)
    if loaders is None and shared_loaders is not None:
        loaders = data.loaders_sharing(shared_loaders, splits, cfg.batch_size, device, seed)
    if loaders is None:
        loaders = data.make_loaders(splits, cfg.batch_size, device, seed)
    return Prepared(cfg=cfg, logger=logger, device=device, run_dir=run_dir, splits=splits,
                    spec=spec, model=model, algorithm=algorithm, state=state, seed=seed,
                    autocast=autocast_dtype(cfg, device), loaders=loaders,
                    rank=0 if dist_env is None else dist_env.rank,
                    world_size=1 if dist_env is None else dist_env.world_size,
                    lock=None, new=False)


def evaluates_only(cfg) -> bool:
    """`evaluate`: only evaluate `pretrained` (with mode_connect: the mode_connect analysis)."""
    return cfg.evaluate and cfg.algo_name != "mode_connect"


def report_finished(run_dir: str, summary: dict) -> int | None:
    """Say that the run in `run_dir` has finished; 3 if it diverged."""
    if summary.get("status") == "diverged":
        where = summary.get("diverged") or {}
        print(f"already finished: {run_dir} DIVERGED (training loss {where.get('loss')} in "
              f"phase {where.get('phase')}, epoch {where.get('epoch')}); use --force to run "
              f"it again in a fresh directory")
        return 3
    print(f"already finished: {run_dir} (test acc {summary.get('test_acc') or float('nan'):.2f}"
          f" %, density {summary.get('density_pct') or float('nan'):.2f} %); "
          f"use --force to run it again in a fresh directory")
    return None


def choose_run_dir(cfg, run_dir_for, fresh_run_dir) -> str:
    """The run directory: --resume's (a run directory of this tool made for this config),
    else the config's (a fresh one with --force)."""
    import args_helper
    from utils.run_dir import check_resume_target

    if cfg.resume:
        run_dir = args_helper.run_dir_of(cfg.resume)
        check_resume_target(run_dir, cfg)
    else:
        run_dir = run_dir_for(cfg)
        if cfg.force and os.path.exists(run_dir):
            return fresh_run_dir(run_dir)
    existing = os.path.join(run_dir, "config.yaml")
    if os.path.isfile(existing):
        try:
            old = args_helper.resolve(["--config", existing]).science_values()
        except UsageError:
            old = None
        if old != cfg.science_values():
            raise ConfigError(f"{run_dir} holds a run with a different config; drop the "
                              f"changed options, or use --force for a fresh directory")
    return run_dir


def _load_pretrained(cfg, model) -> None:
    from utils.checkpoint import load_checkpoint

    try:
        blob = load_checkpoint(cfg.pretrained)
    except Exception as exc:  # noqa: BLE001 (any unreadable file is a usage error)
        raise ConfigError(f"{cfg.where('pretrained')}: cannot load {cfg.pretrained}: "
                          f"{str(exc).splitlines()[0][:160]}") from None
    state = blob.get("model", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"{cfg.where('pretrained')}: {cfg.pretrained} holds no state_dict")
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong or not matched:
        detail = f"shape mismatch at {wrong[0]}" if wrong else "no parameter names match"
        raise ConfigError(f"{cfg.where('pretrained')}: {cfg.pretrained} does not fit "
                          f"arch {cfg.arch}: {detail}")
    model.load_state_dict(matched, strict=False)


def _print_plan(cfg, run_dir, splits, device, algorithm, model, dist_env=None) -> None:
    from utils.run_dir import is_finished

    print(cfg.to_yaml().rstrip())
    print("\n# ---- plan")
    print(f"run directory: {run_dir}"
          + (" (finished; would be skipped)" if is_finished(run_dir) else
             " (exists; would resume)" if os.path.isdir(run_dir) else " (new)"))
    print(f"algorithm: {cfg.algo_name}; arch {cfg.arch}; dataset {cfg.dataset}: "
          f"{splits.sizes()}, {splits.num_classes} classes")
    print(f"device: {device}; seed {cfg.run_seed} (seed {cfg.seed} × trial {cfg.trial_num})")
    if dist_env is not None:
        from utils.distributed import backend_for

        print(f"distributed: {dist_env.world_size} processes on {dist_env.nodes} node(s), "
              f"backend {backend_for(cfg, device)}; global batch {cfg.batch_size} = "
              f"{cfg.batch_size // dist_env.world_size} per process; rank 0 writes")
    from models.flops import count_flops, format_flops

    dense = count_flops(model, (splits.channels, splits.image_size, splits.image_size))
    print(f"FLOPs (multiply-adds of the prunable layers per image): dense "
          f"{format_flops(dense['dense_flops'])}")
    if algorithm is None:
        print(f"evaluate {cfg.pretrained} on val and test (no training)")
    else:
        for line in algorithm.plan(cfg, splits, model):
            print(line)


def claim_run_dir(p: Prepared) -> int | None:
    """Create the run directory of a new run and take its lock (an existing one was locked
    by prepare), then remove temporaries a killed process left.  Returns an exit code when
    the run must not go on: another process holds the directory, or started (or finished)
    the run since prepare looked."""
    from utils.run_dir import is_finished, read_summary, remove_temp_files, take_lock

    if p.lock is None:
        try:
            os.makedirs(os.path.join(p.run_dir, "checkpoints"), exist_ok=True)
            p.lock = take_lock(p.run_dir)
        except (UsageError, OSError) as exc:
            reason = exc if isinstance(exc, UsageError) else (
                f"cannot create {p.run_dir}: {exc.strerror or exc}")
            print(f"error: {reason}", file=sys.stderr)
            return 2
        if p.new and os.path.exists(os.path.join(p.run_dir, "config.yaml")):
            p.lock.close()
            if is_finished(p.run_dir):
                return report_finished(p.run_dir, read_summary(p.run_dir)) or 0
            print(f"error: {p.run_dir} was started by another process meanwhile; run the "
                  f"same command again to resume it", file=sys.stderr)
            return 2
    os.makedirs(os.path.join(p.run_dir, "checkpoints"), exist_ok=True)
    removed = remove_temp_files(p.run_dir)
    if removed:
        p.logger.info(f"removed {len(removed)} unfinished temporary file(s) of an earlier, "
                      f"killed attempt")
    return None
