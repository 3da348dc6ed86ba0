"""After the last IMP level: the barrier matrix, stability copies and controls, the final
levels.csv, ticket.pt (the final masks and the weights the final level started from),
final.pt, the end-of-run table and the summary fields."""
from __future__ import annotations

from pruners.imp.analysis import analysis_spec, barrier_matrix, run_stability
from pruners.imp.controls import run_controls
from pruners.imp.level_files import level_path
from pruners.imp.level_report import format_levels, level_columns, level_rows
from pruners.imp.plan import ImpPlan, control_levels, level_key, stability_levels
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.logging import write_csv


def finish_imp(ctx, model, plan: ImpPlan, last: int) -> dict:
    """After the last level: the barrier matrix, stability copies, controls, levels.csv,
    ticket.pt and final.pt; returns the summary fields."""
    cfg = ctx.cfg
    barrier_matrix(ctx, model, last + 1)
    stability = run_stability(ctx, model, plan, stability_levels(cfg, plan, last))
    controls = run_controls(ctx, model, plan, control_levels(cfg, plan, last))
    final = load_checkpoint(level_path(ctx, last), ctx.device)
    model.load_state_dict(final["trained"])
    rows = level_rows(ctx, plan, stability)
    write_csv(ctx.path("levels.csv"), level_columns(rows), rows)
    _save_ticket(ctx, plan, final, rows[-1]["density_pct"])
    ctx.save_model(model, "final.pt")
    ctx.logger.info("\n" + format_levels(rows, controls))
    return _summary_fields(ctx, rows, controls, stability, plan,
                           ctx.state.completed[level_key(last)])


def _save_ticket(ctx, plan: ImpPlan, final: dict, density: float) -> None:
    """ticket.pt: the final masks and the weights the final level started from."""
    spec = ctx.model_spec
    start = final["start"]
    bias_masks = {k[:-len(".bias_mask")]: v for k, v in start.items() if k.endswith("bias_mask")}
    save_checkpoint({"masks": final["masks"], "bias_masks": bias_masks, "weights": start,
                     "level": final["level"], "density_pct": density,
                     "variant": plan.variant, "arch": ctx.cfg.arch,
                     "input": {"num_classes": spec.num_classes, "channels": spec.channels,
                               "image_size": spec.image_size},
                     "config": ctx.cfg.yaml_values()}, ctx.path("ticket.pt"))


def _summary_fields(ctx, rows, controls, stability, plan: ImpPlan, final: dict) -> dict:
    cfg = ctx.cfg
    last = rows[-1]
    matching = [r for r in rows[1:] if r["matching"] == "yes"]
    fields = {"test_acc": last["test_acc"], "val_acc": last["val_acc"],
            "train_acc": final["train_acc"], "train_loss": final["train_loss"],
            "best_val_acc": last["best_val_acc"],
            "test_acc_at_best_val": last["test_acc_at_best_val"],
            "best_val_epoch": final["best_val_epoch"],
            "density_pct": last["density_pct"], "variant": plan.variant,
            "levels": len(rows), "dense_test_acc": rows[0]["test_acc"],
            "lowest_matching_density_pct": min((r["density_pct"] for r in matching),
                                               default=None),
            "level_test_acc": [r["test_acc"] for r in rows],
            "level_density_pct": [r["density_pct"] for r in rows],
            "level_flops_pct": [r["flops_pct"] for r in rows],
            **({"channel_density_pct": last["channel_density_pct"],
                "level_channel_density_pct": [r.get("channel_density_pct") for r in rows]}
               if "channel_density_pct" in last else {}),
            "controls": [{k: c[k] for k in ("level", "control", "test_acc", "grad_norm")
                          if k in c} for c in controls],
            "analysis": {"spec": analysis_spec(cfg), "lmc_matrix": cfg.lmc_matrix,
                         "stability": [{"level": s["level"], "copies": s["copies"],
                                        "barrier_test": s["barrier_test"]}
                                       for s in stability]},
            "data_subset": cfg.data_subset}
    if all("iterations" in r for r in rows):
        fields.update(level_iterations=[r["iterations"] for r in rows],
                      level_train_examples=[r["train_examples"] for r in rows],
                      total_iterations=sum(r["iterations"] for r in rows))
    if cfg.grad_flow:
        fields["level_grad_norm"] = [r.get("grad_norm") for r in rows]
    return fields
