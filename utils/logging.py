"""What a run records: printed lines (mirrored into log.txt), TensorBoard events and the
metrics.csv table."""
from __future__ import annotations

import csv
import io
import math
import os
import sys

from utils.checkpoint import write_text

METRIC_COLUMNS = ("phase", "level", "epoch", "step", "lr", "train_loss", "train_acc",
                  "val_acc", "test_acc", "density_pct", "sparsity_pct", "seconds")


class RunLogger:
    """Prints lines and appends them to <run>/log.txt once a run directory is attached
    (lines printed before that are kept and written then); owns the TensorBoard writer."""

    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self._pending: list[str] = []
        self._log = None
        self.tb = None

    def attach(self, run_dir: str, purge_step: int | None = None) -> None:
        """Start writing log.txt and TensorBoard events in `run_dir` (events at or after
        `purge_step` from an interrupted earlier attempt are discarded)."""
        from torch.utils.tensorboard import SummaryWriter

        self._log = open(os.path.join(run_dir, "log.txt"), "a", encoding="utf-8")
        for line in self._pending:
            self._log.write(line + "\n")
        self._pending.clear()
        self._log.flush()
        self.tb = SummaryWriter(log_dir=run_dir, purge_step=purge_step)

    def info(self, message: str = "") -> None:
        print(message, file=self.stream, flush=True)
        for line in message.splitlines() or [""]:
            if self._log is None:
                self._pending.append(line)
            else:
                self._log.write(line + "\n")
        if self._log is not None:
            self._log.flush()

    def scalars(self, values: dict, step: int) -> None:
        if self.tb is None:
            return
        for tag, value in values.items():
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                self.tb.add_scalar(tag, value, step)

    def histogram(self, tag: str, values, step: int) -> None:
        if self.tb is not None:
            self.tb.add_histogram(tag, values, step)

    def hparams(self, hparams: dict, metrics: dict) -> None:
        """Record the run's hyper-parameters and final metrics for TensorBoard's HPARAMS tab."""
        if self.tb is None:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                 for k, v in hparams.items()}
        finite = {k: v for k, v in metrics.items()
                  if isinstance(v, (int, float)) and math.isfinite(v)}
        for summary in hparams_summary(clean, finite):
            self.tb.file_writer.add_summary(summary)
        self.scalars(finite, 0)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
            self.tb = None
        if self._log is not None:
            self._log.close()
            self._log = None


def format_cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_metrics_csv(path: str, rows: list[dict]) -> None:
    """Rewrite metrics.csv atomically from the run's rows (one per evaluated epoch)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(METRIC_COLUMNS)
    for row in rows:
        writer.writerow([format_cell(row.get(col)) for col in METRIC_COLUMNS])
    write_text(path, buffer.getvalue())


def write_csv(path: str, columns: list[str], rows: list[dict]) -> None:
    """Write a small CSV table atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([format_cell(row.get(col)) for col in columns])
    write_text(path, buffer.getvalue())
