"""What a training run tells: a progress line on the terminal, every step's metrics on disk, curves.

- The terminal (rank 0's log, which Ray forwards to the driver) gets a line about every
  ``PROGRESS_EVERY_S`` seconds: step, loss, pairs/s and the time left.
- ``OUTPUT/metrics.jsonl`` gets every step at once (Ray keeps only the reported ones).
- TensorBoard (``tensorboard --logdir OUTPUT/tensorboard``) gets them in batches: its writer slowed
  every step while it was fed each step (bf16, batch 32: 64.8 against 69.6 pairs/s). Steps are
  handed over every ``report_every`` steps and at each validation; a crash can only lose
  TensorBoard's copy of the last few, never metrics.jsonl's.
- After the run, ``write_curves`` saves ``metrics.csv`` and ``curves.png``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 15.0
CURVES = ("loss", "lr", "val_ndcg@10")


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


class RunLog:
    """Rank 0's record of the run: progress lines, metrics.jsonl and TensorBoard."""

    NAMES = ("loss", "lr", "negatives_per_query", "pairs_per_s", "val_ndcg@10")

    def __init__(self, folder: Path, first_step: int, total_steps: int, every: int):
        self.folder, self.first_step, self.total, self.every = folder, first_step, total_steps, every
        self.pending, self.writer = [], None
        self.started, self.last_line = time.perf_counter(), float("-inf")  # the first step gets a line

    def add(self, metrics: dict) -> None:
        with open(self.folder / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        self.pending.append(metrics)
        if len(self.pending) >= self.every or "val_ndcg@10" in metrics:
            self.flush()
        self.progress(metrics)

    def progress(self, metrics: dict) -> None:
        now = time.perf_counter()
        step, last = metrics["step"], metrics["step"] >= self.total
        if not (last or "val_ndcg@10" in metrics or now - self.last_line >= PROGRESS_EVERY_S):
            return
        self.last_line = now
        done = step - self.first_step
        left = (now - self.started) / done * (self.total - step) if done else 0.0
        val = f", val nDCG@10 {metrics['val_ndcg@10']:.3f}" if "val_ndcg@10" in metrics else ""
        log.info("[train] step %d/%d (%d%%): loss %.4f, %.1f pairs/s%s, %s left", step, self.total,
                 100 * step // max(self.total, 1), metrics["loss"], metrics["pairs_per_s"], val, _duration(left))

    def flush(self) -> None:
        if not self.pending:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events after a resumed checkpoint, so a resumed run's curves do not fork
            self.writer = SummaryWriter(str(self.folder / "tensorboard"), purge_step=self.first_step + 1)
        for metrics in self.pending:
            for name in self.NAMES:
                if name in metrics:
                    self.writer.add_scalar(f"train/{name}", metrics[name], metrics["step"])
        self.writer.flush()
        self.pending = []

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()


def read_history(folder: Path):
    """The run's per-step metrics (the last record of each step, should a resumed run repeat one)."""
    import pandas as pd

    path = Path(folder) / "metrics.jsonl"
    if not path.exists():
        return pd.DataFrame()
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return pd.DataFrame(rows).drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


def write_curves(folder: Path) -> None:
    """Save the run's metrics as CSV and a PNG of loss, learning rate and validation nDCG@10."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = read_history(folder)
    if history.empty:
        return
    history.to_csv(folder / "metrics.csv", index=False)
    panels = [c for c in CURVES if c in history]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4))
    for ax, column in zip(np.atleast_1d(axes), panels):
        data = history[["step", column]].dropna()
        ax.plot(data["step"], data[column], marker="o" if column == "val_ndcg@10" else None, markersize=3)
        ax.set_title(column)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / "curves.png", dpi=110)
    plt.close(fig)
