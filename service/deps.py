"""FastAPI dependency aliases, in one place; routers import these, never ``request.app``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.config import Settings
from service.pipeline.factory import Components
from service.runtime import Runtime
from service.state import AppState
from service.stores.base import UserStore


def get_state(request: Request) -> AppState:
    return request.app.state.genrec


def get_store(state: Annotated[AppState, Depends(get_state)]) -> UserStore:
    return state.store


def get_settings(state: Annotated[AppState, Depends(get_state)]) -> Settings:
    return state.settings


def get_runtime(state: Annotated[AppState, Depends(get_state)]) -> Runtime:
    return state.require()[0]


def get_components(state: Annotated[AppState, Depends(get_state)]) -> Components:
    return state.require()[1]


StateDep = Annotated[AppState, Depends(get_state)]
StoreDep = Annotated[UserStore, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ComponentsDep = Annotated[Components, Depends(get_components)]
