"""Training throughput: FirstLight's recipe vs sentence-transformers' trainer (MultipleNegativesRankingLoss).

Same model (all-MiniLM-L6-v2), same pairs (the first N positives of the Home Depot train split), same
batch size, sequence length and precision (fp32; or bf16: the trainer's `bf16=True` and FirstLight's
`--precision bf16`, both autocast over fp32 weights on CPU), in-batch negatives only, the model's
dropout on in both (sentence-transformers' trainer always trains with it), one CPU worker
(DeepSpeed ZeRO-0: one worker has nothing to shard). Both rates are
steady-state training-loop rates, measured the same way: pairs per second between the end of
optimizer step ``--warmup-steps`` and the end of the last step (the first steps pay one-off costs:
allocator growth, oneDNN kernel selection). The two trainers run alternately ``--rounds`` times, and
the ratio of the medians is reported, because on a 2-core machine one run moves by several percent.
Needs the `bench` extra (datasets) and `firstlight prepare` output. Usage:

    python benchmarks/speed/bench_train_throughput.py [--pairs 3200] [--batch-size 32] [--max-length 64] [--rounds 2]
        [--precision fp32|bf16] [--mixed-precision auto|weights] [--length-window 0]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.report import need_bench_extra, update_section  # noqa: E402
from common.paths import default_workdir  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.settings import Checkpointing, Distribution, Optimisation, TrainData  # noqa: E402


def steady_rate(step_ends: dict[int, float], batch: int, warmup: int) -> float:
    """Pairs/s from the end of step ``warmup`` to the end of the last step."""
    last = max(step_ends)
    return (last - warmup) * batch / (step_ends[last] - step_ends[warmup])


def loop_rate(output_dir: Path, global_batch: int, warmup: int) -> float:
    """The recipe's steady-state pairs/s, from its metrics.jsonl: every step's cumulative rate since
    the first batch gives that step's end time."""
    rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    ends = {r["step"]: r["step"] * global_batch / r["pairs_per_s"] for r in rows}
    return steady_rate(ends, global_batch, warmup)


def sentence_transformers_rate(pairs, args, steps: int, out: Path) -> tuple[float, float]:
    Dataset = need_bench_extra("datasets").Dataset
    import torch
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    from model.folders import DEFAULT_MODEL, resolve_model_path

    class StepClock(TrainerCallback):
        def __init__(self):
            self.ends = {}

        def on_step_end(self, targs, state, control, **kwargs):
            self.ends[state.global_step] = time.perf_counter()

    torch.set_num_threads(os.cpu_count())
    model = SentenceTransformer(resolve_model_path(DEFAULT_MODEL), device="cpu")
    model.max_seq_length = args.max_length
    clock = StepClock()
    trainer = SentenceTransformerTrainer(
        model=model, train_dataset=Dataset.from_dict({"anchor": pairs["query"].tolist(),
                                                      "positive": pairs["positive"].tolist()}),
        loss=MultipleNegativesRankingLoss(model), callbacks=[clock],
        args=SentenceTransformerTrainingArguments(
            output_dir=str(out), per_device_train_batch_size=args.batch_size, max_steps=steps,
            learning_rate=3e-5, warmup_ratio=0.1, save_strategy="no", report_to="none", logging_steps=10 ** 6,
            dataloader_drop_last=True, use_cpu=True, seed=2026, bf16=args.precision == "bf16"))
    start = time.perf_counter()
    trainer.train()
    return steady_rate(clock.ends, args.batch_size, args.warmup_steps), time.perf_counter() - start


def firstlight_rate(cfg, args) -> tuple[float, float]:
    from train.driver import fit

    start = time.perf_counter()
    fit(cfg)
    wall = time.perf_counter() - start
    return loop_rate(Path(cfg.output_dir), args.batch_size, args.warmup_steps), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prepared-dir", default=str(default_workdir() / "homedepot" / "data"))
    parser.add_argument("--pairs", type=int, default=3200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16 pays on CPUs with bf16 instructions (AVX512-BF16, AMX)")
    parser.add_argument("--mixed-precision", choices=("auto", "weights"), default="auto",
                        help="FirstLight's bf16 mode: auto (autocast on CPU) or weights (DeepSpeed's 16-bit "
                             "weights with fp32 master copies, ZeRO-1)")
    default_window = TrainConfig.__dataclass_fields__["length_window"].default
    parser.add_argument("--length-window", type=int, default=default_window,
                        help="FirstLight's --length-window: micro-batches regrouped by product length (default: the "
                             "recipe's, %(default)s; 0 forms batches as sentence-transformers does)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from dataclasses import replace

    from common.runtime import ensure_ray, setup_logging
    from train.pairs import build_pairs

    setup_logging()
    steps = args.pairs // args.batch_size
    if steps <= args.warmup_steps + 1:
        sys.exit(f"--pairs {args.pairs} gives {steps} steps: need more than --warmup-steps + 1")
    rows, st_rates, fl_rates = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(prepared_dir=args.prepared_dir, output_dir=tmp, hard_negatives="none",
                          query_max_length=args.max_length, product_max_length=args.max_length,
                          length_window=args.length_window, data=TrainData(max_pairs=args.pairs),
                          optim=Optimisation(batch_size=args.batch_size, max_steps=steps, lr=3e-5),
                          checkpoints=Checkpointing(val_queries=0, every=0),
                          dist=Distribution(num_workers=1, cpus_per_worker=1, precision=args.precision,
                                            mixed_precision=args.mixed_precision,
                                            # 16-bit weights need ZeRO-1 for their fp32 master copies;
                                            # else one worker runs ZeRO-0
                                            zero_stage=1 if args.precision == "bf16" and args.mixed_precision == "weights"
                                            else 0))
        pairs = build_pairs(args.prepared_dir, cfg)
        for r in range(args.rounds):
            # 1. sentence-transformers' trainer, in this process with every core (before Ray starts in round 1).
            st, st_wall = sentence_transformers_rate(pairs, args, steps, Path(tmp) / f"st{r}")
            # 2. FirstLight: Ray Train + DeepSpeed ZeRO-0 (bf16: DeepSpeed's torch_autocast over fp32 weights).
            ensure_ray()
            fl, fl_wall = firstlight_rate(replace(cfg, output_dir=str(Path(tmp) / f"fl{r}")), args)
            st_rates.append(st)
            fl_rates.append(fl)
            rows.append(f"| {r + 1} | {st:.1f} | {st_wall:.0f} | {fl:.1f} | {fl_wall:.0f} | {fl / st:.2f} |")
    st_med, fl_med = statistics.median(st_rates), statistics.median(fl_rates)
    body = f"""
{steps} steps x batch {args.batch_size} = {steps * args.batch_size:,} Home Depot (query, product) pairs per run,
all-MiniLM-L6-v2, max length {args.max_length} for queries and products, in-batch negatives only, {args.precision},
AdamW lr 3e-5, dropout on (the model's 0.1) in both, {os.cpu_count()} CPU threads. Pairs/s: steady state, after step {args.warmup_steps}, the same
way for both. sentence-transformers: `SentenceTransformerTrainer` + MultipleNegativesRankingLoss in
one process; FirstLight: the recipe (Ray Train, DeepSpeed ZeRO-{cfg.dist.zero_stage_in_use}{", torch_autocast" if cfg.dist.autocast else ""}{", 16-bit weights" if cfg.dist.precision == "bf16" and not cfg.dist.autocast else ""}, 1 worker; tokens materialised by
Ray Data before training{f"; micro-batches regrouped by product length, {args.length_window} at a time (`--length-window`), which sentence-transformers does not do" if args.length_window > 1 else "; batches formed as sentence-transformers forms them (`--length-window 0`)"}). Wall time includes each trainer's start-up (Ray's, on the first round).

| round | sentence-transformers pairs/s | wall s | FirstLight pairs/s | wall s | ratio |
|---|---|---|---|---|---|
{chr(10).join(rows)}
| **median** | **{st_med:.1f}** | | **{fl_med:.1f}** | | **{fl_med / st_med:.2f}** |
"""
    # One RESULTS.md section per non-default setting set, so measuring one does not erase another:
    # (is it set, its command-line option, its section-name suffix, its words in the title).
    settings = [(args.precision == "bf16", "--precision bf16", "_bf16", "bf16"),
                (args.mixed_precision == "weights", "--mixed-precision weights", "_weights", "16-bit weights"),
                (args.batch_size != 32, f"--batch-size {args.batch_size} --pairs {args.pairs}",
                 f"_b{args.batch_size}", f"batch {args.batch_size}"),
                (args.length_window != default_window, f"--length-window {args.length_window}",
                 f"_lw{args.length_window}", "batches not grouped by length" if args.length_window <= 1
                 else f"length window {args.length_window}")]
    chosen = [s for s in settings if s[0]]
    title = ", ".join(s[3] for s in chosen)
    update_section("train_throughput" + "".join(s[2] for s in chosen),
                   "Training throughput vs sentence-transformers" + (f" ({title})" if title else ""),
                   " ".join(["python benchmarks/speed/bench_train_throughput.py"] + [s[1] for s in chosen]), body,
                   raw={"sentence_transformers": st_rates, "firstlight": fl_rates, "steps": steps,
                        "batch_size": args.batch_size, "warmup_steps": args.warmup_steps})


if __name__ == "__main__":
    main()
