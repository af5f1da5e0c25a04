"""The served default (hybrid + reranker) exactly as `firstlight serve` starts it on a Ray with the
given CPUs, no reservation set by hand: the share of replies reranked and the latency at 1, 8 and 32
clients (graceful overload: what the reranker's budget cannot take is answered from the first stage
at once), and a full /v1/recommend/batch.

    python benchmarks/speed/bench_placed_default.py --rerank-model artifacts/homedepot/reranker/model \
        --index-dir artifacts/homedepot/finetuned/index --cpus 2 --requests 100

It starts a local Ray with ``--cpus`` CPUs, deploys through ``serve.app.run_serve`` (so placement
shrinks the default reservations to fit), sends real test queries one at a time, then from 8 and 32
concurrent clients for ``--seconds`` each, and reports p50 / p99, QPS, the share of replies the
reranker ordered and how many waited out the rerank timeout (the overload path should leave none).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.report import update_section  # noqa: E402
from common.paths import default_workdir  # noqa: E402


async def drive(url: str, texts: list[str], clients: int, seconds: float) -> dict:
    """``clients`` concurrent loops of POST /v1/recommend for ``seconds``."""
    import aiohttp

    latencies, reranked, timed_out, errors = [], 0, 0, 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        deadline = time.perf_counter() + seconds

        async def loop(i: int):
            nonlocal reranked, timed_out, errors
            j = i
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                async with session.post(url + "/v1/recommend", json={"text": texts[j % len(texts)], "k": 10}) as reply:
                    body = await reply.json()
                j += clients
                if reply.status != 200:
                    errors += 1
                    continue
                latencies.append(1000 * (time.perf_counter() - start))
                reranked += bool(body.get("reranked"))
                timed_out += "timed out" in (body.get("fallback") or "")

        await asyncio.gather(*(loop(i) for i in range(clients)))
    return {"clients": clients, "requests": len(latencies), "qps": len(latencies) / seconds,
            "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
            "reranked": reranked / max(1, len(latencies)), "timed_out": timed_out, "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = default_workdir() / "homedepot"
    parser.add_argument("--index-dir", default=str(root / "finetuned" / "index"))
    parser.add_argument("--rerank-model", default=str(root / "reranker" / "model"))
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30, help="per concurrency level above 1")
    parser.add_argument("--budget-ms", type=float, default=None, help="rerank.budget_ms (default: the served default)")
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

    given = {"index_dir": args.index_dir, "rerank.model": args.rerank_model, "port": args.port}
    if args.budget_ms is not None:
        given["rerank.budget_ms"] = args.budget_ms
    cfg = ServeConfig.from_args(given)
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
        loads = [asyncio.run(drive(url, queries, clients, args.seconds)) for clients in (8, 32)]
        start = time.perf_counter()
        batch = requests.post(url + "/v1/recommend/batch", json={"texts": queries[:32], "k": 10}, timeout=60).json()
        batch_ms = 1000 * (time.perf_counter() - start)
    finally:
        serve.shutdown()
    p50, p99 = np.percentile(latencies, 50), np.percentile(latencies, 99)
    shares = ", ".join(f"{n} {getattr(placed, n).num_cpus:g}" for n in ("encoder", "retriever", "gateway", "reranker"))
    index, model = (os.path.relpath(p) for p in (args.index_dir, args.rerank_model))  # no machine's paths in RESULTS
    body = f"""
`firstlight serve --index_dir {index} --rerank.model {model}` on a local Ray started with
{args.cpus} CPUs, no reservation given: placement sized the deployments to {shares} CPU (defaults 1, 0.5,
0.25, 1 would not fit). {len(latencies)} test queries one at a time, then 8 and 32 concurrent clients for
{args.seconds:g} s each; k=10. With the reranker's latency budget (rerank.budget_ms {placed.rerank.budget_ms:g}), what
the first stage and the reranker's queue leave no time for is answered from the first stage at once.

| clients | replies | reranked | p50 ms | p99 ms | QPS | waited out the timeout | errors |
|---|---|---|---|---|---|---|---|
| 1 | {len(latencies)} | {reranked / len(latencies):.0%} | {p50:.0f} | {p99:.0f} | {1000 / np.mean(latencies):.1f} | 0 | 0 |
""" + "".join(f"| {r['clients']} | {r['requests']} | {r['reranked']:.0%} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
              f"{r['qps']:.1f} | {r['timed_out']} | {r['errors']} |\n" for r in loads) + f"""
A full /v1/recommend/batch of 32 texts with rerank on: {batch_ms:.0f} ms, reranked: {batch.get('reranked')}
({batch.get('fallback') or 'no fallback'}).
"""
    print(body)
    key, title, command = "placed_default", "The served default as placed on a small Ray", \
        f"python benchmarks/speed/bench_placed_default.py --cpus {args.cpus}"
    if args.budget_ms is not None:  # a budget other than the default: a section of its own
        key, title, command = (f"placed_default_budget_{args.budget_ms:g}", f"{title}, rerank.budget_ms {args.budget_ms:g}",
                               f"{command} --budget-ms {args.budget_ms:g}")
    update_section(key, title, command, body,
                   {"p50_ms": p50, "p99_ms": p99, "reranked": reranked, "requests": len(latencies),
                    "placed": shares, "loads": loads, "batch_ms": batch_ms, "batch_reranked": batch.get("reranked")})


if __name__ == "__main__":
    main()
