"""Entry point: parse → run directory → dispatch on the algorithm → summary.

    python main.py --config FILE.yml [--some-option VALUE ...] [--dry-run] [--force]

Exit codes: 0 done (or skipped, already done); 2 bad config/option/file/dataset, or a run
directory that cannot be resumed (one line, nothing written); 1 runtime failure (message +
where the partial results are); 3 diverged (the training loss became non-finite; partial
results kept, summary status "diverged"); 130 interrupted by Ctrl-C or SIGTERM (state saved;
rerunning the same command resumes).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

from utils.errors import ConfigError, DamagedFileError, Diverged, UsageError
from utils.interrupts import deferred


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("error: nothing to run: python main.py --config FILE.yml [--option VALUE ...] "
              "(--help lists the options)", file=sys.stderr)
        return 2
    # SIGTERM (kill, Slurm preemption, torchrun passing on Ctrl-C) stops a run like Ctrl-C
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        return _main(argv)
    except KeyboardInterrupt:   # while starting up or reporting (a run reports its own)
        print("interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str]) -> int:
    with deferred():   # Ctrl-C inside torch's import can abort the interpreter: wait for it
        import args_helper

    dist_env = None
    try:
        from utils import distributed

        dist_env = distributed.from_env()
        cfg = distributed.configure(args_helper.resolve(argv), dist_env, argv)
        if dist_env is not None:
            if cfg.replicates > 1:
                raise ConfigError(f"{cfg.where('replicates')}: packed replicates run in one "
                                  f"process; launch them without torchrun")
            return _main_distributed(cfg, dist_env)
        if cfg.replicates > 1:
            return _run_packed(cfg)
        prepared = prepare(cfg)
    except UsageError as exc:
        if dist_env is None or dist_env.rank == 0:
            print(f"error: {exc}", file=sys.stderr)
        else:   # torchrun: every rank has the same error; let rank 0 say it before torchrun
            time.sleep(3)   # stops the others when the first one exits
        return 2
    if not isinstance(prepared, Prepared):
        return prepared or 0          # None: nothing to run; 3: finished as diverged
    return execute(prepared)


def _main_distributed(cfg, dist_env) -> int:
    """One process of a torchrun launch (utils/distributed.py): every rank prepares; rank 0
    decides (finished, dry run, or an error on any rank: all stop alike); ranks other than 0
    print nothing and work in a private copy of the run directory."""
    import shutil

    from utils import distributed
    from utils.context import load_run_state

    rank = dist_env.rank
    if rank > 0:
        sys.stdout = open(os.devnull, "w")   # noqa: SIM115 (for the life of the process)
    # torchrun passes Ctrl-C (and Slurm its preemption) on as SIGTERM, which main() turns
    # into Ctrl-C: rank 0 reports where the state is, the other ranks remove their copies
    try:
        device = distributed.device_for(cfg, dist_env)
    except UsageError as exc:   # may differ between nodes: every rank says it
        print(f"error: {exc}" if rank == 0 else f"error: rank {rank}: {exc}", file=sys.stderr)
        return 2
    distributed.init(cfg, dist_env, device)
    scratch = None
    try:
        prepared, error = None, None
        try:
            prepared = prepare(cfg, dist_env=dist_env, device=device)
        except UsageError as exc:
            error = str(exc)
        if prepared is not None and not isinstance(prepared, Prepared):
            prepared = None             # finished (said so) or a dry run
        outcome = "error" if error else ("run" if prepared is not None else "none")
        outcomes = distributed.gather((outcome, error))
        failed = [(r, msg) for r, (what, msg) in enumerate(outcomes) if what == "error"]
        if failed:
            if rank == 0:
                r, msg = failed[0]
                print(f"error: {msg}" if r == 0 else f"error: rank {r}: {msg}",
                      file=sys.stderr)
            return 2
        if outcomes[0][0] == "none":
            return 0
        if prepared is None:
            if rank == 0:
                print("error: ranks see different run directories (resume under torchrun "
                      "needs the run directory on a filesystem every node reads)",
                      file=sys.stderr)
            return 2
        if rank > 0:
            prepared.run_dir, scratch = distributed.private_copy(prepared.run_dir, rank)
            prepared.state = load_run_state(prepared.run_dir)
        epochs = distributed.gather(prepared.state.global_epoch)
        if len(set(epochs)) != 1:
            if rank == 0:
                print(f"error: {cfg.where('resume')}: ranks resume from different epochs "
                      f"{epochs}: resume under torchrun needs the run directory on a "
                      f"filesystem every node reads", file=sys.stderr)
            return 2
        return execute(prepared)
    finally:
        distributed.shutdown()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _run_packed(cfg) -> int:
    """`replicates: M`: M copies trained together, each written as its own run."""
    from pruners.replicates import run_packed

    try:
        return run_packed(cfg)
    except UsageError:
        raise
    except KeyboardInterrupt:   # before training started (it handles its own)
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        print(f"error: packed run failed ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 1


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
    run_dir = _choose_run_dir(cfg, run_dir_for, fresh_run_dir)
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
        return _report_finished(run_dir, summary)
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
        return _report_finished(run_dir, summary)
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


def _report_finished(run_dir: str, summary: dict) -> int | None:
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


def _choose_run_dir(cfg, run_dir_for, fresh_run_dir) -> str:
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


def execute(p: Prepared) -> int:
    """Run the algorithm in the prepared run directory; 0 done, 1 failure, 130 interrupted
    (2 when another process took the run directory meanwhile)."""
    from utils.checkpoint import write_text

    code = claim_run_dir(p)
    if code is not None:
        return code
    fresh = p.state.global_epoch == 0 and not p.state.completed
    started = time.time()
    try:
        # (re)written every time: an extended run (more IMP levels or controls) records its
        # new extent; otherwise the content is the same science config
        write_text(os.path.join(p.run_dir, "config.yaml"), p.cfg.to_yaml())
        if p.rank == 0:   # other torchrun ranks keep no log and no TensorBoard events
            with deferred():   # (imports TensorBoard)
                p.logger.attach(p.run_dir,
                                purge_step=None if fresh else p.state.global_epoch + 1)
        return _run(p, fresh, started)
    except KeyboardInterrupt:
        last = os.path.join(p.run_dir, "checkpoints", "last.pt")
        _say(p, f"interrupted: state saved in {last}; run the same command again to resume"
             if os.path.isfile(last) else "interrupted before the first epoch ended; run the "
             "same command again to start the run")
        return 130
    except Diverged as exc:
        return _diverged(p, exc, started)
    except Exception as exc:  # noqa: BLE001 (report any failure with where results are)
        known = known_failure(exc)
        if known is not None:
            return _failed(p, started, exc, known)
        import traceback

        _say(p, traceback.format_exc().rstrip())
        return _failed(p, started, exc, f"run failed ({type(exc).__name__}: {exc})",
                       "partial results and the traceback")
    finally:
        _quietly(p.logger.close)
        p.lock.close()


def known_failure(exc: BaseException) -> str | None:
    """The one-line message (no traceback) of a failure the user can fix: a damaged or
    missing file of the run directory, a full disk; None for anything else."""
    from utils.errors import DiskFullError

    if isinstance(exc, DamagedFileError):
        return (f"{exc.path} is {exc.problem}; restore it, or start again in a fresh "
                f"directory with --force")
    if isinstance(exc, DiskFullError):
        return (f"the disk is full (writing {exc.path}); free some space and run the same "
                f"command again to resume")
    return None


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
                return _report_finished(p.run_dir, read_summary(p.run_dir)) or 0
            print(f"error: {p.run_dir} was started by another process meanwhile; run the "
                  f"same command again to resume it", file=sys.stderr)
            return 2
    os.makedirs(os.path.join(p.run_dir, "checkpoints"), exist_ok=True)
    removed = remove_temp_files(p.run_dir)
    if removed:
        p.logger.info(f"removed {len(removed)} unfinished temporary file(s) of an earlier, "
                      f"killed attempt")
    return None


def _failed(p: Prepared, started: float, exc: BaseException, message: str,
            kept: str = "partial results") -> int:
    """Record a failed run (summary.json status failed) and say so in one line; exit 1."""
    _quietly(lambda: _write_summary(p, {"status": "failed",
                                        "error": f"{type(exc).__name__}: {exc}"}, started))
    print(f"error: {message}; {kept} are in {p.run_dir}", file=sys.stderr)
    return 1


def _diverged(p: Prepared, exc, started: float) -> int:
    """A non-finite training loss: summary status "diverged", the partial results kept,
    exit 3."""
    _quietly(lambda: _write_summary(p, {"status": "diverged", "diverged": exc.record()},
                                    started))
    message = (f"diverged: {exc}; the run stopped there (summary status \"diverged\"); "
               f"what was recorded before is kept in {p.run_dir}; lower the learning rate "
               f"and use --force to run it again")
    _say(p, message)
    print(f"error: {message}", file=sys.stderr)
    return 3


def _say(p: Prepared, message: str) -> None:
    """Log a line (also to log.txt while the disk allows)."""
    _quietly(lambda: p.logger.info(message))


def _quietly(action) -> None:
    """Run a best-effort step of reporting a failure; a full disk must not hide the failure."""
    try:
        action()
    except OSError:
        pass


def _run(p: Prepared, fresh: bool, started: float) -> int:
    ctx = open_context(p, fresh)
    if p.algorithm is None:
        result = _evaluate_only(ctx, p.model)
    else:
        result = p.algorithm.run(ctx, p.model)
    if p.world_size > 1:
        result["distributed"] = _agreement(ctx, p)
    finish_run(p, ctx, result, started)
    return 0


def open_context(p: Prepared, fresh: bool, packed: bool = False):
    """The RunContext of a prepared run (init.pt saved when fresh); `packed` copies get no
    fast path (their training is `utils.packed_phase`)."""
    from utils.board import log_config
    from utils.context import RunContext
    from utils.fast import FastPath
    from utils.provenance import provenance, provenance_line

    cfg, log = p.cfg, p.logger
    log.info(f"run directory: {p.run_dir}" + ("" if fresh else " (resuming)"))
    log.info(f"{cfg.algo_name} | {cfg.arch} | {cfg.dataset}: {p.splits.sizes()} | "
             f"device {p.device} | seed {p.seed}")
    log.info(provenance_line(provenance(p.device)))
    fast = FastPath.from_config(cfg, p.device, report=log.info)
    fast.configure_backends()
    if not packed:
        fast.prepare_model(p.model)   # its final memory format before any hook holds tensors
    ctx = RunContext(cfg=cfg, device=p.device, run_dir=p.run_dir, logger=log,
                     splits=p.splits, loaders=p.loaders, model_spec=p.spec,
                     autocast_dtype=p.autocast, seed=p.seed, state=p.state, quiet=cfg.quiet,
                     rank=p.rank, world_size=p.world_size, fast=None if packed else fast,
                     model=p.model, progress=_run_progress(p))
    log_config(log, cfg)
    if fresh:
        ctx.save_model(p.model, "init.pt")
    return ctx


def _run_progress(p: Prepared):
    """The run-wide epoch counter (None for --evaluate, which trains nothing)."""
    from pruners.budget import planned_epochs
    from utils.progress import RunProgress

    if p.cfg.evaluate:
        return None
    return RunProgress(planned_epochs(p.cfg, p.splits, p.model), done=len(p.state.rows))


def finish_run(p: Prepared, ctx, result: dict, started: float) -> dict:
    """layer_density.csv, summary.json, the result table, and the run's TensorBoard record:
    HParams, final per-layer density, the report's figures."""
    import args_helper
    from models.flops import count_flops
    from models.masks import format_density_report, layer_density_report
    from utils.board import hparam_schema, log_hparams
    from utils.logging import write_csv

    cfg, log = p.cfg, p.logger
    report = layer_density_report(p.model)
    write_csv(ctx.path("layer_density.csv"),
              ["layer", "type", "shape", "params", "zeros", "density_pct"], report)
    flops = count_flops(p.model, (p.spec.channels, p.spec.image_size, p.spec.image_size))
    from pruners.registry import GRANULARITY_ALGOS

    if cfg.prune_granularity != "weight" and cfg.algo_name in GRANULARITY_ALGOS:
        flops["prune_granularity"] = (f"{cfg.prune_n}:{cfg.prune_m}"
                                      if cfg.prune_granularity == "n:m" else "channel")
    summary = _write_summary(p, {"status": "done", **flops, **result}, started)
    log.info("\nper-layer density:\n" + format_density_report(report))
    log.info("\n" + _result_table(summary))
    log_hparams(log, cfg, summary, hparam_schema(args_helper.OPTIONS))
    log.scalars({f"layer_density/{r['layer']}": r["density_pct"] for r in report}, 0)
    _log_figures(log, ctx.run_dir)
    return summary


def _log_figures(log, run_dir: str) -> None:
    """The report's figures of this run as TensorBoard images (`figures/<name>`)."""
    if log.tb is None:
        return
    from analysis.report_figures import run_figures

    for name, fig in run_figures(run_dir):
        log.figure(f"figures/{name}", fig)


def _agreement(ctx, p: Prepared) -> dict:
    """What a torchrun run records in summary.json: the launch, and whether the ranks ended
    with equal masks and weights (and computed equal masks at every phase start)."""
    from utils import distributed

    masks = distributed.masks_agree(p.model) and not ctx.disagreements
    weights = distributed.weights_agree(p.model)
    if not (masks and weights):
        ctx.logger.info(f"warning: ranks disagree: masks_agree {masks}, weights_agree "
                        f"{weights} (phases: {', '.join(ctx.disagreements) or 'final'})")
    return {"world_size": p.world_size, "global_batch": p.cfg.batch_size,
            "batch_per_process": p.cfg.batch_size // p.world_size,
            "backend": distributed.backend_for(p.cfg, p.device),
            "masks_agree": masks, "weights_agree": weights}


def _evaluate_only(ctx, model) -> dict:
    from models.masks import density_pct
    from utils.train import evaluate

    val = evaluate(model, ctx.loaders.val, ctx.autocast_dtype)
    test = evaluate(model, ctx.loaders.test, ctx.autocast_dtype)
    ctx.logger.info(f"evaluated {ctx.cfg.pretrained}: val {val['acc']:.2f}%  "
                    f"test {test['acc']:.2f}%")
    return {"val_loss": val["loss"], "val_acc": val["acc"], "test_loss": test["loss"],
            "test_acc": test["acc"], "density_pct": density_pct(model)}


def _write_summary(p: Prepared, fields: dict, started: float) -> dict:
    import torch

    from models.masks import density_pct
    from utils.checkpoint import write_json
    from utils.provenance import provenance

    density = fields.pop("density_pct", None)
    density = density_pct(p.model) if density is None else density
    summary = {
        "status": fields.pop("status"),
        "algo": "evaluate" if p.algorithm is None else p.cfg.algo_name, "arch": p.cfg.arch,
        "dataset": p.cfg.dataset, "seed": p.seed,
        "density_pct": density, "sparsity_pct": 100.0 - density,
        "test_acc": fields.pop("test_acc", None), "val_acc": fields.pop("val_acc", None),
        "wall_seconds": _wall(p, started),
        **fields,
        "run_dir": p.run_dir, "config_hash": p.cfg.run_hash(), "device": str(p.device),
        "torch": torch.__version__, "provenance": provenance(p.device),
    }
    write_json(os.path.join(p.run_dir, "summary.json"), _json_safe(summary))
    return summary


def _wall(p: Prepared, started: float) -> float:
    """Seconds of training over all attempts (epoch times) plus this attempt's overhead."""
    epoch_seconds = sum(r.get("seconds", 0.0) for r in p.state.rows)
    return max(time.time() - started, epoch_seconds)


def _json_safe(obj):
    if isinstance(obj, float):
        return None if obj != obj or obj in (float("inf"), float("-inf")) else round(obj, 6)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _result_table(summary: dict) -> str:
    def pct(key):
        value = summary.get(key)
        return "n/a" if value is None or value != value else f"{value:.2f} %"

    rows = [("algorithm", summary["algo"]), ("arch / dataset",
                                              f"{summary['arch']} / {summary['dataset']}"),
            ("density / sparsity", f"{pct('density_pct')} / {pct('sparsity_pct')}"),
            ("FLOPs (multiply-adds)", _flops_cell(summary)),
            ("train accuracy", pct("train_acc")), ("validation accuracy", pct("val_acc")),
            ("best validation", pct("best_val_acc") + (
                f" (epoch {summary['best_val_epoch']}, test there {pct('test_acc_at_best_val')})"
                if summary.get("best_val_epoch") else "")),
            ("test accuracy", pct("test_acc")),
            ("wall time", f"{summary['wall_seconds']:.1f} s"),
            ("run directory", summary["run_dir"])]
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 40)
    return "\n".join(["result", line] + [f"{k:<{width}}  {v}" for k, v in rows] + [line])


def _flops_cell(summary: dict) -> str:
    from models.flops import format_flops

    if summary.get("flops") is None:
        return "n/a"
    return (f"{format_flops(summary['flops'])} of {format_flops(summary['dense_flops'])} "
            f"({summary['flops_pct']:.2f} %), theoretical speed-up "
            f"{summary['theoretical_speedup']:.2f}×")


if __name__ == "__main__":
    sys.exit(main())
