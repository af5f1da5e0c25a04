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


class RecommendRequest(BaseModel):
    model_config = STRICT
    text: str = Field(description="what the visitor typed or said: a query, a profile, an onboarding answer")
    k: int = Field(10, description="products to return (1..max_k, 100 by default)")
    exclude: list[str] = Field(default_factory=list, description="product ids never to return")
    rerank: bool = Field(True, description="let the cross-encoder reorder the first stage's top products "
                                           "(when the server has one); false answers from the first stage alone")


class BatchRequest(BaseModel):
    model_config = STRICT
    texts: list[str] = Field(description="several visitors' texts (1..max_batch_texts)")
    k: int = 10
    exclude: list[str] = Field(default_factory=list, description="product ids never to return, for every text")
    rerank: bool = Field(True, description="as in /v1/recommend")


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


class Product(BaseModel):
    id: str
    title: str
    score: float


class RecommendResponse(BaseModel):
    items: list[Product]
    version: dict
    timing_ms: dict
    query: str | None = None  # the text as ranked, when spelling correction is on
    reranked: bool = False  # whether the reranker ordered the top products
    fallback: str | None = None  # why not, when it was asked for but could not answer


class BatchResponse(BaseModel):
    results: list[list[Product]]
    version: dict
    timing_ms: dict
    queries: list[str] | None = None  # the texts as ranked, when spelling correction is on
    reranked: bool = False
    fallback: str | None = None


class ApiError(Exception):
    def __init__(self, status: int, code: str, field: str, message: str, limit=None):
        super().__init__(message)
        self.status, self.code, self.field, self.message, self.limit = status, code, field, message, limit

    def body(self) -> dict:
        error = {"status": self.status, "code": self.code, "field": self.field, "message": self.message}
        if self.limit is not None:
            error["limit"] = self.limit
        return {"error": error}


def parse_body(raw: bytes, content_type: str | None, model: type[BaseModel], max_bytes: int) -> BaseModel:
    if len(raw) > max_bytes:
        raise ApiError(413, "body_too_large", "body", f"the body has {len(raw)} bytes; at most {max_bytes} are "
                       "accepted", max_bytes)
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
    if not isinstance(data, dict):
        raise ApiError(422, "wrong_type", "body", f"the body must be a JSON object, not {type(data).__name__}")
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
