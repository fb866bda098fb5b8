"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from service import metrics
from service.deps import StateDep
from service.state import AppState
from service.stores.base import store_health

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


async def readiness(state: AppState) -> tuple[bool, dict[str, Any]]:
    """-> (ready, body): the one place the readiness body is built. Ready as soon as a version
    serves, also while a newer one loads beside it. An unavailable store keeps the replica
    ready (it answers degraded, never 5xx) and says so: status "degraded", the store's health
    under "store"."""
    store = await store_health(state.store)
    serving = state.serving  # one read: the version and its models belong together
    if serving is not None:
        # A progressive build's partial version lists what it is still training.
        training = list(serving.runtime.manifest.get("training") or [])
        return True, {"status": "ready" if store["ok"] else "degraded",
                      "version": serving.version, "models": serving.models,
                      "training": training, "store": store}
    body: dict[str, Any] = {"status": "loading" if state.load_error is None else "failed",
                            "models": {}, "store": store}
    if state.load_error is not None:
        body["error"] = state.load_error  # names the file that failed validation
    return False, body


@router.get("/readyz")
async def readyz(state: StateDep) -> JSONResponse:
    ready, body = await readiness(state)
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
async def prometheus() -> Response:
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
