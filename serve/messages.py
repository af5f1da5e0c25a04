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
    by the gateway at the request's start; ``clicked``: the session's clicked product ids
    (ranking/session.py), which pull the query vector and are not returned."""

    version: dict = field(hash=False)
    vector: np.ndarray = field(hash=False, repr=False)
    text: str
    k: int
    exclude: frozenset = frozenset()
    clicked: tuple = ()


@dataclass(frozen=True)
class ScoreRequest:
    """One query and its candidates' texts for the Reranker."""

    model: str
    query: str
    texts: tuple
