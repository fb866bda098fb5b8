"""Domain errors and their one mapping to HTTP. Routers raise these; only ``install`` knows
about status codes. Bodies follow FastAPI's validation shape, ``{"detail": [{loc, msg, type}]}``,
so clients parse one format whether pydantic or the domain rejected the field."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException

from service import metrics, openapi
from service.compute import ClientGone, DeadlinePassed
from service.stores.breaker import StoreUnavailable

# A 422 echoes each rejected ``input``, clipped to this: never the whole body back.
ECHO_STR, ECHO_ITEMS, ECHO_DEPTH, ECHO_ERRORS = 64, 5, 3, 50
# What FastAPI raises (as a 400 HTTPException) when the body can't be decoded at all.
_PARSE_FAILURE = "There was an error parsing the body"


class DomainError(Exception):
    status_code = 400
    kind = "bad_request"
    headers: dict[str, str] | None = None

    def __init__(self, loc: Sequence[str | int], msg: str) -> None:
        super().__init__(msg)
        self.loc = list(loc)
        self.msg = msg

    def body(self) -> dict:
        return {"detail": [{"loc": self.loc, "msg": self.msg, "type": self.kind}]}


class UnknownItemError(DomainError):
    status_code = 422
    kind = "unknown_item"

    def __init__(self, loc: Sequence[str | int], item_id: str) -> None:
        super().__init__(loc, f"unknown item id {item_id!r}")


class InvalidFieldError(DomainError):
    status_code = 422
    kind = "value_error"


class NotReadyError(DomainError):
    status_code = 503
    kind = "not_ready"
    headers = {"Retry-After": "1"}

    def __init__(self) -> None:
        super().__init__([], "artifacts are still loading; retry shortly")


class UnauthorizedError(DomainError):
    """No usable credentials (missing or malformed ``Authorization: Bearer``)."""

    status_code = 401
    kind = "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}

    def __init__(self, msg: str = "send Authorization: Bearer <admin token>") -> None:
        super().__init__(["header", "authorization"], msg)


class ForbiddenError(DomainError):
    """Credentials given but not accepted (wrong token, or admin disabled)."""

    status_code = 403
    kind = "forbidden"

    def __init__(self, msg: str) -> None:
        super().__init__(["header", "authorization"], msg)


class ShareConflictError(DomainError):
    status_code = 409
    kind = "conflict"

    def __init__(self) -> None:
        super().__init__(["body", "shares"], "the split kept changing under this request; "
                                             "read it again and retry")


class VersionRejectedError(DomainError):
    """The offered version failed validation; the old one keeps serving."""

    status_code = 409
    kind = "version_rejected"


class NoArtifactsError(DomainError):
    """No version to go to: the artifacts directory is a single version, or holds none."""

    status_code = 409
    kind = "no_artifacts"


class OverloadedError(DomainError):
    """A model request the service will not compute: past the in-process limit, or still
    queued for the compute lane when its deadline passed."""

    status_code = 503
    kind = "overloaded"
    headers = {"Retry-After": "1"}

    def __init__(self) -> None:
        super().__init__([], "the service is at capacity; retry shortly")


class StoreUnavailableError(DomainError):
    """The store (Redis) can't be used. ``Retry-After`` is when the circuit breaker lets the
    next call through (``StoreUnavailable.retry_after_s``), in whole seconds rounded up, and
    at least 1 (HTTP's Retry-After takes integer seconds)."""

    status_code = 503
    kind = "store_unavailable"

    def __init__(self, retry_after_s: float = 0.0) -> None:
        super().__init__([], "the store (Redis) is unreachable; retry shortly")
        self.headers = {"Retry-After": str(retry_after_header(retry_after_s))}

    @classmethod
    def of(cls, exc: BaseException) -> StoreUnavailableError:
        """The 503 for a store failure: ``StoreUnavailable`` carries its breaker's remaining
        open time (read now, not when it was raised); any other Redis error gives 1."""
        wait = exc.retry_after_s() if isinstance(exc, StoreUnavailable) else 0.0
        return cls(wait)


def retry_after_header(seconds: float) -> int:
    """``seconds`` as HTTP ``Retry-After``: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds)) if math.isfinite(seconds) else 1


def _decode_bytes(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def json_safe(value: Any) -> Any:
    """``value`` with everything strict JSON can't encode rendered as text.

    Validation errors echo the rejected ``input``, and a rejected input can be exactly what the
    response encoder refuses: NaN/Infinity (Python's JSON parser accepts those literals),
    strings with lone surrogates (a "\\ud800" escape) or non-UTF-8 bytes (a body sent as
    text/plain). Any of them would turn the 422 into a 500 while rendering it."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf", "-inf"
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, bytes):
        return _decode_bytes(value)
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def clip(value: Any, depth: int = ECHO_DEPTH) -> Any:
    """A small, JSON-safe preview of ``value``: strings cut to ``ECHO_STR`` characters,
    containers to ``ECHO_ITEMS`` entries and ``ECHO_DEPTH`` levels (never recursing further,
    so a deeply nested input can't blow the stack while the error is rendered)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and abs(value) >= 10**18:
        value = str(value)  # a 4,000-digit number is an echo of 4 KB
    if isinstance(value, str | bytes):
        text = json_safe(value)
        return text if len(text) <= ECHO_STR else text[:ECHO_STR] + f"... ({len(text)} chars)"
    if isinstance(value, dict | list | tuple):
        if depth <= 0:
            return f"... ({type(value).__name__} of {len(value)})"
        if isinstance(value, dict):
            out: Any = {str(clip(k, 0)): clip(v, depth - 1)
                        for k, v in list(value.items())[:ECHO_ITEMS]}
        else:
            out = [clip(v, depth - 1) for v in value[:ECHO_ITEMS]]
        if len(value) > ECHO_ITEMS:
            more = f"... ({len(value) - ECHO_ITEMS} more)"
            if isinstance(out, dict):
                out["..."] = more
            else:
                out.append(more)
        return out
    return json_safe(value) if isinstance(value, float) else value


def validation_body(errors: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """FastAPI's 422 body with every echoed ``input`` and ``ctx`` clipped, and at most
    ``ECHO_ERRORS`` errors (1,000 bad events would otherwise echo 1,000 entries)."""
    out = []
    for err in errors[:ECHO_ERRORS]:
        err = dict(err)
        if "input" in err:
            err["input"] = clip(err["input"])
        if isinstance(err.get("ctx"), dict):
            err["ctx"] = {k: clip(v if isinstance(v, str | int | float) else str(v))
                          for k, v in err["ctx"].items()}
        out.append(err)
    if len(errors) > ECHO_ERRORS:
        out.append({"loc": ["body"], "type": "too_many_errors",
                    "msg": f"{len(errors) - ECHO_ERRORS} more errors not shown"})
    return {"detail": json_safe(jsonable_encoder(out, custom_encoder={bytes: _decode_bytes}))}


def _parse_failure(cause: BaseException | None) -> tuple[str, str]:
    """(type, msg) for a body FastAPI could not decode, by the parser's exception."""
    if isinstance(cause, UnicodeError):
        return "json_invalid", "the body is not UTF-8 (nor UTF-16/32) text"
    if isinstance(cause, RecursionError):
        return "json_too_deep", "the JSON body is nested too deeply"
    return "json_invalid", clip(str(cause)) if cause is not None else _PARSE_FAILURE


def http_error_body(exc: HTTPException) -> tuple[int, dict[str, Any]]:
    """Starlette/FastAPI HTTP errors (404, 405, an undecodable body) in the service's one
    shape, ``{"detail": [{loc, msg, type}]}``, instead of a bare ``{"detail": "..."}``."""
    if isinstance(exc.detail, list):
        return exc.status_code, {"detail": exc.detail}
    if exc.status_code == 400 and exc.detail == _PARSE_FAILURE:
        kind, msg = _parse_failure(exc.__cause__)
        return 400, {"detail": [{"loc": ["body"], "msg": msg, "type": kind}]}
    kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return exc.status_code, {"detail": [{"loc": [], "msg": str(exc.detail), "type": kind}]}


def install(app: FastAPI) -> None:
    """The exception handlers, and the OpenAPI document's error responses
    (``service.openapi``)."""
    openapi.install(app)

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RedisConnectionError)  # StoreUnavailable is one
    @app.exception_handler(RedisTimeoutError)
    async def _store_down(request: Request, exc: Exception) -> JSONResponse:
        # A Redis outage is a retryable 503, not a 500 (the message never echoes the URL).
        return await _domain(request, StoreUnavailableError.of(exc))

    @app.exception_handler(DeadlinePassed)
    async def _too_late(request: Request, exc: DeadlinePassed) -> JSONResponse:
        metrics.OVERLOAD_REJECTIONS.labels(request.url.path).inc()  # model paths only
        return await _domain(request, OverloadedError())

    @app.exception_handler(ClientGone)
    async def _gone(_: Request, exc: ClientGone) -> Response:
        # Nobody reads this answer: nginx's 499 (client closed request) names it in the logs
        # and the status metric.
        return Response(status_code=499)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler, made safe for unencodable echoed inputs (see json_safe); the
        # bytes encoder replaces jsonable_encoder's strict .decode(), which raises on non-UTF-8.
        return JSONResponse(validation_body(exc.errors()), status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> Response:
        if exc.status_code in (204, 304):  # no body allowed (Starlette's own rule)
            return Response(status_code=exc.status_code, headers=exc.headers)
        status, body = http_error_body(exc)
        return JSONResponse(body, status_code=status, headers=exc.headers)
