"""How the product index scales: FAISS build time, memory, QPS and recall@100 at 54k, 1M and 10M products.

    python benchmarks/speed/bench_scale.py [--sizes 54667,1000000,10000000] [--kinds flat,ivf,ivfpq,hnsw]

54k is the real Home Depot catalogue embedded by the fine-tuned recipe model (`firstlight demo
--finetune true`), queried with the real test queries. 1M and 10M products are synthetic vectors
of the same dimension, drawn around the real ones (a real product vector plus Gaussian noise,
renormalised: cosine ~0.8 to its seed), so the clusters IVF relies on are there as in a real catalogue
(uniform random vectors would have none and flatter every approximate index into uselessness).
Recall@100 is measured against exact search over the same vectors. Vectors are generated and added
in chunks from a seeded generator, so 10M x 384 floats (15 GB) are never held twice.

HNSW is built up to --hnsw-max products (default 1M): on 2 cores its build grows to hours at 10M.
An index whose vectors would take more than --max-gb of memory (default 8; 10M x 384 float32 = 15.4 GB,
on a 24 GB machine) is not built, and its row says so. Exact top-100 lists (for recall) are computed by
streaming the vectors through a matrix product, so they need no flat index in memory.

Every row is saved to benchmarks/results/index_scale.json as it is measured, and a rerun of some
sizes or kinds keeps the other rows from the run before (each row carries its date): an hour of
measuring is not lost to one crash, and 10M can be rerun alone.

``--device cuda`` builds on the CPU, moves flat and IVF indexes to GPU 0 and searches there (section
"index_scale_gpu"; benchmarks/speed/gpu_check.py runs it at 1M).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from benchmarks.report import results_file, update_section  # noqa: E402
from common.paths import default_workdir  # noqa: E402

CHUNK = 500_000
NOISE = 0.75  # norm of the noise added to a unit seed vector


def rss_gb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def synthetic_chunks(seeds: np.ndarray, n: int):
    """(start, vectors) chunks of n unit vectors around the seeds, the same on every call."""
    dim = seeds.shape[1]
    for start in range(0, n, CHUNK):
        rng = np.random.default_rng(start)
        size = min(CHUNK, n - start)
        x = seeds[rng.integers(0, len(seeds), size)]
        x = x + rng.standard_normal((size, dim), dtype=np.float32) * np.float32(NOISE / np.sqrt(dim))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        yield start, np.ascontiguousarray(x, dtype=np.float32)


def build(kind: str, chunks, n: int, dim: int):
    """ProductIndex.build's index with its default settings, filled chunk by chunk."""
    from data_pipeline.index import IndexConfig, new_faiss_index, training_sample

    index, nlist = new_faiss_index(kind, dim, n, IndexConfig())
    if nlist:
        index.train(training_sample(next(iter(chunks()))[1], nlist))
    for _, x in chunks():
        index.add(x)
    return index, nlist


def exact_top(chunks, queries: np.ndarray, k: int) -> np.ndarray:
    """Row ids of the exact top-k per query, streamed chunk by chunk (no index held in memory)."""
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), k), dtype=np.int64)
    for start, x in chunks():
        s = queries @ x.T
        both_s = np.hstack([best_s, s])
        both_i = np.hstack([best_i, np.arange(start, start + len(x))[None, :].repeat(len(queries), 0)])
        top = np.argpartition(-both_s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(both_s, top, 1), np.take_along_axis(both_i, top, 1)
    return best_i


def bytes_per_vector(kind: str, dim: int) -> float:
    from data_pipeline.index import IndexConfig

    return {"ivfpq": IndexConfig.pq_m + 8, "hnsw": 4 * dim + 8 * 2 * IndexConfig.hnsw_m}.get(kind, 4 * dim + 8)


def measure(index, queries: np.ndarray, k: int, single: int):
    index.search(queries[:8], k)  # warm
    start = time.perf_counter()
    _, rows = index.search(queries, k)
    qps = len(queries) / (time.perf_counter() - start)
    lat = []
    for q in queries[:single]:
        t = time.perf_counter()
        index.search(q[None], k)
        lat.append(1000 * (time.perf_counter() - t))
    return rows, qps, float(np.percentile(lat, 50))


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=str(default_workdir() / "homedepot"))
    parser.add_argument("--embeddings", default=None, help="default: WORKDIR/finetuned-train/embeddings")
    parser.add_argument("--model", default=None, help="query encoder; default: WORKDIR/train/model")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--sizes", default="54667,1000000,10000000")
    parser.add_argument("--kinds", default="flat,ivf,ivfpq,hnsw")
    parser.add_argument("--hnsw-max", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--single", type=int, default=100, help="single-query searches timed for p50")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--max-gb", type=float, default=8.0, help="largest index (vectors) built, in GB")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import faiss

    from data_pipeline.prepare import load_split
    from data_pipeline.vectors import load_embeddings
    from model.encoder import TextEncoder

    root = Path(args.workdir)
    embeddings = Path(args.embeddings or root / "finetuned-train" / "embeddings")
    model = args.model or root / "train" / "model"
    if not (embeddings / "manifest.json").exists():
        sys.exit(f"no embeddings in {embeddings}; run `firstlight demo --finetune true` first")
    gpu = args.device == "cuda"
    if gpu and faiss.get_num_gpus() == 0:
        sys.exit("faiss sees no GPU: install firstlight[gpu] on a CUDA machine")
    resources = faiss.StandardGpuResources() if gpu else None
    _, seeds = load_embeddings(embeddings / "vectors")
    seeds = np.ascontiguousarray(seeds, dtype=np.float32)
    queries = sorted(set(load_split(root / "data", "test")["query"]))[: args.queries]
    q = TextEncoder.load(str(model), backend="fp32", device="cpu").encode(queries, role="query")
    dim = seeds.shape[1]
    threads = faiss.omp_get_max_threads()
    where = f"GPU 0 ({torch_gpu_name()})" if gpu else f"{threads} CPU threads"
    saved = None if gpu else results_file().parent / "results" / "index_scale.json"
    raw = [] if saved is None or not saved.exists() else json.loads(saved.read_text())
    sizes, kinds = [int(s) for s in args.sizes.split(",")], args.kinds.split(",")
    raw = [r for r in raw if not (r["n"] in sizes and r["kind"] in kinds)]  # rows remeasured now are replaced
    for n in sizes:
        def chunks(n=n):
            if n == len(seeds):
                yield 0, seeds
            else:
                yield from synthetic_chunks(seeds, n)
        exact = exact_top(chunks, q, args.k)
        for kind in kinds:
            gb = n * bytes_per_vector(kind, dim) / 1e9
            skip = (f"not built: hnsw past --hnsw-max {args.hnsw_max:,} (hours on 2 cores)" if kind == "hnsw"
                    and n > args.hnsw_max else f"not built: ~{gb:.1f} GB > --max-gb {args.max_gb:g}"
                    if gb > args.max_gb else None)
            if skip:
                raw.append({"n": n, "kind": kind, "skipped": skip, "date": time.strftime("%Y-%m-%d")})
                save(saved, raw)
                continue
            base = rss_gb()
            start = time.perf_counter()
            index, nlist = build(kind, chunks, n, dim)
            single = args.single if n <= 1_000_000 else max(5, args.single // 5)  # a flat 10M scan: ~1 s each
            if gpu and kind in ("flat", "ivf"):
                index = faiss.index_cpu_to_gpu(resources, 0, index)
            build_s = time.perf_counter() - start
            memory = rss_gb() - base
            found, qps, p50 = measure(index, q, args.k, single)
            recall = float(np.mean([len(set(a) & set(e)) / args.k for a, e in zip(found, exact)]))
            raw.append({"n": n, "kind": kind, "build_s": build_s, "memory_gb": memory, "qps": qps,
                        "p50_ms": p50, "recall@100": recall, "nlist": nlist, "date": time.strftime("%Y-%m-%d")})
            save(saved, raw)
            print(row(raw[-1]), flush=True)
            del index
    raw.sort(key=lambda r: (r["n"], ("flat", "ivf", "ivfpq", "hnsw").index(r["kind"])))
    rows = [row(r) for r in raw]
    body = (f"{len(q)} real Home Depot test queries (fine-tuned all-MiniLM-L6-v2, {dim} dimensions), top {args.k}; "
            f"FAISS on {where} (built on the CPU). 54,667 = the real catalogue; larger sizes are synthetic vectors "
            "around the real ones (benchmarks/speed/bench_scale.py says how). QPS: all queries in one batch; p50: one "
            "query at a time. Memory: the process's resident growth while the index was built. Recall@100: "
            "overlap with exact search's top 100. (auto) marks the kind `firstlight index` picks by default.\n\n"
            "| products | index | build s | memory GB | QPS (batched) | p50 ms (one query) | recall@100 | settings |\n"
            "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    save(saved, raw)
    name, title = ("index_scale_gpu", "Index scale on a GPU") if gpu else ("index_scale", "Index scale: 54k to 10M products")
    update_section(name, title, "python benchmarks/speed/bench_scale.py " + " ".join(sys.argv[1:] if argv is None else argv),
                   body, raw)
    return raw


def row(r: dict) -> str:
    from data_pipeline.index import resolved_kind

    pick = " (auto)" if resolved_kind("auto", r["n"]) == r["kind"] else ""
    if "skipped" in r:
        return f"| {r['n']:,} | {r['kind']}{pick} | {r['skipped']} | | | | | |"
    detail = (f"nlist {r['nlist']}, nprobe 32" if r["nlist"] else
              "M 32, efSearch 128" if r["kind"] == "hnsw" else "exact")
    return (f"| {r['n']:,} | {r['kind']}{pick} | {r['build_s']:.1f} | {r['memory_gb']:.2f} | {r['qps']:.0f} | "
            f"{r['p50_ms']:.2f} | {r['recall@100']:.3f} | {detail} ({r['date']}) |")


def save(path, raw: list[dict]) -> None:
    if path is not None:
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(raw, indent=1) + "\n")


def torch_gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CUDA"


if __name__ == "__main__":
    main()
