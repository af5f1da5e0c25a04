"""Filtered requests through HTTP: p50 / p99 at 1 and 32 clients, unfiltered and with a filter
keeping 50%, 5%, 0.5% and 0.05% of the catalogue.

The catalogue is Home Depot's, prepared again with one extra, **synthetic** attribute
(``synthetic_share``: a seeded uniform number per product) so that a filter ``synthetic_share < s``
keeps exactly the share ``s``; the titles, texts, ids and split are the same as the demo's, so the
demo's index serves it. The server is `firstlight serve` on a local Ray of ``--cpus`` CPUs, placed
as it places itself, with the hybrid first stage (and the reranker when ``--rerank-model`` is given).

    python benchmarks/speed/bench_filtered_serve.py                       # after `firstlight demo`
    python benchmarks/speed/bench_filtered_serve.py --rerank-model artifacts/homedepot/reranker/model \\
        --index-dir artifacts/homedepot/finetuned/index
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.report import update_section  # noqa: E402
from benchmarks.speed.bench_serve import drive, wait_ready  # noqa: E402
from common.paths import default_homedepot_dir, default_workdir  # noqa: E402

SHARES = (None, 0.5, 0.05, 0.005, 0.0005)


def synthetic_catalogue(workdir: Path, data_dir: Path) -> Path:
    """Home Depot prepared with the synthetic attribute (reused when already there)."""
    from data_pipeline.prepare import PrepareConfig, run_prepare

    folder = workdir / "filtered_bench"
    folder.mkdir(parents=True, exist_ok=True)
    products = pd.read_csv(data_dir / "products.csv", dtype=str, keep_default_na=False)
    products["synthetic_share"] = np.random.default_rng(7).random(len(products))
    products.to_csv(folder / "products.csv", index=False)
    return run_prepare(PrepareConfig(
        dataset="files", catalogue=str(folder / "products.csv"), judgments=str(data_dir / "judgments.csv"),
        product_id_column="product_uid", title_column="product_title", query_column="search_term",
        attributes=["synthetic_share:number"], brand_from_title=True, output_dir=str(folder / "data")))


def kept(share: float | None) -> str:
    return "no filter" if share is None else f"{share:.2%}"


def filter_of(share: float | None) -> dict:
    return {} if share is None else {"filter": {"field": "synthetic_share", "range": {"lt": share}}}


def body(text: str, share: float | None) -> dict:
    return {"text": text, "k": 10, **filter_of(share)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = default_workdir() / "homedepot"
    parser.add_argument("--index-dir", default=str(root / "index"))
    parser.add_argument("--rerank-model", default=None)
    parser.add_argument("--data-dir", default=str(default_homedepot_dir()))
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--requests", type=int, default=100, help="sequential requests per filter at 1 client")
    parser.add_argument("--seconds", type=float, default=20, help="per filter at 32 clients")
    parser.add_argument("--port", type=int, default=8125)
    args = parser.parse_args()

    import requests

    from common.runtime import ensure_ray, setup_logging
    from data_pipeline.prepare import load_split
    from serve.app import run_serve
    from serve.config import ServeConfig

    setup_logging()
    ensure_ray(num_cpus=args.cpus)
    from ray import serve

    prepared = synthetic_catalogue(root, Path(args.data_dir))
    given = {"index_dir": args.index_dir, "prepared_dir": str(prepared), "port": args.port}
    if args.rerank_model:
        given["rerank.model"] = args.rerank_model
    cfg = ServeConfig.from_args(given)
    url = run_serve(cfg, blocking=False)
    rows = []
    try:
        wait_ready(url, 600, "/readyz")
        texts = load_split(prepared, "test")["query"].drop_duplicates().tolist()
        for q in texts[:5]:
            requests.post(url + "/v1/recommend", json=body(q, 0.05), timeout=60)
        for share in SHARES:
            latencies = []
            for q in texts[5:5 + args.requests]:
                start = time.perf_counter()
                reply = requests.post(url + "/v1/recommend", json=body(q, share), timeout=60)
                latencies.append(1000 * (time.perf_counter() - start))
                assert reply.status_code == 200 and len(reply.json()["items"]) == 10, reply.text
            loaded = asyncio.run(drive(url, texts, 32, args.seconds, filter_of(share), min_items=10))
            rows.append({"share": share, "p50_1": float(np.percentile(latencies, 50)),
                         "p99_1": float(np.percentile(latencies, 99)), **{f"{k}_32": v for k, v in loaded.items()}})
            print(rows[-1], flush=True)
    finally:
        serve.shutdown()
    base = rows[0]
    index = os.path.relpath(args.index_dir)
    text = f"""
`firstlight serve --index_dir {index}{' --rerank.model ' + os.path.relpath(args.rerank_model) if args.rerank_model
else ''}` over Home Depot prepared with a **synthetic** attribute (`synthetic_share`, seeded uniform), on
a local Ray of {args.cpus} CPUs; {'hybrid first stage + reranker' if args.rerank_model else 'hybrid first stage, no reranker'};
k=10. The filter is `{{"field": "synthetic_share", "range": {{"lt": s}}}}`. {args.requests} test queries one at a
time per filter, then 32 concurrent clients for {args.seconds:g} s; every filtered reply held 10 products.

| filter keeps | p50 ms, 1 client | × unfiltered | p99 ms, 1 client | p50 ms, 32 clients | × unfiltered | p99 ms, 32 clients | QPS, 32 clients |
|---|---|---|---|---|---|---|---|
""" + "".join(
        f"| {kept(r['share'])} | {r['p50_1']:.1f} | "
        f"{r['p50_1'] / base['p50_1']:.2f} | {r['p99_1']:.1f} | {r['p50_ms_32']:.1f} | "
        f"{r['p50_ms_32'] / base['p50_ms_32']:.2f} | {r['p99_ms_32']:.1f} | {r['qps_32']:.1f} |\n" for r in rows)
    print(text)
    update_section("filtered_serve", "Filtered requests through HTTP", "python benchmarks/speed/bench_filtered_serve.py"
                   + (" --rerank-model ..." if args.rerank_model else ""), text, {"rows": rows})


if __name__ == "__main__":
    main()
