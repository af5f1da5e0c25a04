"""FAISS index build time, single-query latency (p50/p99) and batched QPS over the full catalogue.

Uses the catalogue embeddings and test queries of `firstlight demo` (run it first), so the vectors
are the real all-MiniLM-L6-v2 embeddings of the 54,667 Home Depot titles. Usage:

    python benchmarks/bench_index.py [--workdir artifacts/homedepot]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks.report import update_section  # noqa: E402
from common.paths import default_workdir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=str(default_workdir() / "homedepot"))
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--single", type=int, default=1000, help="single-query searches timed")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from data_pipeline.index import IndexConfig, ProductIndex
    from data_pipeline.prepare import load_split
    from data_pipeline.vectors import load_embeddings
    from model.encoder import TextEncoder

    root = Path(args.workdir)
    if not (root / "embeddings" / "manifest.json").exists():
        sys.exit(f"no embeddings in {root}; run `firstlight demo` first")
    ids, vectors = load_embeddings(root / "embeddings" / "vectors")
    queries = sorted(set(load_split(root / "data", "test")["query"]))
    q = TextEncoder.load().encode(queries, role="query")
    exact_top = None
    rows = []
    for cfg in (IndexConfig(kind="flat"), IndexConfig(kind="ivf", nlist=1024, nprobe=32),
                IndexConfig(kind="hnsw", hnsw_m=32, ef_search=128)):
        start = time.perf_counter()
        index = ProductIndex.build(ids, vectors, cfg)
        build = time.perf_counter() - start
        index.search(q[:10], args.k)  # warm-up
        latencies = []
        for i in range(args.single):
            t = time.perf_counter()
            index.search(q[i % len(q)][None, :], args.k)
            latencies.append(time.perf_counter() - t)
        start = time.perf_counter()
        _, top = index.search(q, args.k)
        batch_seconds = time.perf_counter() - start
        if exact_top is None:
            exact_top = top
        recall = np.mean([len(set(a) & set(e)) / args.k for a, e in zip(top, exact_top)])
        p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
        rows.append(f"| {cfg.kind} | {build:.2f} | {p50:.2f} | {p99:.2f} | {len(q) / batch_seconds:,.0f} | {recall:.3f} |")
    body = f"""
{len(ids):,} products x {vectors.shape[1]} dims (all-MiniLM-L6-v2 embeddings of the Home Depot titles);
{len(q):,} real test queries; top-{args.k}; CPU FAISS ({os.cpu_count()} threads). Recall is overlap
with the exact (flat) top-{args.k}. IVF: nlist 1024, nprobe 32; HNSW: M 32, efSearch 128.

| index | build s | single query p50 ms | p99 ms | batched QPS ({len(q)} at once) | recall@{args.k} vs exact |
|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
    update_section("index", "FAISS index build and search", "python benchmarks/bench_index.py", body)


if __name__ == "__main__":
    main()
