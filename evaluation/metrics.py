"""IR metrics over FirstLight's relevance scale, computed by ranx (no hand-written metric code).

Protocol (the Home Depot README's):
- graded gain = relevance - 1 (0 to 2); unjudged products count 0 -> nDCG@10;
- relevant = relevance >= 2.5 -> Recall@100 and MRR@10;
- the query set is every query with at least one relevant product.

ranx takes integer judgments, and relevance here is a mean of 3 or 4 ratings (multiples of 1/12), so
gains are stored times 12. ranx's ``ndcg`` uses linear gains, which makes that scaling exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

RELEVANT_AT = 2.5
GAIN_SCALE = 12
METRICS = ("ndcg@10", "recall@100", "mrr@10")


@dataclass
class Judged:
    """Test judgments in the shapes ranx needs."""

    graded: dict   # query -> {product_id: integer gain}
    binary: dict   # query -> {product_id: 1} for relevant products
    candidates: dict  # query -> list of judged product ids (the rerank protocol's candidates)

    @property
    def queries(self) -> list[str]:
        return sorted(self.binary)


def judged_from_frame(judgments: pd.DataFrame) -> Judged:
    """Build qrels from (query, product_id, relevance) rows; repeated pairs are averaged."""
    mean = judgments.groupby(["query", "product_id"], sort=True)["relevance"].mean().reset_index()
    graded, binary, candidates = {}, {}, {}
    for query, rows in mean.groupby("query", sort=True):
        relevant = rows[rows["relevance"] >= RELEVANT_AT]
        if relevant.empty:
            continue
        gains = np.rint((rows["relevance"].to_numpy() - 1.0) * GAIN_SCALE).astype(int)
        graded[query] = {p: int(g) for p, g in zip(rows["product_id"], gains) if g > 0}
        binary[query] = {p: 1 for p in relevant["product_id"]}
        candidates[query] = list(rows["product_id"])
    return Judged(graded, binary, candidates)


def _qrels(d: dict):
    from ranx import Qrels

    return Qrels.from_dict(d)


def _run(d: dict):
    from ranx import Run

    return Run.from_dict(d)


def evaluate_run(run: dict, judged: Judged, per_query: bool = False) -> dict:
    """Mean nDCG@10 (graded), Recall@100 and MRR@10 (binary) of ``run`` = {query: {product: score}}.

    Queries missing from the run score 0. With ``per_query`` each metric maps to a list aligned with
    ``judged.queries`` (for paired comparisons) instead of a mean.
    """
    from ranx import evaluate

    queries = judged.queries
    run = {q: run[q] for q in queries if run.get(q)}
    out = {}
    for qrels, metrics in ((judged.graded, ["ndcg@10"]), (judged.binary, ["recall@100", "mrr@10"])):
        ranx_run = _run(run)
        evaluate(_qrels({q: qrels[q] for q in queries}), ranx_run, metrics, make_comparable=True)
        for m in metrics:
            scores = ranx_run.scores[m]  # ranx keeps each query's score on the run
            values = [float(scores.get(q, 0.0)) for q in queries]
            out[m] = values if per_query else float(np.mean(values))
    return out


def evaluate_candidates(run: dict, judged: Judged) -> float:
    """nDCG@10 when each query's run is restricted to its judged candidates (the rerank protocol)."""
    from ranx import evaluate

    queries = judged.queries
    restricted = {}
    for q in queries:
        scores = run.get(q, {})
        restricted[q] = {p: float(scores.get(p, -1e9)) for p in judged.candidates[q]}
    return float(evaluate(_qrels({q: judged.graded[q] for q in queries}), _run(restricted), "ndcg@10",
                          make_comparable=True))


def fuse_rrf(runs: list[dict], k: int = 60) -> dict:
    """Reciprocal-rank fusion of runs ({query: {product: score}}), by ranx."""
    return fuse(runs, "rrf", {"k": k})


FUSION_METHODS = ("rrf", "wsum")


def fuse(runs: list[dict], method: str, params: dict) -> dict:
    """Fuse runs ({query: {product: score}}) by ranx: ``rrf`` (params k) or ``wsum`` (params weights,
    a weighted sum of min-max normalised scores)."""
    from ranx import fuse as ranx_fuse

    common = set.intersection(*(set(q for q, docs in r.items() if docs) for r in runs))
    fused = ranx_fuse([_run({q: r[q] for q in common}) for r in runs], method=method, params=params,
                      norm="min-max" if method == "wsum" else None).to_dict()
    for r in runs:  # a query that only some runs answered keeps the first answer it got
        for q, docs in r.items():
            if docs and q not in fused:
                fused[q] = dict(docs)
    return fused


def tune_fusion(runs: list[dict], judged: Judged, method: str) -> dict:
    """The fusion parameters that maximise nDCG@10 of ``runs`` on ``judged`` (ranx's grid search):
    rrf's k, or wsum's weights in steps of 0.1. Tune on a split other than the one reported."""
    from ranx import optimize_fusion

    queries = [q for q in judged.queries if all(r.get(q) for r in runs)]
    if not queries:
        raise ValueError("no query is answered by every run: nothing to tune the fusion on")
    params = optimize_fusion(_qrels({q: judged.graded[q] for q in queries}), [_run({q: r[q] for q in queries}) for r in runs],
                             norm="min-max" if method == "wsum" else None, method=method, metric="ndcg@10")
    return {k: (list(map(float, v)) if isinstance(v, (list, tuple)) else v) for k, v in params.items()}
