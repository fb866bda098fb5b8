"""Domain errors and their one mapping to HTTP. Routers raise these; only ``install`` knows
about status codes. Bodies follow FastAPI's validation shape, ``{"detail": [{loc, msg, type}]}``,
so clients parse one format whether pydantic or the domain rejected the field."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


class DomainError(Exception):
    status_code = 400
    kind = "bad_request"

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

    def __init__(self) -> None:
        super().__init__([], "artifacts are still loading; retry shortly")


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        headers = {"Retry-After": "1"} if isinstance(exc, NotReadyError) else None
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)
