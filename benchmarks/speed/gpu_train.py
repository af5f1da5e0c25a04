"""GPU training speed: bf16 + ZeRO-2 on one or more GPUs; pairs/s and model FLOPs utilisation (MFU).

Run on a GPU machine after `firstlight prepare` (the prepared folder is all it reads):

    python benchmarks/speed/gpu_train.py --prepared-dir artifacts/homedepot/data --steps 200 --batch-size 256

Pairs/s is the steady-state rate of the recipe's training loop, from the end of step
``--warmup-steps`` to the end of the last step (read from the run's metrics.jsonl, as
``bench_train_throughput.py`` does on CPU). MFU counts 6 x (non-embedding parameters) x (real,
unpadded tokens) FLOPs per pair, forward and backward, for the query, positive and hard-negative
texts, against the GPU's dense bf16 peak (--peak-tflops, 989 for an H100/H200 SXM).

``--random-init`` trains the model's architecture from fresh random weights: speed does not depend
on the weights' values, so a machine that holds only the model's config and tokenizer can measure it.
``--device cpu`` runs the same code on CPU in fp32 as a check of the script itself (a few steps of
any model); it prints its table and writes nothing to RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.report import update_section  # noqa: E402
from benchmarks.speed.bench_train_throughput import loop_rate  # noqa: E402


def random_init_copy(model_path: str, out: Path) -> str:
    """The model's architecture and tokenizer with freshly drawn weights, saved under ``out``."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.from_pretrained(model_path)).save_pretrained(out)
    AutoTokenizer.from_pretrained(model_path).save_pretrained(out)
    return str(out)


def tokens_per_pair(cfg, model_path: str, sample: int = 2000) -> float:
    """Mean real (unpadded) tokens of one training row's query, positive and hard negative."""
    from transformers import AutoTokenizer

    from train.losses import TEXTS
    from train.pairs import build_pairs

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    rows = build_pairs(cfg.prepared_dir, cfg).head(sample)
    tokens = 0.0
    for column in TEXTS:
        length = cfg.query_max_length if column == "query" else cfg.product_max_length
        enc = tokenizer(rows[column].tolist(), truncation=True, max_length=length)
        tokens += sum(len(ids) for ids in enc["input_ids"]) / len(rows)
    return tokens


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prepared-dir", required=True)
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="encoder folder or the default's name")
    parser.add_argument("--random-init", action="store_true", help="train the architecture from random weights")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256, help="pairs per GPU per step")
    parser.add_argument("--workers", type=int, default=1, help="GPUs, one worker each")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--output-dir", default=None, help="run folder (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.steps <= args.warmup_steps + 1:
        sys.exit(f"--steps {args.steps} must exceed --warmup-steps {args.warmup_steps} + 1")

    import torch
    from transformers import AutoModel

    from common.runtime import ensure_ray, setup_logging
    from model.folders import resolve_model_path
    from train.config import TrainConfig
    from train.driver import fit
    from train.settings import Checkpointing, Distribution, Optimisation

    gpu = args.device == "cuda"
    if gpu and not torch.cuda.is_available():
        sys.exit("no CUDA GPU visible: this benchmark is for GPU machines (--device cpu checks the script)")
    setup_logging()
    with tempfile.TemporaryDirectory() as tmp:
        model_path = resolve_model_path(args.model)
        if args.random_init:
            model_path = random_init_copy(model_path, Path(tmp) / "random-init")
        out = Path(args.output_dir or Path(tmp) / "run")
        cfg = TrainConfig(prepared_dir=args.prepared_dir, output_dir=str(out), model=model_path,
                          hard_negatives="judged",  # one hard negative per pair, with no index to mine
                          optim=Optimisation(batch_size=args.batch_size, max_steps=args.steps),
                          dist=Distribution(use_gpu=gpu, precision="bf16" if gpu else "fp32", zero_stage=2,
                                            num_workers=args.workers, cpus_per_worker=2 if gpu else 1),
                          checkpoints=Checkpointing(every=0, report_every=10, val_queries=0))
        ensure_ray()
        start = time.perf_counter()
        fit(cfg)
        wall = time.perf_counter() - start
        pairs_per_s = loop_rate(out, args.batch_size * args.workers, args.warmup_steps)
        model = AutoModel.from_pretrained(model_path)
        params = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
        tokens = tokens_per_pair(cfg, model_path)
    mfu = pairs_per_s * 6 * params * tokens / (args.peak_tflops * 1e12 * args.workers)
    device = torch.cuda.get_device_name(0) if gpu else "CPU (a check of the script, not a GPU figure)"
    weights = "random weights" if args.random_init else "pretrained weights"
    body = f"""
{device} x {args.workers}; {Path(args.model).name} ({weights}), {cfg.dist.precision}, ZeRO-{cfg.dist.zero_stage_in_use},
batch {args.batch_size} per worker, {args.steps} steps ({wall:.0f} s wall including start-up); pairs/s after step
{args.warmup_steps}.

| pairs/s | tokens per pair | non-embedding params | MFU vs {args.peak_tflops:.0f} TFLOP/s |
|---|---|---|---|
| {pairs_per_s:,.0f} | {tokens:.1f} | {params / 1e6:.2f} M | {100 * mfu:.2f}% |
"""
    figures = {"pairs_per_s": pairs_per_s, "tokens_per_pair": tokens, "params": params, "mfu": mfu}
    if gpu:
        update_section("gpu_train", "GPU training throughput and MFU",
                       "python benchmarks/speed/gpu_train.py " + " ".join(sys.argv[1:] if argv is None else argv), body,
                       raw=figures)
    else:
        print(body)
    return {**figures, "table": body}


if __name__ == "__main__":
    main()
