"""Redis faults through the ASGI app, against a redis-server of the test's own that is killed
(SIGKILL), hung (SIGSTOP/SIGCONT) and restarted (from its AOF, or empty): /recommend never
fails and degrades within a bound a bit above the timeout, /events answers 503 + Retry-After
(the breaker's remaining open time) and accepts nothing, everything answered 2xx survives,
nothing answered 503 ever appears, and the app recovers (re-seeds an emptied store, seeds one
that was unavailable at start, never marks a half-seeded one) without a restart."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from service.config import Settings
from service.errors import StoreUnavailableError
from service.stores import (
    CircuitBreaker,
    Event,
    Interaction,
    RedisLink,
    RedisStore,
    StoreUnavailable,
    store_health,
)
from service.stores.breaker import CLOSED, HALF_OPEN, OPEN
from tests.conftest import RedisProcess
from tests.helpers import running

pytestmark = pytest.mark.usefixtures("one_thread")

TIMEOUT_MS = 100.0
RESET_S = 0.2
# A degraded answer: the timeout, then the cold path's compute, on a busy 2-core box.
DEGRADED_BOUND_S = TIMEOUT_MS / 1000 + 0.4
RECOVERY_BOUND_S = 5.0
_users = itertools.count()


def fault_settings(url: str, artifacts: Path, **over: Any) -> Settings:
    base: dict[str, Any] = dict(
        redis_url=url, artifacts_dir=artifacts.parent.parent, seed_store=False,
        redis_timeout_ms=TIMEOUT_MS, breaker_failures=2, breaker_reset_s=RESET_S,
        store_check_s=0.2, experiment_sync_s=0.2)
    return Settings(**{**base, **over})


def new_user(tag: str) -> str:
    return f"{tag}-{next(_users)}-{time.monotonic_ns()}"


async def wait_for(check: Callable[[], Awaitable[bool]], limit_s: float) -> float:
    """Seconds until ``check()`` holds; fails after ``limit_s``."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit_s:
        if await check():
            return time.perf_counter() - t0
        await asyncio.sleep(0.05)
    pytest.fail(f"not within {limit_s}s")


async def recommend(c: httpx.AsyncClient, user: str, **body: Any) -> tuple[dict, float]:
    t0 = time.perf_counter()
    r = await c.post("/recommend", json={"user_id": user, "k": 5, **body})
    elapsed = time.perf_counter() - t0
    assert r.status_code == 200, r.text
    return r.json(), elapsed


async def post_events(c: httpx.AsyncClient, user: str, items: list[str]) -> httpx.Response:
    return await c.post("/events", json={"events": [
        {"user_id": user, "item_id": i, "type": "view"} for i in items]})


async def raw_history(url: str, user: str) -> list[bytes]:
    raw = aioredis.Redis.from_url(url)
    try:
        keys = [k async for k in raw.scan_iter(match=f"*u:{user}:hist")]
        return await raw.lrange(keys[0], 0, -1) if keys else []
    finally:
        await raw.aclose()


async def recovered(c: httpx.AsyncClient) -> bool:
    body, _ = await recommend(c, new_user("probe"))
    return not body["degraded"]


async def test_dead_redis_degrades_rejects_writes_and_recovers(
    redis_process: RedisProcess, tiny_artifacts: Path
) -> None:
    async with running(fault_settings(redis_process.url, tiny_artifacts)) as c:
        user = new_user("dead")
        assert (await post_events(c, user, ["50", "181"])).status_code == 200
        body, _ = await recommend(c, user)
        assert not body["degraded"] and not body["cold_start"]
        assert not {"50", "181"} & {x["item_id"] for x in body["items"]}

        redis_process.kill()
        for _ in range(8):
            body, elapsed = await recommend(c, user)
            assert body["degraded"] and body["cold_start"] and len(body["items"]) == 5
            assert elapsed < DEGRADED_BOUND_S
            # The history is missing, not empty: such an answer is never kept for a repeat.
            assert not body["cached"]
            # The caller's own history needs no store: a full, personal answer.
            body, _ = await recommend(c, user, history=["1", "2", "3"])
            assert not body["cold_start"]
            assert not {"1", "2", "3"} & {x["item_id"] for x in body["items"]}
            r = await post_events(c, new_user("rejected"), ["7"])
            assert r.status_code == 503 and r.headers["retry-after"]
        for url, payload in (("/recall", {"user_id": user, "method": "popular", "k": 5}),
                             ("/rank", {"user_id": user, "item_ids": ["1", "2"]})):
            r = await c.post(url, json=payload)
            assert r.status_code == 200 and r.json()["degraded"], r.text
        health = await store_health(c._transport.app.state.genrec.store)  # type: ignore[attr-defined]
        assert health["ok"] is False and health["breaker"] in (OPEN, HALF_OPEN)
        assert health["last_error"]
        ready = await c.get("/readyz")  # still serving, and saying why answers degrade
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert ready.json()["store"]["ok"] is False
        text = (await c.get("/metrics")).text
        assert 'genrec_degraded_responses_total{reason="store"}' in text
        assert "genrec_exposures_dropped_total" in text
        assert 'kind="breaker_open"' in text

        redis_process.restart()  # from its AOF: the app is not restarted
        took = await wait_for(lambda: recovered(c), RECOVERY_BOUND_S)
        print(f"recovery after restart: {took:.3f}s")
        body, _ = await recommend(c, user)
        assert not {"50", "181"} & {x["item_id"] for x in body["items"]}  # nothing lost
        assert (await post_events(c, user, ["7"])).status_code == 200
        assert (await store_health(c._transport.app.state.genrec.store))["ok"]  # type: ignore[attr-defined]
        assert (await c.get("/readyz")).json()["status"] == "ready"


async def test_hung_redis_degrades_within_bound_and_never_applies_a_503(
    redis_process: RedisProcess, tiny_artifacts: Path
) -> None:
    async with running(fault_settings(redis_process.url, tiny_artifacts)) as c:
        await wait_for(lambda: recovered(c), RECOVERY_BOUND_S)
        assert (await post_events(c, new_user("warm"), ["1"])).status_code == 200
        timeouts_before = await timeouts(c)
        redis_process.stop()
        latencies, rejected = [], []
        for i in range(6):
            # Writes go out for real (the first while the circuit is closed, then as the
            # half-open trial) and sit unanswered in the stopped Redis's socket; reads that
            # are the trial wait the timeout, the others fail fast.
            if i % 2 == 0:
                user = new_user("hung-write")
                r = await post_events(c, user, ["11", "12"])
                assert r.status_code == 503 and r.headers["retry-after"]
                rejected.append(user)
            for _ in range(2):
                body, elapsed = await recommend(c, new_user("hung"))
                assert body["degraded"]
                latencies.append(elapsed)
            await asyncio.sleep(RESET_S + 0.05)
        print(f"degraded latency with Redis hung: max {max(latencies) * 1e3:.0f} ms, "
              f"median {sorted(latencies)[len(latencies) // 2] * 1e3:.0f} ms")
        assert max(latencies) < DEGRADED_BOUND_S
        # Some call really waited on the hung Redis (a request's, or a background poll's that
        # took the half-open trial first) and timed out.
        assert await timeouts(c) > timeouts_before
        redis_process.cont()
        await wait_for(lambda: recovered(c), RECOVERY_BOUND_S)
        await asyncio.sleep(0.3)  # whatever sat in Redis's socket buffers has run by now
        for user in rejected:
            assert await raw_history(redis_process.url, user) == []
            r = await c.get(f"/users/{user}/history")
            assert r.status_code == 200 and r.json()["items"] == []


async def timeouts(c: httpx.AsyncClient) -> float:
    """Redis calls that timed out so far, over every operation (from /metrics)."""
    lines = (await c.get("/metrics")).text.splitlines()
    return sum(float(x.rsplit(" ", 1)[1]) for x in lines
               if x.startswith("genrec_redis_errors_total{") and 'kind="timeout"' in x)


async def _writer(c: httpx.AsyncClient, n: int, outcomes: dict[str, int]) -> None:
    for _ in range(n):
        user = new_user("stream")
        r = await post_events(c, user, ["21", "22", "23"])
        assert r.status_code in (200, 503), r.text
        outcomes[user] = r.status_code
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("fault", ["kill", "hang"])
async def test_every_2xx_survives_and_no_503_appears(
    redis_process: RedisProcess, tiny_artifacts: Path, fault: str
) -> None:
    outcomes: dict[str, int] = {}
    async with running(fault_settings(redis_process.url, tiny_artifacts)) as c:
        writers = [asyncio.create_task(_writer(c, 60, outcomes)) for _ in range(4)]
        await asyncio.sleep(0.15)
        if fault == "kill":
            redis_process.kill()
            await asyncio.sleep(0.3)
            redis_process.restart()  # from the AOF
        else:
            redis_process.stop()
            await asyncio.sleep(0.3)
            redis_process.cont()
        await asyncio.gather(*writers)
        await wait_for(lambda: recovered(c), RECOVERY_BOUND_S)
        await asyncio.sleep(0.3)
    codes = list(outcomes.values())
    assert codes.count(200) and codes.count(503), codes  # the fault hit the stream
    for user, code in outcomes.items():
        stored = await raw_history(redis_process.url, user)
        assert len(stored) == (3 if code == 200 else 0), (user, code)


async def test_reset_is_detected_and_reseeded(
    redis_process: RedisProcess, tiny_artifacts: Path
) -> None:
    settings = fault_settings(redis_process.url, tiny_artifacts, seed_store=True)
    async with running(settings) as c:
        state = c._transport.app.state.genrec  # type: ignore[attr-defined]
        assert state.ready
        resets_before = REGISTRY.get_sample_value("genrec_store_resets_total") or 0.0
        assert len((await c.get("/users/5/history")).json()["items"]) > 0
        redis_process.restart(empty=True)

        async def reseeded() -> bool:  # the counter moves once the whole seed is in
            return REGISTRY.get_sample_value("genrec_store_resets_total") == resets_before + 1

        took = await wait_for(reseeded, 30.0)
        print(f"reset detected and re-seeded in {took:.2f}s")
        assert len((await c.get("/users/5/history")).json()["items"]) > 0
        health = await store_health(state.store)
        assert health["resets"] == 1 and health["ok"] and health["breaker"] == CLOSED


@pytest.mark.parametrize("fault", ["kill", "hang"])
async def test_start_without_redis_serves_then_seeds_once_it_answers(
    redis_process: RedisProcess, tiny_artifacts: Path, fault: str
) -> None:
    settings = fault_settings(redis_process.url, tiny_artifacts, seed_store=True)
    if fault == "kill":
        redis_process.kill()
    else:
        redis_process.stop()
    async with running(settings) as c:
        state = c._transport.app.state.genrec  # type: ignore[attr-defined]
        assert state.ready  # the version loaded although seeding could not run
        ready = await c.get("/readyz")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "degraded" and body["store"]["ok"] is False
        assert body["store"]["seeding"] == "pending"
        known, _ = await recommend(c, "5")
        assert known["degraded"] and known["cold_start"]

        if fault == "kill":
            redis_process.restart()
        else:
            redis_process.cont()

        async def seeded() -> bool:  # reported once every user is in
            if (await c.get("/readyz")).json()["store"]["seeding"] != "seeded":
                return False
            body, _ = await recommend(c, "5")
            return not body["degraded"] and not body["cold_start"]

        took = await wait_for(seeded, 30.0)
        print(f"Redis back: seeded, known user served from the store after {took:.2f}s")
        marker = state.runtime.manifest["dataset"]["fingerprint"]
        raw = aioredis.Redis.from_url(redis_process.url)
        try:
            assert await raw.exists(f"{settings.redis_prefix}seeded:{marker}") == 1
        finally:
            await raw.aclose()
        assert len((await c.get("/users/5/history")).json()["items"]) > 0
        body = (await c.get("/readyz")).json()
        assert body["status"] == "ready" and body["store"]["seeding"] == "seeded"


async def test_retry_after_is_the_breakers_remaining_open_time(
    redis_process: RedisProcess, tiny_artifacts: Path
) -> None:
    reset_s = 6.0  # long enough that the rounded remaining time is well above 1
    settings = fault_settings(redis_process.url, tiny_artifacts, breaker_reset_s=reset_s)
    async with running(settings) as c:
        breaker = c._transport.app.state.genrec.store.link.breaker  # type: ignore[attr-defined]
        redis_process.kill()
        for _ in range(10):  # failures until the circuit opens
            if breaker.state == OPEN:
                break
            assert (await post_events(c, new_user("opening"), ["1"])).status_code == 503
        assert breaker.state == OPEN
        for send in (lambda: post_events(c, new_user("open"), ["1"]),
                     lambda: c.get("/users/5/history")):
            before = breaker.retry_after_s()
            r = await send()
            after = breaker.retry_after_s()
            assert r.status_code == 503, r.text
            # The breaker's own figure, rounded up to whole seconds, when the answer was made.
            assert math.ceil(after) <= int(r.headers["retry-after"]) <= math.ceil(before)
            assert int(r.headers["retry-after"]) > 1


@pytest.mark.parametrize("fault,after", [("flush", 1), ("restart", 3)],
                         ids=["flushed-between-batches", "restarted-empty-before-the-marker"])
async def test_seed_whose_batches_were_lost_is_never_marked(
    redis_process: RedisProcess, monkeypatch: pytest.MonkeyPatch, fault: str, after: int
) -> None:
    # Redis loses the seed's data after one of its 3 batches (one user each): flushed (the
    # seed's connection survives) or restarted empty. The marker must not be set; the next
    # run seeds everything.
    monkeypatch.setattr("service.stores.redis.SEED_BATCH_USERS", 1)
    store = RedisStore.from_url(redis_process.url, prefix="seed:", timeout_s=1.0)
    histories = {u: [Interaction(f"{u}-{n}", ts=n) for n in range(3)] for u in "abc"}
    real, batches = store._seed_batch, 0

    async def batch_then_lose_data(*args: Any) -> int:
        nonlocal batches
        out = await real(*args)
        batches += 1
        if batches == after and fault == "restart":
            redis_process.restart(empty=True)
        elif batches == after:
            raw = aioredis.Redis.from_url(redis_process.url)
            await raw.flushdb()
            await raw.aclose()
        return out

    store._seed_batch = batch_then_lose_data  # type: ignore[method-assign]
    try:
        with pytest.raises(StoreUnavailable):
            await store.seed(histories, "m")
        assert await store.is_seeded("m") is False
        store._seed_batch = real  # type: ignore[method-assign]
        await store.seed(histories, "m")
        assert await store.is_seeded("m") is True
        for u, history in histories.items():
            assert await store.get_history(u, 10) == history
    finally:
        await store.close()


# ---- the pieces ----------------------------------------------------------------------------


async def test_a_cancelled_call_is_cancelled_even_if_the_client_swallows_it() -> None:
    # What Python 3.11's asyncio.wait_for (inside redis-py's send) does when the send finishes
    # as the cancellation arrives: it returns normally. The link must still end the task, or a
    # background loop outlives the app's shutdown.
    link = RedisLink(aioredis.Redis(), timeout_s=5.0)
    started = asyncio.Event()

    async def swallowing() -> str:
        started.set()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return "sent"
        return "never"

    task = asyncio.create_task(link.call("op", swallowing))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await link.close()


def test_retry_after_header_rounds_the_breakers_time_up() -> None:
    now = [0.0]
    b = CircuitBreaker(failures=1, reset_s=3.0, clock=lambda: now[0])

    def header() -> str:
        headers = StoreUnavailableError.of(StoreUnavailable("op", "x", breaker=b)).headers
        return (headers or {})["Retry-After"]

    assert header() == "1"  # closed: retry now, and HTTP's smallest wait is 1 s
    b.failure()
    assert header() == "3"
    now[0] = 0.8  # 2.2 s left
    assert header() == "3"
    now[0] = 2.9  # 0.1 s left
    assert header() == "1"
    no_breaker = StoreUnavailableError.of(StoreUnavailable("op", "x")).headers
    assert (no_breaker or {})["Retry-After"] == "1"



def test_breaker_opens_fails_fast_and_lets_one_trial_through() -> None:
    now = [0.0]
    states: list[str] = []
    b = CircuitBreaker(failures=2, reset_s=1.0, on_change=states.append, clock=lambda: now[0])
    assert b.allow()
    b.failure()
    assert b.state == CLOSED and b.allow()
    b.success()  # consecutive failures only
    b.failure()
    b.failure()
    assert b.state == OPEN and not b.allow() and b.retry_after_s() == 1.0
    now[0] = 1.0
    assert b.allow() and b.state == HALF_OPEN
    assert not b.allow()  # one trial at a time
    b.failure()
    assert b.state == OPEN and not b.allow()
    now[0] = 2.5
    assert b.allow()
    b.release()  # a cancelled trial frees its slot
    assert b.allow()
    b.success()
    assert b.state == CLOSED and b.allow()
    assert states == [OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]


async def test_store_fails_fast_when_nothing_listens() -> None:
    store = RedisStore.from_url("redis://127.0.0.1:1/0", timeout_s=0.1, breaker_failures=1)
    try:
        with pytest.raises(StoreUnavailable) as err:
            await store.get_history("u", 5)
        assert err.value.kind == "connection"
        t0 = time.perf_counter()
        with pytest.raises(StoreUnavailable) as err:
            await store.append_events([])  # nothing to write: no call at all
            await store.history_version("u")
        assert err.value.kind == "breaker_open" and time.perf_counter() - t0 < 0.05
        assert (await store.health())["breaker"] == OPEN
    finally:
        await store.close()


async def test_batch_sent_to_a_hung_redis_is_never_applied(redis_process: RedisProcess) -> None:
    # The store alone: the batch really goes out (circuit closed), Redis holds it unanswered,
    # and runs it once resumed: past its deadline, so it writes nothing.
    store = RedisStore.from_url(redis_process.url, prefix="hung:", timeout_s=0.1,
                                breaker_failures=5, breaker_reset_s=0.1)
    try:
        assert await store.append_events([Event("before", "1")]) == 1
        redis_process.stop()
        t0 = time.perf_counter()
        with pytest.raises(StoreUnavailable) as err:
            await store.append_events([Event("during", "2"), Event("during", "3")])
        print(f"/events-like write to a hung Redis answered in {time.perf_counter() - t0:.3f}s")
        assert err.value.kind == "timeout"
        await asyncio.sleep(0.3)
        redis_process.cont()
        await asyncio.sleep(0.2)
        assert await store.get_history("during", 10) == []
        assert [x.item_id for x in await store.get_history("before", 10)] == ["1"]
        assert await store.append_events([Event("after", "4")]) == 1
    finally:
        await store.close()
