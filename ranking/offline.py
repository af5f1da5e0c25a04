"""The ranking path for many queries at once, outside the server: what `firstlight evaluate` scores
and what reranker training mines its candidate lists from.

It loads the same parts the server loads (the FAISS index and its model, BM25 over the prepared
catalogue, the spelling corrector, the reranker) and calls the same code: ``HybridIndex`` for the
first stage and :func:`ranking.rerank.rerank` for the second.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from common.errors import ConfigError
from common.spelling import QuerySpeller
from data_pipeline.index import ProductIndex
from data_pipeline.prepare import catalogue_schema, load_catalogue
from model.encoder import TextEncoder
from model.reranker import Reranker
from model.runtime import EncoderRuntime
from ranking.constraint_plan import ConstraintPlan, relax_short, without_excluded
from ranking.filters import AttributeTable
from ranking.hybrid import FirstStage, HybridIndex
from ranking.rerank import rerank

log = logging.getLogger(__name__)


class OfflineRanker:
    def __init__(self, prepared_dir: str, index_dir: str | None, model: str | None = None, spell_correct: bool = True,
                 runtime: EncoderRuntime | None = None, lexical: bool = True):
        """``index_dir`` None: the lexical side only (BM25 needs no index or encoder); ``runtime``: how
        the encoder runs (model/runtime.py; its defaults are the server's)."""
        catalogue = load_catalogue(Path(prepared_dir))
        index = ProductIndex.load(Path(index_dir)) if index_dir else None
        self.model = model or (index.manifest.get("model") if index else None)
        if index is not None and not self.model:
            raise ConfigError("model", f"the index in {index_dir} does not record its model", "pass --model")
        self.hybrid = HybridIndex(index, catalogue["product_id"].tolist(), catalogue["title"].tolist(),
                                  catalogue["text"].tolist(), lexical=lexical,
                                  attributes=AttributeTable(catalogue_schema(Path(prepared_dir)), catalogue))
        self.speller = QuerySpeller(catalogue["text"]) if spell_correct else None
        self._encoder, self.runtime = None, runtime or EncoderRuntime()

    @property
    def encoder(self) -> TextEncoder:
        if self._encoder is None:
            self._encoder = TextEncoder.load(self.model, max_length=self.runtime.lengths, backend=self.runtime.backend,
                                             device=self.runtime.device)
        return self._encoder

    def corrected(self, queries: list[str]) -> list[str]:
        return [self.speller.correct(q) for q in queries] if self.speller else list(queries)

    def sides(self, queries: list[str], stage: FirstStage, filter=None):
        """(texts as ranked, their query vectors (None for lexical), dense lists, lexical lists);
        ``filter``: one filter (ranking/filters.py) for every query, applied as the server applies it."""
        texts = self.corrected(queries)
        start = time.perf_counter()
        vectors = self.encoder.encode(texts, batch_size=128, role="query") if stage.mode != "lexical" else None
        dense, lexical = self.hybrid.sides(vectors, texts, stage, filters=None if filter is None
                                           else [filter] * len(texts))
        log.info("[rank] first stage (%s) for %d queries in %.1fs", stage.mode, len(queries),
                 time.perf_counter() - start)
        return texts, vectors, dense, lexical

    def sides_within(self, texts: list[str], vectors, stage: FirstStage, plans: list[ConstraintPlan], k: int,
                     tokenizer) -> tuple[list | None, list | None, list[ConstraintPlan]]:
        """(dense lists, lexical lists, plans as applied) for texts already corrected and encoded: each
        query within its plan's filter, less the products with an excluded word, its least certain
        hard constraint relaxed while its fused list is shorter than ``k``: what the server's ranking
        path does (serve/ranking_path.py)."""
        plans = list(plans)
        dense = [None] * len(texts) if stage.mode != "lexical" else None
        lexical = [None] * len(texts) if stage.mode != "dense" else None
        todo = list(range(len(texts)))
        while todo:
            d, x = self.hybrid.sides(vectors[todo] if vectors is not None else None, [texts[i] for i in todo], stage,
                                     filters=[plans[i].filter() for i in todo])
            for j, i in enumerate(todo):
                words = plans[i].exclusions()
                if dense is not None:
                    dense[i] = self._without(d[j], words, tokenizer)
                if lexical is not None:
                    lexical[i] = self._without(x[j], words, tokenizer)
            fused = HybridIndex.fused([dense[i] for i in todo] if dense is not None else None,
                                      [lexical[i] for i in todo] if lexical is not None else None, stage)
            todo = relax_short(plans, todo, [len(ranking) for ranking in fused], k)
        return dense, lexical, plans

    def _without(self, side: dict, words: list[str], tokenizer) -> dict:
        if not words:
            return side
        kept = without_excluded([{"id": p, "text": self.hybrid.texts.get(p, "")} for p in side], words, tokenizer)
        return {h["id"]: side[h["id"]] for h in kept}

    def candidates(self, queries: list[str], stage: FirstStage, k: int, filter=None
                   ) -> tuple[list[str], list[list[dict]]]:
        """(texts as ranked, the first stage's top-k candidate dicts per query)."""
        texts, _, dense, lexical = self.sides(queries, stage, filter)
        fused = HybridIndex.fused(dense, lexical, stage)
        return texts, [[{"id": p, "text": self.hybrid.texts.get(p, ""), "title": self.hybrid.titles.get(p, ""),
                         "score": s} for p, s in list(ranking.items())[:k]] for ranking in fused]


def rerank_all(reranker: Reranker, texts: list[str], candidates: list[list[dict]], depth: int,
               weight: float = 1.0, batch_size: int = 128) -> list[list[dict]]:
    """The second stage over many queries: all (query, product) pairs scored in large batches."""
    queries, products = [], []
    for text, cands in zip(texts, candidates):
        for c in cands[:depth]:
            queries.append(text)
            products.append(c["text"])
    start = time.perf_counter()
    scores = reranker.score_pairs(queries, products, batch_size=batch_size)
    log.info("[rank] reranked %d pairs (%d queries, depth %d) in %.1fs", len(scores), len(texts), depth,
             time.perf_counter() - start)
    out, at = [], 0
    for cands in candidates:
        n = min(depth, len(cands))
        out.append(rerank(cands, scores[at:at + n], depth, weight))
        at += n
    return out
