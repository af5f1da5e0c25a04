"""Fusing the first stage's two lists (FAISS, BM25) for one query: what the server runs per request
and `firstlight evaluate` runs per query, so both rank alike.

- ``wsum``: each list's scores min-max normalised over that list, then a weighted sum (a product
  missing from a list gets 0 from it), as ranx's ``fuse`` computes it (a test holds them equal) with
  one difference: a list that ran out before ``depth`` (BM25 matched fewer products than asked) is
  normalised from 0, the score of every product it did not match. Plain min-max would give a lone
  BM25 match (an exact model number) 0 and let the lexical side add nothing exactly where it matters;
- ``rrf``: the sum of 1 / (k + rank) over the lists, ranks counted from 1.
"""

from __future__ import annotations

FUSION_METHODS = ("rrf", "wsum")


def fuse_lists(lists: list[dict], method: str, params: dict, depth: int | None = None) -> dict:
    """{product: score} lists (dense first, lexical second) -> one {product: fused score}, best first.

    ``depth``: how many products each list was asked for (a shorter list's floor is 0, see above)."""
    fused: dict = {}
    if method == "rrf":
        k = params["k"]
        for hits in lists:
            for rank, pid in enumerate(sorted(hits, key=lambda p: -hits[p]), start=1):
                fused[pid] = fused.get(pid, 0.0) + 1.0 / (k + rank)
    elif method == "wsum":
        for weight, hits in zip(params["weights"], lists):
            if not hits:
                continue
            low, high = min(hits.values()), max(hits.values())
            if depth is not None and len(hits) < depth:
                low = min(low, 0.0)
            span = max(high - low, 1e-9)  # ranx's guard against a list of equal scores
            for pid, score in hits.items():
                fused[pid] = fused.get(pid, 0.0) + weight * (score - low) / span
    else:
        raise ValueError(f"unknown fusion method {method!r}; use one of {FUSION_METHODS}")
    return dict(sorted(fused.items(), key=lambda h: -h[1]))


def fuse_runs(runs: list[dict], method: str, params: dict, depth: int | None = None) -> dict:
    """Runs ({query: {product: score}}) fused query by query with :func:`fuse_lists`."""
    queries = dict.fromkeys(q for run in runs for q in run)
    return {q: fuse_lists([run.get(q, {}) for run in runs], method, params, depth) for q in queries}
