"""The Encoder deployment: texts -> unit vectors, autoscaled, with dynamic batching.

It keeps the models it was asked for in a small cache (the active one and the one before), so a
reload never interrupts requests that started on the previous model. Models are loaded from their
folders inside the replica, never shipped through Ray's object store. Only this deployment loads
torch; the gateway and the Retriever do not.
"""

from __future__ import annotations

import time

import numpy as np
from ray import serve
from ray.serve.metrics import Histogram

from model.encoder import TextEncoder
from serve.config import EncoderPart
from serve.messages import EncodeRequest
from serve.versions import VersionCache, rows_by


@serve.deployment
class Encoder:
    """Texts -> unit vectors. Requests arriving together are encoded as one batch (``@serve.batch``)."""

    def __init__(self, part: EncoderPart):
        import torch

        self.part = part
        # One torch thread per whole CPU reserved: replicas sharing a node must not oversubscribe it.
        torch.set_num_threads(part.resources.torch_threads)
        self.models = VersionCache()
        self.encode_one.set_max_batch_size(part.resources.batch_max_size)
        self.encode_one.set_batch_wait_timeout_s(part.resources.batch_wait_s)
        self.batch_sizes = Histogram("firstlight_encode_batch_size", description="texts per encoder batch",
                                     boundaries=[1, 2, 4, 8, 16, 32, 64, 128])
        self.encode_ms = Histogram("firstlight_encode_ms", description="encoder batch latency (ms)",
                                   boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000])
        self.model(part.model)  # load the default model before taking traffic

    def model(self, name: str):
        runtime = self.part.runtime
        return self.models.get_or_load(name, lambda: TextEncoder.load(name, max_length=runtime.lengths,
                                                                      device=runtime.device, backend=runtime.backend))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def encode_one(self, requests: list[EncodeRequest]) -> list[np.ndarray]:
        """One batch may mix models right after a reload, and shoppers' queries with products added
        through the API."""
        start = time.perf_counter()
        out: list[np.ndarray | None] = [None] * len(requests)
        for (name, role), rows in rows_by((r.model, r.role) for r in requests).items():
            vectors = self.model(name).encode([requests[i].text for i in rows], batch_size=len(rows), role=role)
            for i, v in zip(rows, vectors):
                out[i] = v
        self.batch_sizes.observe(len(requests))
        self.encode_ms.observe(1000 * (time.perf_counter() - start))
        return out

    async def encode(self, model: str, texts: list[str], role: str) -> np.ndarray:
        """``role``: "query" for shopper text, "passage" for products (the model's prompts)."""
        import asyncio

        return np.stack(await asyncio.gather(*(self.encode_one(EncodeRequest(model, role, t)) for t in texts)))

    def dim(self, model: str) -> int:
        return self.model(model).dim
