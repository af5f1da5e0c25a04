"""The ranking orchestration behind /v1/recommend: encode -> first stage -> rerank -> the reply's
items, over the deployments' handles. The gateway checks the request first; this module knows no HTTP.

Queries are encoded by the Retriever in the search's own call where it can (int8 on a CPU: one Ray
hop instead of two), else by the Encoder deployment first (a GPU, another backend, an ensemble).

Reads (encode, search, rerank) whose replica died are retried on another replica, ``retries`` times;
writes never go through here. When the request's latency budget (``rerank.budget_ms``, counted
from its arrival) is spent by the first stage, or the Reranker refuses it (its queue would overrun
what is left), the first-stage ranking is served at once; when the Reranker cannot answer within
``rerank.timeout_s`` (a replica died or was never placed), after the timeout. The reply says which.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from ray.exceptions import ActorUnavailableError, RayActorError

from ranking.constraint_plan import (
    ConstraintPlan,
    boosted,
    relax_short,
    without_excluded,
)
from ranking.facets import count_facets
from ranking.rerank import RerankStage, rerank
from ranking.rules import apply_rules, pinned_ids
from ranking.session import explain
from ranking.tokens import LexicalTokenizer
from serve.messages import RerankRequest, SearchRequest

log = logging.getLogger("ray.serve")


def replica_died(err: BaseException) -> bool:
    """A replica died or is unreachable (the request may be retried elsewhere), not an error of its own."""
    cause = getattr(err, "cause", None)
    return isinstance(err, (RayActorError, ActorUnavailableError)) or isinstance(cause, RayActorError)


async def read(method, *args, retries: int):
    """``await method.remote(*args)``, retried on another replica when the one it reached died."""
    for attempt in range(retries + 1):
        try:
            return await method.remote(*args)
        except Exception as err:
            if not replica_died(err) or attempt == retries:
                raise
            log.warning("firstlight: a replica died during a read; retrying (%s)", str(err).splitlines()[0][:200])
            await asyncio.sleep(0.05 * (attempt + 1))


@dataclass(frozen=True)
class Ranked:
    """One request's answer: per query text, its items (reply dicts), and how it was ranked."""

    items: list
    timing_ms: dict
    reranked: bool
    fallback: str | None
    facets: list | None = None  # per query, its facet counts (when asked)
    facets_over: list | None = None  # per query, how many candidates they counted
    plans: list | None = None  # per query, its ConstraintPlan as applied (relaxed where it had to be)


def reply_item(hit: dict, query: str, rank: int, reranked: bool, tokens, explained: bool) -> dict:
    """A returned product as the API shows it: the one place hits become reply items."""
    item = {"id": hit["id"], "title": hit["title"], "score": hit["score"]}
    if hit.get("attributes") is not None:
        item["attributes"] = {k: v for k, v in hit["attributes"].items() if v is not None}
    if explained:
        item["why"] = explain(query, hit, tokens, rank, hit.get("first_rank") if reranked else None)
    return item


class RankingPath:
    def __init__(self, encoder, retriever, reranker, rerank_stage: RerankStage, retries: int, explained: bool,
                 soft_boost: int = 0):
        self.encoder, self.retriever, self.reranker = encoder, retriever, reranker
        self.stage, self.retries, self.explained = rerank_stage, retries, explained
        self.soft_boost = soft_boost  # places a product meeting every soft constraint moves up
        self.fallbacks = 0  # replies served from the first stage because the Reranker could not answer
        self.refused = 0  # ... because it refused them to keep its latency budget
        self.lexical_tokens = LexicalTokenizer()  # 'why' compares words as BM25 does
        self.encoding_in_retriever: dict[str, bool] = {}

    async def read(self, method, *args):
        return await read(method, *args, retries=self.retries)

    async def rank(self, version, queries: list[str], k: int, exclude: list[str], clicked: list[str],
                   use_reranker: bool, arrived: float | None = None, filter=None, facets=None,
                   rules: list | None = None, plans: list[ConstraintPlan] | None = None) -> Ranked:
        """``queries`` as checked and spelling-corrected by the gateway; ``version`` read once by it;
        ``arrived``: when the gateway took the request (``time.perf_counter()``), where the
        reranker's latency budget starts; ``filter``: the checked filter (ranking/filters.py), applied
        by the first stage, so the reranker only ever sees products that pass it; ``plans``: per
        query, the constraints read from its text (ranking/constraint_plan.py), which carry that
        filter with theirs, are relaxed here when they leave fewer than ``k`` products, and boost the
        final order; ``facets``: a ranking.facets.FacetRequest, counted over the first stage's top
        ``facets.depth``; ``rules``: the version's merchandising rules (ranking/rules.py), applied
        after the reranker."""
        start = time.perf_counter()
        arrived = start if arrived is None else arrived
        plans = list(plans) if plans is not None else [ConstraintPlan((), filter) for _ in queries]
        if await self._retriever_encodes(version.model):  # one hop: encoded in the search's own batch
            vectors = [None] * len(queries)
        else:
            vectors = await self.read(self.encoder.encode, version.model, queries, "query")
        encoded = time.perf_counter()
        use_reranker = use_reranker and self.reranker is not None
        depth = max(k, self.stage.depth) if use_reranker else k
        if facets is not None:
            depth = max(depth, facets.depth)
        if any(p.soft() for p in plans):  # a boosted product may come from soft_boost places below k
            depth = max(depth, k + self.soft_boost)
        described = version.describe()
        hits = await self._search(described, vectors, queries, depth, exclude, clicked, plans, k)
        for row in hits:  # where the first stage put each product, for the reranker's part of 'why'
            for rank, hit in enumerate(row):
                hit["first_rank"] = rank
        counted = None if facets is None else [row[:facets.depth] for row in hits]
        done = time.perf_counter()
        timing = {"retrieve": 1000 * (done - encoded)}  # with the encoding, where the Retriever encodes
        if vectors[0] is not None:
            timing["encode"] = 1000 * (encoded - start)
        reranked, fallback = False, None
        if use_reranker:
            left = self.stage.budget_ms - 1000 * (time.perf_counter() - arrived)
            hits, reranked, fallback = await self._rerank(queries, hits, left, version.reranker or self.stage.model)
            timing["rerank"] = 1000 * (time.perf_counter() - done)
        hits = [boosted(row, plan, self.soft_boost) for row, plan in zip(hits, plans)]
        if rules:
            hits = await self._apply_rules(described, hits, queries, rules, [p.filter() for p in plans], exclude)
        for row, plan in zip(hits, plans):
            for hit in row[:k]:
                hit["constraints"] = plan.satisfied(hit)
        items = [[reply_item(hit, query, rank, reranked, self.lexical_tokens, self.explained)
                  for rank, hit in enumerate(row[:k])] for query, row in zip(queries, hits)]
        if counted is None:
            return Ranked(items, timing, reranked, fallback, plans=plans)
        return Ranked(items, timing, reranked, fallback, [count_facets(row, facets) for row in counted],
                      [len(row) for row in counted], plans)

    async def _search(self, described: dict, vectors: list, queries: list[str], depth: int, exclude: list[str],
                      clicked: list[str], plans: list[ConstraintPlan], k: int) -> list[list[dict]]:
        """The first stage within each query's filter, less its excluded words; a query left with fewer
        than ``k`` products has its least certain hard constraint relaxed (``plans`` updated in place)
        and is searched again, until ``k`` are found or nothing is left to relax."""
        todo, hits = list(range(len(queries))), [[] for _ in queries]
        while todo:
            # a word to exclude removes products after the search: fetch more to keep k
            requests = [SearchRequest(described, vectors[i], queries[i], depth * (2 if plans[i].exclusions() else 1),
                                      frozenset(exclude), tuple(clicked), plans[i].filter()) for i in todo]
            found = await self.read(self.retriever.search, requests)
            for i, row in zip(todo, found):
                hits[i] = without_excluded(row, plans[i].exclusions(), self.lexical_tokens)[:depth]
            todo = relax_short(plans, todo, [len(hits[i]) for i in todo], k)
        return hits

    async def _apply_rules(self, described: dict, hits: list, queries: list[str], rules: list, filters: list,
                           exclude: list[str]) -> list:
        """Each query's ranking reordered by the rules that apply to it; products a pin names that the
        ranking lacks are looked up (one call per distinct filter) and pinned if they pass the query's
        filter."""
        wanted = [set(pinned_ids(rules, query)) - {h["id"] for h in row} for row, query in zip(hits, queries)]
        by_filter: dict = {}  # queries sharing a filter (a batch, or texts read alike) share one lookup
        for expr, ids in zip(filters, wanted):
            by_filter.setdefault(expr, set()).update(ids)
        pinned = {expr: await self.read(self.retriever.lookup, described, sorted(ids), expr, exclude)
                  for expr, ids in by_filter.items() if ids}
        return [apply_rules(row, rules, query, pinned.get(expr, {})) for row, query, expr in zip(hits, queries, filters)]

    async def _retriever_encodes(self, model: str) -> bool:
        """Whether the Retriever encodes ``model``'s queries (asked once per model: every replica
        has the same files and settings)."""
        if model not in self.encoding_in_retriever:
            reason = await self.read(self.retriever.encodes, model)
            if reason:
                log.info("firstlight: queries of %s go through the Encoder deployment: %s", model, reason)
            self.encoding_in_retriever[model] = reason is None
        return self.encoding_in_retriever[model]

    async def _rerank(self, queries: list[str], hits: list[list[dict]], left_ms: float = float("inf"),
                      model: str | None = None) -> tuple[list, bool, str | None]:
        """The second stage, or the first stage's ranking with the reason: at once when ``left_ms`` of
        the latency budget is gone or the Reranker refuses (its queue would overrun it), after
        ``timeout_s`` when it cannot answer."""
        if left_ms <= 0:  # the first stage took the whole budget (a queue before it): not even a hop more
            self.refused += 1
            return hits, False, (f"over the {self.stage.budget_ms:g} ms latency budget (rerank.budget_ms) before "
                                 "reranking; first-stage ranking served")
        depth = self.stage.depth
        request = RerankRequest(model or self.stage.model, tuple(queries), tuple(tuple(c["text"] for c in row[:depth])
                                                                         for row in hits), left_ms)
        try:
            answer = await asyncio.wait_for(self.read(self.reranker.rerank, request), timeout=self.stage.timeout_s)
        except Exception as err:  # noqa: BLE001 - a dead, unplaced or stuck reranker: serve the first stage
            reason = "timed out" if isinstance(err, asyncio.TimeoutError) else (str(err).splitlines() or ["error"])[0]
            log.warning("firstlight: reranker unavailable (%s); answering with the first-stage ranking", reason)
            self.fallbacks += 1
            return hits, False, f"reranker unavailable ({reason[:200]}); first-stage ranking served"
        if answer.refused:
            self.refused += 1
            return hits, False, f"{answer.refused}; first-stage ranking served"
        return [rerank(row, s, depth, self.stage.weight) for row, s in zip(hits, answer.scores)], True, None
