"""From cold to warm within one session: what the visitor clicked moves the ranking, and every
product says why it is there.

- **Personalisation** (Rocchio): the query vector is pulled toward the clicked products' vectors,
  ``q' = normalise(q + weight * mean(clicked))``; BM25 still ranks the words typed, the two sides are
  fused as usual, the reranker still reads the text, and clicked products are not shown again. The
  weight is tuned on val (benchmarks/quality/bench_session.py). Nothing is kept on the server: the client
  sends its clicks with each request, so any replica can answer and a restart loses nothing.
- **Explanations** (``why``): the query words a product matches (after normalisation and spelling
  correction, compared as BM25 compares them: stemmed), which side of the first stage found it
  (lexical = BM25, semantic = the encoder), how far the reranker moved it, and the clicked product it
  resembles. All read off the scores the ranking already computed.
"""

from __future__ import annotations

import re

import numpy as np

from common.text import normalize_text
from ranking.tokens import CJK_RUNS

RESEMBLES_AT = 0.6  # cosine above which a product is said to resemble a clicked one


def personalised(queries: np.ndarray, clicked: list[np.ndarray | None], weight: float) -> np.ndarray:
    """Each query vector moved toward the mean of its session's clicked vectors (rows with no
    clicks unchanged), back on the unit sphere."""
    out = np.array(queries, dtype=np.float32, copy=True)
    for i, vectors in enumerate(clicked):
        if vectors is not None and len(vectors) and weight > 0:
            moved = out[i] + weight * np.mean(vectors, axis=0)
            out[i] = moved / max(float(np.linalg.norm(moved)), 1e-12)
    return out


def resemblance(item: np.ndarray, clicked_ids: list[str], clicked: np.ndarray) -> tuple[str, float] | None:
    """The clicked product most like ``item`` and their cosine, when it reaches RESEMBLES_AT."""
    if not len(clicked_ids):
        return None
    sims = clicked @ item
    best = int(np.argmax(sims))
    return (clicked_ids[best], float(sims[best])) if sims[best] >= RESEMBLES_AT else None


_WORD = re.compile(r"(?u)\b\w\w+\b")


def matched_words(query: str, product_text: str, tokenizer) -> list[str]:
    """The query's words found in the product's text, compared as BM25 compares them (``tokenizer``
    is ranking.tokens.LexicalTokenizer: lower case, stopwords out, stemmed). Chinese (and other CJK)
    text has no spaces to find words by: there, the longest runs of two or more characters the
    product's text holds too ("春游" of "适合春游的外套")."""
    product = set(tokenizer(product_text))
    product_text = normalize_text(product_text).lower()
    seen, out = set(), []
    for i, part in enumerate(CJK_RUNS.split(normalize_text(query).lower())):
        words = cjk_matches(part, product_text) if i % 2 else [
            w for w in _WORD.findall(part) if (tokens := tokenizer(w)) and all(t in product for t in tokens)]
        for word in words:
            if word not in seen:
                seen.add(word)
                out.append(word)
    return out


def cjk_matches(run: str, text: str) -> list[str]:
    """The longest pieces (two characters or more) of a CJK run that ``text`` holds, left to right."""
    out, i = [], 0
    while i < len(run) - 1:
        end = i + 1
        while end < len(run) and run[i:end + 1] in text:
            end += 1
        if end - i >= 2:
            out.append(run[i:end])
            i = end
        else:
            i += 1
    return out


def explain(query: str, hit: dict, tokenizer, rank: int, first_rank: int | None) -> dict:
    """``why`` for one returned product: matched words, first-stage sources, the reranker's move and
    the clicked product it resembles, with a one-line summary."""
    matched = matched_words(query, hit.get("text") or hit.get("title", ""), tokenizer)
    stages = [name for name, key in (("lexical", "lexical"), ("semantic", "dense")) if hit.get(key) is not None]
    moved = None if first_rank is None else first_rank - rank
    like = hit.get("resembles")
    parts = []
    if matched:
        parts.append("matches " + ", ".join(f"'{w}'" for w in matched))
    found = {("lexical", "semantic"): "found by both BM25 and the encoder", ("lexical",): "found by BM25",
             ("semantic",): "found by the encoder"}.get(tuple(stages))
    if found or not hit.get("rules"):  # a product only a rule put here says so below
        parts.append(found or "added by the session")
    if moved:
        parts.append(f"moved {'up' if moved > 0 else 'down'} {abs(moved)} by the reranker")
    resembles = None
    if like:
        resembles = {"id": like[0], "title": like[2], "similarity": round(like[1], 3)}
        parts.append(f"like '{resembles['title'] or like[0]}' you clicked")
    constraints = list(hit.get("constraints") or [])
    if constraints:
        parts.append("meets " + ", ".join(constraints))
    rules = list(hit.get("rules") or [])
    parts.extend(rules)
    return {"text": "; ".join(parts), "matched": matched, "stages": stages, "reranker_moved": moved,
            "resembles": resembles, "constraints": constraints, "rules": rules}
