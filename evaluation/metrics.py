"""IR metrics over FirstLight's relevance scale, computed by ranx (no hand-written metric code).

Protocol (the Home Depot README's):
- graded gain = relevance - 1 (0 to 2); unjudged products count 0 -> nDCG@10;
- relevant = relevance >= 2.5 -> Recall@100 and MRR@10;
- at least partly relevant = relevance >= 2 -> P@10 (the densely judged pool's yardstick);
- judged@10: the share of each top 10 that is judged at all (unjudged products count as irrelevant,
  so a low share means the figures under-measure that ranking);
- the query set is every query with at least one relevant product.

ranx takes integer judgments, and relevance here is a mean of 3 or 4 ratings (multiples of 1/12), so
gains are stored times 12. ranx's ``ndcg`` uses linear gains, which makes that scaling exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ranking.fusion import fuse_runs

RELEVANT_AT = 2.5
PARTLY_RELEVANT_AT = 2.0
GAIN_SCALE = 12
METRICS = ("ndcg@10", "recall@100", "mrr@10")
EXTRA_METRICS = ("p@10", "judged@10")


@dataclass
class Judged:
    """Test judgments in the shapes ranx needs."""

    graded: dict   # query -> {product_id: integer gain}
    binary: dict   # query -> {product_id: 1} for relevant products
    candidates: dict  # query -> list of judged product ids (the rerank protocol's candidates)
    partial: dict = None  # query -> {product_id: 1} for products judged at least partly relevant

    def __post_init__(self):
        if self.partial is None:
            self.partial = {q: {p: 1 for p, g in self.graded[q].items() if g >= (PARTLY_RELEVANT_AT - 1) * GAIN_SCALE}
                            for q in self.graded}

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


def evaluate_run(run: dict, judged: Judged, per_query: bool = False, extra: bool = False) -> dict:
    """Mean nDCG@10 (graded), Recall@100 and MRR@10 (binary) of ``run`` = {query: {product: score}};
    with ``extra`` also P@10 (relevance >= 2) and judged@10.

    Queries missing from the run score 0. With ``per_query`` each metric maps to a list aligned with
    ``judged.queries`` (for paired comparisons) instead of a mean.
    """
    from ranx import evaluate

    queries = judged.queries
    run = {q: run[q] for q in queries if run.get(q)}
    out = {}
    groups = [(judged.graded, ["ndcg@10"]), (judged.binary, ["recall@100", "mrr@10"])]
    if extra:
        groups.append((judged.partial, ["precision@10"]))
    for qrels, metrics in groups:
        ranx_run = _run(run)
        evaluate(_qrels({q: qrels[q] for q in queries}), ranx_run, metrics, make_comparable=True)
        for m in metrics:
            scores = ranx_run.scores[m]  # ranx keeps each query's score on the run
            values = [float(scores.get(q, 0.0)) for q in queries]
            out[m.replace("precision", "p")] = values if per_query else float(np.mean(values))
    if extra:
        values = []
        for q in queries:
            top = sorted(run.get(q, {}).items(), key=lambda h: -h[1])[:10]
            known = set(judged.candidates[q])
            values.append(sum(p in known for p, _ in top) / 10.0)
        out["judged@10"] = values if per_query else float(np.mean(values))
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


def tune_fusion(runs: list[dict], judged: Judged, method: str, depth: int | None = None) -> dict:
    """The fusion parameters (for ``ranking.fusion.fuse_runs`` over ``runs``) that maximise nDCG@10 on
    ``judged``: two runs' wsum weights in steps of 0.05, or rrf's k. Tune on a split other than the
    one reported."""
    queries = [q for q in judged.queries if all(r.get(q) for r in runs)]
    if not queries:
        raise ValueError("no query is answered by every run: nothing to tune the fusion on")
    if method == "wsum":
        if len(runs) != 2:
            raise ValueError("the weighted sum is tuned for two runs")
        grid = [{"weights": [round(1 - w, 2), round(w, 2)]} for w in np.linspace(0, 1, 21)]
    else:
        grid = [{"k": k} for k in (1, 5, 10, 20, 30, 40, 60, 80, 100)]
    subset = [{q: r[q] for q in queries} for r in runs]
    tuning = Judged({q: judged.graded[q] for q in queries}, {q: judged.binary[q] for q in queries},
                    {q: judged.candidates[q] for q in queries})
    scored = [(evaluate_run(fuse_runs(subset, method, params, depth), tuning)["ndcg@10"], i)
              for i, params in enumerate(grid)]
    return grid[max(scored)[1]]
