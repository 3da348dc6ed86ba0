"""Seconds per epoch of finished or running runs, from their metrics.csv.

    python bench/epoch_times.py LABEL=RUN_DIR [LABEL=RUN_DIR ...]

Per run: epochs recorded, the first epoch's seconds (it includes graph capture and, with
compile, compilation), the median of the later epochs (training, evaluation and the
per-epoch checkpoint), the last row's training loss and test accuracy (of the first run
directory listed), and the summary status.  Packed copies record each copy's share of
the packed epoch; the line for a packed run sums the copies listed.
"""
from __future__ import annotations

import csv
import json
import os
import statistics
import sys


def epoch_seconds(run_dir: str) -> list[float]:
    path = os.path.join(run_dir, "metrics.csv")
    with open(path, encoding="utf-8") as handle:
        return [float(row["seconds"]) for row in csv.DictReader(handle)]


def last_row(run_dir: str) -> dict:
    with open(os.path.join(run_dir, "metrics.csv"), encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return rows[-1] if rows else {}


def status(run_dir: str) -> str:
    try:
        with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as handle:
            return json.load(handle).get("status", "?")
    except OSError:
        return "no summary"


def main(argv: list[str]) -> int:
    print(f"{'run':<34} {'epochs':>6} {'first s':>8} {'median s':>9} {'last loss':>10} "
          f"{'test %':>7}  status")
    for item in argv:
        label, _, dirs = item.partition("=")
        runs = [d for d in dirs.split(",") if d]
        if not runs:
            print(f"{label:<34} no run directory")
            continue
        try:
            times = [epoch_seconds(d) for d in runs]
        except OSError as exc:
            print(f"{label:<34} missing ({exc})")
            continue
        per_epoch = [sum(t[i] for t in times) for i in range(min(map(len, times)))]
        later = per_epoch[1:] or per_epoch
        first = f"{per_epoch[0]:8.2f}" if per_epoch else f"{'-':>8}"
        median = f"{statistics.median(later):9.3f}" if later else f"{'-':>9}"
        last = last_row(runs[0])
        loss, test = last.get("train_loss") or "-", last.get("test_acc") or "-"
        print(f"{label:<34} {len(per_epoch):>6} {first} {median} {loss[:10]:>10} "
              f"{test[:7]:>7}  {','.join(sorted({status(d) for d in runs}))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
