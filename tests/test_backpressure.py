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


# --- the compute lane -------------------------------------------------------------------------

async def test_lane_runs_calls_in_order_on_one_thread_off_the_loop() -> None:
    import threading
    import time

    from service.compute import ComputeLane

    lane = ComputeLane(deadline_s=10.0)
    seen: list[tuple[int, str]] = []

    def work(i: int) -> int:
        time.sleep(0.05)  # a forward pass; the loop must keep running meanwhile
        seen.append((i, threading.current_thread().name))
        return i * i

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    t = asyncio.create_task(ticker())
    now = time.perf_counter()
    results = await asyncio.gather(*(lane.run(now, work, i) for i in range(4)))
    t.cancel()
    assert results == [0, 1, 4, 9]
    assert [i for i, _ in seen] == [0, 1, 2, 3]
    assert {name for _, name in seen} == {seen[0][1]} and seen[0][1].startswith("genrec-compute")
    assert seen[0][1] != threading.current_thread().name
    assert ticks >= 10  # ~200 ms of work: the loop ticked all along
    lane.close()


async def test_a_call_queued_past_its_deadline_is_dropped_unrun() -> None:
    import time

    from service.compute import ComputeLane, DeadlinePassed

    lane = ComputeLane(deadline_s=0.05)
    ran: list[str] = []
    blocker = lane.run(time.perf_counter(), time.sleep, 0.2)  # holds the lane for 200 ms
    late = lane.run(time.perf_counter(), ran.append, "late")
    done = await asyncio.gather(blocker, late, return_exceptions=True)
    assert done[0] is None and isinstance(done[1], DeadlinePassed)
    assert ran == []
    assert await lane.run(time.perf_counter(), ran.append, "fresh") is None
    assert ran == ["fresh"]
    lane.close()


async def test_recommend_past_its_deadline_is_a_503(tiny_artifacts) -> None:
    from tests.helpers import running

    settings = Settings(artifacts_dir=tiny_artifacts, compute_deadline_ms=0.001)
    async with running(settings) as client:
        before = rejections("/recommend")
        r = await client.post("/recommend", json={"user_id": "1", "k": 5})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["detail"][0]["type"] == "overloaded"
        assert rejections("/recommend") == before + 1
        assert (await client.get("/healthz")).status_code == 200



def _batched_runs() -> float:
    from service import metrics

    return next(s.value for s in metrics.COMPUTE_BATCH.collect()[0].samples
                if s.name.endswith("_sum"))


async def test_recommend_whose_client_left_is_dropped_unrun(tiny_artifacts) -> None:
    """Two /recommend calls wait behind a held lane; one client disconnects meanwhile. Its
    call is dropped before any model work (499, counted), the other is computed."""
    import threading
    import time

    import orjson

    from tests.helpers import running

    async with running(Settings(artifacts_dir=tiny_artifacts)) as client:
        app = client._transport.app  # type: ignore[attr-defined]
        lane = app.state.genrec.compute
        dropped = REGISTRY.get_sample_value("genrec_compute_dropped_total",
                                            {"reason": "disconnected"})
        runs = _batched_runs()
        holding, release = threading.Event(), threading.Event()

        def hold() -> None:
            holding.set()
            release.wait(10)

        busy = asyncio.ensure_future(lane.run(time.perf_counter(), hold))
        assert await asyncio.to_thread(holding.wait, 10)
        body = orjson.dumps({"user_id": "5", "k": 10, "path": "cascade"})
        left, sent, answer = asyncio.Event(), [], []

        async def receive() -> dict:
            if not sent:
                sent.append(True)
                return {"type": "http.request", "body": body, "more_body": False}
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            answer.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": "/recommend",
                 "raw_path": b"/recommend", "query_string": b"", "root_path": "",
                 "headers": [(b"content-type", b"application/json"),
                             (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 40000), "server": ("test", 80)}
        gone = asyncio.ensure_future(app(scope, receive, send))
        kept = asyncio.ensure_future(client.post("/recommend", json={"user_id": "6", "k": 10,
                                                                     "path": "cascade"}))
        await asyncio.sleep(0.2)  # both wait in the lane
        assert not gone.done() and not kept.done()
        left.set()
        await asyncio.wait_for(gone, 5)
        assert answer[0]["status"] == 499
        release.set()
        await busy
        assert (await kept).status_code == 200
        assert REGISTRY.get_sample_value("genrec_compute_dropped_total",
                                         {"reason": "disconnected"}) == dropped + 1
        assert _batched_runs() == runs + 1  # only the call whose client stayed ran


async def test_background_work_runs_on_the_lane_after_queued_requests() -> None:
    """``run_background`` (a candidate version's load and smoke steps) runs on the lane's own
    thread, hands back its result or its exception, and yields to requests: a step added
    while one request runs still lets the requests queued behind it (even after the step was
    added) go first."""
    import threading
    import time

    from service.compute import ComputeLane

    lane = ComputeLane(deadline_s=10.0)
    order: list[str] = []
    running, release = threading.Event(), threading.Event()

    def request(name: str) -> None:
        if name == "r1":
            running.set()
            release.wait(5)  # holds the lane until r2 and r3 wait behind the step
        order.append(name)

    def step() -> str:
        order.append("step")
        return threading.current_thread().name

    def failing_step() -> None:
        raise ValueError("corrupt")

    now = time.perf_counter()
    first = asyncio.ensure_future(lane.run(now, request, "r1"))
    assert await asyncio.to_thread(running.wait, 5)  # r1 runs: the lane is busy
    background = asyncio.ensure_future(asyncio.to_thread(lane.run_background, step))
    for _ in range(500):  # until the step's wake token is the one thing queued
        if lane._background and lane._queue.qsize() == 1:
            break
        await asyncio.sleep(0.001)
    queued = [asyncio.ensure_future(lane.run(now, request, n)) for n in ("r2", "r3")]
    await asyncio.sleep(0.01)  # r2 and r3 are in the queue, after the step's token
    release.set()
    name = await background
    await asyncio.gather(first, *queued)
    assert order == ["r1", "r2", "r3", "step"]
    assert name.startswith("genrec-compute")
    with pytest.raises(ValueError, match="corrupt"):
        await asyncio.to_thread(lane.run_background, failing_step)
    assert await lane.run(time.perf_counter(), lambda: "still serving") == "still serving"
    lane.close()


async def test_background_work_after_close_fails_at_once() -> None:
    """A loader thread that outlives its cancelled task gets an error from a closed lane, not
    a wait that never ends (and would hold the process's shutdown)."""
    from service.compute import ComputeLane

    lane = ComputeLane(deadline_s=10.0)
    assert await asyncio.to_thread(lane.run_background, lambda: 7) == 7
    lane.close()
    lane._thread.join(timeout=5)
    with pytest.raises(RuntimeError, match="closed"):
        await asyncio.wait_for(asyncio.to_thread(lane.run_background, lambda: 8), timeout=5)
