"""The Reranker deployment: the second stage. A cross-encoder scores (visitor text, product text)
pairs for the gateway, which reorders the first stage's top ``rerank_depth`` with them
(ranking.rerank, the same function `firstlight evaluate` applies).

Requests arriving together are scored as one batch (``@serve.batch``); replicas autoscale on their
own, apart from the Encoder's. Like the Encoder it loads torch; if it cannot answer, the gateway
serves the first-stage ranking and says so.
"""

from __future__ import annotations

import time

import numpy as np
from ray import serve
from ray.serve.metrics import Histogram

from model.reranker import Reranker as CrossEncoderModel
from serve.config import RerankerPart
from serve.messages import ScoreRequest
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
        self.model(part.rerank.model)  # loaded before taking traffic

    def model(self, name: str) -> CrossEncoderModel:
        # max_length None: the length the folder was trained with (model/reranker.py)
        return self.models.get_or_load(name, lambda: CrossEncoderModel.load(
            name, max_length=self.part.rerank.max_length, device=self.part.runtime.device,
            backend=self.part.runtime.backend))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def score_one(self, requests: list[ScoreRequest]) -> list[np.ndarray]:
        """All the requests' (query, product) pairs are scored together."""
        start = time.perf_counter()
        out: list = [None] * len(requests)
        for name, rows in rows_by(r.model for r in requests).items():
            queries = [requests[i].query for i in rows for _ in requests[i].texts]
            texts = [t for i in rows for t in requests[i].texts]
            scores = self.model(name).score_pairs(queries, texts, batch_size=max(1, len(texts)))
            at = 0
            for i in rows:
                n = len(requests[i].texts)
                out[i] = scores[at:at + n]
                at += n
        self.score_ms.observe(1000 * (time.perf_counter() - start))
        return out

    async def score(self, query: str, texts: list[str]) -> np.ndarray:
        return await self.score_one(ScoreRequest(self.part.rerank.model, query, tuple(texts)))
