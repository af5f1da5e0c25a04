"""Catalogue embedding throughput: FirstLight's Ray Data pipeline vs SentenceTransformer.encode.

Both embed the same Home Depot titles with the same model, max length and thread count; the ratio
is taken within one run. Usage:

    python benchmarks/bench_embedding.py [--titles 10000] [--max-length 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks.report import update_section  # noqa: E402
from common.paths import default_homedepot_dir  # noqa: E402
from data_pipeline.embed import EmbedConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--titles", type=int, default=10000)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=EmbedConfig.batch_size)
    parser.add_argument("--data-dir", default=str(default_homedepot_dir()))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import ray
    import torch
    from sentence_transformers import SentenceTransformer

    from common.runtime import ensure_ray
    from common.text import normalize_text
    from data_pipeline.embed import embed_dataset
    from model.folders import DEFAULT_MODEL, resolve_model_path

    titles = pd.read_csv(Path(args.data_dir) / "products.csv")["product_title"].head(args.titles)
    titles = [normalize_text(t) for t in titles]
    threads = os.cpu_count()

    # 1. sentence-transformers in this process: the reference.
    torch.set_num_threads(threads)
    st = SentenceTransformer(resolve_model_path(DEFAULT_MODEL), device="cpu")
    st.max_seq_length = args.max_length
    st.encode(titles[:256], batch_size=64)  # warm-up
    start = time.perf_counter()
    reference = st.encode(titles, batch_size=64, normalize_embeddings=True)
    st_seconds = time.perf_counter() - start

    # 2. FirstLight: Ray Data over an encoder actor pool (actor start-up included).
    ensure_ray(num_cpus=threads)
    ds = ray.data.from_pandas(pd.DataFrame({"product_id": [str(i) for i in range(len(titles))], "text": titles}))
    ds = ds.repartition(target_num_rows_per_block=args.batch_size * 2).materialize()
    cfg = EmbedConfig(max_length=args.max_length, batch_size=args.batch_size, actors=1, cpus_per_actor=1)
    start = time.perf_counter()
    out = embed_dataset(ds, cfg).to_pandas()
    ray_seconds = time.perf_counter() - start
    vectors = np.stack(out.sort_values("product_id", key=lambda s: s.astype(int))["embedding"].to_numpy())
    max_diff = float(np.abs(vectors - reference).max())

    st_rate, ray_rate = len(titles) / st_seconds, len(titles) / ray_seconds
    body = f"""
{len(titles):,} Home Depot titles, all-MiniLM-L6-v2, max length {args.max_length}, {threads} torch threads in both.

| path | seconds | titles/s |
|---|---|---|
| `SentenceTransformer.encode` (one process, batch 64) | {st_seconds:.1f} | {st_rate:.0f} |
| FirstLight Ray Data pipeline (1 actor, batch {args.batch_size}, actor start-up included) | {ray_seconds:.1f} | {ray_rate:.0f} |
| **ratio FirstLight / sentence-transformers** | | **{ray_rate / st_rate:.2f}** |

Largest absolute difference between the two sets of vectors: {max_diff:.1e}.
"""
    update_section("embedding", "Catalogue embedding throughput", "python benchmarks/bench_embedding.py", body,
                   {"titles": len(titles), "st_seconds": st_seconds, "ray_seconds": ray_seconds,
                    "st_titles_per_s": st_rate, "ray_titles_per_s": ray_rate, "ratio": ray_rate / st_rate,
                    "max_abs_diff": max_diff})
    ray.shutdown()


if __name__ == "__main__":
    main()
