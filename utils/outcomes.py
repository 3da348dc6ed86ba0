"""The numbers a researcher compares between runs, read from a run's summary.json under one
set of names whatever the algorithm: the result, the untrained ticket, the sanity checks and
the controls.  Used by the TensorBoard HParams record and by `python -m analysis.report`."""
from __future__ import annotations

import math

UNTRAINED = "untrained_ticket_test_acc"
# the run-level numbers `headline` can give (controls come as control_<name>_test_acc)
COMPARED = ("test_acc", "val_acc", "density_pct", "flops_pct", "theoretical_speedup",
            "dense_test_acc", "lowest_matching_density_pct", UNTRAINED,
            "sanity_reinit_test_acc", "sanity_shuffle_test_acc")


def _finite(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def side_results(summary: dict) -> dict:
    """Test accuracies (%) beside the main result, by name: `untrained_ticket_test_acc` (a
    mined or pruned-at-init ticket before any weight trains), `sanity_<check>_test_acc`
    (Gem-Miner / edge-popup sanity checks), `control_<name>_test_acc` (pruning-at-init
    controls, and IMP controls at their last control level).  Missing ones are left out."""
    out = {}
    if _finite(summary.get("ticket_test_acc")) is not None:
        out[UNTRAINED] = float(summary["ticket_test_acc"])
    for key, value in summary.items():
        if (key.startswith("sanity_") or key.startswith("control_")) and \
                key.endswith("_test_acc") and _finite(value) is not None:
            out[key] = float(value)
    controls = [c for c in summary.get("controls") or [] if isinstance(c, dict)
                and "level" in c]
    if controls:
        last = max(c["level"] for c in controls)
        for c in controls:
            if c["level"] == last and _finite(c.get("test_acc")) is not None:
                out[f"control_{c['control']}_test_acc"] = float(c["test_acc"])
    return out


def imp_controls_by_level(summary: dict) -> dict:
    """IMP controls: {level: {"control_<name>_test_acc": acc}} from summary.json."""
    out: dict = {}
    for c in summary.get("controls") or []:
        if isinstance(c, dict) and "level" in c and _finite(c.get("test_acc")) is not None:
            out.setdefault(c["level"], {})[f"control_{c['control']}_test_acc"] = \
                float(c["test_acc"])
    return out


def headline(summary: dict) -> dict:
    """The main result and what goes with it: test_acc, val_acc, density_pct, the FLOPs left
    (flops_pct) and the theoretical speed-up, and for IMP dense_test_acc and
    lowest_matching_density_pct, then `side_results`."""
    out = {}
    for key in ("test_acc", "val_acc", "density_pct", "flops_pct", "theoretical_speedup",
                "dense_test_acc", "lowest_matching_density_pct"):
        if _finite(summary.get(key)) is not None:
            out[key] = float(summary[key])
    out.update(side_results(summary))
    return out
