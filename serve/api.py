"""The HTTP API's request and response shapes, and the checks that turn bad input into clear 4xx errors.

Bodies are parsed by hand (size, content type, UTF-8, JSON) before pydantic sees them, so every kind
of bad input gets its own status and a JSON error naming the field and the limit:

    {"error": {"status": 422, "code": "too_long", "field": "text", "limit": 1000, "message": "..."}}
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.text import normalize_text
from ranking.facets import DEFAULT_DEPTH as DEFAULT_FACET_DEPTH
from ranking.facets import MAX_BOUNDARIES, parse_facets
from ranking.facets import MAX_DEPTH as MAX_FACET_DEPTH
from ranking.facets import MAX_FIELDS as MAX_FACETS
from ranking.filters import (
    MAX_CONDITIONS,
    MAX_VALUE_CHARS,
    MAX_VALUES,
    FilterError,
    parse_filter,
)
from ranking.filters import MAX_DEPTH as MAX_FILTER_DEPTH
from ranking.rules import parse_rule

STRICT = ConfigDict(extra="forbid", strict=True)


class Session(BaseModel):
    model_config = STRICT
    id: str | None = Field(None, description="the shop's id for this visit (1 to 200 characters, optional): logged "
                           "with the impression so a training run can tell visits apart. Send an opaque id, "
                           "never a name or an email: it is stored as sent")
    clicked: list[str] = Field(default_factory=list, description="product ids the visitor clicked in this session, "
                               "most recent last (up to max_session_clicks): the ranking moves toward them and "
                               "they are not shown again. The server keeps no session: send it with each request")


FILTER_HELP = ("only products passing this filter are ranked (optional): "
               '{"field": NAME, "eq": VALUE} | {"field": NAME, "in": [VALUES]} | '
               '{"field": NAME, "range": {"gt"|"gte"|"lt"|"lte": NUMBER, ...}} | {"field": NAME, "exists": BOOL} | '
               '{"and": [FILTERS]} | {"or": [FILTERS]} | {"not": FILTER}. NAME is one of the catalogue\'s typed '
               f"attributes (GET /v1/stats lists them). Limits: and / or / not nested at most {MAX_FILTER_DEPTH} "
               f"deep, {MAX_CONDITIONS} conditions, {MAX_VALUES} values in one 'in', {MAX_VALUE_CHARS} characters "
               "a value. A filter matching fewer than k products returns those it matches (none: an empty list "
               "and 'filter.matched_none'). docs/filters.md has the details")


class RecommendRequest(BaseModel):
    model_config = STRICT
    text: str = Field(description="what the visitor typed or said: a query, a profile, an onboarding answer")
    k: int = Field(10, description="products to return (1..max_k, 100 by default)")
    exclude: list[str] = Field(default_factory=list, description="product ids never to return")
    rerank: bool = Field(True, description="let the cross-encoder reorder the first stage's top products "
                                           "(when the server has one); false answers from the first stage alone")
    session: Session | None = Field(None, description="what this visitor did so far (optional)")
    filter: dict | None = Field(None, description=FILTER_HELP)
    read_constraints: bool = Field(True, description="read constraints from the text (a price bound, a brand, a "
                                   "colour, 'in stock', 'not corded' ...) and apply them (when the server reads them); "
                                   "false ranks the text as it is. The request's own filter wins over a read "
                                   "constraint on the same field")
    facets: dict | None = Field(None, description="counts for a filter sidebar (optional): "
                                '{"fields": [keyword attributes], "ranges": {number attribute: [ascending '
                                'boundaries]}, "depth": N}, counted over the first stage\'s top depth products '
                                f"(default {DEFAULT_FACET_DEPTH}, at most {MAX_FACET_DEPTH}) within the filter; at "
                                f"most {MAX_FACETS} facets, {MAX_BOUNDARIES} boundaries each")


class BatchRequest(BaseModel):
    model_config = STRICT
    texts: list[str] = Field(description="several visitors' texts (1..max_batch_texts)")
    k: int = 10
    exclude: list[str] = Field(default_factory=list, description="product ids never to return, for every text")
    rerank: bool = Field(True, description="as in /v1/recommend")
    session: Session | None = Field(None, description="one session, applied to every text")
    filter: dict | None = Field(None, description="as in /v1/recommend, applied to every text")
    read_constraints: bool = Field(True, description="as in /v1/recommend, each text read on its own")


class Item(BaseModel):
    model_config = STRICT
    id: str = Field(description="product id (new or existing)")
    title: str
    description: str | None = Field(None, description="optional: appended to the title in the product text")
    attributes: dict | None = Field(None, description="typed attributes for filters ({name: value}; a number, a "
                                    "string, true/false, or a list of strings, as the field's type says; null "
                                    "unsets one). Left out: a changed product keeps the attributes it had")


class EventIn(BaseModel):
    model_config = STRICT
    type: str = Field(description="click, add_to_cart or purchase")
    request_id: str = Field(description="the request_id of the recommendation the product was shown in")
    product_id: str = Field(description="the product clicked, put in the cart or bought: one the recommendation showed")


class EventsRequest(BaseModel):
    model_config = STRICT
    events: list[EventIn] = Field(description="what shoppers did after a recommendation (1..max_events)")


class EventsResponse(BaseModel):
    accepted: int = Field(description="events appended to the log and on disk")


class ItemsRequest(BaseModel):
    model_config = STRICT
    items: list[Item]


class RulesRequest(BaseModel):
    model_config = STRICT
    rules: list[dict] = Field(description="rules to add or replace (by id), 1 to 100: {id, action: boost | bury | pin, "
                              "ids: [product ids] or filter: FILTER, query: a pattern such as '*jacket*' (absent: "
                              "every query), by: places a boost moves (1..100, default 3), position: where a pin "
                              "puts the product (1-based, up to max_k)}. docs/filters.md has the details")


class ReloadRequest(BaseModel):
    model_config = STRICT
    index_dir: str = Field(description="folder of the FAISS index to switch to (output of `firstlight index`)")
    model: str | None = Field(None, description="its encoder; default: the model recorded in the index")


class CanaryRequest(BaseModel):
    model_config = STRICT
    index_dir: str = Field(description="folder of the canary's FAISS index (below the reload roots)")
    model: str | None = Field(None, description="its encoder; default: the model recorded in the index")
    reranker: str | None = Field(None, description="its own cross-encoder folder; default: the server's reranker")
    share: float = Field(0.1, description="share of sessions served by the canary, above 0 and at most 0.5")


class CanaryResponse(BaseModel):
    canary: dict | None = Field(description="the canary's version, its share and when it started (null: none runs)")
    control: dict = Field(description="the active version")
    arms: dict = Field(description="per arm, this replica's requests, impressions, clicks, add_to_cart, purchases, CTR")
    outcome: str | None = Field(None, description="started, promoted or rolled back, after a change")
    carried_over: str | None = Field(None, description="when a canary starts: the API's item changes and rules copied to it")


class Resembles(BaseModel):
    id: str
    title: str
    similarity: float


class Why(BaseModel):
    """Why a product is in the list, read off the scores that ranked it (ranking/session.py)."""
    text: str = Field(description="one line for a shopper or a merchandiser")
    matched: list[str] = Field(description="query words the product's text matches (stemmed, after spelling correction)")
    stages: list[str] = Field(description="first-stage sides that retrieved it: lexical (BM25), semantic (encoder)")
    reranker_moved: int | None = Field(None, description="places the reranker moved it up (negative: down)")
    resembles: Resembles | None = Field(None, description="the clicked product it is most like, when a session is sent")
    constraints: list[str] = Field(default_factory=list, description="constraints read from the text that it "
                                   "meets, e.g. 'price ≤ 300', 'colour = 蓝色'")
    rules: list[str] = Field(default_factory=list, description="merchandising rules that moved it, e.g. "
                             "\"pinned at 1 by rule 'spring-sale'\"")


class Product(BaseModel):
    id: str
    title: str
    score: float | None = Field(description="the ranking's score; null for a product a merchandising rule pinned "
                                "that the ranking did not retrieve")
    why: Why | None = None
    attributes: dict | None = Field(None, description="the product's typed attributes (price, brand ...), when "
                                    "the catalogue has any")


class FilterApplied(BaseModel):
    """The filter a reply was ranked within, as the server read it."""
    read_as: str = Field(description="the filter in words, e.g. (brand = Makita) and (price < 100)")
    matched_none: bool = Field(description="true when no product passes it: the empty list is the answer, not a fault")


class ConstraintRead(BaseModel):
    """A constraint read from the shopper's text, and what became of it (docs/constraints.md)."""
    field: str = Field(description="the attribute it is on (price, brand, colour ...), or 'text' for a word to exclude")
    op: str = Field(description="lte, gte, between, about, eq, not, not_contains")
    value: float | str | bool | list[float] = Field(description="the bound, the value named, or [low, high]")
    span: list[int] = Field(description="[start, end) character offsets in the text as read (normalised)")
    text: str = Field(description="the words it was read from")
    kind: str = Field(description="hard (a filter) or soft (a boost)")
    status: str = Field(description="applied, relaxed (dropped: too few products met every constraint), ignored "
                        "(the catalogue has no such attribute) or overridden (the request's filter sets the field)")
    read_as: str = Field(description="in words, e.g. 'price ≤ 300'")
    reason: str | None = Field(None, description="why it was relaxed, ignored or overridden")


class VersionInfo(BaseModel):
    """The model + index pair that answered: an id and folder names (full paths only to admins)."""
    id: str
    model: str
    index: str


class RecommendResponse(BaseModel):
    items: list[Product]
    request_id: str = Field(description="names this list in POST /v1/events (a click, a purchase on one of its products)")
    version: VersionInfo
    timing_ms: dict
    query: str | None = None  # the text as ranked, when spelling correction is on
    reranked: bool = False  # whether the reranker ordered the top products
    fallback: str | None = None  # why not, when it was asked for but could not answer
    filter: FilterApplied | None = None
    facets: dict | None = Field(None, description="per asked field, [{value, count}] (most frequent first); per "
                                "range field, [{gte, lt, count}] buckets")
    facets_over: int | None = Field(None, description="how many candidate products the facets counted")
    constraints: list[ConstraintRead] | None = Field(None, description="what the text was read to ask for; null "
                                                     "when reading is off (read_constraints false, or the server's "
                                                     "constraints.read)")


class BatchResponse(BaseModel):
    results: list[list[Product]]
    request_ids: list[str] = Field(description="per text, the request_id of its list (for POST /v1/events)")
    version: VersionInfo
    timing_ms: dict
    queries: list[str] | None = None  # the texts as ranked, when spelling correction is on
    reranked: bool = False
    fallback: str | None = None
    filter: FilterApplied | None = None
    constraints: list[list[ConstraintRead]] | None = Field(None, description="per text, as in /v1/recommend")


class ItemsResponse(BaseModel):
    upserted: list[str]
    items_in_index: int
    version: VersionInfo


class RulesResponse(BaseModel):
    rules: list[dict] = Field(description="every rule of the active version, as sent")
    revision: int = Field(description="counts the changes to this version's rules")
    version: VersionInfo


class DeleteResponse(BaseModel):
    deleted: str
    version: VersionInfo


class ReloadResponse(BaseModel):
    previous: VersionInfo
    active: VersionInfo
    items_in_index: int
    carried_over: str = Field(description="what happened to the products added or deleted through the API")


class StatsResponse(BaseModel):
    version: VersionInfo
    index: dict
    attributes: dict[str, str] = Field(default_factory=dict, description="the catalogue's typed attributes, "
                                       "{name: number | keyword | boolean | keywords}: what filters may name")
    rejected: dict[str, int]
    reranker: dict
    dropped_at_start: str | None = Field(None, description="a saved reload that could not be served at start")
    events: dict = Field(default_factory=dict, description="this replica's event log: impressions logged and "
                         "dropped, events logged and refused, write failures")
    arms: dict = Field(default_factory=dict, description="per arm (control; canary while one runs), this replica's "
                       "requests, impressions (lists shown), clicks, add_to_cart, purchases and CTR (clicks / "
                       "impressions)")
    canary: dict | None = Field(None, description="the running canary's version, share and start, or null")


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    version: VersionInfo | None = None
    reason: str | None = Field(None, description="why not, when the status is 'not ready' (HTTP 503)")


class ErrorDetail(BaseModel):
    status: int
    code: str = Field(description="a stable, machine-readable reason: too_long, out_of_range, unauthorized, ...")
    field: str = Field(description="the field, header or path part at fault")
    message: str = Field(description="what is wrong and how to fix it")
    limit: int | None = Field(None, description="the limit that was broken, when one was")


class ErrorBody(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    def __init__(self, status: int, code: str, field: str, message: str, limit=None):
        super().__init__(message)
        self.status, self.code, self.field, self.message, self.limit = status, code, field, message, limit

    def body(self) -> dict:
        error = {"status": self.status, "code": self.code, "field": self.field, "message": self.message}
        if self.limit is not None:
            error["limit"] = self.limit
        return {"error": error}


def check_headers(raw: list[tuple[bytes, bytes]], max_headers: int, max_bytes: int) -> None:
    """A 431 for more headers, or more header bytes, than the limits allow. Ray Serve's HTTP proxy
    has no such cap of its own (nor a timeout for reading headers: docs/serving.md says what to put
    in front), so the gateway refuses them before any work."""
    if len(raw) > max_headers:
        raise ApiError(431, "headers_too_large", "headers", f"{len(raw)} request headers were sent; at most "
                       f"{max_headers} are accepted", max_headers)
    size = sum(len(name) + len(value) for name, value in raw)
    if size > max_bytes:
        raise ApiError(431, "headers_too_large", "headers", f"the request headers hold {size} bytes; at most "
                       f"{max_bytes} are accepted", max_bytes)


async def read_body(request, max_bytes: int) -> bytes:
    """The body, refused with 413 by its Content-Length before a byte is read, and a chunked body
    the moment it passes the cap: a 200 MB upload is never held in memory to be refused."""
    declared = request.headers.getlist("content-length")
    if len(set(declared)) > 1:
        raise ApiError(400, "invalid_header", "Content-Length", "send one Content-Length header")
    if declared:
        if not declared[0].strip().isdigit():
            raise ApiError(400, "invalid_header", "Content-Length", f"Content-Length {declared[0][:40]!r} is not a "
                           "byte count")
        size = declared[0].strip()
        if len(size) > 18 or int(size) > max_bytes:
            raise ApiError(413, "body_too_large", "body", f"the body has {size[:20]} bytes; at most {max_bytes} are "
                           "accepted", max_bytes)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, "body_too_large", "body", f"the body passed {max_bytes} bytes, the most accepted; "
                           "reading stopped there", max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_body(raw: bytes, content_type: str | None, model: type[BaseModel]) -> BaseModel:
    """A request model from a body already read within the size cap (``read_body``)."""
    if (content_type or "").split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "unsupported_media_type", "Content-Type",
                       f"send JSON with Content-Type: application/json (got {content_type or 'none'!r})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ApiError(400, "invalid_encoding", "body", f"the body is not UTF-8 (byte {err.start}); encode it "
                       "as UTF-8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ApiError(400, "invalid_json", "body", f"the body is not valid JSON ({err.msg} at line {err.lineno}, "
                       f"column {err.colno})") from None
    except RecursionError:  # json's decoder recurses once per level: tens of thousands of [[[...
        raise ApiError(400, "too_deep", "body", "the body's JSON is nested too deeply; no request nests more "
                       f"than {MAX_DEPTH} levels") from None
    except ValueError:  # Python refuses to read integers of more than 4300 digits
        raise ApiError(400, "invalid_json", "body", "the body holds a number of more than 4300 digits; send "
                       "numbers of at most 16 digits") from None
    if not isinstance(data, dict):
        raise ApiError(422, "wrong_type", "body", f"the body must be a JSON object, not {type(data).__name__}")
    check_structure(data)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        kind = first["type"]
        code = {"missing": "missing_field", "extra_forbidden": "unknown_field"}.get(kind, "wrong_type")
        message = {"missing": f"'{field}' is required", "extra_forbidden": f"'{field}' is not a field of this request"
                   }.get(kind, f"'{field}': {first['msg']}")
        raise ApiError(422, code, field, message) from None


# the deepest request is a filter nested MAX_FILTER_DEPTH deep: filter.and.0 per level, then field.range.gte
MAX_DEPTH = 3 + 2 * MAX_FILTER_DEPTH + 1
MAX_INT = 2**53  # the largest integer every JSON client reads exactly


def check_structure(data) -> None:
    """Refuse what no model field can hold but would break later: lone UTF-16 surrogates ("\\ud800",
    valid JSON escapes that no UTF-8 encoder accepts), integers past 2**53, and deep nesting."""
    stack = [(data, "", 0)]
    while stack:  # iterative: a deep body must not exhaust Python's recursion on the way to its error
        node, path, depth = stack.pop()
        name = path or "body"
        if depth > MAX_DEPTH:
            raise ApiError(400, "too_deep", name, f"'{name}' nests more than {MAX_DEPTH} levels; no field of this "
                           "request is nested like that", MAX_DEPTH)
        if isinstance(node, str):
            _check_surrogates(node, name)
        elif isinstance(node, bool):
            continue
        elif isinstance(node, int) and abs(node) > MAX_INT:
            raise ApiError(422, "out_of_range", name, f"'{name}' is an integer of {len(str(abs(node)))} digits; "
                           f"integers above 2**53 are refused", MAX_INT)
        elif isinstance(node, dict):
            for key, value in node.items():
                _check_surrogates(key, name)  # a key's fault is its object's
                stack.append((value, f"{path}.{key}" if path else str(key), depth + 1))
        elif isinstance(node, list):
            stack.extend((value, f"{path}.{i}", depth + 1) for i, value in enumerate(node))


def _check_surrogates(text: str, field: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ApiError(422, "invalid_characters", field.encode("utf-8", "backslashreplace").decode(),
                       f"'{field.encode('utf-8', 'backslashreplace').decode()}' holds a lone UTF-16 surrogate "
                       f"(\\u{ord(text[err.start]):04x} at character {err.start}); send whole characters "
                       "(a surrogate pair, or the character itself)") from None


def check_text(text: str, field: str, max_chars: int) -> str:
    """The normalised text, or an ApiError naming what is wrong with it."""
    if "\x00" in text:
        raise ApiError(422, "invalid_characters", field, f"'{field}' contains NUL characters; remove them")
    if len(text) > max_chars:
        raise ApiError(422, "too_long", field, f"'{field}' has {len(text)} characters; at most {max_chars} are "
                       "accepted", max_chars)
    clean = normalize_text(text)
    if not clean:
        raise ApiError(422, "empty", field, f"'{field}' is empty (or only whitespace / invisible characters)")
    return clean


def check_count(values: list, field: str, low: int, high: int) -> None:
    if not low <= len(values) <= high:
        raise ApiError(422, "out_of_range", field, f"'{field}' has {len(values)} entries; send {low} to {high}", high)


def check_k(k: int, max_k: int) -> None:
    if not 1 <= k <= max_k:
        raise ApiError(422, "out_of_range", "k", f"k={k} is outside 1..{max_k}", max_k)


def check_filter(expr: dict | None, schema: dict[str, str], field: str = "filter"):
    """The request's filter, parsed and checked against the catalogue's typed attributes (None: none)."""
    if expr is None:
        return None
    try:
        return parse_filter(expr, schema)
    except FilterError as err:
        where = field if err.path == "filter" else f"{field}.{err.path}"
        raise ApiError(422, err.code, where, f"'{where}': {err.message}", err.limit) from None


def check_rules(specs: list[dict], schema: dict[str, str], max_position: int) -> list:
    check_count(specs, "rules", 1, 100)
    rules = []
    for i, spec in enumerate(specs):
        try:
            rules.append(parse_rule(spec, schema, max_position))
        except FilterError as err:
            where = f"rules.{i}.{err.path}" if err.path != "rule" else f"rules.{i}"
            raise ApiError(422, err.code, where, f"'{where}': {err.message}", err.limit) from None
    ids = [r.id for r in rules]
    if len(set(ids)) != len(ids):
        raise ApiError(422, "duplicate_id", "rules", "two rules in one request share an id; send each id once")
    return rules


def check_facets(spec: dict | None, schema: dict[str, str]):
    """The request's facets, checked against the catalogue's typed attributes (None: none asked)."""
    if spec is None:
        return None
    try:
        return parse_facets(spec, schema)
    except FilterError as err:
        where = f"facets.{err.path}" if err.path != "facets" else "facets"
        raise ApiError(422, err.code, where, f"'{where}': {err.message}", err.limit) from None


MAX_ATTRIBUTE_VALUES = 64


def check_attributes(values: dict | None, schema: dict[str, str], field: str) -> dict | None:
    """An item's attributes as stored: each named field known, each value of its field's type."""
    if values is None:
        return None
    checked = {}
    for name, value in values.items():
        where = f"{field}.{name}"
        if name not in schema:
            raise ApiError(422, "unknown_field", where, f"'{where}': the catalogue has no attribute {name[:60]!r} "
                           f"(attributes: {', '.join(sorted(schema)) or 'none'})")
        kind = schema[name]
        if value is None:
            continue
        ok = {"number": isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 1e15,
              "boolean": isinstance(value, bool),
              "keyword": isinstance(value, str),
              "keywords": isinstance(value, list) and all(isinstance(v, str) for v in value)}[kind]
        if not ok:
            raise ApiError(422, "wrong_type", where, f"'{where}' is a {kind} attribute: send "
                           + {"number": "a number", "boolean": "true or false", "keyword": "a string",
                              "keywords": "a list of strings"}[kind])
        if kind == "keywords" and len(value) > MAX_ATTRIBUTE_VALUES:
            raise ApiError(422, "too_large", where, f"'{where}' holds at most {MAX_ATTRIBUTE_VALUES} values",
                           MAX_ATTRIBUTE_VALUES)
        for text in value if kind == "keywords" else [value] if kind == "keyword" else []:
            if len(text) > MAX_VALUE_CHARS:
                raise ApiError(422, "too_long", where, f"'{where}': a value has at most {MAX_VALUE_CHARS} "
                               "characters", MAX_VALUE_CHARS)
        if kind == "keyword":
            value = normalize_text(value) or None
        elif kind == "keywords":
            value = list(dict.fromkeys(normalize_text(v) for v in value if normalize_text(v))) or None
        elif kind == "number":
            value = float(value)
        if value is not None:
            checked[name] = value
    return checked


ID_RULE = "1 to 200 characters, no control characters and no leading or trailing spaces"


def check_id(product_id: str, field: str) -> str:
    """A product id as stored: any other character is allowed; DELETE takes it percent-encoded."""
    if not 1 <= len(product_id) <= 200 or product_id != product_id.strip() \
            or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in product_id):
        raise ApiError(422, "invalid_id", field, f"'{field}' is not a valid product id: ids are {ID_RULE}", 200)
    return product_id


def openapi_body(model: type[BaseModel]) -> dict:
    """OpenAPI text for a body that the handler parses itself (so the schema still documents it)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}
