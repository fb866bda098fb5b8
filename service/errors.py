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
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


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


class StoreUnavailableError(DomainError):
    status_code = 503
    kind = "store_unavailable"
    headers = {"Retry-After": "1"}

    def __init__(self) -> None:
        super().__init__([], "the store (Redis) is unreachable; retry shortly")


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


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def _store_down(request: Request, _: Exception) -> JSONResponse:
        # A Redis outage is a retryable 503, not a 500 (the message never echoes the URL).
        return await _domain(request, StoreUnavailableError())

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler, made safe for unencodable echoed inputs (see json_safe); the
        # bytes encoder replaces jsonable_encoder's strict .decode(), which raises on non-UTF-8.
        errors = jsonable_encoder(exc.errors(), custom_encoder={bytes: _decode_bytes})
        return JSONResponse({"detail": json_safe(errors)}, status_code=422)
