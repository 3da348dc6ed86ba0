"""Entry point: parse → run directory → dispatch on the algorithm → summary.

    python main.py --config FILE.yml [--some-option VALUE ...] [--dry-run] [--force]

Exit codes: 0 done (or skipped, already done); 2 bad config/option/file/dataset (one line,
nothing written); 1 runtime failure (message + where the partial results are); 130
interrupted (state saved; rerunning the same command resumes).
"""
from __future__ import annotations

import fcntl
import os
import random
import signal
import sys
import time
import traceback

import args_helper
from utils.errors import ConfigError, UsageError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("error: nothing to run: python main.py --config FILE.yml [--option VALUE ...] "
              "(--help lists the options)", file=sys.stderr)
        return 2
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
    if prepared is None:
        return 0
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
    # torchrun passes Ctrl-C (and Slurm its preemption) on as SIGTERM: stop like Ctrl-C, so
    # rank 0 reports where the state is and the other ranks remove their private copies
    signal.signal(signal.SIGTERM, _interrupt)
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
        traceback.print_exc()
        print(f"error: packed run failed ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 1


class Prepared:
    """Everything validated and loaded before the first file is written."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def prepare(cfg, dist_env=None, device=None, splits=None, shared_loaders=None,
            logger=None) -> Prepared | None:
    """Validate, pick the run directory, load data and build the model. Writes nothing.
    Returns None when there is nothing to run (dry run, or a finished run).  Under torchrun
    (`dist_env`) the loaders are sharded and `device` is this rank's.  Packed replicates pass
    the `splits` already loaded, `shared_loaders` whose device-resident images to reuse and
    each copy's own `logger`."""
    import numpy as np
    import torch

    import data
    from models import InputSpec, build_model
    from pruners import get_algorithm
    from utils.context import load_run_state
    from utils.device import autocast_dtype, select_device
    from utils.logging import RunLogger
    from utils.run_dir import fresh_run_dir, is_finished, read_summary, run_dir_for

    logger = RunLogger(quiet=cfg.quiet) if logger is None else logger
    for warning in cfg.warnings:
        logger.info(warning)
    device = select_device(cfg) if device is None else device
    run_dir = _choose_run_dir(cfg, run_dir_for, fresh_run_dir)
    algorithm = None if cfg.evaluate else get_algorithm(cfg.algo_name)
    summary = read_summary(run_dir) if is_finished(run_dir) and not cfg.dry_run else None
    if summary is not None and (algorithm is None or algorithm.covers is None):
        return _report_finished(run_dir, summary)
    splits = data.load_splits(cfg) if splits is None else splits
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
    state = load_run_state(run_dir)
    if loaders is None and shared_loaders is not None:
        loaders = data.loaders_sharing(shared_loaders, splits, cfg.batch_size, device, seed)
    if loaders is None:
        loaders = data.make_loaders(splits, cfg.batch_size, device, seed)
    return Prepared(cfg=cfg, logger=logger, device=device, run_dir=run_dir, splits=splits,
                    spec=spec, model=model, algorithm=algorithm, state=state, seed=seed,
                    autocast=autocast_dtype(cfg, device), loaders=loaders,
                    rank=0 if dist_env is None else dist_env.rank,
                    world_size=1 if dist_env is None else dist_env.world_size)


def _report_finished(run_dir: str, summary: dict) -> None:
    print(f"already finished: {run_dir} (test acc {summary.get('test_acc') or float('nan'):.2f}"
          f" %, density {summary.get('density_pct') or float('nan'):.2f} %); "
          f"use --force to run it again in a fresh directory")
    return None


def _choose_run_dir(cfg, run_dir_for, fresh_run_dir) -> str:
    """The run directory: --resume's, else the config's (a fresh one with --force)."""
    if cfg.resume:
        run_dir = args_helper.run_dir_of(cfg.resume)
        if not os.path.isdir(run_dir):
            raise ConfigError(f"{cfg.where('resume')}: no run directory at {cfg.resume}")
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
    if cfg.evaluate:
        print(f"evaluate {cfg.pretrained} on val and test (no training)")
    else:
        for line in algorithm.plan(cfg, splits, model):
            print(line)


def execute(p: Prepared) -> int:
    """Run the algorithm in the prepared run directory; 0 done, 1 failure, 130 interrupted."""
    from utils.checkpoint import write_text

    os.makedirs(os.path.join(p.run_dir, "checkpoints"), exist_ok=True)
    lock = _lock(p.run_dir)
    if lock is None:
        print(f"error: {p.run_dir} is in use by another process", file=sys.stderr)
        return 2
    fresh = p.state.global_epoch == 0 and not p.state.completed
    # (re)written every time: an extended run (more IMP levels or controls) records its
    # new extent; otherwise the content is the same science config
    write_text(os.path.join(p.run_dir, "config.yaml"), p.cfg.to_yaml())
    if p.rank == 0:   # other torchrun ranks keep no log and no TensorBoard events
        p.logger.attach(p.run_dir, purge_step=None if fresh else p.state.global_epoch + 1)
    started = time.time()
    try:
        return _run(p, fresh, started)
    except KeyboardInterrupt:
        p.logger.info(f"interrupted: state saved in {p.run_dir}/checkpoints/last.pt; "
                      f"run the same command again to resume")
        return 130
    except Exception as exc:  # noqa: BLE001 (report any failure with where results are)
        p.logger.info(traceback.format_exc().rstrip())
        _write_summary(p, {"status": "failed", "error": f"{type(exc).__name__}: {exc}"},
                       started)
        print(f"error: run failed ({type(exc).__name__}: {exc}); partial results and the "
              f"traceback are in {p.run_dir}", file=sys.stderr)
        return 1
    finally:
        p.logger.close()
        lock.close()


def _lock(run_dir: str):
    handle = open(os.path.join(run_dir, ".lock"), "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def _run(p: Prepared, fresh: bool, started: float) -> int:
    ctx = open_context(p, fresh)
    if p.cfg.evaluate:
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
    from utils.context import RunContext
    from utils.fast import FastPath

    cfg, log = p.cfg, p.logger
    log.info(f"run directory: {p.run_dir}" + ("" if fresh else " (resuming)"))
    log.info(f"{cfg.algo_name} | {cfg.arch} | {cfg.dataset}: {p.splits.sizes()} | "
             f"device {p.device} | seed {p.seed}")
    fast = FastPath.from_config(cfg, p.device)
    fast.configure_backends()
    ctx = RunContext(cfg=cfg, device=p.device, run_dir=p.run_dir, logger=log,
                     splits=p.splits, loaders=p.loaders, model_spec=p.spec,
                     autocast_dtype=p.autocast, seed=p.seed, state=p.state, quiet=cfg.quiet,
                     rank=p.rank, world_size=p.world_size, fast=None if packed else fast)
    if fresh:
        ctx.save_model(p.model, "init.pt")
    return ctx


def finish_run(p: Prepared, ctx, result: dict, started: float) -> dict:
    """layer_density.csv, summary.json, the result table and the hparams record."""
    from models.flops import count_flops
    from pruners.masks import format_density_report, layer_density_report
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
    log.hparams({k: v for k, v in cfg.yaml_values().items() if v is not None},
                {"hparam/test_acc": summary.get("test_acc"),
                 "hparam/val_acc": summary.get("val_acc"),
                 "hparam/density_pct": summary.get("density_pct"),
                 "hparam/flops_pct": summary.get("flops_pct"),
                 "hparam/theoretical_speedup": summary.get("theoretical_speedup")})
    return summary


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
    from pruners.masks import density_pct
    from utils.train import evaluate

    val = evaluate(model, ctx.loaders.val, ctx.autocast_dtype)
    test = evaluate(model, ctx.loaders.test, ctx.autocast_dtype)
    ctx.logger.info(f"evaluated {ctx.cfg.pretrained}: val {val['acc']:.2f}%  "
                    f"test {test['acc']:.2f}%")
    return {"val_loss": val["loss"], "val_acc": val["acc"], "test_loss": test["loss"],
            "test_acc": test["acc"], "density_pct": density_pct(model)}


def _write_summary(p: Prepared, fields: dict, started: float) -> dict:
    import torch

    from pruners.masks import density_pct
    from utils.checkpoint import write_json

    density = fields.pop("density_pct", None)
    density = density_pct(p.model) if density is None else density
    summary = {
        "status": fields.pop("status"),
        "algo": "evaluate" if p.cfg.evaluate else p.cfg.algo_name, "arch": p.cfg.arch,
        "dataset": p.cfg.dataset, "seed": p.seed,
        "density_pct": density, "sparsity_pct": 100.0 - density,
        "test_acc": fields.pop("test_acc", None), "val_acc": fields.pop("val_acc", None),
        "wall_seconds": _wall(p, started),
        **fields,
        "run_dir": p.run_dir, "config_hash": p.cfg.run_hash(), "device": str(p.device),
        "torch": torch.__version__,
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
