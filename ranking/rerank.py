"""The second stage: reorder the first stage's top ``depth`` by the cross-encoder's scores.

Pure Python over the candidate dicts the first stage returns (no model here: the server's Reranker
deployment or the evaluate stage computes the scores), so the gateway applies exactly what
`firstlight evaluate` applies. ``weight`` 1 ranks by the reranker alone; below 1 it blends the two
stages' min-max normalised scores (the first stage keeps 1 - weight).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from common.config import check_range


@dataclass
class RerankStage:
    """The second stage's settings, shared by the serving config and the evaluate stage."""

    model: str | None = field(default=None, metadata={
        "help": "cross-encoder folder (`firstlight train-reranker`'s OUTPUT/model); none = no second stage"})
    depth: int = field(default=10, metadata={"help": "first-stage products the reranker reorders per query"})
    weight: float = field(default=0.6, metadata={
        "help": "the reranker's share of a blended score with the first stage's (1 = reranker alone)"})
    max_length: int | None = field(default=None, metadata={
        "help": "tokens per (query, product) pair; default: what the model was trained with (its firstlight.json)"})
    timeout_s: float = field(default=2.0, metadata={
        "help": "serving: longest wait for the reranker before answering with the first-stage ranking (a "
                "replica that died or was never placed)"})
    budget_ms: float = field(default=300.0, metadata={
        "help": "serving: the longest a reranked reply may take (from the request's arrival); when the first "
                "stage and the reranker's queue leave too little of it, the first-stage ranking is served at "
                "once, marked as such"})

    def validate(self, prefix: str = "rerank.", most: int | None = None) -> None:
        """``most``: the deepest list the caller's first stage hands on (None: it widens to fit)."""
        check_range(prefix + "depth", self.depth, 1, most)
        check_range(prefix + "weight", self.weight, 0.0, 1.0)
        check_range(prefix + "timeout_s", self.timeout_s, 0.0, low_inclusive=False)
        check_range(prefix + "budget_ms", self.budget_ms, 0.0, low_inclusive=False)
        if self.max_length is not None:
            check_range(prefix + "max_length", self.max_length, 2, 8192)


def rerank(candidates: list[dict], scores, depth: int, weight: float = 1.0) -> list[dict]:
    """Candidates (best first, each with ``score``) -> the same products, the top ``depth`` reordered.

    ``scores``: the reranker's score of each of the first ``depth`` candidates, in their order.
    Reordered items carry ``rerank`` (the reranker's score) and their ``score`` becomes the blended
    value; the ones below ``depth`` keep their first-stage order after them."""
    head, tail = candidates[:depth], candidates[depth:]
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) != len(head):
        raise ValueError(f"{len(scores)} reranker scores for {len(head)} candidates")
    if not head:
        return list(candidates)
    final = scores if weight >= 1.0 else weight * _minmax(scores) + (1.0 - weight) * _minmax(
        np.array([c["score"] for c in head], dtype=np.float64))
    order = np.argsort(-final, kind="stable")
    reordered = [{**head[i], "first_stage": head[i]["score"], "rerank": float(scores[i]), "score": float(final[i])}
                 for i in order]
    return reordered + tail


def _minmax(x: np.ndarray) -> np.ndarray:
    return (x - x.min()) / max(float(x.max() - x.min()), 1e-9)


def as_run(ranking: list[dict]) -> dict:
    """One query's ranking as a ranx run entry whose scores follow the list order (the reranked head
    and the first-stage tail are on different scales)."""
    return {c["id"]: float(len(ranking) - i) for i, c in enumerate(ranking)}
