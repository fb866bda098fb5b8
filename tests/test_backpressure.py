"""Backpressure: past ``max_inflight`` model requests, one more is answered 503 with
Retry-After at once (never queued), counted, in the one error shape; cheap endpoints are
never turned away; capacity frees as requests finish."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.app import create_app
from service.config import Settings
from service.middleware import AdmissionMiddleware


def rejections(path: str) -> float:
    return REGISTRY.get_sample_value("genrec_overload_rejections_total",
                                     {"endpoint": path}) or 0.0


@pytest.fixture
def held() -> tuple[httpx.AsyncClient, asyncio.Event, AdmissionMiddleware]:
    """A model route that answers only once ``release`` is set, behind a limit of 2."""
    release = asyncio.Event()

    async def slow(request: Request) -> JSONResponse:
        await request.body()
        await release.wait()
        return JSONResponse({"ok": True})

    async def fast(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    inner = Starlette(routes=[Route("/recommend", slow, methods=["POST"]),
                              Route("/healthz", fast)])
    admission = AdmissionMiddleware(inner, limit=2)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=admission),
                               base_url="http://test")
    return client, release, admission


async def test_one_past_the_limit_is_turned_away_at_once(held) -> None:
    client, release, admission = held
    before = rejections("/recommend")
    first = [asyncio.create_task(client.post("/recommend", json={"user_id": "u"}))
             for _ in range(2)]
    for _ in range(200):  # both admitted and waiting inside
        if admission.inflight == 2:
            break
        await asyncio.sleep(0.005)
    assert admission.inflight == 2

    r = await asyncio.wait_for(client.post("/recommend", json={"user_id": "u"}), timeout=1.0)
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    assert r.json() == {"detail": [{"loc": [], "msg": "the service is at capacity; retry "
                                    "shortly", "type": "overloaded"}]}
    assert rejections("/recommend") == before + 1
    assert (await client.get("/healthz")).status_code == 200  # not a model route

    release.set()
    assert [t.status_code for t in await asyncio.gather(*first)] == [200, 200]
    assert admission.inflight == 0
    assert (await client.post("/recommend", json={"user_id": "u"})).status_code == 200
    await client.aclose()


async def test_a_failing_request_frees_its_slot() -> None:
    async def boom(scope, receive, send) -> None:  # noqa: ANN001
        raise RuntimeError("model failed")

    admission = AdmissionMiddleware(boom, limit=1)
    for _ in range(3):
        with pytest.raises(RuntimeError):
            await admission({"type": "http", "path": "/rank"}, None, None)
        assert admission.inflight == 0


def test_the_app_wires_the_configured_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(Settings(max_inflight=7))
    limits = [m.kwargs["limit"] for m in app.user_middleware if m.cls is AdmissionMiddleware]
    assert limits == [7]
    monkeypatch.setenv("GENREC_MAX_INFLIGHT", "0")
    with pytest.raises(ValueError, match="max_inflight"):
        Settings()
