"""FastAPI dependency aliases, in one place; routers import these, never ``request.app``.

Every dependency is ``async def``: FastAPI runs a plain ``def`` dependency on a worker thread,
and these only read attributes, so each would cost a thread hop (about 0.1 ms) per request
for nothing."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from models.engine.core.runtime import Runtime
from models.engine.factory import Components
from service.compute import ComputeLane
from service.config import Settings
from service.errors import ForbiddenError, UnauthorizedError
from service.exposures import ExposureLog
from service.state import AppState, Serving
from service.stores.base import UserStore

# auto_error=False: a missing or non-Bearer header comes back as None and ``require_admin``
# answers in the service's error shape (401 + WWW-Authenticate).
_bearer = HTTPBearer(auto_error=False, description="GENREC_ADMIN_TOKEN")


async def get_state(request: Request) -> AppState:
    return request.app.state.genrec


async def get_store(state: Annotated[AppState, Depends(get_state)]) -> UserStore:
    return state.store


async def get_settings(state: Annotated[AppState, Depends(get_state)]) -> Settings:
    return state.settings


async def get_serving(state: Annotated[AppState, Depends(get_state)]) -> Serving:
    """The served version's snapshot, taken once per request: FastAPI caches a dependency per
    request, so the runtime and the components below come from the same version, and a swap
    during the request does not change what it runs on. (``async``: no thread hop.)"""
    return state.require_serving()


async def get_runtime(serving: Annotated[Serving, Depends(get_serving)]) -> Runtime:
    return serving.runtime


async def get_components(serving: Annotated[Serving, Depends(get_serving)]) -> Components:
    return serving.components


async def get_exposures(state: Annotated[AppState, Depends(get_state)]) -> ExposureLog:
    return state.exposures


async def require_admin(
    settings: Annotated[Settings, Depends(get_settings)],
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """No admin token configured -> 403 (admin disabled); no/malformed Bearer header -> 401;
    a wrong token -> 403. Compared in constant time."""
    if settings.admin_token is None:
        raise ForbiddenError("admin endpoints are disabled: GENREC_ADMIN_TOKEN is not set")
    if creds is None:
        raise UnauthorizedError()
    given = creds.credentials.encode("utf-8", "surrogateescape")
    expected = settings.admin_token.get_secret_value().encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, expected):
        raise ForbiddenError("wrong admin token")


async def get_compute(state: Annotated[AppState, Depends(get_state)]) -> ComputeLane:
    return state.compute


StateDep = Annotated[AppState, Depends(get_state)]
ComputeDep = Annotated[ComputeLane, Depends(get_compute)]
StoreDep = Annotated[UserStore, Depends(get_store)]
ServingDep = Annotated[Serving, Depends(get_serving)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ComponentsDep = Annotated[Components, Depends(get_components)]
ExposuresDep = Annotated[ExposureLog, Depends(get_exposures)]
# For ``dependencies=[RequireAdmin]`` on a router or route.
RequireAdmin = Depends(require_admin)
