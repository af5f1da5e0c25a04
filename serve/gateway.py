"""The HTTP ingress: FastAPI routes on a Ray Serve deployment, calling the Encoder, the Retriever
(the hybrid first stage) and, when configured, the Reranker (the second stage).

    POST   /v1/recommend          {text, k, exclude, rerank}   -> ranked products + the version that answered
    POST   /v1/recommend/batch    {texts, k, exclude, rerank}  -> one ranking per text
    POST   /v1/items              {items: [{id, title, description}]}   (admin) add or change products
    DELETE /v1/items/{id}         (id percent-encoded; may hold "/")    (admin) remove a product
    POST   /v1/admin/reload       {index_dir, model}                    (admin) switch model + index
    POST   /v1/recommend          ... + {session: {clicked: [ids]}}     -> moved toward the clicks, each item with 'why'
    GET    /v1/stats, /healthz, /readyz, /docs, /openapi.json, / (the demo page)

Admin routes need one ``Authorization: Bearer <token>`` header (two are refused), the token being
the content of ``admin_token_file`` or the value of the environment variable named by
``admin_token_env`` in the gateway's process; with neither they answer 503.

Reads (encode, search, rerank) whose replica dies are retried on another replica, ``retries`` times;
writes are not retried (a change may have been logged before the replica died).
"""

import asyncio
import hmac
import logging
import re
import time
from collections import Counter as Tally
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.metrics import Counter
from starlette.exceptions import HTTPException

from common.storage import exists, is_uri, join, read_text
from common.text import product_text
from model.folders import resolve_model_path, tokenizer_folders
from ranking.rerank import rerank
from ranking.session import explain
from ranking.tokens import LexicalTokenizer
from serve.api import (
    ApiError,
    BatchRequest,
    BatchResponse,
    DeleteResponse,
    Health,
    ItemsRequest,
    ItemsResponse,
    Ready,
    RecommendRequest,
    RecommendResponse,
    ReloadRequest,
    ReloadResponse,
    StatsResponse,
    check_count,
    check_id,
    check_k,
    check_text,
    openapi_body,
    parse_body,
    read_body,
)
from serve.config import ServeConfig
from serve.live_index import IndexUnavailable, LiveSpeller, change_log_path
from serve.openapi import add_demo, add_docs, openapi_document
from serve.versions import ActiveVersion, Version, VersionCache

log = logging.getLogger("ray.serve")
app = FastAPI(title="FirstLight", version="1", docs_url=None, redoc_url=None,
              description="Cold-start product recommendations from what a new visitor types.")
add_docs(app)
add_demo(app)


@app.exception_handler(HTTPException)
async def _http_error(request: Request, exc: HTTPException):
    # Unknown routes and wrong methods answer in the same JSON error shape as everything else (a 405
    # keeps its Allow header).
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(ApiError(exc.status_code, code, "path", f"{request.method} {request.url.path}: "
                                 f"{exc.detail}").body(), status_code=exc.status_code, headers=exc.headers)


def replica_died(err: BaseException) -> bool:
    """A replica died or is unreachable (the request may be retried elsewhere), not an error of its own."""
    cause = getattr(err, "cause", None)
    return isinstance(err, (RayActorError, ActorUnavailableError)) or isinstance(cause, RayActorError)


def index_unusable(index_dir: str) -> str | None:
    """Why a saved version's index folder cannot serve, or None (used when a restart finds a reload)."""
    try:
        return None if exists(join(index_dir, "index.faiss")) else f"{index_dir} holds no index.faiss any more"
    except Exception as err:  # noqa: BLE001 - unreachable storage is a reason too
        return f"{index_dir} cannot be read ({err})"


def last_line(err: BaseException) -> str:
    """The exception's own message: Ray wraps a replica's error in its traceback."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    return re.sub(r"^[\w.]+(Error|Unavailable|Exception): ", "", lines[-1].strip()) if lines else type(err).__name__


def without_paths(text: str) -> str:
    """``text`` with absolute file paths replaced: public replies do not show the server's layout."""
    return re.sub(r"(?<![\w:/])/[^\s'\"()]*/[^\s'\"()]*", "<path>", text)


def refused(outcome: dict) -> None:
    if "refused" in outcome:
        raise ApiError(507, "insufficient_storage", "body", outcome["refused"])


def checked_reload_target(body: ReloadRequest) -> tuple[str, str]:
    """(index folder, model) of a reload, or a 422 naming what is wrong with it."""
    import json

    for name in ("index_dir", "model"):
        value = getattr(body, name)
        if value is not None and ("\x00" in value or not value.strip()):
            raise ApiError(422, "invalid_path", name, f"'{name}' is empty or holds a NUL character")
    try:
        index_dir = body.index_dir if is_uri(body.index_dir) else str(Path(body.index_dir).expanduser().resolve())
        found = exists(join(index_dir, "index.faiss"))
    except Exception as err:  # noqa: BLE001 - an unknown URI scheme, no credentials, an unreadable folder
        raise ApiError(422, "unreadable", "index_dir", f"{body.index_dir} cannot be read: {last_line(err)}") from None
    if not found:
        raise ApiError(422, "not_found", "index_dir", f"{body.index_dir} holds no FAISS index (index.faiss)")
    if body.model:
        return index_dir, body.model
    try:
        manifest = json.loads(read_text(join(index_dir, "manifest.json")))
        model = manifest.get("model") if isinstance(manifest, dict) else None
    except Exception as err:  # noqa: BLE001 - missing or damaged manifest
        raise ApiError(422, "not_an_index", "index_dir", f"{body.index_dir} has no readable manifest.json "
                       f"({last_line(err)}); rebuild it with `firstlight index`") from None
    if not model:
        raise ApiError(422, "missing_field", "model", "the index does not record its model: pass 'model'")
    return index_dir, model

# Helpers live above the class: Serve serialises the deployment class as this module is imported,
# so a name defined below it would be missing in the replicas.

@serve.deployment
@serve.ingress(app)
class Gateway:
    def __init__(self, config: dict, encoder, retriever, reranker=None):
        self.cfg = ServeConfig(**config)
        self.encoder, self.retriever, self.reranker = encoder, retriever, reranker
        self.active = ActiveVersion(self.cfg.resolved_state_dir(), Version(self.cfg.resolved_model(), self.cfg.index_dir),
                                    usable=lambda v: index_unusable(v.index_dir))
        document = openapi_document(app, self.cfg)
        app.openapi = lambda: document
        self.tokenizers = {}
        self.spellers = VersionCache()  # per version: its change log holds the words of products added to it
        self.rejected = Counter("firstlight_rejected_requests", description="requests answered with a 4xx",
                                tag_keys=("reason",))
        self.tally = Tally()
        self.fallbacks = 0  # replies served from the first stage because the Reranker could not answer
        self.reload_lock = asyncio.Lock()
        self.lexical_tokens = LexicalTokenizer()  # 'why' compares words as BM25 does
        self._tokenizer(self.active.get().model)  # loaded now, not on the first visitor's request
        if self.cfg.spell_correct:
            self._speller(self.active.get().describe())

    def _speller(self, version: dict):
        return self.spellers.get_or_load(version["id"], lambda: LiveSpeller(
            self.cfg.resolved_prepared_dir(), change_log_path(self.cfg.resolved_state_dir(), version["id"])))

    def _tokenizer(self, model: str) -> list:
        """The model's tokenizers: one, or one per member of an ensemble (model/ensemble.py)."""
        if model not in self.tokenizers:
            from transformers import AutoTokenizer

            self.tokenizers[model] = [AutoTokenizer.from_pretrained(f)
                                      for f in tokenizer_folders(resolve_model_path(model))]
        return self.tokenizers[model]

    # -- plumbing ----------------------------------------------------------------------------
    async def _handle(self, request: Request, body_model, work, admin: bool = False):
        try:
            if admin:  # before the body is read: an unauthorised caller learns nothing about it
                self._admin(request)
            body = parse_body(await read_body(request, self.cfg.max_body_bytes), request.headers.get("content-type"),
                              body_model) if body_model else None
            return JSONResponse(await work(body))
        except ApiError as err:
            self.rejected.inc(tags={"reason": err.code})
            self.tally[err.code] += 1
            return JSONResponse(err.body(), status_code=err.status)
        except IndexUnavailable as err:  # the active index folder vanished: say so, until an admin reloads
            self.tally["index_unavailable"] += 1
            return JSONResponse(ApiError(503, "index_unavailable", "", last_line(err)).body(), status_code=503)
        except Exception:  # noqa: BLE001 - a bug or a dead replica: a JSON 500, details in the log
            log.exception("firstlight: %s %s failed", request.method, request.url.path)
            return JSONResponse(ApiError(500, "internal", "", "internal error; see the server log").body(),
                                status_code=500)

    def _admin(self, request: Request) -> None:
        token = self.cfg.admin_token()
        if not token:
            raise ApiError(503, "admin_disabled", "Authorization",
                           f"the admin API is off: set {self.cfg.admin_token_env} for the serving processes "
                           "or admin_token_file in the serving config")
        headers = request.headers.getlist("authorization")
        if len(headers) > 1:  # proxies differ on which of two they keep: refuse rather than guess
            raise ApiError(400, "ambiguous_authorization", "Authorization",
                           f"{len(headers)} Authorization headers were sent; send exactly one")
        given = headers[0] if headers else ""
        if not given.lower().startswith("bearer "):
            raise ApiError(401, "unauthorized", "Authorization", "send Authorization: Bearer <admin token>")
        if not hmac.compare_digest(given[7:].strip().encode(), token.encode()):
            raise ApiError(401, "unauthorized", "Authorization", "the admin token is wrong")

    async def _read(self, method, *args):
        """``await method.remote(*args)``, retried on another replica when the one it reached died."""
        for attempt in range(self.cfg.retries + 1):
            try:
                return await method.remote(*args)
            except Exception as err:
                if not replica_died(err) or attempt == self.cfg.retries:
                    raise
                log.warning("firstlight: a replica died during a read; retrying (%s)", str(err).splitlines()[0][:200])
                await asyncio.sleep(0.05 * (attempt + 1))

    def _check_tokens(self, model: str, texts: list[str], names: list[str]) -> None:
        # an ensemble's members may cut a text into different numbers of tokens: the most counts
        per_tokenizer = [[len(ids) for ids in tok(texts)["input_ids"]] for tok in self._tokenizer(model)]
        counts = [max(c) for c in zip(*per_tokenizer)]
        for name, count in zip(names, counts):
            if count > self.cfg.max_text_tokens:
                raise ApiError(422, "too_many_tokens", name, f"'{name}' has {count} tokens; at most "
                               f"{self.cfg.max_text_tokens} are accepted", self.cfg.max_text_tokens)

    async def _clicked(self, session, described: dict) -> list[str]:
        """The session's clicked ids, checked: a documented 422 for too many, malformed or unknown ones."""
        clicked = list(session.clicked) if session is not None else []
        check_count(clicked, "session.clicked", 0, self.cfg.max_session_clicks)
        for i, product_id in enumerate(clicked):
            check_id(product_id, f"session.clicked.{i}")
        if clicked:
            unknown = await self._read(self.retriever.unknown, described, clicked)
            if unknown:
                i = clicked.index(unknown[0])
                raise ApiError(422, "unknown_id", f"session.clicked.{i}", f"'session.clicked.{i}': no product "
                               f"{unknown[0]!r} in the index (deleted, or never added)")
        return clicked

    async def _rank(self, texts: list[str], k: int, exclude: list[str], field: str, rerank: bool = True,
                    session=None):
        check_k(k, self.cfg.max_k)
        check_count(exclude, "exclude", 0, self.cfg.max_exclude)
        for i, product_id in enumerate(exclude):
            if not 1 <= len(product_id) <= 200:
                raise ApiError(422, "invalid_id", f"exclude.{i}", f"'exclude.{i}' is not a product id: ids are "
                               "1 to 200 characters", 200)
        names = [f"{field}.{i}" if field == "texts" else field for i in range(len(texts))]
        clean = [check_text(t, name, self.cfg.max_text_chars) for t, name in zip(texts, names)]
        version = self.active.get()  # read once: the whole request runs on this version
        described = version.describe()
        self._check_tokens(version.model, clean, names)
        clicked = await self._clicked(session, described)
        start = time.perf_counter()
        # corrected here, not in another replica: no extra hop on every request
        queries = self._speller(described).correct(clean) if self.cfg.spell_correct else clean
        vectors = await self._read(self.encoder.encode, version.model, queries, "query")
        encoded = time.perf_counter()
        rerank = rerank and self.reranker is not None
        depth = max(k, self.cfg.rerank_depth) if rerank else k
        hits = await self._read(self.retriever.search, described, vectors, queries, depth, [exclude] * len(clean),
                                clicked)
        for row in hits:  # where the first stage put each product, for the reranker's part of 'why'
            for rank, hit in enumerate(row):
                hit["first_rank"] = rank
        done = time.perf_counter()
        timing = {"encode": 1000 * (encoded - start), "retrieve": 1000 * (done - encoded)}
        stage = {"reranked": False, "fallback": None}
        if rerank:
            hits, stage["reranked"], stage["fallback"] = await self._rerank(queries, hits)
            timing["rerank"] = 1000 * (time.perf_counter() - done)
        results = [[{"id": c["id"], "title": c["title"], "score": c["score"],
                     **({"why": explain(query, c, self.lexical_tokens, rank,
                                        c["first_rank"] if stage["reranked"] else None)} if self.cfg.explain else {})}
                    for rank, c in enumerate(row[:k])] for query, row in zip(queries, hits)]
        return results, version.public(), timing, (queries if self.cfg.spell_correct else None), stage

    async def _rerank(self, queries: list[str], hits: list[list[dict]]) -> tuple[list, bool, str | None]:
        """The second stage, or the first stage's ranking with the reason when the Reranker cannot answer."""
        depth = self.cfg.rerank_depth
        try:
            scores = await asyncio.wait_for(asyncio.gather(*(
                self._read(self.reranker.score, q, [c["text"] for c in row[:depth]]) for q, row in zip(queries, hits))),
                timeout=self.cfg.rerank_timeout_s)
        except Exception as err:  # noqa: BLE001 - a dead, overloaded or slow reranker: serve the first stage
            reason = "timed out" if isinstance(err, asyncio.TimeoutError) else (str(err).splitlines() or ["error"])[0]
            log.warning("firstlight: reranker unavailable (%s); answering with the first-stage ranking", reason)
            self.fallbacks += 1
            return hits, False, f"reranker unavailable ({reason[:200]}); first-stage ranking served"
        return [rerank(row, s, depth, self.cfg.rerank_weight) for row, s in zip(hits, scores)], True, None

    # -- routes --------------------------------------------------------------------------------
    @app.post("/v1/recommend", response_model=RecommendResponse, openapi_extra=openapi_body(RecommendRequest))
    async def recommend(self, request: Request):
        async def work(body: RecommendRequest):
            start = time.perf_counter()
            results, version, timing, queries, stage = await self._rank([body.text], body.k, body.exclude, "text",
                                                                        body.rerank, body.session)
            timing["total"] = 1000 * (time.perf_counter() - start)
            return {"items": results[0], "version": version, "timing_ms": timing,
                    "query": queries[0] if queries else None, **stage}
        return await self._handle(request, RecommendRequest, work)

    @app.post("/v1/recommend/batch", response_model=BatchResponse, openapi_extra=openapi_body(BatchRequest))
    async def recommend_batch(self, request: Request):
        async def work(body: BatchRequest):
            start = time.perf_counter()
            check_count(body.texts, "texts", 1, self.cfg.max_batch_texts)
            results, version, timing, queries, stage = await self._rank(body.texts, body.k, body.exclude, "texts",
                                                                        body.rerank, body.session)
            timing["total"] = 1000 * (time.perf_counter() - start)
            return {"results": results, "version": version, "timing_ms": timing, "queries": queries, **stage}
        return await self._handle(request, BatchRequest, work)

    @app.post("/v1/items", response_model=ItemsResponse, openapi_extra=openapi_body(ItemsRequest))
    async def upsert_items(self, request: Request):
        async def work(body: ItemsRequest):
            check_count(body.items, "items", 1, self.cfg.max_batch_texts)
            texts = []
            for i, item in enumerate(body.items):
                check_id(item.id, f"items.{i}.id")
                check_text(item.title, f"items.{i}.title", self.cfg.max_text_chars)
                if item.description is not None:
                    check_text(item.description, f"items.{i}.description", 10 * self.cfg.max_text_chars)
                texts.append(product_text(item.title, item.description))
            version = self.active.get()
            described = version.describe()
            vectors = await self._read(self.encoder.encode, version.model, texts, "passage")
            records = [{"id": item.id, "title": item.title, "text": text, "vector": vector.tolist()}
                       for item, text, vector in zip(body.items, texts, vectors)]
            outcome = await self.retriever.upsert.remote(described, records)  # a write: never retried
            refused(outcome)
            return {"upserted": [r["id"] for r in records], "items_in_index": outcome["items"],
                    "version": version.public()}
        return await self._handle(request, ItemsRequest, work, admin=True)

    # ``:path``: an id may hold "/" (sent as %2F, which the server decodes before routing)
    @app.delete("/v1/items/{product_id:path}", response_model=DeleteResponse)
    async def delete_item(self, product_id: str, request: Request):
        async def work(_):
            version = self.active.get()
            outcome = await self.retriever.delete.remote(version.describe(), product_id)
            refused(outcome)
            if not outcome["deleted"]:
                raise ApiError(404, "not_found", "id", f"no product {product_id!r} in the index")
            return {"deleted": product_id, "version": version.public()}
        return await self._handle(request, None, work, admin=True)

    @app.post("/v1/admin/reload", response_model=ReloadResponse, openapi_extra=openapi_body(ReloadRequest))
    async def reload(self, request: Request):
        async def work(body: ReloadRequest):
            async with self.reload_lock:
                return await self._switch(body)
        return await self._handle(request, ReloadRequest, work, admin=True)

    async def _switch(self, body: ReloadRequest) -> dict:
        """Load the new version on both deployments, carry over the API's item changes, then switch.
        Anything wrong with the new version is a 422 before the switch: the old one keeps serving."""
        index_dir, model = await asyncio.to_thread(checked_reload_target, body)
        old, new = self.active.get(), Version(model, index_dir)
        try:
            dim = await self.encoder.dim.remote(model)
        except Exception as err:  # noqa: BLE001 - whatever loading raised, the caller gets the reason
            raise ApiError(422, "unloadable", "model", f"could not load model {model!r}: {last_line(err)}") from None
        try:
            info = await self.retriever.info.remote(new.describe())
        except Exception as err:  # noqa: BLE001 - a damaged index file, an unreadable catalogue
            raise ApiError(422, "unloadable", "index_dir", f"could not load the index in {index_dir}: "
                           f"{last_line(err)}") from None
        if info["dim"] != dim:
            raise ApiError(422, "dimension_mismatch", "model", f"the model makes {dim}-dim vectors, the index holds "
                           f"{info['dim']}-dim ones: pass the model the index was built with")
        carried = "nothing to carry over" if new.id == old.id else await self._carry_over(old, new, model)
        if self.cfg.spell_correct:  # built off the event loop (about a second), before requests need it
            await asyncio.to_thread(self._speller, new.describe())
        self.active.set(new)
        log.info("firstlight: switched %s -> %s (%s)", old.describe(), new.describe(), carried)
        return {"previous": old.describe(), "active": new.describe(), "carried_over": carried,
                "items_in_index": (await self.retriever.info.remote(new.describe()))["items"]}

    async def _carry_over(self, old: Version, new: Version, model: str) -> str:
        """Products added or deleted through the API on ``old`` are re-embedded / deleted on ``new``."""
        try:
            added = await self.retriever.added_items.remote(old.describe())
            deleted = await self.retriever.deleted_ids.remote(old.describe())
        except Exception as err:  # noqa: BLE001 - e.g. the old index folder is gone: switching must still work
            log.warning("firstlight: the previous version cannot be read (%s); its item changes are not carried "
                        "over", last_line(err))
            return f"none: the previous version could not be read ({last_line(err)[:200]})"
        if added:
            vectors = await self.encoder.encode.remote(model, [a["text"] for a in added], "passage")
            refused(await self.retriever.upsert.remote(new.describe(), [{**a, "vector": v.tolist()}
                                                                        for a, v in zip(added, vectors)]))
        for pid in deleted:
            refused(await self.retriever.delete.remote(new.describe(), pid))
        return f"{len(added)} added and {len(deleted)} deleted products"

    @app.get("/v1/stats", response_model=StatsResponse)
    async def stats(self):
        version = self.active.get()
        info = await self._read(self.retriever.info, version.describe())
        return {"version": version.public(), "index": info, "rejected": dict(self.tally),
                "reranker": {"configured": bool(self.cfg.reranker), "depth": self.cfg.rerank_depth,
                             "fallbacks": self.fallbacks}, "dropped_at_start": self.active.dropped}

    @app.get("/healthz", response_model=Health)
    async def healthz(self):
        return {"status": "ok"}

    @app.get("/readyz", response_model=Ready)
    async def readyz(self):
        """Ready when a real search and a real encode on the active version both answer."""
        try:
            version = self.active.get()
            await asyncio.wait_for(self._read(self.retriever.ready, version.describe()), timeout=10)
            await asyncio.wait_for(self._read(self.encoder.dim, version.model), timeout=10)
        except Exception as err:  # noqa: BLE001 - not ready, whatever the reason
            reason = "timed out" if isinstance(err, asyncio.TimeoutError) else without_paths(last_line(err))
            return JSONResponse({"status": "not ready", "reason": reason[:300]}, status_code=503)
        return {"status": "ready", "version": version.public()}

