"""The Reranker deployment: the second stage. A cross-encoder scores (visitor text, product text)
pairs for the gateway, which reorders the first stage's top ``rerank.depth`` with them
(ranking.rerank, the same function `firstlight evaluate` applies).

It is optional and has a latency budget (``rerank.budget_ms``): a request whose pairs, with those
already queued, would not be scored within what is left of it is refused at once
(serve/admission.py), and the gateway answers with the first-stage ranking, marked as such, instead
of waiting. Requests arriving
together are scored as one batch (``@serve.batch``), in a worker thread so the replica keeps
admitting and refusing while a batch runs. Replicas autoscale on their own, apart from the Encoder's.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
from ray import serve
from ray.serve.metrics import Counter, Histogram

from model.reranker import Reranker as CrossEncoderModel
from serve.admission import Admission
from serve.config import RerankerPart
from serve.messages import Reranked, RerankRequest, ScoreRequest
from serve.versions import VersionCache, rows_by


@serve.deployment
class Reranker:
    def __init__(self, part: RerankerPart):
        import torch

        self.part = part
        torch.set_num_threads(part.resources.torch_threads)
        self.models = VersionCache()
        self.score_one.set_max_batch_size(part.resources.batch_max_size)
        self.score_one.set_batch_wait_timeout_s(part.resources.batch_wait_s)
        self.score_ms = Histogram("firstlight_rerank_ms", description="reranker batch latency (ms)",
                                  boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000])
        self.refused = Counter("firstlight_rerank_refused", description="requests refused to keep the latency budget")
        model = self.model(part.rerank.model)  # loaded before taking traffic
        self.admission = Admission(ms_per_pair=self._warm_up(model))

    def _warm_up(self, model: CrossEncoderModel) -> float:
        """The cost of one pair in a typical request (depth pairs), measured: admission's first estimate."""
        queries, texts = ["a warm-up query"] * self.part.rerank.depth, ["a warm-up product title"] * self.part.rerank.depth
        model.score_pairs(queries, texts)  # the first call pays one-off costs (allocations, kernels)
        start = time.perf_counter()
        model.score_pairs(queries, texts)
        return 1000 * (time.perf_counter() - start) / len(texts)

    def model(self, name: str) -> CrossEncoderModel:
        # max_length None: the length the folder was trained with (model/reranker.py)
        return self.models.get_or_load(name, lambda: CrossEncoderModel.load(
            name, max_length=self.part.rerank.max_length, device=self.part.runtime.device,
            backend=self.part.runtime.backend))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def score_one(self, requests: list[ScoreRequest]) -> list[np.ndarray]:
        """All the requests' (query, product) pairs are scored together, off the event loop."""
        start = time.perf_counter()
        out: list = [None] * len(requests)
        for name, rows in rows_by(r.model for r in requests).items():
            queries = [requests[i].query for i in rows for _ in requests[i].texts]
            texts = [t for i in rows for t in requests[i].texts]
            scores = await asyncio.to_thread(self._score, name, queries, texts)
            at = 0
            for i in rows:
                n = len(requests[i].texts)
                out[i] = scores[at:at + n]
                at += n
        elapsed = 1000 * (time.perf_counter() - start)
        self.score_ms.observe(elapsed)
        self.admission.observe(sum(len(r.texts) for r in requests), elapsed)
        return out

    def _score(self, name: str, queries: list[str], texts: list[str]) -> np.ndarray:
        import torch

        torch.set_num_threads(self.part.resources.torch_threads)  # a worker thread's own setting
        return self.model(name).score_pairs(queries, texts, batch_size=max(1, len(texts)))

    async def rerank(self, request: RerankRequest) -> Reranked:
        """Scores for every query of ``request``, or a refusal at once when they would not come in budget."""
        refused = self.admission.admit(request.pairs, request.budget_ms)
        if refused:
            self.refused.inc()
            return Reranked(refused=refused)
        try:
            scores = await asyncio.gather(*(self.score_one(ScoreRequest(request.model, q, tuple(t)))
                                            for q, t in zip(request.queries, request.texts)))
        finally:
            self.admission.release(request.pairs)
        return Reranked(scores=list(scores))
