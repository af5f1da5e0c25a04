"""Query encoding cost of one or more encoders: what a visitor waits for before the index search.

Encodes unseen Home Depot test queries one at a time (a visitor's request; p50 and p95) and in one
batch of 64 (a busy replica), on this machine's CPUs, for each model; so an ensemble's price beside
a single encoder is measured, not guessed. Usage (after `firstlight demo`):

    python benchmarks/bench_query_latency.py --models RUN_A/model,ENSEMBLE/model [--queries 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks.report import update_section  # noqa: E402
from common.paths import default_workdir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", required=True, help="comma-separated model folders (ensembles too)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--workdir", default=str(default_workdir() / "homedepot"))
    args = parser.parse_args()

    import torch

    from data_pipeline.prepare import load_split
    from model.encoder import TextEncoder

    queries = sorted(set(load_split(Path(args.workdir) / "data", "test")["query"]))[:args.queries]
    rows, raw = [], {}
    for model in [m for m in args.models.split(",") if m]:
        encoder = TextEncoder.load(model, device="cpu")
        encoder.encode(queries[:10], role="query")  # warm-up: first calls allocate
        single = []
        for q in queries:
            start = time.perf_counter()
            encoder.encode([q], role="query")
            single.append(time.perf_counter() - start)
        start = time.perf_counter()
        encoder.encode(queries, batch_size=64, role="query")
        batched = len(queries) / (time.perf_counter() - start)
        p50, p95 = (1e3 * float(np.percentile(single, p)) for p in (50, 95))
        raw[model] = {"p50_ms": p50, "p95_ms": p95, "batched_queries_per_s": batched, "dim": encoder.dim}
        rows.append(f"| {model} | {encoder.dim} | {p50:.1f} | {p95:.1f} | {batched:.0f} |")
        print(rows[-1], flush=True)
    body = f"""
{len(queries)} unseen test queries, each encoded alone (p50 / p95 of the wall time), then all of them
in batches of 64, on CPU with {torch.get_num_threads()} threads. The index search comes on top (see the index section).

| model | dim | one query p50 (ms) | one query p95 (ms) | batched (queries/s) |
|---|---|---|---|---|
{chr(10).join(rows)}
"""
    update_section("query_latency", "Query encoding latency", "python benchmarks/bench_query_latency.py "
                   f"--models {args.models}", body, raw)


if __name__ == "__main__":
    main()
