"""Operator endpoints for the served artifact version, behind ``Authorization: Bearer
<GENREC_ADMIN_TOKEN>``: GET /admin/models (what serves, what was rejected, what is on disk),
POST /admin/models/reload and POST /admin/models/rollback (``service.lifecycle``)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import orjson
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from models.artifacts.versions import MANIFEST, created_at, current_version, list_versions
from service.deps import RequireAdmin, StateDep
from service.errors import InvalidFieldError, NoArtifactsError, VersionRejectedError
from service.lifecycle import NoVersionsRoot, Rejected, reload, rollback, versions_root
from service.state import AppState

router = APIRouter(prefix="/admin/models", tags=["admin"], dependencies=[RequireAdmin])


class RejectionOut(BaseModel):
    version: str
    reason: str
    at: datetime


class VersionOut(BaseModel):
    version: str  # the directory name under versions/
    created_at: datetime
    partial: bool  # a progressive build's early version (some components not built yet)
    current: bool  # what the `current` link points to
    serving: bool
    rejected: bool  # failed validation in this process


class ModelsOut(BaseModel):
    version: str | None  # None while nothing serves
    directory: str | None
    loaded_at: datetime | None
    partial: bool
    models: dict[str, str]  # component -> "live" | "absent"
    reloading: bool
    last_rejection: RejectionOut | None
    versions: list[VersionOut]  # on disk, newest first
    load_error: str | None


class ReloadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str | None = Field(None, min_length=1, max_length=255,
                                description="a published version's name; default: current")


class ReloadOut(ModelsOut):
    result: Literal["swapped", "unchanged", "rollback"]


def _time(unix_s: float) -> datetime:
    return datetime.fromtimestamp(unix_s, UTC)


def _partial(version: Path) -> bool:
    try:
        return bool(orjson.loads((version / MANIFEST).read_bytes()).get("partial", False))
    except (OSError, ValueError, AttributeError):
        return False  # unreadable: verify() reports it when the version is offered


def _on_disk(state: AppState) -> list[VersionOut]:
    root = versions_root(state.settings)
    if root is None:
        return []
    current = current_version(root)
    serving = state.serving.directory if state.serving is not None else None
    out = []
    for p in list_versions(root):
        p = p.resolve()
        out.append(VersionOut(version=p.name, created_at=created_at(p), partial=_partial(p),
                              current=p == current, serving=p == serving,
                              rejected=p in state.models.rejected))
    return out


async def describe(state: AppState) -> ModelsOut:
    serving, rejection = state.serving, state.models.last_rejection
    return ModelsOut(
        version=serving.version if serving else None,
        directory=str(serving.directory) if serving else None,
        loaded_at=_time(serving.loaded_at) if serving else None,
        partial=serving.partial if serving else False,
        models=serving.models if serving else {},
        reloading=state.models.reloading,
        last_rejection=None if rejection is None else RejectionOut(
            version=rejection.version, reason=rejection.reason, at=_time(rejection.at)),
        versions=await asyncio.to_thread(_on_disk, state),
        load_error=state.load_error,
    )


@router.get("", response_model=ModelsOut)
async def get_models(state: StateDep) -> ModelsOut:
    return await describe(state)


@router.post("/reload", response_model=ReloadOut)
async def post_reload(state: StateDep, body: ReloadIn | None = None) -> ReloadOut:
    """Load ``current`` (or the named version, which then becomes current), validate it and
    swap it in; 409 naming the failed file when it is rejected (the old version keeps
    serving). Waits for a load already in progress."""
    version = body.version if body is not None else None
    loc = ["body", "version"] if version is not None else []
    try:
        _, changed = await reload(state, version)
    except Rejected as exc:
        raise VersionRejectedError(loc, exc.reason) from None
    except (FileNotFoundError, ValueError) as exc:
        if version is None:  # `current` names nothing
            raise NoArtifactsError([], str(exc)) from None
        raise InvalidFieldError(loc, str(exc)) from None
    except NoVersionsRoot as exc:
        raise NoArtifactsError(loc, str(exc)) from None
    out = await describe(state)
    return ReloadOut(**out.model_dump(), result="swapped" if changed else "unchanged")


@router.post("/rollback", response_model=ReloadOut)
async def post_rollback(state: StateDep) -> ReloadOut:
    """Serve the previous good version and point ``current`` at it (so the watch keeps it);
    409 when there is none that validates."""
    try:
        await rollback(state)
    except Rejected as exc:
        raise VersionRejectedError([], exc.reason) from None
    except NoVersionsRoot as exc:
        raise NoArtifactsError([], str(exc)) from None
    out = await describe(state)
    return ReloadOut(**out.model_dump(), result="rollback")

