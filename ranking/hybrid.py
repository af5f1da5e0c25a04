"""The first stage: FAISS (semantic) and BM25 (lexical) over the same catalogue, fused per query.

``HybridIndex`` holds both sides and every live change to them (an added product is embedded into
the dense overlay and tokenised into the lexical one, a deleted one is masked on both), so the
server's Retriever (serve.live_index replays its change log into one) and `firstlight evaluate`
rank through the same object:

- ``sides``: each side's top ``depth`` per query, as {product: score};
- ``search``: the two fused by :func:`ranking.fusion.fuse_lists` (``FirstStage`` says how), or one
  side alone (``mode`` dense or lexical).

A ``filter`` (ranking/filters.py) per query narrows both sides to the products it allows, saved and
live alike, before fusing: BM25 through its weight mask, FAISS through ``ProductIndex.search_within``
(which plans an exact scan or a filtered ANN search by how much the filter keeps).

Lexical matching catches what embeddings blur (model numbers, sizes, brands); the weighted sum's
weights are tuned on val (`firstlight evaluate --tune_fusion_on val`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from common.config import check_choice, check_range
from data_pipeline.index import ProductIndex
from ranking.filters import AttributeTable, Filter, matches
from ranking.fusion import FUSION_METHODS, fuse_lists
from ranking.lexical import LexicalIndex
from ranking.session import personalised, resemblance

MODES = ("hybrid", "dense", "lexical")


@dataclass
class FirstStage:
    """How the first stage reads a query and ranks: one object shared by serve, evaluate and the
    reranker's training lists, so all three see the same candidates."""

    spell_correct: bool = field(default=True, metadata={
        "help": "correct query words unknown to the catalogue (and to English) before either side searches"})

    mode: str = field(default="hybrid", metadata={"help": "hybrid (BM25 + FAISS fused), dense or lexical"})
    fusion: str = field(default="wsum", metadata={"help": "wsum (weighted min-max scores) or rrf (reciprocal ranks)"})
    dense_weight: float = field(default=0.7, metadata={"help": "wsum: the dense side's weight (BM25 gets 1 - it)"})
    rrf_k: int = field(default=60, metadata={"help": "rrf: the rank constant"})
    depth: int = field(default=100, metadata={"help": "products each side retrieves before fusing"})
    exact_filter_below: float = field(default=0.05, metadata={
        "help": "a filter keeping at most this share of the products is answered by scoring every product it "
                "keeps (exact); above it, by the index's filtered ANN search"})
    filter_widen: float = field(default=8.0, metadata={
        "help": "filtered ANN searches IVF's nprobe / HNSW's efSearch x this / the share the filter keeps "
                "(8: recall@100 >= 0.99 of the exact filtered ranking in benchmarks/RESULTS.md)"})

    def validate(self, prefix: str = "") -> None:
        check_choice(prefix + "mode", self.mode, MODES)
        check_choice(prefix + "fusion", self.fusion, FUSION_METHODS)
        check_range(prefix + "dense_weight", self.dense_weight, 0.0, 1.0)
        check_range(prefix + "rrf_k", self.rrf_k, 1)
        check_range(prefix + "depth", self.depth, 1)
        check_range(prefix + "exact_filter_below", self.exact_filter_below, 0.0, 1.0)
        check_range(prefix + "filter_widen", self.filter_widen, 1.0, 1000.0)

    def reaching(self, k: int) -> "FirstStage":
        """This stage, each side retrieving at least ``k`` products: a caller asking for more than
        ``depth`` gets ``k`` (where the catalogue has them), never a silently shorter list."""
        return self if k <= self.depth else replace(self, depth=k)

    @property
    def params(self) -> dict:
        return {"k": self.rrf_k} if self.fusion == "rrf" else {"weights": [self.dense_weight, 1.0 - self.dense_weight]}


class HybridIndex:
    """A saved FAISS index + BM25 over the same catalogue, with live additions and deletions."""

    def __init__(self, dense: ProductIndex | None, ids: list[str], titles: list[str], texts: list[str],
                 lexical: bool = True, attributes: AttributeTable | None = None):
        """``dense`` None: the lexical side alone (evaluating BM25 needs no index). ``attributes``:
        the catalogue's typed fields, row for row with ``ids`` (None: a catalogue without any)."""
        self.dense = dense
        self.titles = dict(zip(ids, titles))
        self.texts = dict(zip(ids, texts))
        self.lexical = LexicalIndex(ids, texts) if lexical else None
        self.base_rows = {pid: i for i, pid in enumerate(dense.ids if dense is not None else ids)}
        self.masked: set[str] = set()  # saved products deleted or replaced
        self.overlay: dict[str, np.ndarray] = {}  # added or changed products' vectors, searched exactly
        self.attributes = attributes or AttributeTable.empty(len(ids))
        self.catalogue_rows = {pid: i for i, pid in enumerate(ids)}
        self.live_attributes: dict[str, dict] = {}  # added or changed products' attributes
        # filters are evaluated in catalogue order; the dense side's rows may be in another order
        self._dense_to_catalogue = np.array([self.catalogue_rows.get(p, -1) for p in dense.ids], dtype=np.int64) \
            if dense is not None else None
        self._catalogue_alive = np.ones(len(ids), dtype=bool)

    @property
    def dim(self) -> int:
        return self.dense.dim

    def __len__(self) -> int:
        return len(self.base_rows) - len(self.masked) + len(self.overlay)

    def contains(self, product_id: str) -> bool:
        return product_id in self.overlay or (product_id in self.base_rows and product_id not in self.masked)

    @property
    def schema(self) -> dict[str, str]:
        return self.attributes.schema

    def attributes_of(self, product_id: str) -> dict:
        """A product's typed attributes as it is now ({} for one that has none)."""
        if product_id in self.live_attributes:
            return self.live_attributes[product_id]
        row = self.catalogue_rows.get(product_id)
        return self.attributes.attributes(row) if row is not None and self.attributes.schema else {}

    # -- live changes: both sides at once ------------------------------------------------------
    def upsert(self, product_id: str, title: str, text: str, vector: np.ndarray, attributes: dict | None = None) -> None:
        if product_id in self.base_rows:
            self._mask(product_id)
        self.overlay[product_id] = np.asarray(vector, dtype=np.float32)
        self.titles[product_id], self.texts[product_id] = title, text
        self.live_attributes[product_id] = dict(attributes or {})
        if self.lexical is not None:
            self.lexical.upsert(product_id, text)

    def delete(self, product_id: str) -> None:
        if product_id in self.base_rows:
            self._mask(product_id)
        self.overlay.pop(product_id, None)
        self.live_attributes.pop(product_id, None)
        if self.lexical is not None:
            self.lexical.delete(product_id)

    def _mask(self, product_id: str) -> None:
        self.masked.add(product_id)
        if product_id in self.catalogue_rows:
            self._catalogue_alive[self.catalogue_rows[product_id]] = False

    def allowed(self, expr: Filter) -> tuple[np.ndarray, set]:
        """What ``expr`` allows: one bool per saved product (catalogue order; deleted ones False) and
        the set of live-added products it allows."""
        saved = self.attributes.mask(expr) & self._catalogue_alive
        live = {pid for pid, attrs in self.live_attributes.items() if matches(expr, attrs)}
        return saved, live

    def lookup(self, product_ids: list[str], expr: Filter | None = None, exclude: set | None = None) -> dict:
        """{id: hit} for those of ``product_ids`` in the index that pass ``expr`` and are not excluded;
        a hit as ``search`` makes one, with score None (nothing ranked it)."""
        out = {}
        for pid in product_ids:
            if not self.contains(pid) or pid in (exclude or ()):
                continue
            attributes = self.attributes_of(pid)
            if expr is not None and not matches(expr, attributes):
                continue
            out[pid] = {"id": pid, "title": self.titles.get(pid, ""), "text": self.texts.get(pid, ""), "score": None,
                        "dense": None, "lexical": None, "resembles": None,
                        "attributes": attributes if self.schema else None}
        return out

    # -- search --------------------------------------------------------------------------------
    def dense_side(self, vectors: np.ndarray, depth: int, exclude: list[set], within: list | None = None,
                   exact_below: float = 0.05, widen: float = 8.0) -> list[dict]:
        """Per query its top ``depth`` by cosine; ``within``: per query None or ``allowed(filter)``."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        within = within or [None] * len(vectors)
        extra = len(self.masked) + max((len(e) for e in exclude), default=0)
        fetch = min(depth + extra, len(self.dense))
        scores = np.zeros((len(vectors), fetch), np.float32)
        ids = np.full((len(vectors), fetch), None, object)
        plain = [i for i, w in enumerate(within) if w is None]
        if plain:
            scores[plain], ids[plain] = self.dense.search(vectors[plain], fetch)
        for i in (i for i, w in enumerate(within) if w is not None):
            allowed = within[i][0][self._dense_to_catalogue].copy()
            allowed[self._dense_to_catalogue < 0] = False
            s, p, _ = self.dense.search_within(vectors[i:i + 1], min(depth + len(exclude[i]), len(self.dense)),
                                               allowed, exact_below, widen=widen)
            scores[i], ids[i] = _padded(s[0], fetch, -np.inf), _padded(p[0], fetch, None)
        overlay_ids = list(self.overlay)
        overlay_scores = (vectors @ np.stack([self.overlay[p] for p in overlay_ids]).T) if overlay_ids else None
        out = []
        for row in range(len(vectors)):
            live = within[row][1] if within[row] is not None else None
            hits = [(pid, float(s)) for pid, s in zip(ids[row], scores[row])
                    if pid is not None and pid not in self.masked and pid not in exclude[row]]
            if overlay_scores is not None:
                hits += [(pid, float(s)) for pid, s in zip(overlay_ids, overlay_scores[row])
                         if pid not in exclude[row] and (live is None or pid in live)]
            hits.sort(key=lambda h: -h[1])
            out.append(dict(hits[:depth]))
        return out

    def lexical_side(self, texts: list[str], depth: int, exclude: list[set], within: list | None = None) -> list[dict]:
        if self.lexical is None:
            raise ValueError("this index was built without its lexical side (lexical=False)")
        widest = max((len(e) for e in exclude), default=0)
        out = []
        for hits, skip in zip(self.lexical.search(texts, depth + widest, within), exclude):
            out.append(dict([(p, s) for p, s in hits.items() if p not in skip][:depth]))
        return out

    def sides(self, vectors, texts: list[str], stage: FirstStage, exclude: list[set] | None = None,
              filters: list[Filter | None] | None = None):
        """(dense lists, lexical lists) for what ``stage.mode`` needs; the unused side is None.
        ``filters``: per query None or a filter, applied on both sides."""
        exclude = exclude or [set() for _ in range(len(texts))]
        within = None
        if filters is not None and any(f is not None for f in filters):
            cache: dict = {}  # one mask per distinct filter in the batch
            within = [None if f is None else cache.setdefault(f, self.allowed(f)) for f in filters]
        dense = self.dense_side(vectors, stage.depth, exclude, within, stage.exact_filter_below, stage.filter_widen) \
            if stage.mode != "lexical" else None
        lexical = self.lexical_side(texts, stage.depth, exclude, within) if stage.mode != "dense" else None
        return dense, lexical

    @staticmethod
    def fused(dense: list[dict] | None, lexical: list[dict] | None, stage: FirstStage) -> list[dict]:
        """The first stage's ranking per query from its sides."""
        if stage.mode == "dense":
            return dense
        if stage.mode == "lexical":
            return lexical
        return [fuse_lists([d, x], stage.fusion, stage.params, stage.depth) for d, x in zip(dense, lexical)]

    def vectors_of(self, ids) -> dict[str, np.ndarray]:
        """The current vectors of the products among ``ids`` that are in the index."""
        out = {pid: self.overlay[pid] for pid in ids if pid in self.overlay}
        saved = [pid for pid in ids if pid not in out and pid in self.base_rows and pid not in self.masked]
        if saved and self.dense is not None:
            out.update(zip(saved, self.dense.vectors([self.base_rows[p] for p in saved])))
        return out

    def search(self, vectors, texts: list[str], k: int, stage: FirstStage, exclude: list[set] | None = None,
               clicked: list[list[str]] | None = None, session_weight: float = 0.0,
               filters: list[Filter | None] | None = None) -> list[list[dict]]:
        """Per query, the top-k products as {id, title, text, score, dense, lexical} (side scores are
        None where that side did not retrieve the product). ``clicked``: per query, the session's
        clicked products (ranking.session): the query vector moves toward them, they are excluded,
        and each hit says which one it resembles (``resembles``: (id, cosine, title) or None).
        ``filters``: per query None or a filter (ranking/filters.py) every returned product passes."""
        exclude = exclude or [set() for _ in range(len(texts))]
        stage = stage.reaching(k)
        known: dict[str, np.ndarray] = {}
        if clicked and any(clicked) and vectors is not None:
            known = self.vectors_of({pid for row in clicked for pid in row})
            vectors = personalised(vectors, [np.stack([known[p] for p in row if p in known])
                                             if any(p in known for p in row) else None for row in clicked],
                                   session_weight)
            exclude = [set(e) | set(row) for e, row in zip(exclude, clicked)]
        dense, lexical = self.sides(vectors, texts, stage, exclude, filters)
        results = []
        described = bool(self.schema)
        for i, ranking in enumerate(self.fused(dense, lexical, stage)):
            results.append([{"id": pid, "title": self.titles.get(pid, ""), "text": self.texts.get(pid, ""),
                             "score": float(score),
                             "dense": dense[i].get(pid) if dense is not None else None,
                             "lexical": lexical[i].get(pid) if lexical is not None else None, "resembles": None,
                             "attributes": self.attributes_of(pid) if described else None}
                            for pid, score in list(ranking.items())[:k]])
        if known:
            hit_vectors = self.vectors_of({h["id"] for row in results for h in row})
            for row, session in zip(results, clicked):
                ids = [p for p in session if p in known]
                if ids:
                    matrix = np.stack([known[p] for p in ids])
                    for hit in row:
                        like = resemblance(hit_vectors[hit["id"]], ids, matrix) if hit["id"] in hit_vectors else None
                        hit["resembles"] = (*like, self.titles.get(like[0], "")) if like else None
        return results


def _padded(values: np.ndarray, size: int, fill) -> np.ndarray:
    out = np.full(size, fill, dtype=values.dtype)
    out[:min(size, len(values))] = values[:size]
    return out
