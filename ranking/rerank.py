"""The second stage: reorder the first stage's top ``depth`` by the cross-encoder's scores.

Pure Python over the candidate dicts the first stage returns (no model here: the server's Reranker
deployment or the evaluate stage computes the scores), so the gateway applies exactly what
`firstlight evaluate` applies. ``weight`` 1 ranks by the reranker alone; below 1 it blends the two
stages' min-max normalised scores (the first stage keeps 1 - weight).
"""

from __future__ import annotations

import numpy as np


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
