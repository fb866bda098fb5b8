"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep) -> JSONResponse:
    if state.ready and state.runtime is not None:
        return JSONResponse({"status": "ready", "version": state.runtime.version})
    body = {"status": "loading" if state.load_error is None else "failed"}
    if state.load_error is not None:
        body["error"] = state.load_error
    return JSONResponse(body, status_code=503)


@router.get("/metrics")
async def prometheus() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
