"""`replicates: M` for `algo: training`: M independent dense trainings packed into one program.

Copy k (k = 0 … M−1) is exactly the run of the same config with `seed: seed + k` (and
`replicates: 1`): its seed is (seed + k) × trial_num as for any run, its network is built under
that seed, its training data order and augmentation are drawn from that seed, and it is
written to that config's own run directory (`<log_dir>/<name>-<hash of the copy's config>/`)
with its own config.yaml, log.txt, TensorBoard events, metrics.csv, layer_density.csv,
checkpoints (init.pt, final.pt) and summary.json.  Running the copy's config alone afterwards
finds it finished.  The copies are trained together with `utils.packed` (vmap over stacked
parameters, per-copy BatchNorm statistics, masks, optimizer state and metrics).

The packed path runs the plain loop (precision from the config; `channels_last` and `compile`
are not applied to it).  A packed run does not resume mid-run (it writes no last.pt): when every copy is finished it is
skipped; when none of the copies' directories exists it runs; otherwise it stops with a usage
error (use --force for fresh directories, or run the missing seeds alone).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import random
import time

import numpy as np
import torch

from utils.errors import ConfigError


def copy_configs(cfg) -> list:
    """The M single-run configs a packed config stands for (copy k: seed + k)."""
    return [cfg.replace(seed=cfg.seed + k, replicates=1) for k in range(cfg.replicates)]


def run_packed(cfg) -> int:
    """Validate, train the M copies together, write each copy's run directory; exit code."""
    import data
    import main as entry
    from models import InputSpec, build_model
    from pruners import get_algorithm
    from pruners.baselines import plan_training, training_phase
    from pruners.masks import density_pct, layer_density_report
    from utils.checkpoint import write_text
    from utils.context import RunContext, RunState
    from utils.device import autocast_dtype, select_device
    from utils.logging import RunLogger, write_csv, write_metrics_csv
    from utils.packed import PackedModels, evaluate_packed, train_epoch_packed
    from utils.run_dir import fresh_run_dir, is_finished, run_dir_for

    logger = RunLogger(quiet=cfg.quiet)
    for warning in cfg.warnings:
        logger.info(warning)
    device = select_device(cfg)
    copies = copy_configs(cfg)
    dirs = [entry._choose_run_dir(c, run_dir_for, fresh_run_dir) for c in copies]
    if all(is_finished(d) for d in dirs):
        print(f"already finished: all {len(dirs)} replicates ({', '.join(dirs)}); use --force "
              f"to run them again in fresh directories")
        return 0
    existing = [d for d in dirs if os.path.exists(d)]
    if existing and not cfg.dry_run:
        raise ConfigError(f"{cfg.where('replicates')}: packed runs do not resume, and "
                          f"{existing[0]} already exists; use --force for fresh directories "
                          f"or run the missing seeds alone")
    splits = data.load_splits(cfg)
    spec = InputSpec(splits.num_classes, splits.channels, splits.image_size)
    algorithm = get_algorithm(cfg.algo_name)
    models = []
    for c in copies:   # the same steps, in the same order, as main.prepare for one run
        seed = c.run_seed
        random.seed(seed)
        np.random.seed(seed % 2 ** 32)
        torch.manual_seed(seed)
        try:
            model = build_model(c, spec)
        except ValueError as exc:
            raise ConfigError(f"{cfg.where('arch')}: {exc}") from None
        if c.pretrained:
            entry._load_pretrained(c, model)
        if algorithm.prepare is not None:
            algorithm.prepare(c, splits, model, logger)
        models.append(model)
    if cfg.dry_run:
        print(cfg.to_yaml().rstrip())
        print("\n# ---- plan")
        print(f"packed replicates: {cfg.replicates} copies trained together on {device}")
        for c, d in zip(copies, dirs):
            print(f"copy seed {c.seed} (run seed {c.run_seed}): {d}")
        for line in plan_training(cfg, splits, models[0]):
            print(line)
        return 0

    dtype = autocast_dtype(cfg, device)
    started = time.time()
    shared = data.make_loaders(splits, cfg.batch_size, device, copies[0].run_seed)
    contexts = []
    for c, d, model in zip(copies, dirs, models):
        model.to(device)
        os.makedirs(os.path.join(d, "checkpoints"), exist_ok=True)
        write_text(os.path.join(d, "config.yaml"), c.to_yaml())
        copy_logger = RunLogger(quiet=True, stream=open(os.devnull, "w"))
        copy_logger.attach(d)
        copy_logger.info(f"run directory: {d}")
        copy_logger.info(f"training | {c.arch} | {c.dataset}: {splits.sizes()} | device "
                         f"{device} | seed {c.run_seed} | packed replicate "
                         f"{len(contexts) + 1}/{cfg.replicates} of a packed run")
        ctx = RunContext(cfg=c, device=device, run_dir=d, logger=copy_logger, splits=splits,
                         loaders=_loaders_for(shared, data, splits, c, device),
                         model_spec=spec, autocast_dtype=dtype, seed=c.run_seed,
                         state=RunState(), quiet=True)
        ctx.save_model(model, "init.pt")
        contexts.append(ctx)
    logger.info(f"packed replicates: {cfg.replicates} copies of {cfg.arch} on {device}; "
                f"run directories:\n  " + "\n  ".join(dirs))
    try:
        results = _train(cfg, contexts, models, training_phase(cfg), dtype, logger,
                         PackedModels, train_epoch_packed, evaluate_packed, density_pct,
                         write_metrics_csv)
        for ctx, model, result in zip(contexts, models, results):
            ctx.save_model(model, "final.pt")
            report = layer_density_report(model)
            write_csv(ctx.path("layer_density.csv"),
                      ["layer", "type", "shape", "params", "zeros", "density_pct"], report)
            p = entry.Prepared(cfg=ctx.cfg, run_dir=ctx.run_dir, model=model, seed=ctx.seed,
                               state=ctx.state, device=device)
            summary = entry._write_summary(p, {"status": "done", **result,
                                               "packed_replicates": cfg.replicates}, started)
            ctx.logger.info("\n" + entry._result_table(summary))
    finally:
        for ctx in contexts:
            ctx.logger.close()
    return 0


def _loaders_for(shared, data, splits, c, device):
    """Copy c's loaders: its own training order and augmentation (its run seed) over the
    images already on the device (shared, not copied once per replicate)."""
    from data.loader import DeviceLoader

    if not isinstance(shared.train, DeviceLoader):
        return data.make_loaders(splits, c.batch_size, device, c.run_seed)
    train = copy.copy(shared.train)
    train.seed = c.run_seed
    return dataclasses.replace(shared, train=train)


def _train(cfg, contexts, models, spec, dtype, logger, PackedModels, train_epoch_packed,
           evaluate_packed, density_pct, write_metrics_csv) -> list[dict]:
    """The phase loop of `utils.phases.run_phase` for M copies at once; per-copy results."""
    from utils.schedules import set_lr

    packed = PackedModels(models)
    optimizer = spec.optimizer.build(packed.parameters(), spec.schedule.lr_at(0))
    loaders = [ctx.loaders.train for ctx in contexts]
    densities = [density_pct(m) for m in models]
    m = len(models)
    best = [{"val_acc": float("nan"), "test_acc": float("nan"), "epoch": 0} for _ in range(m)]
    step = 0
    for epoch in range(spec.epochs):
        lr = spec.schedule.lr_at(epoch)
        set_lr(optimizer, lr)
        for ctx, loader in zip(contexts, loaders):
            loader.set_epoch(epoch, seed=ctx.seed)
        started = time.perf_counter()
        train = train_epoch_packed(packed, loaders, optimizer, autocast_dtype=dtype,
                                   label_smoothing=cfg.label_smoothing)
        step += train["steps"]
        val = evaluate_packed(packed, contexts[0].loaders.val, dtype)
        test = evaluate_packed(packed, contexts[0].loaders.test, dtype)
        seconds = (time.perf_counter() - started) / m   # each copy's share of the time
        for k, ctx in enumerate(contexts):
            if not math.isnan(val["acc"][k]) and not (val["acc"][k] <= best[k]["val_acc"]):
                best[k] = {"val_acc": val["acc"][k], "test_acc": test["acc"][k],
                           "epoch": epoch + 1}
            d = densities[k]
            row = {"key": spec.key, "val_loss": val["loss"][k], "test_loss": test["loss"][k],
                   "phase": spec.phase, "level": spec.level, "epoch": epoch + 1, "step": step,
                   "lr": lr, "train_loss": train["loss"][k], "train_acc": train["acc"][k],
                   "val_acc": val["acc"][k], "test_acc": test["acc"][k], "density_pct": d,
                   "sparsity_pct": 100.0 - d, "seconds": seconds, "extra": {}}
            ctx.state.rows.append(row)
            ctx.state.global_epoch += 1
            ctx.logger.scalars({"train/loss": row["train_loss"], "train/acc": row["train_acc"],
                                "val/loss": row["val_loss"], "val/acc": row["val_acc"],
                                "test/loss": row["test_loss"], "test/acc": row["test_acc"],
                                "lr": lr, "density_pct": d, "sparsity_pct": 100.0 - d},
                               ctx.state.global_epoch)
            ctx.logger.info(
                f"{spec.phase} epoch {epoch + 1:>3}/{spec.epochs}  loss "
                f"{row['train_loss']:.4f}  train {row['train_acc']:6.2f}%  val "
                f"{row['val_acc']:6.2f}%  test {row['test_acc']:6.2f}%  lr {lr:.4g}  density "
                f"{d:.2f}% / sparsity {100.0 - d:.2f}%  {seconds:.1f}s (packed)")
            write_metrics_csv(ctx.path("metrics.csv"), ctx.state.rows)
        logger.info(f"{spec.phase} epoch {epoch + 1:>3}/{spec.epochs}  test % per copy: "
                    + " ".join(f"{a:.2f}" for a in test["acc"])
                    + f"  lr {lr:.4g}  {seconds * m:.1f}s for {m} copies")
    packed.unpack()
    results = []
    for k, model in enumerate(models):
        last = contexts[k].state.rows[-1] if contexts[k].state.rows else {}
        nan = float("nan")
        results.append({"epochs": spec.epochs, "step": step,
                        **{key: last.get(key, nan) for key in (
                            "train_loss", "train_acc", "val_loss", "val_acc", "test_loss",
                            "test_acc")},
                        "best_val_acc": best[k]["val_acc"],
                        "test_acc_at_best_val": best[k]["test_acc"],
                        "best_val_epoch": best[k]["epoch"], "density_pct": density_pct(model)})
    return results
