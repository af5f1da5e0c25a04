"""The OpenAPI document and the /docs page.

The document is written for the running configuration: request schemas carry its limits (text
length, k, list sizes, body bytes), every route lists the 4xx answers it gives with their JSON body,
and the admin routes name their bearer-token scheme. A client generator or a fuzzer (the tests run
schemathesis against it) then learns what the server really accepts and answers.

/docs is Swagger UI from the swagger-ui-bundle package's files, served by the gateway itself: the
page works on a machine with no internet. So does the demo page at / (serve/static/index.html).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException

from data_pipeline.events import EVENT_TYPES
from serve.api import ErrorBody
from serve.config import RequestLimits, ServeConfig

BODY_ERRORS = {400: "the body is not UTF-8 JSON, is nested too deeply, or a header is malformed",
               413: "the body is larger than the server accepts (refused by Content-Length before it is read)",
               415: "the Content-Type is not application/json",
               422: "a field is missing, unknown, of the wrong type, or outside its limit",
               431: "more request headers, or more header bytes, than the server accepts"}
ADMIN_ERRORS = {400: "more than one Authorization header",
                401: "no admin token, or the wrong one",
                503: "the admin API is off: the server has no admin token configured"}
INDEX_ERROR = {503: "the active index cannot be loaded (its folder vanished); an admin reload to a good one fixes it"}
STORAGE_ERROR = {507: "the change log could not be written (disk full); nothing was changed"}

# method, path -> (admin route?, statuses it may answer besides 200 and what they mean)
ROUTES = {
    ("post", "/v1/recommend"): (False, {**BODY_ERRORS, **INDEX_ERROR}),
    ("post", "/v1/recommend/batch"): (False, {**BODY_ERRORS, **INDEX_ERROR}),
    ("post", "/v1/events"): (False, {**BODY_ERRORS, **INDEX_ERROR,
                                     422: "a field is missing, of the wrong type or outside its limit; a request_id "
                                          "this server did not issue (unknown_request) or issued longer ago than "
                                          "events.max_age_s (expired_request); a product that recommendation did "
                                          "not show (not_shown) or that is not in the index (unknown_id); nothing "
                                          "of the call was logged",
                                     503: "this server logs no events (events.log is false)",
                                     507: "the event log could not take them (disk full, or storage so slow that "
                                          "max_queue records wait); nothing was logged, retry later; "
                                          "recommendations go on"}),
    ("post", "/v1/items"): (True, {**BODY_ERRORS, **ADMIN_ERRORS, **STORAGE_ERROR}),
    ("delete", "/v1/items/{product_id}"): (True, {**ADMIN_ERRORS, **STORAGE_ERROR, 431: BODY_ERRORS[431],
                                                  404: "no product with this id in the index"}),
    ("post", "/v1/admin/rules"): (True, {**BODY_ERRORS, **ADMIN_ERRORS, **STORAGE_ERROR}),
    ("get", "/v1/admin/rules"): (True, {**ADMIN_ERRORS, 431: BODY_ERRORS[431]}),
    ("delete", "/v1/admin/rules/{rule_id}"): (True, {**ADMIN_ERRORS, **STORAGE_ERROR, 431: BODY_ERRORS[431],
                                                     404: "no rule with this id in the active version"}),
    ("post", "/v1/admin/canary"): (True, {**BODY_ERRORS, **ADMIN_ERRORS,
                                          409: "a canary is running already: promote it or roll it back first",
                                          422: "the folder is not a loadable index, the model does not fit it, the "
                                               "reranker folder holds no model, the share is outside (0, 0.5], or it "
                                               "is the active version; nothing changed"}),
    ("get", "/v1/admin/canary"): (True, {**ADMIN_ERRORS, 431: BODY_ERRORS[431]}),
    ("post", "/v1/admin/canary/promote"): (True, {**ADMIN_ERRORS, 431: BODY_ERRORS[431], 404: "no canary is running"}),
    ("post", "/v1/admin/canary/rollback"): (True, {**ADMIN_ERRORS, 431: BODY_ERRORS[431], 404: "no canary is running"}),
    ("post", "/v1/admin/reload"): (True, {**BODY_ERRORS, **ADMIN_ERRORS,
                                          422: "the folder is not a loadable index, or the model does not fit it; "
                                               "the old version keeps serving"}),
    ("get", "/readyz"): (False, {503: "not ready: the body's reason says what cannot answer"}),
    ("get", "/v1/stats"): (False, {431: BODY_ERRORS[431]}),
}


def openapi_document(app: FastAPI, cfg: ServeConfig) -> dict:
    limits = cfg.limits
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes,
                      description=f"{app.description}\n\nLimits: bodies up to {limits.max_body_bytes} bytes; headers up to "
                                  f"{limits.max_headers} and {limits.max_header_bytes} bytes; texts up "
                                  f"to {limits.max_text_chars} characters and {limits.max_text_tokens} tokens; k up to "
                                  f"{limits.max_k}. Every error is a JSON ErrorBody naming the field and the limit. "
                                  "Product ids in a path are percent-encoded.")
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorBody"] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schemas["ErrorBody"].pop("$defs", {}))
    doc["components"]["securitySchemes"] = {"adminToken": {
        "type": "http", "scheme": "bearer",
        "description": f"the admin token (serving option admin_token_file or ${cfg.admin_token_env})"}}
    for (method, path), (admin, errors) in ROUTES.items():
        operation = doc["paths"][path][method]
        if admin:
            operation["security"] = [{"adminToken": []}]
        operation.setdefault("responses", {}).pop("422", None)  # FastAPI's own shape, which we never send
        for status, meaning in sorted(errors.items()):
            operation["responses"][str(status)] = {
                "description": meaning, "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/Ready" if path == "/readyz" else "#/components/schemas/ErrorBody"}}}}
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    _limits(doc, cfg.limits)
    return doc


def _limits(doc: dict, limits: RequestLimits) -> None:
    def body(path: str) -> dict:
        return doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]

    text = {"minLength": 1, "maxLength": limits.max_text_chars}
    recommend = body("/v1/recommend")
    recommend["text"].update(text)
    for props in (recommend, body("/v1/recommend/batch")):
        props["k"].update(minimum=1, maximum=limits.max_k)
        props["exclude"].update(maxItems=limits.max_exclude)
        props["exclude"]["items"].update(minLength=1, maxLength=200)
    for props in (recommend, body("/v1/recommend/batch")):
        for option in props["session"].get("anyOf", []):
            if option.get("type") == "object":
                option["properties"]["clicked"].update(maxItems=limits.max_session_clicks)
                option["properties"]["clicked"]["items"].update(minLength=1, maxLength=200)
                for id_option in option["properties"]["id"].get("anyOf", []):
                    if id_option.get("type") == "string":
                        id_option.update(minLength=1, maxLength=200)
    body("/v1/recommend/batch")["texts"].update(minItems=1, maxItems=limits.max_batch_texts)
    body("/v1/recommend/batch")["texts"]["items"].update(text)
    items = body("/v1/items")["items"]
    items.update(minItems=1, maxItems=limits.max_batch_texts)
    item = items["items"]["properties"]
    item["id"].update(minLength=1, maxLength=200)
    item["title"].update(text)
    for option in item["description"].get("anyOf", []):
        if option.get("type") == "string":
            option.update(maxLength=10 * limits.max_text_chars)
    body("/v1/admin/canary")["share"].update(exclusiveMinimum=0, maximum=0.5)
    events = body("/v1/events")["events"]
    events.update(minItems=1, maxItems=limits.max_events)
    event = _resolved(doc, events["items"])["properties"]
    event["type"]["enum"] = list(EVENT_TYPES)
    event["product_id"].update(minLength=1, maxLength=200)
    event["request_id"].update(minLength=1, maxLength=64)
    for parameter in doc["paths"]["/v1/items/{product_id}"]["delete"].get("parameters", []):
        if parameter["name"] == "product_id":
            parameter["schema"].update(minLength=1, maxLength=200)


def _resolved(doc: dict, schema: dict) -> dict:
    """A schema, or the component a ``$ref`` names."""
    ref = schema.get("$ref", "")
    return doc["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def add_demo(app: FastAPI) -> None:
    """/: the demo page (serve/static/index.html), plain HTML + JavaScript calling this server's API."""
    page = Path(__file__).with_name("static") / "index.html"

    @app.get("/", include_in_schema=False)
    async def demo():
        return FileResponse(page, media_type="text/html")


def add_docs(app: FastAPI) -> None:
    """/docs: Swagger UI from the package's own copy of its files."""
    import swagger_ui_bundle

    assets = Path(swagger_ui_bundle.swagger_ui_path)
    allowed = {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"}

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API",
                                   swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/assets/swagger-ui.css",
                                   swagger_favicon_url="/docs/assets/favicon-32x32.png")

    @app.get("/docs/assets/{name}", include_in_schema=False)
    async def docs_asset(name: str):
        if name not in allowed:
            raise HTTPException(404, f"no asset {name!r}")
        return FileResponse(assets / name)
