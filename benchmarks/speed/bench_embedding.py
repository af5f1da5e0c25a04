"""Catalogue embedding throughput: FirstLight's Ray Data pipeline vs SentenceTransformer.encode.

Both embed the same Home Depot titles with the same model, max length and thread count; the ratio
is taken within one run. Usage:

    python benchmarks/speed/bench_embedding.py [--titles 10000] [--max-length 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks.report import update_section  # noqa: E402
from common.paths import default_homedepot_dir  # noqa: E402
from data_pipeline.embed import Actors, EmbedConfig  # noqa: E402
from model.runtime import EncoderRuntime  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--titles", type=int, default=10000)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=EmbedConfig.batch_size)
    parser.add_argument("--data-dir", default=str(default_homedepot_dir()))
    parser.add_argument("--model", default=None, help="encoder folder; default all-MiniLM-L6-v2")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: sentence-transformers and one encoder actor on GPU 0 (section embedding_gpu)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import ray
    import torch
    from sentence_transformers import SentenceTransformer

    from common.hardware import cpu_bf16_units
    from common.runtime import ensure_ray
    from common.text import normalize_text
    from data_pipeline.embed import embed_dataset
    from model.backends import resolve_backend
    from model.encoder import TextEncoder
    from model.folders import DEFAULT_MODEL, resolve_model_path

    titles = pd.read_csv(Path(args.data_dir) / "products.csv")["product_title"].head(args.titles)
    titles = [normalize_text(t) for t in titles]
    threads = os.cpu_count()
    where = (f"GPU 0 ({torch.cuda.get_device_name(0)})" if args.device == "cuda" and torch.cuda.is_available() else
             f"{threads} CPU threads (bf16 units: {', '.join(cpu_bf16_units()) or 'none'})")

    # 1. sentence-transformers in this process: the reference.
    torch.set_num_threads(threads)
    gpu = args.device == "cuda"
    if gpu and not torch.cuda.is_available():
        sys.exit("no CUDA GPU visible (--device cpu measures the CPU path)")
    model = resolve_model_path(args.model or DEFAULT_MODEL)
    st = SentenceTransformer(model, device=args.device)
    st.max_seq_length = args.max_length
    st.encode(titles[:256], batch_size=64)  # warm-up
    start = time.perf_counter()
    reference = st.encode(titles, batch_size=64, normalize_embeddings=True)
    st_seconds = time.perf_counter() - start

    # 2. FirstLight: Ray Data over an encoder actor pool (actor start-up included), the default
    #    backend; then the same with 1, 2 and 4 actors sharing this node's CPUs.
    # the int8 backend's one-off export (cached for every later run, like a model download) is not timed
    start = time.perf_counter()
    single = TextEncoder.load(model, max_length=args.max_length, backend="auto", device=args.device)
    export_seconds = time.perf_counter() - start
    # the default backend in this one process, no Ray: what the pipeline's overhead is measured against
    start = time.perf_counter()
    single.encode(titles, batch_size=64, role="passage")
    single_seconds = time.perf_counter() - start
    del single
    ray_was_up = ray.is_initialized()  # a caller's Ray (a test session) is left running
    ensure_ray(num_cpus=threads)
    ds = ray.data.from_pandas(pd.DataFrame({"product_id": [str(i) for i in range(len(titles))], "text": titles}))
    ds = ds.repartition(target_num_rows_per_block=args.batch_size).materialize()

    def run(actors: int, backend: str = "auto"):
        cfg = EmbedConfig(model=model, batch_size=args.batch_size,
                          actors=Actors(count=actors, cpus=min(1.0, (threads - 1) / actors), gpus=1.0 if gpu else 0.0),
                          runtime=EncoderRuntime(product_max_length=args.max_length, backend=backend))
        start = time.perf_counter()
        out = embed_dataset(ds, cfg).to_pandas()
        seconds = time.perf_counter() - start
        return seconds, np.stack(out.sort_values("product_id", key=lambda s: s.astype(int))["embedding"].to_numpy())

    ray_seconds, vectors = run(1)
    cosine = (vectors * reference).sum(axis=1)
    fp32_seconds, fp32_vectors = run(1, "fp32")
    max_diff = float(np.abs(fp32_vectors - reference).max())
    actor_rows, actor_raw = [], {}
    for actors in ((1,) if gpu else (1, 2, 4)):  # one GPU: one actor
        seconds = ray_seconds if actors == 1 else run(actors)[0]
        actor_raw[actors] = len(titles) / seconds
        actor_rows.append(f"| {actors} | {max(1, threads // actors)} | {seconds:.1f} | {len(titles) / seconds:.0f} |")

    backend = resolve_backend("auto", torch.device(args.device))
    st_rate, ray_rate, fp32_rate = len(titles) / st_seconds, len(titles) / ray_seconds, len(titles) / fp32_seconds
    body = f"""
{len(titles):,} Home Depot titles, {Path(model).name}, max length {args.max_length}, {where}, all in one run.

| path | seconds | titles/s |
|---|---|---|
| `SentenceTransformer.encode` (one process, batch 64, fp32) | {st_seconds:.1f} | {st_rate:.0f} |
| FirstLight's encoder, default backend, in one process (no Ray; model already loaded) | {single_seconds:.1f} | {len(titles) / single_seconds:.0f} |
| FirstLight Ray Data pipeline, fp32 backend (1 actor, batch {args.batch_size}, start-up included) | {fp32_seconds:.1f} | {fp32_rate:.0f} |
| FirstLight Ray Data pipeline, default backend (`auto` = {backend} here) | {ray_seconds:.1f} | {ray_rate:.0f} |
| **ratio FirstLight default / sentence-transformers** | | **{ray_rate / st_rate:.2f}** |

The model was loaded once at the default backend before timing ({export_seconds:.1f} s, which includes the
one-off int8 export and quantisation when its cache was empty; every later load reuses the file).

Vectors: fp32 pipeline vs sentence-transformers, largest absolute difference {max_diff:.1e}; default
backend vs sentence-transformers, cosine min {cosine.min():.5f}, mean {cosine.mean():.5f}.

Actors (default backend): what more workers buy on this {threads}-core node (each actor gets
{threads}/actors torch threads; on a cluster each node adds its own actors).

| actors | torch threads each | seconds | titles/s |
|---|---|---|---|
{chr(10).join(actor_rows)}
"""
    name, title = ("embedding_gpu", "Catalogue embedding throughput on a GPU") if gpu else \
        ("embedding", "Catalogue embedding throughput")
    update_section(name, title, "python benchmarks/speed/bench_embedding.py " + " ".join(sys.argv[1:] if argv is None else argv),
                   body,
                   {"titles": len(titles), "st_seconds": st_seconds, "ray_seconds": ray_seconds,
                    "st_titles_per_s": st_rate, "ray_titles_per_s": ray_rate, "ratio": ray_rate / st_rate,
                    "single_process_titles_per_s": len(titles) / single_seconds,
                    "fp32_titles_per_s": fp32_rate, "backend": backend, "min_cosine": float(cosine.min()),
                    "max_abs_diff_fp32": max_diff, "actors": actor_raw})
    if not ray_was_up:
        ray.shutdown()
    return {"ratio": ray_rate / st_rate, "titles_per_s": ray_rate, "st_titles_per_s": st_rate, "table": body}


if __name__ == "__main__":
    main()
