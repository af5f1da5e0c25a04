"""What a training run tells while it runs: a progress line with step, loss, pairs/s and time left."""

from __future__ import annotations

import json
import logging

import pytest

from train import progress
from train.progress import RunLog, read_history


def test_progress_lines_name_the_step_loss_rate_and_time_left(tmp_path, caplog, monkeypatch):
    clock = iter(float(t) for t in range(0, 1000, 10))  # each call 10 s later
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    caplog.set_level(logging.INFO, logger="train.progress")
    run = RunLog(tmp_path, first_step=0, total_steps=10, every=50)
    for step in range(1, 11):
        metrics = {"step": step, "epoch": 0, "loss": 2.0 / step, "lr": 1e-4, "pairs_per_s": 64.0}
        if step == 5:
            metrics["val_ndcg@10"] = 0.5
        run.add(metrics)
    run.close()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[train] step")]
    # every 15 s at most (here every other step at 10 s a step), at a validation, and at the last step
    assert "[train] step 1/10 (10%): loss 2.0000, 64.0 pairs/s, 1m30s left" in lines[0]
    assert any("step 5/10 (50%)" in line and "val nDCG@10 0.500" in line for line in lines)
    assert lines[-1].startswith("[train] step 10/10 (100%)") and lines[-1].endswith("0m00s left")
    assert 3 <= len(lines) < 10
    # every step reached metrics.jsonl, and TensorBoard got them at the end
    assert read_history(tmp_path)["step"].tolist() == list(range(1, 11))
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[4])["val_ndcg@10"] == pytest.approx(0.5)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_library_noise_is_hidden_unless_verbose():
    """faiss's loader notes and Ray Data's per-operator lines are hidden; its Total Progress line stays."""
    import subprocess
    import sys

    code = """
import logging
from common.runtime import setup_logging
setup_logging(verbose_output={verbose})
progress = logging.getLogger("ray.data._internal.progress.logging_progress")
record = lambda msg: logging.LogRecord(progress.name, logging.INFO, "", 0, msg, None, None)
print(logging.getLogger("faiss.loader").isEnabledFor(logging.INFO),
      logging.getLogger("ray.data._internal.execution.streaming_executor").isEnabledFor(logging.INFO),
      progress.filter(record("Total Progress: 3/27")), progress.filter(record("MapBatches(EncoderActor): 2048/55296")))
"""
    def run(verbose: bool) -> str:
        return subprocess.run([sys.executable, "-c", code.format(verbose=verbose)], capture_output=True, text=True,
                              check=True).stdout.split()

    assert run(False) == ["False", "False", "True", "False"]
    assert run(True) == ["True", "True", "True", "True"]
