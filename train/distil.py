"""Teaching the encoder what BM25 fused with a dense ranker knows: listwise distillation on training queries.

On unseen queries BM25 fused with the encoder ranks better than the encoder alone: BM25 matches the
exact words (sizes, model numbers, brands) that a small dense encoder blurs. ``--distil-index-dir DIR``
folds that into the encoder itself, so one model serves it and no BM25 index runs beside it.

For each training query the *teacher* ranks the catalogue by a weighted sum of min-max normalised
scores (as the evaluation's ``wsum`` fusion does) of BM25 and the encoder of the given FirstLight
index (a fine-tuned run's, usually). Each training row then carries ``distil_candidates`` of the
teacher's top products that no rater judged for the query (judged products have their labels, which
InfoNCE already uses), plus the teacher's scores for them and for the row's positive. A judged
positive is scored as the teacher's best product, plus ``distil_positive_margin``: where a rater
said "relevant", the label wins. The loss adds ``distil_weight`` x KL(teacher || student) over (positive, candidates),
the teacher's scores divided by ``distil_temperature`` and the student's cosine similarities times
InfoNCE's scale, before each softmax.

Unlike a mined negative, a distillation candidate is not pushed to the bottom: it is placed where
the teacher places it, relative to the positive. Unjudged products near the top of the fused ranking
are often relevant; here they are kept near it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

TEACHER = "distil_teacher"  # the per-row list of teacher scores: the positive's, then each candidate's
PRESENT = "has_distil"


def distil_columns(columns) -> list[str]:
    """The candidate text columns (``distil1``, ``distil2``, ...) of a pairs table, or of a tokenised
    batch (whose keys are ``distil1_ids`` and so on), in order."""
    found = {int(m.group(1)) for c in columns if (m := re.fullmatch(r"distil(\d+)(?:_ids)?", c))}
    return [f"distil{i}" for i in sorted(found)]


def fusion_teacher(queries: list[str], index_dir: Path, catalogue: pd.DataFrame, depth: int,
                   dense_weight: float) -> dict[str, list[tuple[str, float]]]:
    """Per query, the teacher's top ``depth`` products as (product_id, score), best first.

    Score: ``dense_weight`` x the index encoder's cosine + (1 - ``dense_weight``) x BM25, each min-max
    normalised over the query's top ``depth`` of that ranker (a product one ranker did not return
    gets 0 from it), so scores lie in [0, 1]."""
    from evaluation.bm25 import BM25Retriever
    from evaluation.metrics import fuse
    from serve.index import ProductIndex
    from train.encoder import TextEncoder

    index = ProductIndex.load(Path(index_dir), use_gpu="no")
    encoder = TextEncoder.load(index.manifest["model"])
    log.info("[train] distillation teacher: BM25 + %s (dense weight %.2f) ranks the top %d for %d queries",
             index.manifest["model"], dense_weight, depth, len(queries))
    scores, ids = index.search(encoder.encode(queries, batch_size=256, progress="[train] distillation teacher"), depth)
    dense = {q: {p: float(s) for p, s in zip(row, row_scores) if p is not None}
             for q, row, row_scores in zip(queries, ids, scores)}
    bm25 = BM25Retriever(catalogue["product_id"].tolist(), catalogue["text"].tolist())
    lexical = dict(zip(queries, bm25.search(queries, depth)))
    fused = fuse([dense, lexical], "wsum", {"weights": [dense_weight, 1.0 - dense_weight]})
    return {q: sorted(fused.get(q, {}).items(), key=lambda kv: kv[1], reverse=True)[:depth] for q in queries}


def row_candidates(ranked: list[tuple[str, float]], judged: set, keep_out: set, text, n: int,
                   i: int, margin: float = 0.0) -> tuple[list[str], list[float]]:
    """The i-th positive's ``n`` candidates (texts) and the teacher's scores, the positive's first.

    Candidates are the teacher's products no rater judged for the query (and none whose text is a
    judged-relevant product's), cycled over the query's positives so each sees different ones. The
    positive scores ``margin`` above the teacher's best product. A query with fewer than ``n`` such
    products gets none ([], []): a row's candidates must be distinct."""
    pool, seen = [], set()
    for pid, score in ranked:
        t = text[pid]
        if pid not in judged and t not in keep_out and t not in seen:
            pool.append((t, score))
            seen.add(t)
    if len(pool) < n:  # also when the teacher ranked nothing
        return [], []
    picked = [pool[(i * n + j) % len(pool)] for j in range(n)]
    best = ranked[0][1] + margin
    return [t for t, _ in picked], [best, *(s for _, s in picked)]


def distil_row(candidates: list[str], scores: list[float], n: int) -> tuple:
    """The row's distillation columns: n texts, the teacher scores, present (masked and empty if none)."""
    if not candidates:
        return (*([""] * n), [0.0] * (n + 1), False)
    return (*candidates, [float(s) for s in scores], True)


def distil_kl(queries, products, teacher, present, scale: float, temperature: float):
    """Mean over present rows of KL(teacher || student) over each row's (positive, candidates).

    ``queries`` (B, d) and ``products`` (B, K, d) are unit-norm embeddings, ``products[:, 0]`` the
    row's positive; ``teacher`` (B, K) the teacher's scores; ``present`` (B,) which rows have
    candidates. Each worker averages over its own rows; data-parallel averaging of gradients then
    makes it the mean over the global batch."""
    import torch
    import torch.nn.functional as F

    student = scale * torch.einsum("bd,bkd->bk", queries, products).float()
    target = F.softmax(teacher.float() / temperature, dim=1)
    kl = F.kl_div(F.log_softmax(student, dim=1), target, reduction="none").sum(dim=1)
    # a masked mean, 0 when no row has candidates: no branch on the data, so no device sync, and
    # the graph is kept (every rank must run the same backward)
    present = present.to(torch.bool)
    return torch.where(present, kl, 0.0).sum() / present.sum().clamp_min(1)
