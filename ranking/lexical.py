"""The lexical side: BM25 over product texts (bm25s; the tokens of ranking/tokens.py: English words
stemmed, CJK text as character unigrams + bigrams), plus products added, changed or deleted while it
serves.

bm25s builds a static index, so live changes sit beside it the way the FAISS side keeps them:
- deleted (or replaced) saved products are masked out of bm25s's results (its ``weight_mask``);
- added products are scored with the same BM25 formula (Lucene's, bm25s's default) and the saved
  catalogue's statistics (document frequencies, average length), so their scores are on the same
  scale as the saved products' and the two lists merge by score.
"""

from __future__ import annotations

import logging
import math
from collections import Counter

import numpy as np

from ranking.tokens import LexicalTokenizer


class LexicalIndex:
    """BM25 over a catalogue; ``search`` ranks it, ``score`` scores chosen products."""

    def __init__(self, ids: list[str], texts: list[str], k1: float = 1.5, b: float = 0.75):
        import bm25s

        # bm25s logs every query with no searchable word (all stopwords) at INFO: nothing to act on
        logging.getLogger("bm25s").setLevel(logging.WARNING)
        self.k1, self.b = k1, b
        self.tokenizer = LexicalTokenizer()
        self.ids = np.asarray(ids, dtype=object)
        self._row = {pid: i for i, pid in enumerate(ids)}
        docs = self.tokenizer.many(texts)
        self._vocab: dict[str, int] = {}
        doc_ids = [[self._vocab.setdefault(t, len(self._vocab)) for t in doc] for doc in docs]
        self.retriever = bm25s.BM25(k1=k1, b=b)
        self.retriever.index(bm25s.tokenization.Tokenized(ids=doc_ids, vocab=self._vocab), show_progress=False)
        # the saved catalogue's statistics, for scoring products added later on the same scale
        self._df = np.diff(self.retriever.scores["indptr"])
        self._n = len(ids)
        self._avgdl = max(1e-9, float(np.mean([len(d) for d in docs]))) if docs else 1.0
        self._mask = np.ones(len(ids), dtype=np.float32)
        # BM25 ties often (a one-word query, titles of one length): broken in a fixed random order of
        # the rows, never by row order, which in a catalogue file tracks age and with it being judged
        self._tiebreak = np.random.default_rng(0).permutation(len(ids))
        self.masked: set[str] = set()
        self.added: dict[str, Counter] = {}  # id -> its token counts
        self._added_len: dict[str, int] = {}

    def __len__(self) -> int:
        return self._n - len(self.masked) + len(self.added)

    # -- live changes (the serving side calls these as its change log is replayed) -------------
    def upsert(self, product_id: str, text: str) -> None:
        if product_id in self._row:
            self._mask_row(product_id)
        tokens = self._tokens([text])[0]
        self.added[product_id] = Counter(tokens)
        self._added_len[product_id] = len(tokens)

    def delete(self, product_id: str) -> None:
        if product_id in self._row:
            self._mask_row(product_id)
        self.added.pop(product_id, None)
        self._added_len.pop(product_id, None)

    def _mask_row(self, product_id: str) -> None:
        self.masked.add(product_id)
        self._mask[self._row[product_id]] = 0.0

    # -- ranking ---------------------------------------------------------------------------------
    def _tokens(self, texts: list[str]) -> list[list[str]]:
        return self.tokenizer.many(texts)

    def search(self, queries: list[str], k: int, within: list | None = None) -> list[dict]:
        """Top-k products per query as {product_id: score} (products with score 0 are left out).
        ``within``: per query None, or (one bool per saved row, the added ids allowed): a filter,
        applied as bm25s's weight mask so the k are the best *allowed* products."""
        tokens = self._tokens(queries)
        out = []
        for i, query_tokens in enumerate(tokens):
            allowed = within[i] if within is not None else None
            rr, ss = self._top(query_tokens, k, None if allowed is None else allowed[0])
            hits = {self.ids[r]: float(s) for r, s in zip(rr, ss) if s > 0}
            if self.added:
                hits.update({p: s for p, s in self._added_scores(query_tokens).items()
                             if s > 0 and (allowed is None or p in allowed[1])})
                hits = dict(sorted(hits.items(), key=lambda h: -h[1])[:k])
            out.append(hits)
        return out

    def _top(self, query_tokens: list[str], k: int, allowed: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """Rows and scores of the k best saved products, best first. bm25s computes the
        scores; the ranking is done here because bm25s's ``retrieve`` spends ~7 ms of overhead on a
        single query, which is what a served request asks, where this takes ~0.3 ms."""
        token_ids = self.retriever.get_tokens_ids(query_tokens)
        if not token_ids:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        mask = self._mask if self.masked else None
        if allowed is not None:
            mask = self._mask * allowed.astype(np.float32)
        scores = self.retriever.get_scores_from_ids(token_ids, weight_mask=mask)
        k = min(k, self._n)
        top = np.argpartition(-scores, k - 1)[:k] if k < self._n else np.arange(self._n)
        top = top[np.lexsort((self._tiebreak[top], -scores[top]))]
        return top, scores[top]

    def score(self, query: str, product_ids: list[str]) -> dict:
        """BM25 scores of the given products for one query."""
        tokens = self._tokens([query])[0]
        all_scores = self.retriever.get_scores(tokens) if tokens else np.zeros(self._n)
        scores = {p: float(all_scores[self._row[p]]) for p in product_ids
                  if p in self._row and p not in self.masked}
        added = self._added_scores(tokens)
        scores.update({p: added[p] for p in product_ids if p in added})
        return scores

    def _added_scores(self, query_tokens: list[str]) -> dict:
        """Lucene BM25 (bm25s's formula) of the added products, with the saved catalogue's statistics."""
        scores = {}
        for pid, counts in self.added.items():
            norm = self.k1 * (1 - self.b + self.b * self._added_len[pid] / self._avgdl)
            total = 0.0
            for token in query_tokens:
                tf = counts.get(token, 0)
                if tf:
                    df = int(self._df[self._vocab[token]]) if token in self._vocab else 0
                    idf = math.log(1 + (self._n - df + 0.5) / (df + 0.5))
                    total += idf * tf / (tf + norm)
            scores[pid] = total
        return scores
