"""Filtered search: recall@100 and time of FAISS search within a filter, planned and unplanned.

For each catalogue size (the real 54,667 Home Depot products; 1M synthetic vectors around them, as in
bench_scale.py), each index kind (flat, ivf, hnsw, with FirstLight's default settings) and each
filter selectivity (50%, 5%, 0.5%, 0.05% of the products), it compares against the *exact filtered
ranking* (every allowed product scored by brute force, the same inner products):

- ``planned``: ``ProductIndex.search_within`` as the server calls it (exact scan, or filtered ANN
  with widened breadth and an exact fallback, by selectivity);
- ``unplanned``: the index's own filtered search with its configured nprobe / efSearch, no switch and
  no fallback (what a plain FAISS ``IDSelector`` gives).

The filters are on a **synthetic** attribute: each product gets a seeded uniform number and the
filter keeps those below the selectivity, so the share is exact and independent of the query (a
real filter such as a brand correlates with the query, which makes filtered ANN's job easier). The
queries are the Home Depot test split's, encoded with the index's model.

    python -m benchmarks.speed.bench_filters              # 54k and 1M, about 15 minutes on 2 cores
    python -m benchmarks.speed.bench_filters --sizes 54667 --queries 50   # a quick look
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.report import update_section
from benchmarks.speed.bench_scale import synthetic_chunks
from common.paths import default_workdir
from data_pipeline.index import IndexConfig, ProductIndex
from data_pipeline.prepare import load_split
from data_pipeline.vectors import load_embeddings
from ranking.filters import AttributeTable, parse_filter
from ranking.hybrid import FirstStage

SHARES = (0.5, 0.05, 0.005, 0.0005)
K = 100
RESULTS_JSON = Path(__file__).resolve().parents[1] / "results" / "filters.json"


def exact_filtered(vectors: np.ndarray, allowed: np.ndarray, queries: np.ndarray, k: int) -> list[set]:
    rows = np.flatnonzero(allowed)
    kept = vectors[rows] if len(rows) < len(vectors) else vectors
    out = []
    for start in range(0, len(queries), 16):
        scores = queries[start:start + 16] @ kept.T
        top = np.argpartition(-scores, min(k, len(rows)) - 1, axis=1)[:, :k] if len(rows) > k else \
            np.tile(np.arange(len(rows)), (len(scores), 1))
        out += [set(rows[t].tolist()) for t in top]
    return out


def recall(index: ProductIndex, got_ids: np.ndarray, truth: list[set]) -> float:
    rows = {pid: i for i, pid in enumerate(index.ids)}
    values = []
    for row, want in zip(got_ids, truth):
        found = {rows[p] for p in row if p is not None}
        values.append(len(found & want) / max(1, len(want)))
    return float(np.mean(values))


def timed(fn, queries: np.ndarray, single: int) -> float:
    """Median milliseconds of one query at a time (what a served request asks)."""
    times = []
    for q in queries[:single]:
        start = time.perf_counter()
        fn(q[None, :])
        times.append(1000 * (time.perf_counter() - start))
    return float(np.median(times))


def query_vectors(workdir: Path, model: str, count: int) -> np.ndarray:
    from model.encoder import TextEncoder

    test = load_split(workdir / "data", "test")
    queries = sorted(test["query"].unique())
    queries = [queries[i] for i in np.random.default_rng(0).choice(len(queries), min(count, len(queries)),
                                                                     replace=False)]
    return TextEncoder.load(model).encode(queries, batch_size=64)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=str(default_workdir() / "homedepot"))
    parser.add_argument("--sizes", default="54667,1000000")
    parser.add_argument("--kinds", default="flat,ivf,hnsw")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--single", type=int, default=50, help="queries timed one at a time")
    parser.add_argument("--exact-below", type=float, default=FirstStage().exact_filter_below)
    parser.add_argument("--widen", type=float, default=FirstStage().filter_widen)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    ids, seeds = load_embeddings(workdir / "embeddings" / "vectors")
    manifest = json.loads((workdir / "embeddings" / "manifest.json").read_text())
    queries = query_vectors(workdir, manifest.get("model", "all-MiniLM-L6-v2"), args.queries)
    raw = []
    for n in [int(s) for s in args.sizes.split(",")]:
        if n <= len(seeds):
            vectors, names = seeds[:n], ids[:n]
        else:
            vectors = np.empty((n, seeds.shape[1]), dtype=np.float32)
            for start, chunk in synthetic_chunks(seeds, n):
                vectors[start:start + len(chunk)] = chunk
            names = [f"s{i}" for i in range(n)]
        share_of = np.random.default_rng(7).random(n)  # the synthetic attribute
        table = AttributeTable({"synthetic_share": "number"}, pd.DataFrame({"synthetic_share": share_of}))
        masks = {s: table.mask(parse_filter({"field": "synthetic_share", "range": {"lt": s}},
                                            {"synthetic_share": "number"})) for s in SHARES}
        truths = {s: exact_filtered(vectors, masks[s], queries, K) for s in SHARES}
        for kind in args.kinds.split(","):
            start = time.perf_counter()
            index = ProductIndex.build(names, vectors, IndexConfig(kind=kind, use_gpu="no"))
            built = time.perf_counter() - start
            unfiltered_ms = timed(lambda q: index.search(q, K), queries, args.single)
            _, plain_ids = index.search(queries, K)
            everything = exact_filtered(vectors, np.ones(n, dtype=bool), queries, K)
            base = {"n": n, "kind": kind, "build_s": round(built, 1), "queries": len(queries),
                    "unfiltered_recall": round(recall(index, plain_ids, everything), 4),
                    "unfiltered_ms": round(unfiltered_ms, 2), "date": time.strftime("%Y-%m-%d")}
            for share in SHARES:
                allowed = masks[share]
                row = {**base, "share": share, "allowed": int(allowed.sum())}
                for plan in ("auto", "unplanned"):
                    _, got, taken = index.search_within(queries, K, allowed, args.exact_below, plan, args.widen)
                    name = "planned" if plan == "auto" else "unplanned"
                    row[f"{name}_recall"] = round(recall(index, got, truths[share]), 4)
                    row[f"{name}_ms"] = round(timed(lambda q, plan=plan: index.search_within(
                        q, K, allowed, args.exact_below, plan, args.widen), queries, args.single), 2)
                    row[f"{name}_path"] = taken
                raw.append(row)
                print(json.dumps(row), flush=True)
    if not args.no_write:
        RESULTS_JSON.write_text(json.dumps(raw, indent=1))
        update_section("filters", "Filtered search: recall and time by selectivity", "python -m "
                       "benchmarks.speed.bench_filters", markdown(raw))
    return raw


def markdown(raw: list[dict]) -> str:
    lines = ["Recall@100 against the exact filtered ranking (brute force over the allowed products, same "
             "scores), and the median time of one query (FAISS only, 2 cores). The filter keeps a share of "
             "the products by a **synthetic** seeded attribute. *planned* is what FirstLight runs "
             f"(`ProductIndex.search_within`: exact scan at or below {FirstStage().exact_filter_below:.0%} of the "
             f"catalogue; above it filtered ANN with nprobe / efSearch x {FirstStage().filter_widen:g} / share and "
             "an exact fallback for a short answer); *unplanned* is the "
             "index's own filtered search at its configured breadth (a plain FAISS IDSelector). Unfiltered: "
             "the index's recall@100 and time without a filter.", "",
             "| products | index | unfiltered recall / ms | filter keeps | planned recall | planned ms | path | "
             "unplanned recall | unplanned ms |", "|---|---|---|---|---|---|---|---|---|"]
    for r in raw:
        lines.append(f"| {r['n']:,} | {r['kind']} | {r['unfiltered_recall']:.3f} / {r['unfiltered_ms']:.2f} | "
                     f"{r['share']:.2%} ({r['allowed']:,}) | {r['planned_recall']:.3f} | {r['planned_ms']:.2f} | "
                     f"{r['planned_path']} | {r['unplanned_recall']:.3f} | {r['unplanned_ms']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
