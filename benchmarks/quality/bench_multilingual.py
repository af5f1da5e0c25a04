"""Chinese and multilingual shoppers: what the CJK lexical side and multilingual-e5-small do on the
Chinese demo catalogue, and what choosing the multilingual encoder costs on Home Depot's English.

    python benchmarks/quality/bench_multilingual.py --part zh      # zh-demo: BM25-CJK, encoders, fusion
    python benchmarks/quality/bench_multilingual.py --part speed   # encode speed, MiniLM vs e5, 2 cores
    python benchmarks/quality/bench_multilingual.py --part english # Home Depot test split, zero-shot + fine-tuned

The zh part ranks all 40 zh-demo queries (nothing is trained on them). The English part evaluates
indexes built beforehand: MiniLM's zero-shot and fine-tuned ones (`firstlight demo --finetune true`)
and e5's (`firstlight embed/index/train` with `--model models/multilingual-e5-small`, the recipe
unchanged; the commands are in docs/multilingual.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.report import need_bench_extra, update_section  # noqa: E402
from common.paths import default_homedepot_dir, default_workdir  # noqa: E402

METRICS = ("ndcg@10", "recall@100", "mrr@10")


def zh_part(workdir: Path) -> str:
    import bm25s
    import pandas as pd
    import Stemmer

    from common.runtime import ensure_ray, setup_logging
    from data_pipeline.embed import EmbedConfig, run_embed
    from data_pipeline.index import IndexConfig, run_index
    from data_pipeline.prepare import PrepareConfig, load_catalogue, run_prepare
    from data_pipeline.readers import ZH_DEMO_DIR
    from evaluation.evaluate import EvalConfig, run_evaluate
    from evaluation.metrics import evaluate_run, judged_from_frame
    from model.folders import DEFAULT_MODEL
    from model.pretrained import MULTILINGUAL_MODEL, FetchModelConfig, run_fetch_model

    setup_logging()
    ensure_ray(num_cpus=2)
    root = workdir / "zh-demo-bench"
    prepared = run_prepare(PrepareConfig(dataset="zh-demo", output_dir=str(root / "data"), test_fraction=0.5))
    catalogue = load_catalogue(prepared)
    judgments = pd.read_csv(ZH_DEMO_DIR / "judgments.csv")
    e5 = str(run_fetch_model(FetchModelConfig(name=MULTILINGUAL_MODEL, output_dir=str(workdir / "models"))))
    rows = {}
    for label, model in (("e5", e5), ("minilm", DEFAULT_MODEL)):
        embeddings = run_embed(EmbedConfig(prepared_dir=str(prepared), output_dir=str(root / f"embeddings_{label}"),
                                           model=model))
        run_index(IndexConfig(embeddings_dir=str(embeddings), output_dir=str(root / f"index_{label}")))
        result = run_evaluate(EvalConfig(prepared_dir=str(prepared), index_dir=str(root / f"index_{label}"),
                                         embeddings_dir=str(embeddings),
                                         judgments=str(ZH_DEMO_DIR / "judgments.csv"),
                                         systems=("bm25", "dense", "fusion"),
                                         output=str(root / "eval" / f"all_{label}.json")), show_table=False)
        systems = result["systems"]
        rows["BM25, CJK unigrams + bigrams (FirstLight)"] = systems["bm25"]["mean"]
        name = "multilingual-e5-small" if label == "e5" else "all-MiniLM-L6-v2 (English vocabulary)"
        rows[f"{name}, zero-shot"] = systems["dense"]["mean"]
        rows[f"hybrid: BM25-CJK + {name} (wsum, dense weight 0.7)"] = systems["fusion"]["mean"]
    # before: bm25s's own tokeniser, which reads a Chinese sentence as one word
    judged = judged_from_frame(judgments)
    queries = judged.queries
    stemmer = Stemmer.Stemmer("english")
    before = lambda texts: bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, return_ids=False,  # noqa: E731
                                          show_progress=False)
    rows["BM25, whitespace + English stemming (before)"] = evaluate_run(
        bm25_run(catalogue, queries, before), judged)
    # tried: a Chinese word segmenter (jieba, search mode) in place of character pairs
    rows["BM25, jieba words + English stemming (tried)"] = evaluate_run(
        bm25_run(catalogue, queries, jieba_tokens()), judged)
    order = ["BM25, whitespace + English stemming (before)", "BM25, jieba words + English stemming (tried)",
             "BM25, CJK unigrams + bigrams (FirstLight)",
             "all-MiniLM-L6-v2 (English vocabulary), zero-shot", "multilingual-e5-small, zero-shot",
             "hybrid: BM25-CJK + all-MiniLM-L6-v2 (English vocabulary) (wsum, dense weight 0.7)",
             "hybrid: BM25-CJK + multilingual-e5-small (wsum, dense weight 0.7)"]
    lines = [f"zh-demo ({len(catalogue)} products, all {len(queries)} queries; FirstLight's own judgments, "
             "data_pipeline/datasets/zh-demo). Nothing here is trained on these queries.\n",
             f"| system | {' | '.join(METRICS)} |", "|---" * (len(METRICS) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{rows[name][m]:.3f}" for m in METRICS) + " |" for name in order]
    return "\n".join(lines), {name: {m: rows[name][m] for m in METRICS} for name in order}


def bm25_run(catalogue, queries: list[str], tokenize) -> dict:
    """Top-100 BM25 run over the catalogue texts with ``tokenize`` (texts -> token lists)."""
    import bm25s
    import numpy as np

    ids = catalogue["product_id"].tolist()
    vocab: dict[str, int] = {}
    docs = [[vocab.setdefault(t, len(vocab)) for t in doc] for doc in tokenize(catalogue["text"].tolist())]
    bm25 = bm25s.BM25()
    bm25.index(bm25s.tokenization.Tokenized(ids=docs, vocab=vocab), show_progress=False)
    run = {}
    for q, tokens in zip(queries, tokenize(queries)):
        tokens = [t for t in tokens if t in vocab]
        scores = bm25.get_scores(tokens) if tokens else np.zeros(len(ids))
        top = np.argsort(-scores)[:100]
        run[q] = {ids[i]: float(scores[i]) for i in top if scores[i] > 0} or {ids[0]: 0.0}
    return run


def jieba_tokens():
    """FirstLight's tokeniser with jieba's search-mode words for CJK runs instead of character pairs."""
    jieba = need_bench_extra("jieba")

    from ranking.tokens import LexicalTokenizer

    jieba.setLogLevel(60)
    return LexicalTokenizer(cjk=lambda run: [w for w in jieba.lcut_for_search(run) if w.strip()]).many


def speed_part(workdir: Path) -> str:
    import numpy as np
    import pandas as pd
    import torch

    from model.encoder import TextEncoder
    from model.folders import DEFAULT_MODEL

    torch.set_num_threads(2)
    titles = pd.read_csv(default_homedepot_dir() / "products.csv")["product_title"].head(2000).tolist()
    queries = pd.read_csv(default_homedepot_dir() / "judgments.csv")["search_term"].drop_duplicates().head(200).tolist()
    e5 = str(workdir / "models" / "multilingual-e5-small")
    rows, raw = [], {}
    for name, model in (("all-MiniLM-L6-v2", DEFAULT_MODEL), ("multilingual-e5-small", e5)):
        encoder = TextEncoder.load(model, max_length=64, device="cpu")
        params = sum(p.numel() for p in encoder.model.parameters()) / 1e6
        encoder.encode(titles[:128], role="passage")
        start = time.perf_counter()
        encoder.encode(titles, batch_size=64, role="passage")
        per_s = len(titles) / (time.perf_counter() - start)
        for q in queries[:10]:
            encoder.encode([q], role="query")
        times = []
        for q in queries:
            t = time.perf_counter()
            encoder.encode([q], role="query")
            times.append(1000 * (time.perf_counter() - t))
        p50, p95 = float(np.percentile(times, 50)), float(np.percentile(times, 95))
        raw[name] = {"params_m": params, "titles_per_s": per_s, "query_p50_ms": p50, "query_p95_ms": p95}
        rows.append(f"| {name} | {params:.0f}M | {per_s:.0f} | {p50:.1f} | {p95:.1f} |")
    body = ("2,000 Home Depot titles (batch 64, max length 64) and 200 single queries, fp32, 2 torch threads.\n\n"
            "| encoder | parameters | titles/s | query p50 ms | query p95 ms |\n|---|---|---|---|---|\n"
            + "\n".join(rows))
    return body, raw


def english_part(workdir: Path) -> str:
    from common.runtime import setup_logging
    from evaluation.evaluate import EvalConfig, run_evaluate

    setup_logging()
    root = workdir / "homedepot"
    indexes = [("all-MiniLM-L6-v2, zero-shot", root / "index"),
               ("all-MiniLM-L6-v2, fine-tuned (recipe)", root / "finetuned-train" / "index"),
               ("multilingual-e5-small, zero-shot", root / "e5" / "index"),
               ("multilingual-e5-small, fine-tuned (recipe)", root / "e5-finetuned" / "index")]
    rows, raw = [], {}
    bm25 = None
    for name, index in indexes:
        if not (index / "index.faiss").exists():
            raise SystemExit(f"{index} is missing: build it first (docs/multilingual.md)")
        slug = name.split(",")[0].split("-")[0].lower() + ("_ft" if "fine" in name else "_zs")
        result = run_evaluate(EvalConfig(prepared_dir=str(root / "data"), index_dir=str(index),
                                         systems=("bm25", "dense", "fusion"),
                                         output=str(root / "eval" / f"multilingual_{slug}.json")), show_table=False)
        s = result["systems"]
        bm25 = s["bm25"]["mean"]
        raw[name] = {k: {m: s[k]["mean"][m] for m in METRICS} for k in ("dense", "fusion")}
        rows.append(f"| {name} | " + " | ".join(f"{s['dense']['mean'][m]:.3f}" for m in METRICS) + " | "
                    + " | ".join(f"{s['fusion']['mean'][m]:.3f}" for m in METRICS) + " |")
        queries = result["queries"]
    raw["bm25"] = {m: bm25[m] for m in METRICS}
    head = " | ".join(f"encoder {m}" for m in METRICS) + " | " + " | ".join(f"hybrid {m}" for m in METRICS)
    body = (f"Home Depot test split ({queries} unseen queries, crowd labels). Hybrid = BM25 + the encoder, "
            f"wsum, dense weight 0.7 (the served first stage). BM25 alone: "
            + " / ".join(f"{bm25[m]:.3f}" for m in METRICS) + ".\n\n"
            f"| encoder | {head} |\n" + "|---" * 7 + "|\n" + "\n".join(rows))
    return body, raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("zh", "speed", "english"), required=True)
    parser.add_argument("--workdir", default=str(default_workdir()))
    args = parser.parse_args()
    workdir = Path(args.workdir)
    part = {"zh": zh_part, "speed": speed_part, "english": english_part}[args.part]
    body, raw = part(workdir)
    titles = {"zh": "Chinese demo catalogue: BM25-CJK, encoders, fusion",
              "speed": "Encode speed: all-MiniLM-L6-v2 vs multilingual-e5-small",
              "english": "English cost of the multilingual encoder (Home Depot)"}
    update_section(f"multilingual_{args.part}", titles[args.part],
                   f"python benchmarks/quality/bench_multilingual.py --part {args.part}", body, raw)
    print(body)
    print(json.dumps(raw, indent=1)[:2000])


if __name__ == "__main__":
    main()
