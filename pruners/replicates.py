"""`replicates: M`: M independent runs of one config packed into one program.

Copy k (k = 0 … M−1) is exactly the run of the same config with `seed: seed + k` (and
`replicates: 1`): its seed is (seed + k) × trial_num as for any run, its network is built under
that seed, its training data order and augmentation are drawn from that seed, and it is
written to that config's own run directory (`<log_dir>/<name>-<hash of the copy's config>/`)
with its own config.yaml, log.txt, TensorBoard events, metrics.csv, checkpoints, summary.json
and everything its algorithm writes.  Running the copy's config alone afterwards finds it
finished.  The copies' training phases run together (`utils.packed_phase`: vmap over stacked
parameters, per-copy BatchNorm statistics, masks, optimizer state and metrics).

Algorithms: `training`; IMP (`imp`, `imp_wr`, `imp_lrr`, `imp_ft`: levels trained packed,
each copy pruned by its own weights; `pruners.imp.packed`); pruning at init (`snip`, `grasp`,
`synflow`, `magnitude_init`, `random`: each copy scored and pruned alone, then its ticket and
controls trained packed).  Every copy saves its
checkpoints/last.pt after every epoch, so an interrupted packed run resumes when the same
command is run again (copies already finished are skipped; a copy can also be resumed or
extended alone by its own config).  The packed path runs the plain loop (precision from the
config; `channels_last` and `compile` are not applied to it).
"""
from __future__ import annotations

import os
import sys
import time
import traceback

from pruners.run_results import (finish_run, known_failure, open_context, quietly,
                                 record_diverged, say, write_summary)
from pruners.run_setup import Prepared, choose_run_dir, claim_run_dir, prepare
from utils.errors import Diverged


def copy_configs(cfg) -> list:
    """The M single-run configs a packed config stands for (copy k: seed + k)."""
    return [cfg.replace(seed=cfg.seed + k, replicates=1) for k in range(cfg.replicates)]


def run_packed(cfg) -> int:
    """Prepare every copy (nothing written), train the unfinished ones together, write each
    copy's results; the exit code (0, 1 failure, 2 usage, 130 interrupted)."""
    from utils.logging import RunLogger

    logger = RunLogger(quiet=cfg.quiet)
    for warning in cfg.warnings:
        logger.info(warning)
    copies = copy_configs(cfg)
    if cfg.dry_run:
        return _dry_run(cfg, copies)
    prepared, splits, shared = [], None, None
    for c in copies:
        quiet = RunLogger(quiet=True, stream=open(os.devnull, "w"))  # noqa: SIM115
        p = prepare(c, splits=splits, shared_loaders=shared, logger=quiet)
        if not isinstance(p, Prepared):
            continue                       # finished (and said so)
        splits, shared = p.splits, p.loaders
        prepared.append(p)
    if not prepared:
        print(f"already finished: all {len(copies)} replicates")
        return 0
    try:
        for p in prepared:   # each copy's directory created and locked (see main.execute)
            code = claim_run_dir(p)
            if code == 0:      # finished by another process since prepare looked
                print("error: another process finished that copy meanwhile; run the same "
                      "command again for the others", file=sys.stderr)
                return 2
            if code is not None:
                return code
        return _execute(cfg, prepared, logger)
    finally:
        for p in prepared:
            if p.lock is not None:
                p.lock.close()


def _execute(cfg, prepared: list, logger) -> int:
    from utils.checkpoint import write_text

    started = time.time()
    contexts = []
    for p in prepared:
        fresh = p.state.global_epoch == 0 and not p.state.completed
        write_text(os.path.join(p.run_dir, "config.yaml"), p.cfg.to_yaml())
        p.logger.attach(p.run_dir, purge_step=None if fresh else p.state.global_epoch + 1)
        ctx = open_context(p, fresh, packed=True)
        ctx.logger.info(f"packed replicate (seed {p.cfg.seed}) of a run with replicates "
                        f"{cfg.replicates}")
        contexts.append(ctx)
    logger.info(f"packed replicates: {len(prepared)} of {cfg.replicates} copies of {cfg.arch} "
                f"({cfg.algo_name}) on {prepared[0].device}; run directories:\n  "
                + "\n  ".join(p.run_dir + ("" if ctx.state.global_epoch == 0 else " (resuming)")
                              for p, ctx in zip(prepared, contexts)))
    try:
        results = _run_algorithm(cfg, contexts, [p.model for p in prepared], logger)
        summaries = []
        for p, ctx, result in zip(prepared, contexts, results):
            summaries.append(finish_run(p, ctx, {**result, "packed_replicates": cfg.replicates},
                                        started))
        logger.info("\n" + _copies_table(summaries))
        return 0
    except KeyboardInterrupt:
        for p in prepared:
            p.logger.info(f"interrupted: state saved in {p.run_dir}/checkpoints/last.pt")
        logger.info("interrupted: every copy's state is saved in its checkpoints/last.pt; "
                    "run the same command again to resume")
        return 130
    except Diverged as exc:
        return _diverged(prepared, exc, logger, started)
    except Exception as exc:  # noqa: BLE001 (report any failure with where results are)
        known = known_failure(exc)   # a damaged file or a full disk: one line
        for p in prepared:
            say(p, f"error: {known}" if known else traceback.format_exc().rstrip())
            quietly(lambda p=p, exc=exc: write_summary(
                p, {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}, started))
        print(f"error: {known or f'packed run failed ({type(exc).__name__}: {exc})'}; "
              f"partial results{'' if known else ' and the traceback'} are in each copy's "
              f"run directory", file=sys.stderr)
        return 1
    finally:
        for p in prepared:
            quietly(p.logger.close)


def _diverged(prepared: list, exc, logger, started: float) -> int:
    """One copy's training loss became non-finite: that copy ends as diverged (exit 3);
    the others keep their last completed epoch and resume when the command is rerun."""
    others = []
    for p in prepared:
        if p.run_dir == exc.run_dir:
            record_diverged(p, exc, started)
        else:
            p.logger.info(f"stopped: another packed copy diverged; state saved in "
                          f"{p.run_dir}/checkpoints/last.pt")
            others.append(p.run_dir)
    logger.info(f"packed run stopped: {exc.run_dir} diverged; "
                + (f"rerun the command to finish the other {len(others)} copies (they resume)"
                   if others else "no other copy was left"))
    return 3


def _run_algorithm(cfg, contexts: list, models: list, logger) -> list[dict]:
    """The per-copy summary fields: the algorithm's own packed driver (IMP), or its phase
    jobs trained packed, after which its ordinary `run` finds them done and records them."""
    from pruners import get_algorithm
    from utils.packed_phase import run_jobs_packed

    algorithm = get_algorithm(cfg.algo_name)
    if algorithm.run_packed is not None:
        return algorithm.run_packed(contexts, models, logger)
    jobs = [algorithm.jobs(ctx, model) for ctx, model in zip(contexts, models)]
    run_jobs_packed(contexts, models, jobs, logger)
    return [algorithm.run(ctx, model) for ctx, model in zip(contexts, models)]


def _copies_table(summaries: list[dict]) -> str:
    lines = ["packed replicates", f"{'seed':>6} {'density %':>10} {'val acc':>8} "
             f"{'test acc':>9}  run directory"]
    for s in summaries:
        lines.append(f"{s['seed']:>6} {_pct(s.get('density_pct')):>10} "
                     f"{_pct(s.get('val_acc')):>8} {_pct(s.get('test_acc')):>9}  {s['run_dir']}")
    return "\n".join(lines)


def _pct(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.2f}"


def _dry_run(cfg, copies: list) -> int:
    """The plan of a packed run: the copies' run directories, then one copy's plan."""
    from utils.run_dir import fresh_run_dir, is_finished, run_dir_for

    dirs = [choose_run_dir(c, run_dir_for, fresh_run_dir) for c in copies]
    print(f"# packed replicates: {cfg.replicates} copies trained together")
    for c, d in zip(copies, dirs):
        status = ("finished; would be skipped" if is_finished(d) else
                  "exists; would resume" if os.path.isdir(d) else "new")
        print(f"# copy seed {c.seed} (run seed {c.run_seed}): {d} ({status})")
    prepare(copies[0])
    return 0
