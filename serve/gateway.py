"""The HTTP ingress: FastAPI routes on a Ray Serve deployment. It checks every request (limits,
auth, ids, tokens), corrects spelling, and hands on to the ranking path (serve/ranking_path.py:
Retriever, which encodes and searches, or Encoder then Retriever; then Reranker) or to the admin
side (serve/admin.py: items, reloads; serve/rules_store.py: merchandising rules).

    POST   /v1/recommend          {text, k, exclude, rerank}   -> ranked products + the version that answered
    POST   /v1/recommend/batch    {texts, k, exclude, rerank}  -> one ranking per text
    POST   /v1/items              {items: [{id, title, description, attributes}]}   (admin) add or change products
    DELETE /v1/items/{id}         (id percent-encoded; may hold "/")    (admin) remove a product
    POST   /v1/admin/reload       {index_dir, model}                    (admin) switch model + index
    POST   /v1/admin/canary       {index_dir, model, reranker, share}   (admin) serve a second version to a share
    GET    /v1/admin/canary, POST /v1/admin/canary/promote, /rollback   (admin) its figures; end it
    POST   /v1/recommend          ... + {session: {clicked: [ids]}}     -> moved toward the clicks, each item with 'why'
    POST   /v1/recommend          ... + {filter: EXPR, facets: {...}}   -> within the filter, with facet counts
    POST   /v1/recommend          "蓝色连衣裙 300元以内" -> constraints read from the text, applied and said back
    POST   /v1/events             {events: [{type, request_id, product_id}]}   clicks, carts, purchases -> the log
    POST   /v1/admin/rules        {rules: [{id, action, ids | filter, query, by, position}]}   (admin) boost, bury, pin
    GET    /v1/admin/rules, DELETE /v1/admin/rules/{id}                 (admin) list, remove a rule
    GET    /v1/stats, /healthz, /readyz, /docs, /openapi.json, / (the demo page)

Admin routes need one ``Authorization: Bearer <token>`` header (two are refused), the token being
the content of ``admin_token_file`` or the value of the environment variable named by
``admin_token_env`` in the gateway's process; with neither they answer 503.
"""

import asyncio
import hmac
import logging
import re
import time
from collections import Counter as Tally

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.metrics import Counter
from starlette.exceptions import HTTPException

from common.storage import local_folder
from data_pipeline.events import EVENT_TYPES, EVENTS, IMPRESSIONS
from data_pipeline.prepare import catalogue_schema
from model.folders import resolve_model_path, tokenizer_folders
from ranking.constraint_plan import ConstraintPlan, plan
from ranking.constraints import ConstraintReader
from serve.admin import Admin, index_unusable, last_line
from serve.api import (
    ApiError,
    BatchRequest,
    BatchResponse,
    CanaryRequest,
    CanaryResponse,
    DeleteResponse,
    EventsRequest,
    EventsResponse,
    Health,
    ItemsRequest,
    ItemsResponse,
    Ready,
    RecommendRequest,
    RecommendResponse,
    ReloadRequest,
    ReloadResponse,
    RulesRequest,
    RulesResponse,
    StatsResponse,
    check_attributes,
    check_count,
    check_facets,
    check_filter,
    check_headers,
    check_id,
    check_k,
    check_rules,
    check_text,
    openapi_body,
    parse_body,
    read_body,
)
from serve.canary import CanaryStore, in_canary
from serve.canary import public as canary_public
from serve.config import ServeConfig
from serve.event_log import (
    AppendLog,
    ArmCounts,
    LogFull,
    RequestIds,
    ShownLists,
    choose_swap,
)
from serve.live_index import IndexUnavailable, LiveSpeller, StorageFull, change_log_path
from serve.messages import RerankRequest
from serve.openapi import add_demo, add_docs, openapi_document
from serve.ranking_path import RankingPath
from serve.rules_store import RulesStore
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
    headers = dict(exc.headers or {})
    allowed = allowed_methods(request) if exc.status_code == 405 else set()
    if allowed:
        headers["Allow"] = ", ".join(sorted(allowed))
    return JSONResponse(ApiError(exc.status_code, code, "path", f"{request.method} {request.url.path}: "
                                 f"{exc.detail}").body(), status_code=exc.status_code, headers=headers)


def allowed_methods(request: Request) -> set[str]:
    """The methods the OpenAPI document lists for this request's path (Starlette's own 405 names only
    the first route on a path, where several routes may share it)."""
    methods = set()
    for template, operations in app.openapi().get("paths", {}).items():
        pattern = "".join(".+" if part.startswith("{") else re.escape(part)
                          for part in re.split(r"(\{[^}]+\})", template))
        if re.fullmatch(pattern, request.url.path):
            methods |= {m.upper() for m in operations}
    return methods


def ruled(item: dict) -> bool:
    """Whether a merchandising rule placed this product (a swap never moves one)."""
    return bool(item.get("rules") or (item.get("why") or {}).get("rules"))


def without_paths(text: str) -> str:
    """``text`` with absolute file paths replaced: public replies do not show the server's layout."""
    return re.sub(r"(?<![\w:/])/[^\s'\"()]*/[^\s'\"()]*", "<path>", text)

# Helpers live above the class: Serve serialises the deployment class as this module is imported,
# so a name defined below it would be missing in the replicas.


@serve.deployment
@serve.ingress(app)
class Gateway:
    def __init__(self, cfg: ServeConfig, encoder, retriever, reranker=None):
        self.cfg = cfg
        self.limits = cfg.limits
        self.encoder, self.retriever, self.reranker = encoder, retriever, reranker
        self.active = ActiveVersion(cfg.resolved_state_dir(), Version(cfg.resolved_model(), cfg.index_dir),
                                    usable=lambda v: index_unusable(v.index_dir))
        self.path = RankingPath(encoder, retriever, reranker, cfg.rerank, cfg.retries, cfg.explain,
                                cfg.constraints.soft_boost)
        # the catalogue's typed attributes: what filters and items' attributes are checked against
        prepared = local_folder(cfg.resolved_prepared_dir())
        self.schema = catalogue_schema(prepared)
        # reads prices, brands, colours ... from shoppers' words; its vocabulary is the catalogue's values
        self.reader = ConstraintReader.for_catalogue(cfg.constraints, prepared) if cfg.constraints.read else None
        self.rules = RulesStore(cfg.resolved_state_dir(), self.schema, cfg.limits.max_k)
        self.canaries = CanaryStore(cfg.resolved_state_dir())
        self.admin = Admin(encoder, retriever, self.active, self._prepare_version, cfg.resolved_reload_roots(),
                           self.rules.carry, self.canaries)
        document = openapi_document(app, cfg)
        app.openapi = lambda: document
        self.tokenizers = {}
        self.spellers = VersionCache()  # per version: its change log holds the words of products added to it
        self.rejected = Counter("firstlight_rejected_requests", description="requests answered with a 4xx",
                                tag_keys=("reason",))
        self.tally = Tally()
        # every reply names its list (request_id); with events.log the list is logged and events accepted
        events_dir = cfg.resolved_events_dir()
        self.request_ids = RequestIds(events_dir)
        self.event_log = AppendLog(events_dir, cfg.events) if cfg.events.log else None
        self.shown = ShownLists()
        self.arms = ArmCounts()
        self.arm_metric = Counter("firstlight_arm_total", description="per arm: requests, impressions (lists "
                                  "shown), click, add_to_cart, purchase", tag_keys=("arm", "kind"))
        self.rng = np.random.default_rng()
        self._tokenizer(self.active.get().model)  # loaded now, not on the first visitor's request
        self._prepare_version(self.active.get().describe())

    def __del__(self):
        # Serve calls this on a graceful stop (a redeploy, a scale-down): the queued impressions are written
        log_ = getattr(self, "event_log", None)
        if log_ is not None:
            log_.close()

    def _prepare_version(self, version: dict) -> None:
        if self.cfg.first_stage.spell_correct:
            self._speller(version)

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
            self._check_headers(request)
            if admin:  # before the body is read: an unauthorised caller learns nothing about it
                self._authorise(request)
            body = parse_body(await read_body(request, self.limits.max_body_bytes),
                              request.headers.get("content-type"), body_model) if body_model else None
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

    def _check_headers(self, request: Request) -> None:
        check_headers(request.headers.raw, self.limits.max_headers, self.limits.max_header_bytes)

    def _authorise(self, request: Request) -> None:
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

    # -- checks ------------------------------------------------------------------------------
    def _check_tokens(self, model: str, texts: list[str], names: list[str]) -> None:
        # an ensemble's members may cut a text into different numbers of tokens: the most counts
        per_tokenizer = [[len(ids) for ids in tok(texts)["input_ids"]] for tok in self._tokenizer(model)]
        counts = [max(c) for c in zip(*per_tokenizer)]
        for name, count in zip(names, counts):
            if count > self.limits.max_text_tokens:
                raise ApiError(422, "too_many_tokens", name, f"'{name}' has {count} tokens; at most "
                               f"{self.limits.max_text_tokens} are accepted", self.limits.max_text_tokens)

    async def _clicked(self, session, described: dict) -> list[str]:
        """The session's clicked ids, checked: a documented 422 for too many, malformed or unknown ones."""
        clicked = list(session.clicked) if session is not None else []
        check_count(clicked, "session.clicked", 0, self.limits.max_session_clicks)
        for i, product_id in enumerate(clicked):
            check_id(product_id, f"session.clicked.{i}")
        if clicked:
            unknown = await self.path.read(self.retriever.unknown, described, clicked)
            if unknown:
                i = clicked.index(unknown[0])
                raise ApiError(422, "unknown_id", f"session.clicked.{i}", f"'session.clicked.{i}': no product "
                               f"{unknown[0]!r} in the index (deleted, or never added)")
        return clicked

    async def _recommend(self, texts: list[str], body, field: str) -> dict:
        """Check a recommend request, correct its spelling, rank it; the reply's common part."""
        start = time.perf_counter()
        check_k(body.k, self.limits.max_k)
        check_count(body.exclude, "exclude", 0, self.limits.max_exclude)
        for i, product_id in enumerate(body.exclude):
            if not 1 <= len(product_id) <= 200:
                raise ApiError(422, "invalid_id", f"exclude.{i}", f"'exclude.{i}' is not a product id: ids are "
                               "1 to 200 characters", 200)
        names = [f"{field}.{i}" if field == "texts" else field for i in range(len(texts))]
        clean = [check_text(t, name, self.limits.max_text_chars) for t, name in zip(texts, names)]
        version, arm = self._version_for(body.session)  # read once: the whole request runs on this version
        described = version.describe()
        self._check_tokens(version.model, clean, names)
        expr = check_filter(body.filter, self.schema)
        facets = check_facets(getattr(body, "facets", None), self.schema)
        clicked = await self._clicked(body.session, described)
        if body.session is not None and body.session.id is not None:
            check_id(body.session.id, "session.id")
        # corrected here, not in another replica: no extra hop on every request
        queries = self._speller(described).correct(clean) if self.cfg.first_stage.spell_correct else clean
        # read after correction ("kkohler" is KOHLER): spans index the text as ranked (the reply's query)
        reading = self.reader is not None and body.read_constraints
        read_start = time.perf_counter()
        plans = [plan(self.reader.read(t), self.schema, self.cfg.constraints, expr) if reading
                 else ConstraintPlan((), expr) for t in queries]
        read_ms = 1000 * (time.perf_counter() - read_start)
        ranked = await self.path.rank(version, queries, body.k, body.exclude, clicked, body.rerank, start, expr,
                                      facets, self.rules.rules(version.id), plans)
        items, request_ids = self._log_shown(clean, queries, ranked.items, described, body, ranked.reranked, arm)
        timing = {**ranked.timing_ms, "total": 1000 * (time.perf_counter() - start)}
        if reading:
            timing["read_constraints"] = read_ms
        applied = None if expr is None else {
            # the first stage returns every allowed product up to k, so an empty list means none passes
            "read_as": expr.describe(), "matched_none": self.cfg.first_stage.mode != "lexical"
            and all(not row for row in ranked.items)}
        return {"items": items, "request_ids": request_ids, "version": version.public(), "timing_ms": timing,
                "queries": queries if self.cfg.first_stage.spell_correct else None, "reranked": ranked.reranked,
                "fallback": ranked.fallback, "filter": applied, "facets": ranked.facets, "facets_over": ranked.facets_over,
                "constraints": [p.public() for p in ranked.plans] if reading else None}

    def _version_for(self, session) -> tuple[Version, str]:
        """(version, arm): the canary's for its share of sessions while one runs, else the active one."""
        canary = self.canaries.get()
        if canary is None:
            return self.active.get(), "control"
        session_id = session.id if session is not None else None
        chosen = in_canary(session_id, canary["id"], canary["share"]) if session_id is not None \
            else self.rng.random() < canary["share"]
        return (canary["version"], "canary") if chosen else (self.active.get(), "control")

    def _log_shown(self, texts: list[str], queries: list[str], rows: list[list[dict]], described: dict, body,
                   reranked: bool, arm: str) -> tuple[list[list[dict]], list[str]]:
        """Each list's request_id; with events.log, a swap for a small random share of lists (the
        interventions position bias is estimated from) and the shown list queued for the log."""
        now = time.time()
        session_id = body.session.id if body.session is not None else None
        ids, out = [], []
        for text, query, row in zip(texts, queries, rows):
            request_id = self.request_ids.issue(now, arm)
            ids.append(request_id)
            swap = None
            if self.event_log is not None:
                swap = choose_swap(self.rng, len(row), self.cfg.events.swap_share, self.cfg.events.swap_depth)
                if swap and not (ruled(row[0]) or ruled(row[swap[1] - 1])):
                    row = list(row)
                    row[0], row[swap[1] - 1] = row[swap[1] - 1], row[0]
                else:
                    swap = None
                shown = [item["id"] for item in row]
                self.shown.add(request_id, shown, arm)
                self.event_log.offer(IMPRESSIONS, {
                    "request_id": request_id, "ts": now, "session_id": session_id, "text": text, "query": query,
                    "version": described["id"], "arm": arm, "items": shown, "swap": list(swap) if swap else None,
                    "reranked": reranked})
            out.append(row)
        self._count(arm, "requests")
        self._count(arm, "impressions", len(rows))
        return out, ids

    def _count(self, arm: str, kind: str, n: int = 1) -> None:
        self.arms.add(arm, kind, n)
        self.arm_metric.inc(n, tags={"arm": arm, "kind": kind})

    async def _events(self, body: EventsRequest) -> dict:
        if self.event_log is None:
            raise ApiError(503, "events_off", "events", "this server logs no events: serve with events.log true")
        check_count(body.events, "events", 1, self.limits.max_events)
        now, records, look_up = time.time(), [], []
        for i, event in enumerate(body.events):
            if event.type not in EVENT_TYPES:
                raise ApiError(422, "invalid_value", f"events.{i}.type", f"'events.{i}.type' is {event.type[:40]!r}; "
                               f"use one of {', '.join(EVENT_TYPES)}")
            issued, arm = self.request_ids.read(event.request_id) or (None, None)
            if issued is None or issued > now + 60:
                raise ApiError(422, "unknown_request", f"events.{i}.request_id", f"'events.{i}.request_id' is not a "
                               "request_id this server issued: send the request_id of the recommendation's reply")
            if now - issued > self.cfg.events.max_age_s:
                raise ApiError(422, "expired_request", f"events.{i}.request_id", f"'events.{i}.request_id' was issued "
                               f"{(now - issued) / 3600:.0f} hours ago; events are taken for "
                               f"{self.cfg.events.max_age_s / 3600:.0f} hours after a recommendation")
            check_id(event.product_id, f"events.{i}.product_id")
            shown = self.shown.get(event.request_id)
            position = None
            if shown is not None:
                if event.product_id not in shown[0]:
                    raise ApiError(422, "not_shown", f"events.{i}.product_id", f"'events.{i}.product_id': product "
                                   f"{event.product_id[:100]!r} was not in that recommendation")
                position = shown[0].index(event.product_id) + 1
            else:  # listed by another replica, or before a restart: the product must exist at least
                look_up.append(i)
            records.append({"request_id": event.request_id, "ts": now, "type": event.type,
                            "product_id": event.product_id, "position": position, "arm": arm, "shown_at": issued})
        if look_up:
            unknown = set(await self.path.read(self.retriever.unknown, self.active.get().describe(),
                                               [body.events[i].product_id for i in look_up]))
            for i in look_up:
                if body.events[i].product_id in unknown:
                    raise ApiError(422, "unknown_id", f"events.{i}.product_id", f"'events.{i}.product_id': no "
                                   f"product {body.events[i].product_id[:100]!r} in the index")
        try:
            await asyncio.wrap_future(self.event_log.append(EVENTS, records))
        except LogFull as err:
            raise ApiError(507, "insufficient_storage", "events", str(err)) from None
        for record in records:
            self._count(record["arm"], record["type"])
        return {"accepted": len(records)}

    # -- routes --------------------------------------------------------------------------------
    @app.post("/v1/recommend", response_model=RecommendResponse, openapi_extra=openapi_body(RecommendRequest))
    async def recommend(self, request: Request):
        async def work(body: RecommendRequest):
            reply = await self._recommend([body.text], body, "text")
            queries, facets, over = reply.pop("queries"), reply.pop("facets"), reply.pop("facets_over")
            constraints = reply.pop("constraints")
            return {**reply, "items": reply["items"][0], "request_id": reply.pop("request_ids")[0], "query": queries[0] if queries else None,
                    "facets": facets[0] if facets else None, "facets_over": over[0] if over else None,
                    "constraints": constraints[0] if constraints is not None else None}
        return await self._handle(request, RecommendRequest, work)

    @app.post("/v1/recommend/batch", response_model=BatchResponse, openapi_extra=openapi_body(BatchRequest))
    async def recommend_batch(self, request: Request):
        async def work(body: BatchRequest):
            check_count(body.texts, "texts", 1, self.limits.max_batch_texts)
            reply = await self._recommend(body.texts, body, "texts")
            reply["results"] = reply.pop("items")
            reply.pop("facets"), reply.pop("facets_over")
            return reply
        return await self._handle(request, BatchRequest, work)

    @app.post("/v1/events", response_model=EventsResponse, openapi_extra=openapi_body(EventsRequest))
    async def events(self, request: Request):
        return await self._handle(request, EventsRequest, self._events)

    @app.post("/v1/items", response_model=ItemsResponse, openapi_extra=openapi_body(ItemsRequest))
    async def upsert_items(self, request: Request):
        async def work(body: ItemsRequest):
            check_count(body.items, "items", 1, self.limits.max_batch_texts)
            for i, item in enumerate(body.items):
                check_id(item.id, f"items.{i}.id")
                check_text(item.title, f"items.{i}.title", self.limits.max_text_chars)
                if item.description is not None:
                    check_text(item.description, f"items.{i}.description", 10 * self.limits.max_text_chars)
            attributes = [check_attributes(item.attributes, self.schema, f"items.{i}.attributes")
                          for i, item in enumerate(body.items)]
            return await self.admin.upsert(body.items, self.path.read, attributes)
        return await self._handle(request, ItemsRequest, work, admin=True)

    # ``:path``: an id may hold "/" (sent as %2F, which the server decodes before routing)
    @app.delete("/v1/items/{product_id:path}", response_model=DeleteResponse)
    async def delete_item(self, product_id: str, request: Request):
        async def work(_):
            return await self.admin.delete(product_id)
        return await self._handle(request, None, work, admin=True)

    @app.post("/v1/admin/rules", response_model=RulesResponse, openapi_extra=openapi_body(RulesRequest))
    async def put_rules(self, request: Request):
        async def work(body: RulesRequest):
            rules = check_rules(body.rules, self.schema, self.limits.max_k)
            version = self.active.get()
            try:
                data = await asyncio.to_thread(self.rules.put, version.id, rules)
            except ValueError as err:
                raise ApiError(422, "too_large", "rules", str(err)) from None
            except StorageFull as err:
                raise ApiError(507, "insufficient_storage", "body", str(err)) from None
            return {**data, "version": version.public()}
        return await self._handle(request, RulesRequest, work, admin=True)

    @app.get("/v1/admin/rules", response_model=RulesResponse)
    async def get_rules(self, request: Request):
        async def work(_):
            version = self.active.get()
            return {**self.rules.listing(version.id), "version": version.public()}
        return await self._handle(request, None, work, admin=True)

    @app.delete("/v1/admin/rules/{rule_id:path}", response_model=RulesResponse)
    async def delete_rule(self, rule_id: str, request: Request):
        async def work(_):
            version = self.active.get()
            try:
                found = await asyncio.to_thread(self.rules.delete, version.id, rule_id)
            except StorageFull as err:
                raise ApiError(507, "insufficient_storage", "body", str(err)) from None
            if not found:
                raise ApiError(404, "not_found", "rule_id", f"no rule {rule_id[:100]!r} in the active version")
            return {**self.rules.listing(version.id), "version": version.public()}
        return await self._handle(request, None, work, admin=True)

    @app.post("/v1/admin/canary", response_model=CanaryResponse, openapi_extra=openapi_body(CanaryRequest))
    async def start_canary(self, request: Request):
        async def work(body: CanaryRequest):
            if not 0 < body.share <= 0.5:
                raise ApiError(422, "out_of_range", "share", f"share={body.share} is outside (0, 0.5]: a canary "
                               "serves the smaller part of traffic")  # (no 'limit': the schema's limits are integers)
            started = await self.admin.start_canary(body, self.canaries, self.reranker is not None)
            return {**self._canary_state(), "outcome": "started", "carried_over": started["carried_over"]}
        return await self._handle(request, CanaryRequest, work, admin=True)

    @app.get("/v1/admin/canary", response_model=CanaryResponse)
    async def get_canary(self, request: Request):
        async def work(_):
            return self._canary_state()
        return await self._handle(request, None, work, admin=True)

    @app.post("/v1/admin/canary/promote", response_model=CanaryResponse)
    async def promote_canary(self, request: Request):
        return await self._end_canary(request, promote=True)

    @app.post("/v1/admin/canary/rollback", response_model=CanaryResponse)
    async def rollback_canary(self, request: Request):
        return await self._end_canary(request, promote=False)

    async def _end_canary(self, request: Request, promote: bool):
        async def work(_):
            ended = await self.admin.end_canary(self.canaries, promote)
            return {**self._canary_state(), "outcome": ended["outcome"]}
        return await self._handle(request, None, work, admin=True)

    def _canary_state(self) -> dict:
        """For admins: full paths, as a reload's reply shows them."""
        canary = self.canaries.get()
        return {"canary": None if canary is None else {**canary_public(canary), "version": canary["version"].describe()},
                "control": self.active.get().describe(), "arms": self.arms.public()}

    @app.post("/v1/admin/reload", response_model=ReloadResponse, openapi_extra=openapi_body(ReloadRequest))
    async def reload(self, request: Request):
        return await self._handle(request, ReloadRequest, self.admin.reload, admin=True)

    @app.get("/v1/stats", response_model=StatsResponse)
    async def stats(self, request: Request):
        try:
            self._check_headers(request)
        except ApiError as err:
            return JSONResponse(err.body(), status_code=err.status)
        version = self.active.get()
        info = await self.path.read(self.retriever.info, version.describe())
        return {"version": version.public(), "index": info, "attributes": self.schema, "rejected": dict(self.tally),
                "reranker": {"configured": bool(self.cfg.rerank.model), "depth": self.cfg.rerank.depth,
                             "budget_ms": self.cfg.rerank.budget_ms, "refused": self.path.refused,
                             "fallbacks": self.path.fallbacks}, "dropped_at_start": self.active.dropped,
                "events": self.event_log.stats() if self.event_log else {"logging": "off"},
                "arms": self.arms.public(), "canary": canary_public(self.canaries.get())}

    @app.get("/healthz", response_model=Health)
    async def healthz(self):
        return {"status": "ok"}

    @app.get("/readyz", response_model=Ready)
    async def readyz(self):
        """Ready when a real search, a real encode on the active version and, with a reranker, a real
        score all answer: a deployment with no running replica (one Ray could not place) is not ready."""
        version = self.active.get()
        probes = [("retriever", self.retriever.ready, (version.describe(),)),
                  ("encoder", self.encoder.dim, (version.model,))]
        if self.reranker is not None:
            probes.append(("reranker", self.reranker.rerank, (RerankRequest(self.cfg.rerank.model, ("ready",),
                                                                            (("ready",),)),)))
        for name, method, args in probes:
            try:
                await asyncio.wait_for(self.path.read(method, *args), timeout=10)
            except Exception as err:  # noqa: BLE001 - not ready, whatever the reason
                reason = "no replica answered in 10 s" if isinstance(err, asyncio.TimeoutError) else \
                    without_paths(last_line(err))
                return JSONResponse({"status": "not ready", "reason": f"{name}: {reason}"[:300]}, status_code=503)
        return {"status": "ready", "version": version.public()}
