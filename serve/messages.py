"""The typed messages that cross Ray handles between the serving deployments, in place of
positional tuples: a replica reads ``request.text``, not ``requests[i][2]``.

Frozen, so a batch can group them by model or version without one request changing another's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class EncodeRequest:
    """One text for the Encoder. ``role``: "query" (shopper text) or "passage" (a product)."""

    model: str
    role: str
    text: str


@dataclass(frozen=True)
class SearchRequest:
    """One query for the Retriever's first stage. ``version``: the version's describe() dict, read once
    by the gateway at the request's start; ``vector``: the query's encoding, or None for the
    Retriever to encode ``text`` itself (model/onnx_text.py); ``clicked``: the session's clicked
    product ids (ranking/session.py), which pull the query vector and are not returned; ``filter``:
    the checked filter (ranking/filters.py) every returned product passes, or None."""

    version: dict = field(hash=False)
    vector: np.ndarray | None = field(hash=False, repr=False)
    text: str
    k: int
    exclude: frozenset = frozenset()
    clicked: tuple = ()
    filter: object = None  # ranking.filters.Filter


@dataclass(frozen=True)
class ScoreRequest:
    """One query and its candidates' texts for the Reranker."""

    model: str
    query: str
    texts: tuple


@dataclass(frozen=True)
class RerankRequest:
    """One recommend request's queries (one, or a batch's texts) with their candidates' texts: the
    Reranker admits or refuses it as a whole, so a batch is reranked entirely or not at all."""

    model: str
    queries: tuple
    texts: tuple  # per query, its candidates' texts
    budget_ms: float = float("inf")  # what is left of the request's latency budget when it is sent

    @property
    def pairs(self) -> int:
        return sum(len(t) for t in self.texts)


@dataclass(frozen=True)
class Reranked:
    """The Reranker's answer: per query, its candidates' scores; or, when it could not take the
    request within its latency budget, ``refused`` saying why (and no scores)."""

    scores: list | None = field(default=None, repr=False)
    refused: str | None = None
