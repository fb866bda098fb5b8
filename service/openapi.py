"""The OpenAPI document's error responses, declared in one place for every route.

FastAPI declares only 200 and 422; the service also answers 400 (a body it won't decode),
401/403 (admin auth), 404 (a path parameter that does not match, e.g. an encoded "/"), 413
(body limit), 503 (models loading, store down) and serves /metrics as Prometheus text. What
an operation can answer is read from its own generated entry (body, parameters, security)
plus one table of the paths that never answer 503, so routers need no ``responses=`` of their
own and a new route is covered as it is declared."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
ERROR_SCHEMAS: dict[str, Any] = {
    "ErrorItem": {
        "title": "ErrorItem", "type": "object", "required": ["loc", "msg", "type"],
        "properties": {
            "loc": {"title": "Location", "type": "array",
                    "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
            "msg": {"title": "Message", "type": "string"},
            "type": {"title": "Error Type", "type": "string"},
            "input": {"title": "Input (clipped)"},
            "ctx": {"title": "Context", "type": "object"},
        },
    },
    "ErrorResponse": {
        "title": "ErrorResponse", "type": "object", "required": ["detail"],
        "properties": {"detail": {"title": "Detail", "type": "array",
                                  "items": {"$ref": "#/components/schemas/ErrorItem"}}},
    },
    "ReadyStatus": {
        "title": "ReadyStatus", "type": "object", "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["ready", "loading", "failed"]},
                       "version": {"type": "string"}, "error": {"type": "string"}},
    },
}
DESCRIPTIONS = {
    "400": "Body not decodable: not UTF-8 JSON, nested too deeply, or too many arrays/objects",
    "401": "No Bearer token",
    "403": "Wrong token, or admin endpoints disabled (GENREC_ADMIN_TOKEN unset)",
    "404": "No such path (a path parameter must not contain '/')",
    "409": "Conflict with the current state (admin changes: retry, or nothing to switch to)",
    "413": "Body larger than GENREC_MAX_BODY_BYTES",
    "422": "Validation error, naming the field",
    "503": "Not ready (artifacts loading), the store is unreachable, or the service is at "
           "capacity (backpressure); retry (Retry-After)",
}
# Routes that never answer 503 (no models, no store behind them); /readyz's 503 is its own.
NEVER_UNAVAILABLE = {"/healthz", "/metrics", "/readyz"}
TEXT_ROUTES = {"/metrics": "Prometheus text exposition format"}
READY = {"application/json": {"schema": {"$ref": "#/components/schemas/ReadyStatus"}}}


def error_codes(path: str, method: str, op: dict[str, Any]) -> set[str]:
    """The error statuses an operation can answer, read from its own OpenAPI entry: a body
    (400, 413, 422), parameters (422; a path parameter also 404), a security requirement (the
    admin Bearer token: 401, 403; an admin change also 409), and 503 unless the path needs
    neither models nor store."""
    codes: set[str] = set()
    params = op.get("parameters", [])
    if "requestBody" in op:
        codes |= {"400", "413", "422"}
    if params:
        codes.add("422")
    if any(p.get("in") == "path" for p in params):
        codes.add("404")
    if op.get("security"):
        codes |= {"401", "403"} if method == "get" else {"401", "403", "409"}
    if path not in NEVER_UNAVAILABLE:
        codes.add("503")
    return codes


def patch_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the error responses (and /metrics' and /readyz's own bodies) to ``schema``."""
    schema.setdefault("components", {}).setdefault("schemas", {}).update(ERROR_SCHEMAS)
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            responses = op.setdefault("responses", {})
            for code in sorted(error_codes(path, method, op)):
                responses[code] = {"description": DESCRIPTIONS[code],
                                   "content": {"application/json": {"schema": ERROR_REF}}}
            if path in TEXT_ROUTES:
                responses["200"] = {"description": TEXT_ROUTES[path],
                                    "content": {"text/plain": {"schema": {"type": "string"}}}}
            if path == "/readyz":
                responses["200"] = {"description": "Artifacts loaded", "content": READY}
                responses["503"] = {"description": "Loading, or loading failed",
                                    "content": READY}
    return schema


def install(app: FastAPI) -> None:
    """Replace ``app.openapi`` with FastAPI's generator followed by ``patch_schema``, built
    when first asked for, so routers included after ``install`` count."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = patch_schema(get_openapi(
                title=app.title, version=app.version, openapi_version=app.openapi_version,
                description=app.description, routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
