"""Retrieval quality of BM25, the zero-shot encoder and their fusion on the Home Depot test split.

Runs the main job (`firstlight demo`; finished stages are reused) and records its table. Usage:

    python benchmarks/bench_quality.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import update_section  # noqa: E402


def main() -> None:
    from common.runtime import ensure_ray, setup_logging
    from evaluation.metrics import METRICS
    from firstlight.pipeline import DemoConfig, run_demo

    setup_logging()
    ensure_ray()
    results = run_demo(DemoConfig(dataset="homedepot"))
    cols = [*METRICS, "ndcg@10_judged"]
    names = {"bm25": "BM25 (bm25s, English stemming)", "dense": f"zero-shot {results.get('model')}",
             "fusion": "reciprocal-rank fusion of both (k=60)"}
    rows = "\n".join(f"| {names[n]} | " + " | ".join(f"{r['mean'][c]:.3f}" for c in cols) + " |"
                     for n, r in results["systems"].items())
    body = f"""
Home Depot, query split seed 2026 (80/10/10 by query): {results['queries']:,} test queries
with a relevant product, ranked over the full catalogue of {results['products']:,} titles. nDCG@10 with
gain = relevance - 1; Recall@100 and MRR@10 with relevant = relevance >= 2.5; the last column ranks
only each query's judged products.

| system | nDCG@10 | Recall@100 | MRR@10 | nDCG@10 (judged only) |
|---|---|---|---|---|
{rows}
"""
    update_section("quality", "Zero-shot quality on unseen queries", "firstlight demo", body)


if __name__ == "__main__":
    main()
