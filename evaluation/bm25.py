"""The lexical baseline: BM25 over product texts (bm25s, English stopwords, Snowball stemming)."""

from __future__ import annotations

import numpy as np

from common.text import normalize_text


class BM25Retriever:
    """BM25 over a catalogue; ``search`` ranks it, ``score`` scores chosen products."""

    def __init__(self, ids: list[str], texts: list[str], k1: float = 1.5, b: float = 0.75):
        import bm25s
        import Stemmer

        self._bm25s = bm25s
        self.stemmer = Stemmer.Stemmer("english")
        self.ids = np.asarray(ids, dtype=object)
        self._row = {pid: i for i, pid in enumerate(ids)}
        tokens = bm25s.tokenize([normalize_text(t) for t in texts], stopwords="en", stemmer=self.stemmer,
                                show_progress=False)
        self.retriever = bm25s.BM25(k1=k1, b=b)
        self.retriever.index(tokens, show_progress=False)

    def _tokens(self, queries: list[str]) -> list[list[str]]:
        return self._bm25s.tokenize([normalize_text(q) for q in queries], stopwords="en", stemmer=self.stemmer,
                                    return_ids=False, show_progress=False)

    def search(self, queries: list[str], k: int) -> list[dict]:
        """Top-k products per query as {product_id: score} (products with score 0 are left out)."""
        k = min(k, len(self.ids))
        rows, scores = self.retriever.retrieve(self._tokens(queries), k=k, show_progress=False, n_threads=0)
        return [{self.ids[r]: float(s) for r, s in zip(rr, ss) if s > 0} for rr, ss in zip(rows, scores)]

    def score(self, query: str, product_ids: list[str]) -> dict:
        """BM25 scores of the given products for one query."""
        tokens = self._tokens([query])[0]
        all_scores = self.retriever.get_scores(tokens) if tokens else np.zeros(len(self.ids))
        return {p: float(all_scores[self._row[p]]) for p in product_ids if p in self._row}
