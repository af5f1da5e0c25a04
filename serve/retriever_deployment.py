"""The Retriever deployment: the first stage. Top-k products from FAISS and BM25 fused (or either
alone, as the config's ``first_stage_mode`` says), plus live product changes on both sides.

It keeps the versions it was asked for in a small cache (the active one and the one before), so a
reload never interrupts requests that started on the previous version. Indexes are loaded from
their folders inside the replica, never shipped through Ray's object store.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from ray import serve
from ray.serve.metrics import Gauge, Histogram

from serve.config import ServeConfig
from serve.live_index import IndexUnavailable, LiveIndex, StorageFull, change_log_path
from serve.versions import Version, VersionCache, rows_by

log = logging.getLogger("ray.serve")


@serve.deployment
class Retriever:
    """Top-k products for query vectors, from the saved FAISS index plus live product changes."""

    def __init__(self, config: dict):
        self.cfg = ServeConfig(**config)
        self.stage = self.cfg.first_stage()
        # searches are cheaper than encodes, so the Retriever waits at most 2 ms for company, and not at
        # all when batch_wait_s is 0 (batches then form only from requests queued behind a running one)
        self.search_one.set_batch_wait_timeout_s(min(self.cfg.batch_wait_s, 0.002))
        self.indexes = VersionCache()
        self.search_ms = Histogram("firstlight_retrieval_ms", description="FAISS search latency (ms)",
                                   boundaries=[0.1, 0.5, 1, 2, 5, 10, 20, 50, 100])
        self.items = Gauge("firstlight_index_items", description="products searchable in the active index")
        self.items.set(len(self.get(Version(self.cfg.resolved_model(), self.cfg.index_dir).describe())))

    def get(self, version: dict):
        change_log = change_log_path(self.cfg.resolved_state_dir(), version["id"])

        def load() -> LiveIndex:
            try:
                return LiveIndex(version["index"], self.cfg.resolved_prepared_dir(), change_log,
                                 use_gpu=self.cfg.use_gpu, lexical=self.stage.mode != "dense")
            except Exception as err:  # a vanished or damaged folder: a named reason, not a traceback
                log.warning("firstlight: the index of version %s in %s cannot be loaded: %s", version["id"],
                            version["index"], err)
                raise IndexUnavailable(f"the index of version {version['id']} cannot be loaded (missing or damaged; "
                                       "the Retriever's log names the file); an admin can reload to a good "
                                       "index") from None

        return self.indexes.get_or_load(version["id"], load)

    async def search(self, version: dict, vectors: np.ndarray, texts: list[str], k: int,
                     exclude: list[list[str]], clicked: list[str] | None = None) -> list[list[dict]]:
        """Per text: the first stage's top-k as {id, title, text, score, dense, lexical, resembles};
        ``clicked``: the session's clicked products (ranking/session.py), for every text."""
        import asyncio

        rows = await asyncio.gather(*(self.search_one((version, v, t, k, e, tuple(clicked or ())))
                                      for v, t, e in zip(vectors, texts, exclude)))
        return list(rows)

    def unknown(self, version: dict, product_ids: list[str]) -> list[str]:
        """Those of ``product_ids`` that are not in the index."""
        index = self.get(version)
        index.refresh()
        return [p for p in product_ids if not index.contains(p)]

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def search_one(self, requests: list[tuple]) -> list[list[dict]]:
        """Requests arriving together are searched as one FAISS / BM25 batch (far cheaper per query)."""
        start = time.perf_counter()
        out: list = [None] * len(requests)
        for rows in rows_by(r[0]["id"] for r in requests).values():
            index = self.get(requests[rows[0]][0])
            k = max(requests[i][3] for i in rows)
            hits = index.search(np.stack([requests[i][1] for i in rows]), [requests[i][2] for i in rows], k,
                                self.stage, [set(requests[i][4]) for i in rows],
                                [list(requests[i][5]) for i in rows], self.cfg.session_weight)
            for i, row in zip(rows, hits):
                out[i] = row[: requests[i][3]]
            self.items.set(len(index))
        self.search_ms.observe(1000 * (time.perf_counter() - start))
        return out

    def upsert(self, version: dict, items: list[dict]) -> dict:
        """{"items": products now searchable}, or {"refused": why} when the change log cannot take them."""
        index = self.get(version)
        try:
            index.upsert(items)
        except StorageFull as err:
            return {"refused": str(err)}
        self.items.set(len(index))
        return {"items": len(index)}

    def delete(self, version: dict, product_id: str) -> dict:
        """{"deleted": whether it was there}, or {"refused": why}."""
        try:
            return {"deleted": self.get(version).delete(product_id)}
        except StorageFull as err:
            return {"refused": str(err)}

    def ready(self, version: dict) -> int:
        """A real search on ``version`` (change log replayed first): raises whatever would fail a request."""
        index = self.get(version)
        index.search(np.zeros((1, index.dim), dtype=np.float32), ["ready"], 1, self.stage)
        return len(index)

    def info(self, version: dict) -> dict:
        index = self.get(version)
        return {"items": len(index), "dim": index.dim, "kind": index.base.manifest.get("kind"),
                "first_stage": self.stage.mode,
                "on_gpu": index.base.on_gpu, "added": len(index.overlay), "deleted": len(index.deleted_ids())}

    def added_items(self, version: dict) -> list[dict]:
        return self.get(version).added_items()

    def deleted_ids(self, version: dict) -> list[str]:
        return self.get(version).deleted_ids()
