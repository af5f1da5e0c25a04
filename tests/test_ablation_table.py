"""The ablation table keeps every recorded run, refreshing only those whose artifacts are here."""

from __future__ import annotations

from benchmarks.quality.ablation_table import merge


def row(name: str, ndcg: float, steps: int | None = 268) -> dict:
    return {"run": name, "steps": steps, "alone": {"ndcg@10": ndcg}}


def test_runs_not_on_this_machine_keep_their_recorded_rows():
    recorded = [row("train-a", 0.380), row("train-b", 0.385), row("soup-ab", 0.390, steps=None)]
    found = [row("train-b", 0.386), row("train-c", 0.391)]  # train-a's folders are gone; train-c is new
    merged = merge(recorded, found)
    assert [r["run"] for r in merged] == ["train-a", "train-b", "train-c", "soup-ab"]
    assert merged[0]["alone"]["ndcg@10"] == 0.380  # the recorded figure, not dropped
    assert merged[1]["alone"]["ndcg@10"] == 0.386  # refreshed from this machine's artifacts


def test_a_first_table_is_the_runs_found():
    assert [r["run"] for r in merge([], [row("soup-x", 0.4, None), row("train-a", 0.38)])] == ["train-a", "soup-x"]


def test_ensembles_come_last_after_soups():
    found = [row("ensemble-ab", 0.41, None), row("soup-x", 0.4, None), row("train-a", 0.38)]
    assert [r["run"] for r in merge([], found)] == ["train-a", "soup-x", "ensemble-ab"]


def test_settings_name_the_options_that_differ():
    from dataclasses import asdict

    from benchmarks.quality.ablation_table import settings
    from tests.test_train import config_of
    from train.config import TrainConfig

    words = settings(asdict(config_of(TrainConfig, positive_at=2.5, lr=1e-4, symmetric_loss=True, seed=7)))
    assert "positives >= 2.5" in words and "lr 0.0001" in words and "symmetric loss" in words and "seed 7" in words
    assert "symmetric" not in settings(asdict(TrainConfig()))
    cfg = asdict(TrainConfig(hard_negatives="both", mine_index_dir="artifacts/homedepot/finetuned-train-y/index"))
    assert "both negatives (mined from train-y's index)" in settings(cfg)
    assert "mined from" not in settings(asdict(TrainConfig(hard_negatives="both", mine_index_dir="work/index")))
    assert settings(asdict(TrainConfig(model="models/all-mpnet-base-v2"))).startswith("from all-mpnet-base-v2, ")
    assert "from " not in settings(asdict(TrainConfig()))  # the default encoder goes unnamed
    # a run saved with an option since removed is still described (its config keys are read, not rebuilt)
    old = {**asdict(config_of(TrainConfig, precision="bf16")), "layer_lr_decay": 0.8, "distil_index_dir": None}
    assert "bf16 autocast" in settings(old)
    # a run saved before settings had components reads the same as one saved after
    flat = {"batch_size": 128, "lr": 5e-5, "positive_at": 2.33, "length_window": 16, "hard_negatives": "both", "precision": "bf16",
            "mixed_precision": "autocast", "mask_duplicates": True, "dropout": True}
    assert settings(flat) == settings(asdict(config_of(TrainConfig, precision="bf16", mixed_precision="autocast")))
