"""Training throughput: FirstLight's recipe vs sentence-transformers' trainer (MultipleNegativesRankingLoss).

Same model (all-MiniLM-L6-v2), same pairs (the first N positives of the Home Depot train split), same
batch size and sequence length, in-batch negatives only, fp32, one CPU worker; the ratio is taken
within one run. Needs the `bench` extra (datasets) and `firstlight prepare` output. Usage:

    python benchmarks/bench_train_throughput.py [--pairs 1280] [--batch-size 32] [--max-length 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import update_section  # noqa: E402
from firstlight.paths import default_workdir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prepared-dir", default=str(default_workdir() / "homedepot" / "data"))
    parser.add_argument("--pairs", type=int, default=1280)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments)
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    from firstlight.runtime import ensure_ray, setup_logging
    from train.config import TrainConfig
    from train.encoder import DEFAULT_MODEL, resolve_model_path
    from train.pairs import build_pairs
    from train.recipe import fit

    setup_logging()
    steps = args.pairs // args.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(prepared_dir=args.prepared_dir, output_dir=tmp, hard_negatives="none", max_pairs=args.pairs,
                          batch_size=args.batch_size, query_max_length=args.max_length,
                          product_max_length=args.max_length, max_steps=steps, val_queries=0, num_workers=1,
                          cpus_per_worker=1, zero_stage=0, lr=3e-5)
        pairs = build_pairs(args.prepared_dir, cfg)

        # 1. sentence-transformers' trainer, in this process with every core.
        torch.set_num_threads(os.cpu_count())
        model = SentenceTransformer(resolve_model_path(DEFAULT_MODEL), device="cpu")
        model.max_seq_length = args.max_length
        trainer = SentenceTransformerTrainer(
            model=model, train_dataset=Dataset.from_dict({"anchor": pairs["query"].tolist(),
                                                          "positive": pairs["positive"].tolist()}),
            loss=MultipleNegativesRankingLoss(model),
            args=SentenceTransformerTrainingArguments(
                output_dir=str(Path(tmp) / "st"), per_device_train_batch_size=args.batch_size, max_steps=steps,
                learning_rate=3e-5, warmup_ratio=0.1, save_strategy="no", report_to="none", logging_steps=10 ** 6,
                dataloader_drop_last=True, use_cpu=True, seed=2026))
        start = time.perf_counter()
        trainer.train()
        st_seconds = time.perf_counter() - start

        # 2. FirstLight: Ray Train + DeepSpeed (ZeRO 0, fp32), one worker; loop time as the recipe reports it.
        ensure_ray()
        start = time.perf_counter()
        result = fit(cfg)
        fl_wall = time.perf_counter() - start
        fl_rate = float(result.metrics_dataframe["pairs_per_s"].iloc[-1])

    st_rate = steps * args.batch_size / st_seconds
    body = f"""
{steps} steps x batch {args.batch_size} = {steps * args.batch_size:,} Home Depot (query, product) pairs,
all-MiniLM-L6-v2, max length {args.max_length} for queries and products, in-batch negatives only, fp32,
AdamW lr 3e-5, {os.cpu_count()} CPU threads.

| trainer | pairs/s (training loop) | wall s incl. start-up |
|---|---|---|
| sentence-transformers `SentenceTransformerTrainer` + MultipleNegativesRankingLoss | {st_rate:.1f} | {st_seconds:.0f} |
| FirstLight recipe (Ray Train, DeepSpeed ZeRO-0, 1 worker) | {fl_rate:.1f} | {fl_wall:.0f} |
| **ratio FirstLight / sentence-transformers** | **{fl_rate / st_rate:.2f}** | |
"""
    update_section("train_throughput", "Training throughput vs sentence-transformers",
                   "python benchmarks/bench_train_throughput.py", body)


if __name__ == "__main__":
    main()
