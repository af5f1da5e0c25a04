"""The evaluate stage: rank the whole catalogue for every held-out query and score each system.

Systems (each one the ranking path the server runs, through ``ranking.offline.OfflineRanker``):
- ``bm25``: the lexical side alone (bm25s);
- ``dense``: the encoder + FAISS index (zero-shot, or fine-tuned once ``--model`` points at one);
- ``fusion``: the hybrid first stage, both sides fused (``--first_stage.fusion`` wsum or rrf;
  ``--tune_fusion_on val`` picks the weights or k on another split first, so the reported split never
  sees its tuning);
- ``rerank``: the fusion's top ``--rerank.depth`` reordered by the cross-encoder ``--rerank.model``.

The first stage, the rerank stage and the encoder's runtime are the components the server composes
(``first_stage``, ``rerank``, ``runtime``): one setting, one meaning, in both.

Queries come from a prepared split (``--split``) or from any held-out judgments file in the prepare
input's format (``--judgments FILE``, columns mapped as in `prepare --dataset files`), scored against
the prepared catalogue. Spelling correction (``--first_stage.spell_correct``, on as in the server) runs before
every system, baselines included.

``--filter EXPR`` (a filter expression as the API takes it, ranking/filters.py) ranks within the
products it allows, through the same code as the server; each query is then scored against its
judged products that pass the filter (queries left with no relevant product are dropped and counted).

``--constraints.read true`` (off by default here, on in the server) reads each query's constraints (a price bound, a brand,
"not corded": ranking/constraints.py) and ranks as the server does: hard ones filter, the least
certain is relaxed when fewer than 10 products are left, soft ones boost the final order of every
system. A query it reads nothing from is ranked exactly as with it off.

Metrics (:mod:`evaluation.metrics`): nDCG@10, Recall@100, MRR@10, P@10 (relevance >= 2), the share of
each top 10 that is judged, and nDCG@10 over each query's judged candidates only. Results go to a
JSON file (means and per-query values for paired comparisons), a TREC run file per system beside
it, and a printed table.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from common import storage
from common.config import Listed, check_choice, check_range, listed
from common.errors import ConfigError, FirstLightError
from common.manifest import write_json
from data_pipeline.prepare import (
    catalogue_schema,
    load_catalogue,
    load_split,
    prepared_manifest,
)
from data_pipeline.readers import JudgmentSpec, read_judgments_frame
from data_pipeline.vectors import load_embeddings
from evaluation.metrics import (
    EXTRA_METRICS,
    METRICS,
    evaluate_candidates,
    evaluate_run,
    judged_from_frame,
    tune_fusion,
)
from model.reranker import Reranker
from model.runtime import EncoderRuntime
from ranking.constraint_plan import boosted, plan
from ranking.constraints import ConstraintReader, ConstraintReading
from ranking.filters import FilterError, parse_filter
from ranking.fusion import fuse_runs
from ranking.hybrid import FirstStage
from ranking.offline import OfflineRanker, rerank_all
from ranking.rerank import RerankStage, as_run
from ranking.tokens import LexicalTokenizer

log = logging.getLogger(__name__)

SYSTEMS = ("bm25", "dense", "fusion", "rerank")
DEFAULT_SYSTEMS = ("bm25", "dense", "fusion")


@dataclass
class EvalConfig:
    prepared_dir: str | None = field(default=None, metadata={"help": "output of `prepare`"})
    index_dir: str | None = field(default=None, metadata={"help": "output of `index` (dense, fusion, rerank)"})
    embeddings_dir: str | None = field(default=None, metadata={"help": "default: INDEX/../embeddings"})
    split: str = field(default="test", metadata={"help": "which split's queries to rank: test or val"})
    judgments: str | None = field(default=None, metadata={
        "help": "score this held-out judgments file (CSV/TSV/Parquet/JSONL: query, product id, relevance 1-3) "
                "instead of a split"})
    query_column: str = field(default="query", metadata={"help": "--judgments: its query column"})
    product_id_column: str = field(default="product_id", metadata={"help": "--judgments: its product id column"})
    relevance_column: str = field(default="relevance", metadata={"help": "--judgments: its relevance column"})
    systems: Listed = field(default=DEFAULT_SYSTEMS, metadata={"help": "any of bm25, dense, fusion, rerank"})
    model: str | None = field(default=None, metadata={"help": "query encoder; default: the index's model"})
    tune_fusion_on: str | None = field(default=None, metadata={
        "help": "tune rrf_k or dense_weight for nDCG@10 on this split (val) before evaluating"})
    # the components the server composes too; depth: products retrieved per query and system
    first_stage: FirstStage = field(default_factory=FirstStage)
    rerank: RerankStage = field(default_factory=RerankStage)
    runtime: EncoderRuntime = field(default_factory=EncoderRuntime)
    # off here: the systems are scored on the text as typed, comparable with every earlier figure;
    # --constraints.read true ranks as the server does (benchmarks/quality/bench_constraints.py)
    constraints: ConstraintReading = field(default_factory=lambda: ConstraintReading(read=False))
    filter: str | None = field(default=None, metadata={
        "help": "rank within a filter, as the server does: a JSON filter expression over the catalogue's typed "
                "attributes, e.g. '{\"field\": \"brand\", \"eq\": \"DEWALT\"}' (docs/filters.md)"})
    output: str | None = field(default=None, metadata={"help": "results JSON; default PREPARED/../eval/SPLIT.json"})

    RENAMED: ClassVar[dict] = {
        "depth": "first_stage.depth", "fusion": "first_stage.fusion", "rrf_k": "first_stage.rrf_k",
        "dense_weight": "first_stage.dense_weight", "reranker": "rerank.model", "rerank_depth": "rerank.depth",
        "rerank_weight": "rerank.weight", "backend": "runtime.backend", "max_length": "runtime.query_max_length",
        "spell_correct": "first_stage.spell_correct"}

    def __post_init__(self):
        self.systems = listed(self.systems)

    def validate(self) -> None:
        check_choice("split", self.split, ("train", "val", "test"))
        for s in self.systems:
            check_choice("systems", s, SYSTEMS)
        self.first_stage.validate("first_stage.")
        self.constraints.validate("constraints.")
        check_range("first_stage.depth", self.first_stage.depth, 100)  # Recall@100 needs 100 per system
        self.runtime.validate("runtime.")
        self.rerank.validate("rerank.", most=self.first_stage.depth)
        if self.tune_fusion_on is not None:
            check_choice("tune_fusion_on", self.tune_fusion_on, ("train", "val", "test"))
            if self.tune_fusion_on == self.split and not self.judgments:
                raise ConfigError("tune_fusion_on", f"tuning on the {self.split} split that is being reported "
                                  "overstates the result", "tune on another split, e.g. --tune_fusion_on val")
            if not {"fusion", "rerank"} & set(self.systems):
                raise ConfigError("tune_fusion_on", "only applies to the fusion system", "add fusion to --systems")
        if not self.prepared_dir:
            raise ConfigError("prepared_dir", "is not set", "pass --prepared_dir (the output of prepare)")
        if set(self.systems) & {"dense", "fusion", "rerank"} and not self.index_dir:
            raise ConfigError("index_dir", "dense, fusion and rerank need an index", "pass --index_dir, or --systems bm25")
        if "rerank" in self.systems and not self.rerank.model:
            raise ConfigError("rerank.model", "the rerank system needs a cross-encoder",
                              "pass --rerank-model (the model folder `firstlight train-reranker` wrote)")
        if self.judgments and not storage.is_uri(self.judgments) and not Path(self.judgments).is_file():
            raise ConfigError("judgments", f"{self.judgments} does not exist", "pass a judgments file")

    def stage(self, mode: str = "hybrid") -> FirstStage:
        return replace(self.first_stage, mode=mode)

    def resolved_output(self) -> Path:
        if self.output:
            return Path(self.output)
        name = Path(self.judgments).stem if self.judgments else self.split
        return Path(self.prepared_dir).parent / "eval" / f"{name}.json"


def parsed_filter(cfg: EvalConfig, prepared: Path):
    """``--filter`` checked against the prepared catalogue's attributes (None without one)."""
    if cfg.filter is None:
        return None
    try:
        expr = json.loads(cfg.filter)
    except ValueError as err:
        raise ConfigError("filter", f"is not JSON ({err})", "pass a JSON object, e.g. "
                          "'{\"field\": \"brand\", \"eq\": \"DEWALT\"}'") from None
    try:
        return parse_filter(expr, catalogue_schema(prepared))
    except FilterError as err:
        raise ConfigError(f"filter ({err.path})", err.message, "see docs/filters.md for the expressions") from None


def _judged(cfg: EvalConfig, prepared: Path, split: str | None, allowed: set | None = None):
    """(the judged queries of a split, or of the --judgments file (split None), how many queries the
    filter left without a relevant product); with ``allowed``, only the judgments of those products."""
    if split is None:
        known = frozenset(load_catalogue(prepared)["product_id"])
        spec = JudgmentSpec(cfg.judgments, cfg.query_column, cfg.product_id_column, cfg.relevance_column)
        frame, source = read_judgments_frame(spec, known), cfg.judgments
    else:
        frame, source = load_split(prepared, split), f"the {split} split"
    dropped = 0
    if allowed is not None:
        before = len(judged_from_frame(frame).queries)
        frame = frame[frame["product_id"].isin(allowed)]
        source += " within the filter"
    judged = judged_from_frame(frame)
    if allowed is not None:
        dropped = before - len(judged.queries)
    if not judged.queries:
        raise FirstLightError(f"{source} has no query with a relevant product (relevance >= 2.5); "
                              "Fix: use a larger held-out set or check the judgments")
    return judged, dropped


def _runs(cfg: EvalConfig, ranker: OfflineRanker, judged, need_dense: bool, need_lexical: bool, filter=None,
          reader: ConstraintReader | None = None):
    """(texts as ranked, their query vectors, bm25 run, dense run, the plans of the constraints read
    (None without ``reader``)) for the judged queries."""
    mode = "hybrid" if need_dense and need_lexical else ("dense" if need_dense else "lexical")
    queries = judged.queries
    if reader is None:
        texts, vectors, dense, lexical = ranker.sides(queries, cfg.stage(mode), filter)
        plans = None
    else:
        texts = ranker.corrected(queries)
        vectors = ranker.encoder.encode(texts, batch_size=128, role="query") if need_dense else None
        plans = [plan(reader.read(t), reader.schema, cfg.constraints, filter) for t in texts]
        dense, lexical, plans = ranker.sides_within(texts, vectors, cfg.stage(mode), plans, 10, LexicalTokenizer())
    return (texts, vectors, dict(zip(queries, lexical)) if lexical else None,
            dict(zip(queries, dense)) if dense else None, plans)


def _boosted_run(run: dict, plans: list, queries: list[str], places: int, ranker: OfflineRanker) -> dict:
    """A system's run with each query's soft constraints boosting its order, as the server does last."""
    out = {}
    for q, p in zip(queries, plans):
        ranking = sorted(run.get(q, {}).items(), key=lambda h: -h[1])
        hits = boosted([{"id": pid, "attributes": ranker.hybrid.attributes_of(pid)} for pid, _ in ranking], p, places)
        out[q] = as_run(hits)
    return out


def _candidate_scores(cfg: EvalConfig, ranker: OfflineRanker, judged, texts, q_vectors, reranker) -> dict:
    """Each system's scores of each query's judged products (the rerank protocol's nDCG@10_judged)."""
    queries = judged.queries
    out = {}
    if ranker.hybrid.lexical is not None:
        out["bm25"] = {q: ranker.hybrid.lexical.score(t, judged.candidates[q]) for q, t in zip(queries, texts)}
    if set(cfg.systems) & {"dense", "fusion", "rerank"}:
        emb_dir = Path(cfg.embeddings_dir) if cfg.embeddings_dir else Path(cfg.index_dir).parent / "embeddings"
        if (emb_dir / "vectors").exists():
            product_ids, vectors = load_embeddings(emb_dir / "vectors")
        else:  # an index alone (a served one, its embeddings elsewhere): its own vectors
            known = ranker.hybrid.vectors_of({p for q in queries for p in judged.candidates[q]})
            product_ids = list(known)
            vectors = np.stack([known[p] for p in product_ids]) if known else np.zeros((0, len(q_vectors[0])))
        row = {p: i for i, p in enumerate(product_ids)}
        out["dense"] = {}
        for q, qv in zip(queries, q_vectors):
            cands = [p for p in judged.candidates[q] if p in row]
            out["dense"][q] = dict(zip(cands, (vectors[[row[p] for p in cands]] @ qv).tolist()))
    if "bm25" in out and "dense" in out:
        stage = cfg.stage()
        out["fusion"] = fuse_runs([out["dense"], out["bm25"]], stage.fusion, stage.params)
    if reranker is not None:
        out["rerank"] = {}
        for q, t in zip(queries, texts):
            cands = judged.candidates[q]
            scores = reranker.score(t, [ranker.hybrid.texts[p] for p in cands])
            out["rerank"][q] = dict(zip(cands, scores.tolist()))
    return out


def run_evaluate(cfg: EvalConfig, show_table: bool = True) -> dict:
    """Evaluate the configured systems; write and return the results (and print their table, unless a
    caller such as the demo prints its own at the end)."""
    if storage.uses_uri(cfg, ("prepared_dir", "index_dir", "embeddings_dir", "output")):
        if storage.is_uri(cfg.index_dir or "") and not cfg.embeddings_dir:  # its default: INDEX/../embeddings
            cfg = replace(cfg, embeddings_dir=storage.join(storage.parent(cfg.index_dir), "embeddings"))
        results = storage.run_on_mirrors(functools.partial(run_evaluate, show_table=show_table), cfg,
                                         inputs=("prepared_dir", "index_dir", "embeddings_dir"), output_files=("output",))
        if storage.is_uri(cfg.output or ""):  # the TREC runs beside the results file go to the bucket too
            for system in results["systems"]:
                local = trec_path(storage.mirror_of(cfg.output), system)
                storage.push_file(local, storage.join(storage.parent(cfg.output), local.name))
        return results
    cfg.validate()
    prepared = Path(cfg.prepared_dir)
    manifest = prepared_manifest(prepared)
    expr = parsed_filter(cfg, prepared)
    need_dense = bool(set(cfg.systems) & {"dense", "fusion", "rerank"})
    need_lexical = bool(set(cfg.systems) & {"bm25", "fusion", "rerank"})
    ranker = OfflineRanker(str(prepared), cfg.index_dir if need_dense else None, model=cfg.model,
                           spell_correct=cfg.first_stage.spell_correct, runtime=cfg.runtime, lexical=need_lexical)
    info = {}
    allowed = None
    if expr is not None:
        saved, live = ranker.hybrid.allowed(expr)
        allowed = {p for p, ok in zip(ranker.hybrid.catalogue_rows, saved) if ok} | live  # catalogue order
        info["filter"] = {"read_as": expr.describe(), "products": len(allowed)}
        log.info("[evaluate] the filter %s keeps %d of %d products", expr.describe(), len(allowed), len(ranker.hybrid))
    judged, dropped = _judged(cfg, prepared, None if cfg.judgments else cfg.split, allowed)
    queries = judged.queries
    if expr is not None:
        info["filter"]["queries_dropped"] = dropped
    log.info("[evaluate] %d %s queries with a relevant product", len(queries), cfg.judgments or cfg.split)
    if need_dense:
        info["model"] = ranker.model
    if cfg.tune_fusion_on:
        tuning, _ = _judged(cfg, prepared, cfg.tune_fusion_on)
        _, _, tune_bm25, tune_dense, _ = _runs(cfg, ranker, tuning, True, True)
        fusion = cfg.first_stage.fusion
        params = tune_fusion([tune_dense, tune_bm25], tuning, fusion, cfg.first_stage.depth)
        if fusion == "wsum":  # the weights follow the runs' order: dense first, BM25 second
            cfg = replace(cfg, first_stage=replace(cfg.first_stage, dense_weight=params["weights"][0]))
        else:
            cfg = replace(cfg, first_stage=replace(cfg.first_stage, rrf_k=int(params["k"])))
        log.info("[evaluate] fusion %s tuned on %d %s queries: %s", fusion, len(tuning.queries),
                 cfg.tune_fusion_on, params)
    reader = ConstraintReader.for_catalogue(cfg.constraints, prepared) if cfg.constraints.read else None
    texts, q_vectors, bm25_run, dense_run, plans = _runs(cfg, ranker, judged, need_dense, need_lexical, expr, reader)
    if plans is not None:
        info["constraints"] = {"queries_read": sum(bool(p.items) for p in plans),
                               "queries_relaxed": sum(any(x.status == "relaxed" for x in p.items) for p in plans)}
        log.info("[evaluate] constraints read from %d of %d queries (%d relaxed)",
                 info["constraints"]["queries_read"], len(queries), info["constraints"]["queries_relaxed"])
    if cfg.first_stage.spell_correct:
        info["spell_correct"] = {"queries_changed": sum(t != q for q, t in zip(queries, texts)), "queries": len(queries)}
    runs = {"bm25": bm25_run, "dense": dense_run}
    stage = cfg.stage()
    if set(cfg.systems) & {"fusion", "rerank"}:
        runs["fusion"] = fuse_runs([dense_run, bm25_run], stage.fusion, stage.params, stage.depth)
        info["fusion"] = {"method": stage.fusion, "params": stage.params, "tuned_on": cfg.tune_fusion_on}
    reranker = None
    if "rerank" in cfg.systems:
        # max_length None: the length the folder was trained with, as served
        reranker = Reranker.load(cfg.rerank.model, max_length=cfg.rerank.max_length, backend=cfg.runtime.backend,
                                 device=cfg.runtime.device)
        candidates = [[{"id": p, "text": ranker.hybrid.texts.get(p, ""), "score": s} for p, s in runs["fusion"][q].items()]
                      for q in queries]
        reranked = rerank_all(reranker, texts, candidates, cfg.rerank.depth, cfg.rerank.weight)
        runs["rerank"] = {q: as_run(r) for q, r in zip(queries, reranked)}
        info["rerank"] = {"model": cfg.rerank.model, "depth": cfg.rerank.depth, "weight": cfg.rerank.weight,
                          "max_length": reranker.max_length}
    candidate_runs = _candidate_scores(cfg, ranker, judged, texts, q_vectors, reranker)
    if plans is not None and any(p.soft() for p in plans):
        runs = {name: None if run is None else _boosted_run(run, plans, queries, cfg.constraints.soft_boost, ranker)
                for name, run in runs.items()}

    results = {"split": cfg.split if not cfg.judgments else None, "judgments": cfg.judgments,
               "queries": len(queries), "dataset": manifest.get("dataset"),
               "products": manifest["counts"]["products"], "config": asdict(cfg), **info, "systems": {}}
    output = cfg.resolved_output()
    for name in cfg.systems:
        per_query = evaluate_run(runs[name], judged, per_query=True, extra=True)
        means = {m: sum(v) / len(v) for m, v in per_query.items()}
        if name in candidate_runs:
            means["ndcg@10_judged"] = evaluate_candidates(candidate_runs[name], judged)
        results["systems"][name] = {"mean": means, "per_query": per_query}
        write_trec_run(trec_path(output, name), runs[name], queries, name)
    results["query_order"] = queries
    write_json(output, results)
    if show_table:
        print(format_table(results))
    log.info("[evaluate] results written to %s (TREC runs beside it)", output)
    return results


def trec_path(results_file: Path, system: str) -> Path:
    """The TREC run file of ``system`` beside the results JSON: RESULTS_STEM.SYSTEM.trec."""
    return Path(results_file).with_name(f"{Path(results_file).stem}.{system}.trec")


def write_trec_run(path: Path, run: dict, queries: list[str], system: str) -> None:
    """A TREC run file: ``qid Q0 docid rank score system``, one query number per query (its line in
    the results' ``query_order``, since query texts hold spaces)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for qid, q in enumerate(queries):
            for rank, (pid, score) in enumerate(sorted(run.get(q, {}).items(), key=lambda h: -h[1]), start=1):
                fh.write(f"{qid} Q0 {pid} {rank} {score:.6f} {system}\n")


def format_table(results: dict) -> str:
    where = results["judgments"] or f"{results['split']} split"
    head = f"{results['dataset']} {where}: {results['queries']:,} queries over " \
           f"{results['products']:,} products" + (f" (dense model: {results['model']})" if results.get("model") else "")
    cols = [*METRICS, *EXTRA_METRICS, "ndcg@10_judged"]
    lines = [head, f"| system | {' | '.join(cols)} |", "|---" * (len(cols) + 1) + "|"]
    for name, r in results["systems"].items():
        lines.append(f"| {name} | " + " | ".join(f"{r['mean'][c]:.3f}" if c in r["mean"] else "-" for c in cols) + " |")
    return "\n".join(lines)
