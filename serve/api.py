"""The HTTP API's request and response shapes, and the checks that turn bad input into clear 4xx errors.

Bodies are parsed by hand (size, content type, UTF-8, JSON) before pydantic sees them, so every kind
of bad input gets its own status and a JSON error naming the field and the limit:

    {"error": {"status": 422, "code": "too_long", "field": "text", "limit": 1000, "message": "..."}}
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.text import normalize_text

STRICT = ConfigDict(extra="forbid", strict=True)


class Session(BaseModel):
    model_config = STRICT
    clicked: list[str] = Field(default_factory=list, description="product ids the visitor clicked in this session, "
                               "most recent last (up to max_session_clicks): the ranking moves toward them and "
                               "they are not shown again. The server keeps no session: send it with each request")


class RecommendRequest(BaseModel):
    model_config = STRICT
    text: str = Field(description="what the visitor typed or said: a query, a profile, an onboarding answer")
    k: int = Field(10, description="products to return (1..max_k, 100 by default)")
    exclude: list[str] = Field(default_factory=list, description="product ids never to return")
    rerank: bool = Field(True, description="let the cross-encoder reorder the first stage's top products "
                                           "(when the server has one); false answers from the first stage alone")
    session: Session | None = Field(None, description="what this visitor did so far (optional)")


class BatchRequest(BaseModel):
    model_config = STRICT
    texts: list[str] = Field(description="several visitors' texts (1..max_batch_texts)")
    k: int = 10
    exclude: list[str] = Field(default_factory=list, description="product ids never to return, for every text")
    rerank: bool = Field(True, description="as in /v1/recommend")
    session: Session | None = Field(None, description="one session, applied to every text")


class Item(BaseModel):
    model_config = STRICT
    id: str = Field(description="product id (new or existing)")
    title: str
    description: str | None = Field(None, description="optional: appended to the title in the product text")


class ItemsRequest(BaseModel):
    model_config = STRICT
    items: list[Item]


class ReloadRequest(BaseModel):
    model_config = STRICT
    index_dir: str = Field(description="folder of the FAISS index to switch to (output of `firstlight index`)")
    model: str | None = Field(None, description="its encoder; default: the model recorded in the index")


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


class Product(BaseModel):
    id: str
    title: str
    score: float
    why: Why | None = None


class VersionInfo(BaseModel):
    """The model + index pair that answered: an id and folder names (full paths only to admins)."""
    id: str
    model: str
    index: str


class RecommendResponse(BaseModel):
    items: list[Product]
    version: VersionInfo
    timing_ms: dict
    query: str | None = None  # the text as ranked, when spelling correction is on
    reranked: bool = False  # whether the reranker ordered the top products
    fallback: str | None = None  # why not, when it was asked for but could not answer


class BatchResponse(BaseModel):
    results: list[list[Product]]
    version: VersionInfo
    timing_ms: dict
    queries: list[str] | None = None  # the texts as ranked, when spelling correction is on
    reranked: bool = False
    fallback: str | None = None


class ItemsResponse(BaseModel):
    upserted: list[str]
    items_in_index: int
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
    rejected: dict[str, int]
    reranker: dict
    dropped_at_start: str | None = Field(None, description="a saved reload that could not be served at start")


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


MAX_DEPTH = 8  # the deepest request (items.0.title) nests 3 levels; anything far deeper is not a request
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
