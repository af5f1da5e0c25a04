"""GPU training speed: bf16 + ZeRO-2 on one or more GPUs; pairs/s and model FLOPs utilisation (MFU).

Run on a GPU machine after `firstlight prepare` (the prepared folder is all it reads):

    python benchmarks/gpu_train.py --prepared-dir artifacts/homedepot/data --steps 200 --batch-size 256

MFU counts 6 x (non-embedding parameters) x (real, unpadded tokens) FLOPs per pair, forward and
backward, for the query, positive and hard-negative texts, against the GPU's dense bf16 peak
(--peak-tflops, 989 for an H100/H200 SXM).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import update_section  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prepared-dir", required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--output-dir", default="/tmp/firstlight-gpu-train")
    args = parser.parse_args()

    import torch
    from transformers import AutoModel, AutoTokenizer

    from firstlight.runtime import ensure_ray, setup_logging
    from train.config import TrainConfig
    from train.encoder import resolve_model_path
    from train.pairs import build_pairs
    from train.recipe import fit

    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU visible: this benchmark is for GPU machines")
    setup_logging()
    ensure_ray()
    cfg = TrainConfig(prepared_dir=args.prepared_dir, output_dir=args.output_dir, use_gpu=True, precision="bf16",
                      zero_stage=2, num_workers=args.workers, batch_size=args.batch_size, max_steps=args.steps,
                      checkpoint_every=0, val_queries=0, cpus_per_worker=2)
    start = time.perf_counter()
    result = fit(cfg)
    wall = time.perf_counter() - start
    history = result.metrics_dataframe
    pairs_per_s = float(history["pairs_per_s"].iloc[-1])

    path = resolve_model_path(cfg.model)
    model = AutoModel.from_pretrained(path)
    params = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    tokenizer = AutoTokenizer.from_pretrained(path)
    sample = build_pairs(cfg.prepared_dir, cfg).head(2000)
    tokens = 0.0
    for column, length in (("query", cfg.query_max_length), ("positive", cfg.product_max_length),
                           ("negative", cfg.product_max_length)):
        enc = tokenizer(sample[column].tolist(), truncation=True, max_length=length)
        tokens += sum(len(ids) for ids in enc["input_ids"]) / len(sample)
    flops_per_pair = 6 * params * tokens
    mfu = pairs_per_s * flops_per_pair / (args.peak_tflops * 1e12 * args.workers)
    body = f"""
{torch.cuda.get_device_name(0)} x {args.workers}; all-MiniLM-L6-v2, bf16, ZeRO-2, batch {args.batch_size} per GPU,
{args.steps} steps ({wall:.0f} s wall including start-up).

| pairs/s | tokens per pair | non-embedding params | MFU vs {args.peak_tflops:.0f} TFLOP/s |
|---|---|---|---|
| {pairs_per_s:,.0f} | {tokens:.1f} | {params / 1e6:.1f} M | {100 * mfu:.2f}% |
"""
    update_section("gpu_train", "GPU training throughput and MFU", "python benchmarks/gpu_train.py ...", body)


if __name__ == "__main__":
    main()
