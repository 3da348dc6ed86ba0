"""Entry point: parse → run directory → dispatch on the algorithm → summary.

    python main.py --config FILE.yml [--some-option VALUE ...] [--dry-run] [--force]

Exit codes: 0 done (or skipped, already done); 2 bad config/option/file/dataset, or a run
directory that cannot be resumed (one line, nothing written); 1 runtime failure (message +
where the partial results are); 3 diverged (the training loss became non-finite; partial
results kept, summary status "diverged"); 130 interrupted by Ctrl-C or SIGTERM (state saved;
rerunning the same command resumes).

Preparing a run (pruners/run_setup.py) and recording it (pruners/run_results.py) are shared
with the packed driver of `replicates: M` (pruners/replicates.py).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

from pruners.run_results import (finish_run, known_failure, open_context, quietly,
                                 record_diverged, say, write_summary)
from pruners.run_setup import Prepared, claim_run_dir, prepare
from utils.errors import ConfigError, Diverged, UsageError
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
        say(p, f"interrupted: state saved in {last}; run the same command again to resume"
             if os.path.isfile(last) else "interrupted before the first epoch ended; run the "
             "same command again to start the run")
        return 130
    except Diverged as exc:
        return record_diverged(p, exc, started)
    except Exception as exc:  # noqa: BLE001 (report any failure with where results are)
        known = known_failure(exc)
        if known is not None:
            return _failed(p, started, exc, known)
        import traceback

        say(p, traceback.format_exc().rstrip())
        return _failed(p, started, exc, f"run failed ({type(exc).__name__}: {exc})",
                       "partial results and the traceback")
    finally:
        quietly(p.logger.close)
        p.lock.close()


def _failed(p: Prepared, started: float, exc: BaseException, message: str,
            kept: str = "partial results") -> int:
    """Record a failed run (summary.json status failed) and say so in one line; exit 1."""
    quietly(lambda: write_summary(p, {"status": "failed",
                                      "error": f"{type(exc).__name__}: {exc}"}, started))
    print(f"error: {message}; {kept} are in {p.run_dir}", file=sys.stderr)
    return 1


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


if __name__ == "__main__":
    sys.exit(main())
