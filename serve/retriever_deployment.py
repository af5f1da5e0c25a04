"""The Retriever deployment: the first stage. Top-k products from FAISS and BM25 fused (or either
alone, as its ``first_stage.mode`` says), plus live product changes on both sides.

Where the Encoder would run int8 on a CPU anyway, the Retriever encodes the queries itself, in the
same batch as their search (model/onnx_text.py, no torch): one Ray hop per request instead of two.

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

from model.onnx_text import OnnxTextEncoder, unsupported
from serve.config import RetrieverPart
from serve.live_index import IndexUnavailable, LiveIndex, StorageFull, change_log_path
from serve.messages import SearchRequest
from serve.versions import Version, VersionCache, rows_by

log = logging.getLogger("ray.serve")


@serve.deployment
class Retriever:
    """Top-k products for query vectors, from the saved FAISS index plus live product changes."""

    def __init__(self, part: RetrieverPart):
        self.part = part
        self.stage = part.first_stage
        # searches are cheaper than encodes, so the Retriever waits 2 ms for company by default, and not
        # at all with batch_wait_s 0 (batches then form only from requests queued behind a running one)
        self.search_one.set_max_batch_size(part.resources.batch_max_size)
        self.search_one.set_batch_wait_timeout_s(part.resources.batch_wait_s)
        self.indexes = VersionCache()
        self.search_ms = Histogram("firstlight_retrieval_ms", description="FAISS search latency (ms)",
                                   boundaries=[0.1, 0.5, 1, 2, 5, 10, 20, 50, 100])
        self.items = Gauge("firstlight_index_items", description="products searchable in the active index")
        self.items.set(len(self.get(Version(part.model, part.index_dir).describe())))
        self.query_encoders = VersionCache()
        if self.encodes(part.model) is None:
            self.query_encoder(part.model)  # loaded (exported if need be) before taking traffic

    def encodes(self, model: str) -> str | None:
        """Why this Retriever cannot encode ``model``'s queries (None: it can, and does)."""
        if not self.part.encode_queries:
            return "the Encoder runs on a GPU or outside the int8 backend"
        return unsupported(model)

    def query_encoder(self, model: str) -> OnnxTextEncoder:
        return self.query_encoders.get_or_load(model, lambda: OnnxTextEncoder(
            model, self.part.query_max_length, threads=self.part.resources.torch_threads))

    def get(self, version: dict):
        change_log = change_log_path(self.part.state_dir, version["id"])

        def load() -> LiveIndex:
            try:
                return LiveIndex(version["index"], self.part.prepared_dir, change_log,
                                 use_gpu=self.part.use_gpu, lexical=self.stage.mode != "dense")
            except Exception as err:  # a vanished or damaged folder: a named reason, not a traceback
                log.warning("firstlight: the index of version %s in %s cannot be loaded: %s", version["id"],
                            version["index"], err)
                raise IndexUnavailable(f"the index of version {version['id']} cannot be loaded (missing or damaged; "
                                       "the Retriever's log names the file); an admin can reload to a good "
                                       "index") from None

        return self.indexes.get_or_load(version["id"], load)

    async def search(self, requests: list[SearchRequest]) -> list[list[dict]]:
        """Per request: the first stage's top-k as {id, title, text, score, dense, lexical, resembles}."""
        import asyncio

        return list(await asyncio.gather(*(self.search_one(r) for r in requests)))

    def lookup(self, version: dict, product_ids: list[str], filter=None, exclude=()) -> dict:
        """{id: hit} for those of ``product_ids`` in the index, passing ``filter`` and not excluded
        (products a merchandising pin names that the ranking did not retrieve)."""
        index = self.get(version)
        index.refresh()
        return index.hybrid.lookup(product_ids, filter, set(exclude))

    def unknown(self, version: dict, product_ids: list[str]) -> list[str]:
        """Those of ``product_ids`` that are not in the index."""
        index = self.get(version)
        index.refresh()
        return [p for p in product_ids if not index.contains(p)]

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def search_one(self, requests: list[SearchRequest]) -> list[list[dict]]:
        """Requests arriving together are searched as one FAISS / BM25 batch (far cheaper per query)."""
        start = time.perf_counter()
        out: list = [None] * len(requests)
        for rows in rows_by(r.version["id"] for r in requests).values():
            batch = [requests[i] for i in rows]
            index = self.get(batch[0].version)
            vectors = [r.vector for r in batch]
            missing = [i for i, v in enumerate(vectors) if v is None]
            if missing:  # queries the gateway left for this replica to encode
                encoded = self.query_encoder(batch[0].version["model"]).encode([batch[i].text for i in missing])
                for i, vector in zip(missing, encoded):
                    vectors[i] = vector
            hits = index.search(np.stack(vectors), [r.text for r in batch],
                                max(r.k for r in batch), self.stage, [set(r.exclude) for r in batch],
                                [list(r.clicked) for r in batch], self.part.session_weight,
                                [r.filter for r in batch])
            for i, request, row in zip(rows, batch, hits):
                out[i] = row[: request.k]
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
        """A real search on ``version`` (change log replayed first), with a real encode where this
        replica encodes the queries: raises whatever would fail a request."""
        index = self.get(version)
        if self.encodes(version["model"]) is None:
            vector = self.query_encoder(version["model"]).encode(["ready"])
        else:
            vector = np.zeros((1, index.dim), dtype=np.float32)
        index.search(vector, ["ready"], 1, self.stage)
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
