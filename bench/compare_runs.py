"""How far apart two runs of the same config and seed ended: a packed copy against the same
seed run alone (issue 12: copy k equals its seed's separate run — bit for bit on the CPU,
within bf16 rounding on a GPU).

    python bench/compare_runs.py RUN_A RUN_B

Prints, per metrics.csv row (phase, epoch), the training loss and test accuracy of both and,
for the final weights (checkpoints/final.pt), the number of tensors, how many are bitwise
equal and the largest absolute and relative difference.  Exit 0 when both runs could be read
(the numbers are the result, not a verdict); 2 when one cannot.
"""
from __future__ import annotations

import csv
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils.checkpoint import load_checkpoint  # after the path insert: the project's loader


def rows(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.csv"), encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def weight_differences(a: dict, b: dict) -> dict:
    """Counts and the largest differences over the floating-point tensors both hold."""
    keys = [k for k in a if k in b and a[k].is_floating_point()]
    equal = sum(torch.equal(a[k], b[k]) for k in keys)
    worst_abs = worst_rel = 0.0
    for k in keys:
        diff = (a[k].double() - b[k].double()).abs()
        if diff.numel():
            worst_abs = max(worst_abs, float(diff.max()))
            scale = float(b[k].double().abs().max())
            worst_rel = max(worst_rel, float(diff.max()) / scale if scale else 0.0)
    return {"tensors": len(keys), "bitwise_equal": equal, "max_abs": worst_abs,
            "max_rel": worst_rel}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    a_dir, b_dir = argv
    try:
        a_rows, b_rows = rows(a_dir), rows(b_dir)
        a_final = load_checkpoint(os.path.join(a_dir, "checkpoints", "final.pt"))["model"]
        b_final = load_checkpoint(os.path.join(b_dir, "checkpoints", "final.pt"))["model"]
    except (OSError, KeyError, RuntimeError) as exc:
        print(f"error: cannot read the runs: {exc}", file=sys.stderr)
        return 2
    print(f"A {a_dir}\nB {b_dir}")
    print(f"{'phase':<14} {'epoch':>5} {'loss A':>10} {'loss B':>10} {'test A':>7} "
          f"{'test B':>7}")
    for ra, rb in zip(a_rows, b_rows):
        print(f"{ra.get('phase', ''):<14} {ra.get('epoch', ''):>5} "
              f"{ra.get('train_loss', '')[:10]:>10} {rb.get('train_loss', '')[:10]:>10} "
              f"{ra.get('test_acc', '')[:7]:>7} {rb.get('test_acc', '')[:7]:>7}")
    if len(a_rows) != len(b_rows):
        print(f"rows: A {len(a_rows)}, B {len(b_rows)}")
    d = weight_differences(a_final, b_final)
    print(f"final weights: {d['bitwise_equal']}/{d['tensors']} tensors bitwise equal; "
          f"largest difference {d['max_abs']:.3g} absolute, {d['max_rel']:.3g} relative to "
          f"the tensor's largest entry")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
