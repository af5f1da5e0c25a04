"""The served default (hybrid + reranker) exactly as `firstlight serve` starts it on a Ray with the
given CPUs, no reservation set by hand: whether every reply is reranked, and one client's latency.

    python benchmarks/speed/bench_placed_default.py --rerank-model artifacts/homedepot/reranker/model \
        --index-dir artifacts/homedepot/finetuned/index --cpus 2 --requests 100

It starts a local Ray with ``--cpus`` CPUs, deploys through ``serve.app.run_serve`` (so placement
shrinks the default reservations to fit), sends real test queries one at a time and reports p50 /
p99 and the share of replies the reranker ordered.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.report import update_section  # noqa: E402
from common.paths import default_workdir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = default_workdir() / "homedepot"
    parser.add_argument("--index-dir", default=str(root / "finetuned" / "index"))
    parser.add_argument("--rerank-model", default=str(root / "reranker" / "model"))
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--port", type=int, default=8123)
    args = parser.parse_args()

    import requests

    from common.runtime import ensure_ray, setup_logging
    from data_pipeline.prepare import load_split
    from serve.app import run_serve
    from serve.config import ServeConfig
    from serve.placement import fit_to_cluster

    setup_logging()
    ensure_ray(num_cpus=args.cpus)
    import ray
    from ray import serve

    cfg = ServeConfig.from_args({"index_dir": args.index_dir, "rerank.model": args.rerank_model, "port": args.port})
    placed = fit_to_cluster(cfg, ray.available_resources())
    url = run_serve(cfg, blocking=False)
    try:
        deadline = time.time() + 600
        while requests.get(url + "/readyz", timeout=30).status_code != 200:
            if time.time() > deadline:
                sys.exit("not ready after 10 minutes")
            time.sleep(2)
        queries = load_split(cfg.resolved_prepared_dir(), "test")["query"].drop_duplicates().tolist()
        for q in queries[:5]:  # warm-up
            requests.post(url + "/v1/recommend", json={"text": q, "k": 10}, timeout=60)
        latencies, reranked = [], 0
        for q in queries[5:5 + args.requests]:
            start = time.perf_counter()
            reply = requests.post(url + "/v1/recommend", json={"text": q, "k": 10}, timeout=60)
            latencies.append(1000 * (time.perf_counter() - start))
            reranked += bool(reply.json().get("reranked"))
    finally:
        serve.shutdown()
    p50, p99 = np.percentile(latencies, 50), np.percentile(latencies, 99)
    shares = ", ".join(f"{n} {getattr(placed, n).num_cpus:g}" for n in ("encoder", "retriever", "gateway", "reranker"))
    index, model = (os.path.relpath(p) for p in (args.index_dir, args.rerank_model))  # no machine's paths in RESULTS
    body = f"""
`firstlight serve --index_dir {index} --rerank.model {model}` on a local Ray started with
{args.cpus} CPUs, no reservation given: placement sized the deployments to {shares} CPU (defaults 1, 0.5,
0.25, 1 would not fit). {len(latencies)} test queries, one client, k=10.

| replies reranked | p50 ms | p99 ms |
|---|---|---|
| {reranked} of {len(latencies)} | {p50:.0f} | {p99:.0f} |
"""
    print(body)
    update_section("placed_default", "The served default as placed on a small Ray",
                   "python benchmarks/speed/bench_placed_default.py --cpus " + str(args.cpus), body,
                   {"p50_ms": p50, "p99_ms": p99, "reranked": reranked, "requests": len(latencies),
                    "placed": shares})


if __name__ == "__main__":
    main()
