"""What the levels of an IMP run report: levels.csv rows (from the run state and the level
records), the TensorBoard points and log line of a finished level, and the end-of-run table."""
from __future__ import annotations

import math

from models.masks import layer_density_report
from pruners.imp.level_files import read_info
from pruners.imp.plan import ImpPlan, level_key
from utils.logging import write_csv

LEVEL_COLUMNS = ["level", "density_pct", "sparsity_pct", "test_acc", "val_acc",
                 "best_val_acc", "test_acc_at_best_val", "epochs", "seconds", "matching",
                 "flops", "flops_pct", "theoretical_speedup"]
# columns added when the run records them
OPTIONAL_COLUMNS = ["channel_density_pct", "train_examples", "iterations", "subset_hard",
                    "subset_disagree", "prune_fraction", "predicted_loss_increase",
                    "measured_loss_increase", "grad_norm", "grad_norm_rewind", "proj_dist",
                    "proj_dist_rel", "barrier_test", "barrier_train", "stability_barrier",
                    "hessian_trace"]


def report_level(ctx, model, plan: ImpPlan, level: int) -> None:
    """levels.csv and the level's TensorBoard points and log line."""
    rows = level_rows(ctx, plan)
    write_csv(ctx.path("levels.csv"), level_columns(rows), rows)
    row = rows[level]
    log = ctx.logger
    log.scalars({"imp/test_acc": row["test_acc"], "imp/val_acc": row["val_acc"],
                 "imp/best_val_acc": row["best_val_acc"],
                 "imp/density_pct": row["density_pct"], "imp/flops_pct": row["flops_pct"],
                 "imp/theoretical_speedup": row["theoretical_speedup"],
                 **{f"imp/{k}": row[k] for k in ("channel_density_pct", "train_examples",
                                                 "iterations") if row.get(k) is not None}},
                level)
    log.scalars({f"imp_layer_density/{r['layer']}": r["density_pct"]
                 for r in layer_density_report(model)}, level)
    channels = "" if row.get("channel_density_pct") is None else \
        f" (channels {row['channel_density_pct']:.2f} %)"
    log.info(f"level {level}: density {row['density_pct']:.3f} % / sparsity "
             f"{row['sparsity_pct']:.3f} %{channels}, FLOPs {row['flops_pct']:.2f} % "
             f"(×{row['theoretical_speedup']:.2f})  test {row['test_acc']:.2f} %  val "
             f"{_pct(row['val_acc'])} %  {row['matching']}"
             + (f"  ({row['iterations']:,} iteration(s) on {row['train_examples']:,} "
                f"examples)" if "iterations" in row else ""))


def level_rows(ctx, plan: ImpPlan, stability: list[dict] = ()) -> list[dict]:
    """One levels.csv row per finished level, from the run state and the level JSON files."""
    rows = []
    dense = None
    by_level = {s["level"]: s["barrier_test"] for s in stability}
    for level in range(plan.levels):
        result = ctx.state.completed.get(level_key(level))
        info = read_info(ctx, level)
        if result is None or "kept" not in info:
            break
        seconds = sum(r["seconds"] for r in ctx.state.rows if r.get("key") == level_key(level))
        if level == 0:
            dense = result["test_acc"]
            matching = "dense"
        else:
            ok = result["test_acc"] >= dense - ctx.cfg.matching_tolerance
            matching = "yes" if ok else "no"
        density = info["density_pct"]
        flops = info.get("flops") or {}
        row = {"level": level, "density_pct": density, "sparsity_pct": 100.0 - density,
               "flops": flops.get("flops"), "flops_pct": flops.get("flops_pct"),
               "theoretical_speedup": flops.get("theoretical_speedup"),
               "test_acc": result["test_acc"], "val_acc": result["val_acc"],
               "best_val_acc": result["best_val_acc"],
               "test_acc_at_best_val": result["test_acc_at_best_val"],
               "epochs": result["epochs"], "seconds": seconds, "matching": matching}
        row.update(info.get("data") or {})
        if "channel_density_pct" in info:
            row["channel_density_pct"] = info["channel_density_pct"]
        row.update(info.get("prune") or {})
        row.update(info.get("analysis") or {})
        if level in by_level:
            row["stability_barrier"] = by_level[level]
        rows.append(row)
    return rows


def level_columns(rows: list[dict]) -> list[str]:
    """The fixed levels.csv columns, then the optional ones some row has."""
    present = {key for row in rows for key in row}
    extra = [c for c in OPTIONAL_COLUMNS if c in present]
    hessian = sorted((c for c in present if c.startswith("hessian_top")),
                     key=lambda c: int(c[len("hessian_top"):]))
    return LEVEL_COLUMNS + extra + hessian


def format_levels(rows: list[dict], controls: list[dict]) -> str:
    """The end-of-run table: one line per level, matching flags, then the controls."""
    counted = all("iterations" in r for r in rows)
    grads = any(r.get("grad_norm") is not None for r in rows)
    lines = ["IMP levels (matching: test accuracy within the tolerance of the dense level 0)",
             f"{'level':>5} {'density %':>10} {'sparsity %':>11} {'test acc':>9} "
             f"{'val acc':>8} {'best val':>9}  {'matching':<8}"
             + (f" {'examples':>9} {'iterations':>10}" if counted else "")
             + (f" {'grad norm':>10}" if grads else "")]
    for r in rows:
        lines.append(f"{r['level']:>5} {r['density_pct']:>10.3f} {r['sparsity_pct']:>11.3f} "
                     f"{_pct(r['test_acc']):>9} {_pct(r['val_acc']):>8} "
                     f"{_pct(r['best_val_acc']):>9}  {r['matching']:<8}"
                     + (f" {r['train_examples']:>9,} {r['iterations']:>10,}" if counted else "")
                     + (f" {_num(r.get('grad_norm')):>10}" if grads else ""))
    if counted:
        lines.append(f"training iterations over all levels: "
                     f"{sum(r['iterations'] for r in rows):,}")
    for c in controls:
        lines.append(f"control at level {c['level']} ({c['density_pct']:.3f} %): "
                     f"{c['control']:<15} test {_pct(c['test_acc'])} %  "
                     f"(ticket {_pct(c['ticket_test_acc'])} %)"
                     + (f"  grad norm {_num(c['grad_norm'])} (ticket "
                        f"{_num(c.get('ticket_grad_norm'))})" if "grad_norm" in c else ""))
    return "\n".join(lines)


def _num(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.4g}"


def _pct(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.2f}"
