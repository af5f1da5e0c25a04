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
from serve.config import ServeConfig
from serve.versions import VersionCache, rows_by


@serve.deployment
class Encoder:
    """Texts -> unit vectors. Requests arriving together are encoded as one batch (``@serve.batch``)."""

    def __init__(self, config: dict):
        import torch

        self.cfg = ServeConfig(**config)
        # One torch thread per whole CPU reserved: replicas sharing a node must not oversubscribe it.
        torch.set_num_threads(max(1, int(self.cfg.encoder_num_cpus)))
        self.models = VersionCache()
        self.encode_one.set_max_batch_size(self.cfg.batch_max_size)
        self.encode_one.set_batch_wait_timeout_s(self.cfg.batch_wait_s)
        self.batch_sizes = Histogram("firstlight_encode_batch_size", description="texts per encoder batch",
                                     boundaries=[1, 2, 4, 8, 16, 32, 64, 128])
        self.encode_ms = Histogram("firstlight_encode_ms", description="encoder batch latency (ms)",
                                   boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000])
        self.model(self.cfg.resolved_model())  # load the default model before taking traffic

    def model(self, name: str):
        device = "cpu" if self.cfg.use_gpu == "no" else "auto"
        return self.models.get_or_load(name, lambda: TextEncoder.load(name, max_length=self.cfg.max_length,
                                                                      device=device, backend=self.cfg.backend))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def encode_one(self, requests: list[tuple[str, str, str]]) -> list[np.ndarray]:
        """Each request is (model, role, text); one batch may mix models right after a reload, and
        shoppers' queries with products added through the API."""
        start = time.perf_counter()
        out: list[np.ndarray | None] = [None] * len(requests)
        for (name, role), rows in rows_by((m, r) for m, r, _ in requests).items():
            vectors = self.model(name).encode([requests[i][2] for i in rows], batch_size=len(rows), role=role)
            for i, v in zip(rows, vectors):
                out[i] = v
        self.batch_sizes.observe(len(requests))
        self.encode_ms.observe(1000 * (time.perf_counter() - start))
        return out

    async def encode(self, model: str, texts: list[str], role: str) -> np.ndarray:
        """``role``: "query" for shopper text, "passage" for products (the model's prompts)."""
        import asyncio

        return np.stack(await asyncio.gather(*(self.encode_one((model, role, t)) for t in texts)))

    def dim(self, model: str) -> int:
        return self.model(model).dim
