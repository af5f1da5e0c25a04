"""Inference backends (fp32, bf16, int8): quality kept and speed bought, for both models.

    python benchmarks/speed/bench_backends.py --part quality   # Home Depot test split, each backend end to end
    python benchmarks/speed/bench_backends.py --part speed     # titles/s, query latency, rerank ms per query

Quality: for each backend the whole path runs at that backend, as a shop would run it: the
catalogue embedded (`firstlight embed --backend B`), indexed, the test queries encoded and the top
10 of the hybrid first stage reranked (`firstlight evaluate --backend B`). The encoder is the
fine-tuned recipe model, the reranker the trained cross-encoder (artifacts of `firstlight demo
--finetune true` and `firstlight train-reranker`). A backend may be a default only if every figure
is within 0.003 of fp32.

Speed: one process, the CPU threads this machine has; the same 10,000 titles for every backend.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.report import update_section  # noqa: E402
from common.paths import default_homedepot_dir, default_workdir  # noqa: E402
from model.runtime import EncoderRuntime  # noqa: E402
from ranking.rerank import RerankStage  # noqa: E402

BACKENDS = ("fp32", "bf16", "int8")
METRICS = ("ndcg@10", "recall@100")
TOLERANCE = 0.003


def models(workdir: Path) -> tuple[str, str]:
    root = workdir / "homedepot"
    encoder, reranker = root / "train" / "model", root / "reranker" / "model"
    for path, how in ((encoder, "firstlight demo --finetune true"), (reranker, "firstlight train-reranker")):
        if not (path / "config.json").exists():
            raise SystemExit(f"{path} is missing: build it first ({how}; docs/speed.md)")
    return str(encoder), str(reranker)


def quality_part(workdir: Path) -> tuple[str, dict]:
    from common.runtime import ensure_ray, setup_logging
    from data_pipeline.embed import EmbedConfig, run_embed
    from data_pipeline.index import IndexConfig, run_index
    from evaluation.evaluate import EvalConfig, run_evaluate

    setup_logging()
    ensure_ray()
    encoder, reranker = models(workdir)
    root = workdir / "homedepot"
    out = root / "backends"
    raw = {}
    for backend in BACKENDS:
        start = time.perf_counter()
        embeddings = run_embed(EmbedConfig(prepared_dir=str(root / "data"), output_dir=str(out / f"embeddings_{backend}"),
                                           model=encoder, runtime=EncoderRuntime(backend=backend)))
        embed_s = time.perf_counter() - start
        index = run_index(IndexConfig(embeddings_dir=str(embeddings), output_dir=str(out / f"index_{backend}")))
        result = run_evaluate(EvalConfig(prepared_dir=str(root / "data"), index_dir=str(index),
                                         embeddings_dir=str(embeddings), systems=("dense", "fusion", "rerank"),
                                         rerank=RerankStage(model=reranker), runtime=EncoderRuntime(backend=backend),
                                         output=str(root / "eval" / f"backend_{backend}.json")), show_table=False)
        raw[backend] = {s: {m: result["systems"][s]["mean"][m] for m in METRICS} for s in ("dense", "fusion", "rerank")}
        raw[backend]["embed_s"] = embed_s
        queries = result["queries"]
        print(backend, json.dumps(raw[backend]), flush=True)
    rows, worst = [], {}
    for backend in BACKENDS:
        cells = []
        for system in ("dense", "fusion", "rerank"):
            for m in METRICS:
                value, delta = raw[backend][system][m], raw[backend][system][m] - raw["fp32"][system][m]
                worst[backend] = max(worst.get(backend, 0.0), abs(delta))
                cells.append(f"{value:.3f}" + ("" if backend == "fp32" else f" ({delta:+.3f})"))
        verdict = "reference" if backend == "fp32" else ("kept" if worst[backend] <= TOLERANCE else "**lost**")
        rows.append(f"| {backend} | " + " | ".join(cells) + f" | {worst[backend]:.4f} | {verdict} |")
    raw["worst_delta"] = worst
    body = (f"Home Depot test split ({queries} unseen queries, crowd labels). Each backend runs the whole path: "
            "catalogue embedded, queries encoded, hybrid top 10 reranked. In brackets: the change from fp32. "
            f"A backend keeps quality when no figure moves more than {TOLERANCE}.\n\n"
            "| backend | encoder nDCG@10 | encoder R@100 | hybrid nDCG@10 | hybrid R@100 | reranked nDCG@10 | "
            "reranked R@100 | largest change | quality |\n|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    return body, raw


def speed_part(workdir: Path, n_titles: int) -> tuple[str, dict]:
    import os

    import numpy as np
    import pandas as pd
    import torch

    from common.hardware import cpu_bf16_units
    from common.text import normalize_text
    from model.encoder import TextEncoder
    from model.reranker import Reranker

    encoder_dir, reranker_dir = models(workdir)
    torch.set_num_threads(os.cpu_count())
    catalogue = pd.read_csv(default_homedepot_dir() / "products.csv")
    titles = [normalize_text(t) for t in catalogue["product_title"].head(n_titles)]
    judgments = pd.read_csv(default_homedepot_dir() / "judgments.csv")
    queries = judgments["search_term"].drop_duplicates().head(200).tolist()
    raw, rows = {}, []
    for backend in BACKENDS:
        enc = TextEncoder.load(encoder_dir, backend=backend, device="cpu")
        enc.encode(titles[:256], role="passage")
        start = time.perf_counter()
        enc.encode(titles, role="passage")
        rate = len(titles) / (time.perf_counter() - start)
        latencies = []
        for q in queries:
            t = time.perf_counter()
            enc.encode([q], role="query")
            latencies.append(1000 * (time.perf_counter() - t))
        rr = Reranker.load(reranker_dir, backend=backend, device="cpu")
        rerank_ms = []
        for i, q in enumerate(queries[:100]):
            texts = titles[i * 10:(i + 1) * 10]
            t = time.perf_counter()
            rr.score(q, texts)
            rerank_ms.append(1000 * (time.perf_counter() - t))
        raw[backend] = {"titles_per_s": rate, "query_p50_ms": float(np.percentile(latencies, 50)),
                        "rerank10_p50_ms": float(np.percentile(rerank_ms[5:], 50)),
                        "rerank10_p95_ms": float(np.percentile(rerank_ms[5:], 95))}
        print(backend, raw[backend], flush=True)
    for backend in BACKENDS:
        r = raw[backend]
        rows.append(f"| {backend} | {r['titles_per_s']:.0f} | {r['titles_per_s'] / raw['fp32']['titles_per_s']:.2f}x | "
                    f"{r['query_p50_ms']:.1f} | {r['rerank10_p50_ms']:.1f} | {r['rerank10_p95_ms']:.1f} |")
    units = ", ".join(cpu_bf16_units()) or "none"
    body = (f"One process, {os.cpu_count()} CPU threads (bf16 units: {units}); fine-tuned all-MiniLM-L6-v2 on "
            f"{len(titles):,} Home Depot titles (max length 64); the cross-encoder (MiniLM-L6, max length 128) "
            "scoring one query against 10 titles, the default rerank depth.\n\n"
            "| backend | titles/s | vs fp32 | query p50 ms | rerank of 10, p50 ms | p95 ms |\n|---|---|---|---|---|---|\n"
            + "\n".join(rows))
    return body, raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("quality", "speed"), required=True)
    parser.add_argument("--workdir", default=str(default_workdir()))
    parser.add_argument("--titles", type=int, default=10000)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    if args.part == "quality":
        body, raw = quality_part(workdir)
    else:
        body, raw = speed_part(workdir, args.titles)
    titles = {"quality": "Inference backends: quality on the test split",
              "speed": "Inference backends: speed on 2 cores"}
    update_section(f"backends_{args.part}", titles[args.part],
                   f"python benchmarks/speed/bench_backends.py --part {args.part}", body, raw)
    print(body)


if __name__ == "__main__":
    main()
