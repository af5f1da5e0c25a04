"""The evaluate stage: rank the whole catalogue for every held-out query and score each system.

Systems:
- ``bm25``: the lexical baseline (bm25s);
- ``dense``: the encoder + FAISS index (zero-shot, or fine-tuned once ``--model`` points at one);
- ``fusion``: the two fused by ranx: reciprocal-rank fusion (k=60) by default, or a weighted sum of
  min-max normalised scores; ``tune_fusion_on`` picks k or the weights on another split (val) first,
  so the reported split never sees its own tuning.

``spell_correct`` corrects each query's misspelt words against the catalogue's vocabulary
(:mod:`firstlight.spelling`) before every system ranks, baselines included.

Metrics (see :mod:`evaluation.metrics`): nDCG@10, Recall@100, MRR@10 over the full catalogue, and
nDCG@10 over each query's judged candidates only. Results go to a JSON file (means and per-query
values for paired comparisons) and a printed table.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from common import storage
from common.config import check_choice, check_range
from common.errors import ConfigError, FirstLightError
from common.manifest import write_json
from common.spelling import QuerySpeller
from data_pipeline.index import ProductIndex
from data_pipeline.prepare import load_catalogue, load_split, prepared_manifest
from data_pipeline.vectors import load_embeddings
from evaluation.bm25 import BM25Retriever
from evaluation.metrics import (
    FUSION_METHODS,
    METRICS,
    evaluate_candidates,
    evaluate_run,
    fuse,
    judged_from_frame,
    tune_fusion,
)
from model.encoder import TextEncoder

log = logging.getLogger(__name__)

SYSTEMS = ("bm25", "dense", "fusion")


@dataclass
class EvalConfig:
    prepared_dir: str | None = field(default=None, metadata={"help": "output of `prepare`"})
    index_dir: str | None = field(default=None, metadata={"help": "output of `index` (dense and fusion)"})
    embeddings_dir: str | None = field(default=None, metadata={"help": "default: INDEX/../embeddings"})
    split: str = field(default="test", metadata={"help": "which split's queries to rank: test or val"})
    systems: tuple = field(default=SYSTEMS, metadata={"help": "any of bm25, dense, fusion"})
    model: str | None = field(default=None, metadata={"help": "query encoder; default: the index's model"})
    max_length: int = field(default=64, metadata={"help": "tokens kept per query"})
    depth: int = field(default=100, metadata={"help": "products retrieved per query and system"})
    fusion: str = field(default="rrf", metadata={"help": "rrf (reciprocal ranks) or wsum (weighted normalised scores)"})
    rrf_k: int = field(default=60, metadata={"help": "reciprocal-rank fusion constant"})
    dense_weight: float = field(default=0.5, metadata={"help": "wsum: the dense run's weight (BM25 gets 1 - it)"})
    tune_fusion_on: str | None = field(default=None, metadata={
        "help": "tune rrf_k or dense_weight for nDCG@10 on this split (val) before evaluating"})
    spell_correct: bool = field(default=False, metadata={
        "help": "correct query words unknown to the catalogue and to English before every system ranks"})
    output: str | None = field(default=None, metadata={"help": "results JSON; default PREPARED/../eval/SPLIT.json"})

    def validate(self) -> None:
        check_choice("split", self.split, ("train", "val", "test"))
        for s in self.systems:
            check_choice("systems", s, SYSTEMS)
        check_range("depth", self.depth, 100)
        check_range("rrf_k", self.rrf_k, 1)
        check_choice("fusion", self.fusion, FUSION_METHODS)
        check_range("dense_weight", self.dense_weight, 0.0, 1.0)
        if self.tune_fusion_on is not None:
            check_choice("tune_fusion_on", self.tune_fusion_on, ("train", "val", "test"))
            if self.tune_fusion_on == self.split:
                raise ConfigError("tune_fusion_on", f"tuning on the {self.split} split that is being reported "
                                  "overstates the result", "tune on another split, e.g. --tune-fusion-on val")
            if "fusion" not in self.systems:
                raise ConfigError("tune_fusion_on", "only applies to the fusion system", "add fusion to --systems")
        if not self.prepared_dir:
            raise ConfigError("prepared_dir", "is not set", "pass --prepared-dir (the output of prepare)")
        if set(self.systems) & {"dense", "fusion"} and not self.index_dir:
            raise ConfigError("index_dir", "dense and fusion need an index", "pass --index-dir, or --systems bm25")

    def resolved_output(self) -> Path:
        return Path(self.output) if self.output else Path(self.prepared_dir).parent / "eval" / f"{self.split}.json"


def _dense(cfg: EvalConfig, queries: list[str], texts: list[str], judged) -> tuple[dict, dict, str]:
    """Dense run over the index, and dense scores for each query's judged candidates.

    ``texts`` are what is encoded (the queries, or their spelling corrections); runs stay keyed by query."""
    index = ProductIndex.load(Path(cfg.index_dir))
    model = cfg.model or index.manifest.get("model")
    if not model:
        raise ConfigError("model", "the index does not record its model", "pass --model")
    encoder = TextEncoder.load(model, max_length=cfg.max_length)
    start = time.perf_counter()
    q_vectors = encoder.encode(texts, batch_size=128)
    scores, ids = index.search(q_vectors, cfg.depth)
    log.info("[evaluate] dense: %d queries encoded and searched in %.1fs", len(queries), time.perf_counter() - start)
    run = {q: {p: float(s) for p, s in zip(row_ids, row_scores) if p is not None}
           for q, row_ids, row_scores in zip(queries, ids, scores)}
    emb_dir = Path(cfg.embeddings_dir) if cfg.embeddings_dir else Path(cfg.index_dir).parent / "embeddings"
    product_ids, vectors = load_embeddings(emb_dir / "vectors")
    row = {p: i for i, p in enumerate(product_ids)}
    candidate_scores = {}
    for q, qv in zip(queries, q_vectors):
        cands = [p for p in judged.candidates[q] if p in row]
        candidate_scores[q] = dict(zip(cands, (vectors[[row[p] for p in cands]] @ qv).tolist()))
    return run, candidate_scores, model


def _judged(prepared: Path, split: str):
    judged = judged_from_frame(load_split(prepared, split))
    if not judged.queries:
        raise FirstLightError(f"the {split} split has no query with a relevant product (relevance >= 2.5); "
                              f"Fix: use a larger {split} fraction or check the judgments")
    return judged


def _fusion_params(cfg: EvalConfig) -> dict:
    return {"k": cfg.rrf_k} if cfg.fusion == "rrf" else {"weights": [1.0 - cfg.dense_weight, cfg.dense_weight]}


def _base_runs(cfg: EvalConfig, judged, bm25, speller=None) -> tuple[dict, dict, dict]:
    """BM25 and dense runs (full catalogue and judged candidates) for the judged queries."""
    queries = judged.queries
    texts = [speller.correct(q) for q in queries] if speller else queries
    runs, candidate_runs, info = {}, {}, {}
    if speller:
        info["spell_correct"] = {"queries_changed": sum(t != q for q, t in zip(queries, texts)),
                                 "queries": len(queries)}
        log.info("[evaluate] spelling: %d of %d queries corrected", info["spell_correct"]["queries_changed"],
                 len(queries))
    if bm25 is not None:
        start = time.perf_counter()
        runs["bm25"] = dict(zip(queries, bm25.search(texts, cfg.depth)))
        candidate_runs["bm25"] = {q: bm25.score(t, judged.candidates[q]) for q, t in zip(queries, texts)}
        log.info("[evaluate] bm25: ranked %d queries in %.1fs", len(queries), time.perf_counter() - start)
    if set(cfg.systems) & {"dense", "fusion"}:
        runs["dense"], candidate_runs["dense"], info["model"] = _dense(cfg, queries, texts, judged)
    return runs, candidate_runs, info


def run_evaluate(cfg: EvalConfig, show_table: bool = True) -> dict:
    """Evaluate the configured systems; write and return the results (and print their table, unless a
    caller such as the demo prints its own at the end)."""
    if storage.uses_uri(cfg, ("prepared_dir", "index_dir", "embeddings_dir", "output")):
        if storage.is_uri(cfg.index_dir or "") and not cfg.embeddings_dir:  # its default: INDEX/../embeddings
            cfg = replace(cfg, embeddings_dir=storage.join(storage.parent(cfg.index_dir), "embeddings"))
        return storage.run_on_mirrors(functools.partial(run_evaluate, show_table=show_table), cfg, inputs=("prepared_dir", "index_dir", "embeddings_dir"),
                                      output_files=("output",))
    cfg.validate()
    prepared = Path(cfg.prepared_dir)
    manifest = prepared_manifest(prepared)
    judged = _judged(prepared, cfg.split)
    queries = judged.queries
    log.info("[evaluate] %d %s queries with a relevant product", len(queries), cfg.split)
    bm25 = speller = None
    if set(cfg.systems) & {"bm25", "fusion"} or cfg.spell_correct:
        catalogue = load_catalogue(prepared)
    if set(cfg.systems) & {"bm25", "fusion"}:
        bm25 = BM25Retriever(catalogue["product_id"].tolist(), catalogue["text"].tolist())
    if cfg.spell_correct:
        speller = QuerySpeller(catalogue["text"])
    params = _fusion_params(cfg)
    if cfg.tune_fusion_on:
        tuning = _judged(prepared, cfg.tune_fusion_on)
        tune_runs, _, _ = _base_runs(cfg, tuning, bm25, speller)
        params = tune_fusion([tune_runs["bm25"], tune_runs["dense"]], tuning, cfg.fusion)
        log.info("[evaluate] fusion %s tuned on %d %s queries: %s", cfg.fusion, len(tuning.queries),
                 cfg.tune_fusion_on, params)
    runs, candidate_runs, info = _base_runs(cfg, judged, bm25, speller)
    if "fusion" in cfg.systems:
        runs["fusion"] = fuse([runs["bm25"], runs["dense"]], cfg.fusion, params)
        candidate_runs["fusion"] = fuse([candidate_runs["bm25"], candidate_runs["dense"]], cfg.fusion, params)
        info["fusion"] = {"method": cfg.fusion, "params": params, "tuned_on": cfg.tune_fusion_on}

    results = {"split": cfg.split, "queries": len(queries), "dataset": manifest.get("dataset"),
               "products": manifest["counts"]["products"], "config": asdict(cfg), **info, "systems": {}}
    for name in cfg.systems:
        per_query = evaluate_run(runs[name], judged, per_query=True)
        means = {m: sum(v) / len(v) for m, v in per_query.items()}
        means["ndcg@10_judged"] = evaluate_candidates(candidate_runs[name], judged)
        results["systems"][name] = {"mean": means, "per_query": per_query}
    results["query_order"] = queries
    write_json(cfg.resolved_output(), results)
    if show_table:
        print(format_table(results))
    log.info("[evaluate] results written to %s", cfg.resolved_output())
    return results


def format_table(results: dict) -> str:
    head = f"{results['dataset']} {results['split']} split: {results['queries']:,} queries over " \
           f"{results['products']:,} products" + (f" (dense model: {results['model']})" if results.get("model") else "")
    cols = [*METRICS, "ndcg@10_judged"]
    lines = [head, f"| system | {' | '.join(cols)} |", "|---" * (len(cols) + 1) + "|"]
    for name, r in results["systems"].items():
        lines.append(f"| {name} | " + " | ".join(f"{r['mean'][c]:.3f}" for c in cols) + " |")
    return "\n".join(lines)


