"""Input and memory limits: the embedded store's user cap (LRU), and the request-body limit.

The store tests use ``InMemoryStore`` only: the cap is the embedded store's own (Redis has its
own ``maxmemory`` policies), so nothing here is part of the shared store contract."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from service import metrics
from service.config import Settings
from service.middleware import BodyLimitMiddleware
from service.stores import Event, InMemoryStore, Interaction
from tests.helpers import running

pytestmark = pytest.mark.asyncio(loop_scope="session")


def ev(user: str, item: str, ts: float = 0.0) -> Event:
    return Event(user_id=user, item_id=item, ts=ts)


def gauge(g: object) -> float:
    return g._value.get()  # type: ignore[attr-defined]


async def users_present(s: InMemoryStore, users: list[str]) -> list[str]:
    # history_version counts as a use, so this probe would reorder the LRU: only call it when
    # the test is done with ordering.
    return [u for u in users if await s.history_version(u) > 0]


# --- Embedded store: the user cap ----------------------------------------------------------


async def test_max_users_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_users"):
        InMemoryStore(max_users=0)
    assert InMemoryStore().max_users == 200_000


async def test_cap_evicts_least_recently_written() -> None:
    s = InMemoryStore(max_users=3)
    evictions = gauge(metrics.STORE_EVICTIONS)
    for n in range(5):
        await s.append_events([ev(f"u{n}", "i")])
    assert len(s) == 3
    assert gauge(metrics.STORE_USERS) == 3
    assert gauge(metrics.STORE_EVICTIONS) - evictions == 2
    assert await users_present(s, ["u0", "u1", "u2", "u3", "u4"]) == ["u2", "u3", "u4"]
    # An evicted user reads as unknown, like one never seen.
    assert await s.get_history("u0", 10) == [] and await s.get_consumed("u0") == set()


@pytest.mark.parametrize("read", ["get_history", "get_consumed", "history_version"])
async def test_a_read_counts_as_use(read: str) -> None:
    s = InMemoryStore(max_users=2)
    await s.append_events([ev("old", "i"), ev("new", "i")])
    # Reading "old" makes "new" the least recently used, so the next user evicts "new".
    if read == "get_history":
        await s.get_history("old", 5)
    elif read == "get_consumed":
        await s.get_consumed("old")
    else:
        await s.history_version("old")
    await s.append_events([ev("third", "i")])
    assert await users_present(s, ["old", "new", "third"]) == ["old", "third"]


async def test_unknown_reads_create_nothing() -> None:
    s = InMemoryStore(max_users=2)
    await s.append_events([ev("a", "i"), ev("b", "i")])
    for n in range(10):
        assert await s.get_history(f"ghost{n}", 5) == []
        assert await s.history_version(f"ghost{n}") == 0
    assert len(s) == 2 and await users_present(s, ["a", "b"]) == ["a", "b"]


async def test_write_to_an_existing_user_evicts_nobody() -> None:
    s = InMemoryStore(max_users=2)
    evictions = gauge(metrics.STORE_EVICTIONS)
    await s.append_events([ev("a", "1"), ev("b", "1")])
    for n in range(20):
        await s.append_events([ev("a", str(n)), ev("b", str(n))])
    assert gauge(metrics.STORE_EVICTIONS) == evictions
    assert len(await s.get_history("a", 100)) == 21


async def test_seed_counts_toward_the_cap() -> None:
    s = InMemoryStore(max_users=3)
    await s.append_events([ev("live", "x")])
    await s.seed({f"s{n}": [Interaction("i", ts=n)] for n in range(4)}, marker="m")
    assert len(s) == 3 and gauge(metrics.STORE_USERS) == 3
    assert await users_present(s, ["live", "s0", "s1", "s2", "s3"]) == ["s1", "s2", "s3"]
    assert await s.is_seeded("m")


async def test_evicted_user_never_reuses_a_version() -> None:
    # (user, version) keys caches (the HSTU K/V cache): a user evicted and written again must
    # not come back with a version an old cache entry was computed for.
    s = InMemoryStore(max_users=1)
    await s.append_events([ev("a", "1")])
    first = await s.history_version("a")
    await s.append_events([ev("b", "1")])  # evicts a
    assert await s.history_version("a") == 0
    await s.append_events([ev("a", "2")])
    assert await s.history_version("a") > first
    assert await s.get_history("a", 10) == [Interaction("2")]


async def test_batch_with_more_users_than_the_cap() -> None:
    # Accepted whole (the cap is a memory bound, not a validation rule); the last users stay.
    s = InMemoryStore(max_users=2)
    batch = [ev(f"u{n}", "i", ts=n) for n in range(5)] + [ev("u0", "j")]
    assert await s.append_events(batch) == 6
    assert len(s) == 2
    assert await s.get_history("u0", 10) == [Interaction("j")]  # evicted, then written afresh
    assert await users_present(s, ["u0", "u4"]) == ["u0", "u4"]


async def test_consumed_keeps_items_beyond_the_history_cap() -> None:
    s = InMemoryStore(max_history=3, max_users=10)
    await s.append_events([ev("u", f"i{n}", ts=n) for n in range(6)])
    await s.append_events([ev("u", "i0", ts=9)])  # re-consumed after it left the history
    assert [x.item_id for x in await s.get_history("u", 10)] == ["i4", "i5", "i0"]
    assert await s.get_consumed("u") == {f"i{n}" for n in range(6)}
    consumed = await s.get_consumed("u")
    consumed.add("mutated")  # a copy: the store is unaffected
    assert "mutated" not in await s.get_consumed("u")


# --- The body limit, unit level: BodyLimitMiddleware on a stub app ------------------------


class Stub:
    """An ASGI app that records the body it read."""

    def __init__(self) -> None:
        self.body: bytes | None = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        self.body = b""
        while True:
            message = await receive()
            self.body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def call(chunks: list[bytes], headers: list[tuple[bytes, bytes]] = (),
               max_bytes: int = 1_000, **kw: Any) -> tuple[int, bytes, Stub, int]:
    """Run the middleware on one request streamed as ``chunks``; (status, body, app, how
    many chunks the middleware read)."""
    app, sent, read = Stub(), [], 0
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks)]

    async def receive() -> dict:
        nonlocal read
        read += 1
        return messages[read - 1] if read <= len(messages) else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": list(headers)}
    await BodyLimitMiddleware(app, max_bytes=max_bytes, **kw)(scope, receive, send)
    status = sent[0]["status"] if sent else 0
    return status, b"".join(m.get("body", b"") for m in sent[1:]), app, read


async def test_declared_length_over_the_limit_is_refused_unread() -> None:
    status, body, app, read = await call([b"x" * 2_000], [(b"content-length", b"2000")])
    assert (status, read, app.body) == (413, 0, None)
    assert orjson.loads(body)["detail"][0]["type"] == "body_too_large"
    # Any one of repeated headers counts, and an absurdly long number is too large.
    for headers in ([(b"content-length", b"10"), (b"content-length", b"5000")],
                    [(b"content-length", b"9" * 40)]):
        assert (await call([b"{}"], headers))[0] == 413


async def test_streamed_bytes_are_counted_not_the_header() -> None:
    # Chunked (no length) and a Content-Length that lies: both stop at the limit.
    for headers in ([], [(b"content-length", b"10")]):
        status, _, app, read = await call([b"x" * 400] * 50, headers)
        assert status == 413 and app.body is None
        assert read == 3  # stopped reading once past 1,000 bytes, not after all 50 chunks


async def test_body_under_the_limit_is_replayed_whole() -> None:
    chunks = [b'{"a": ', b"[1, 2", b"]}"]
    status, body, app, _ = await call(chunks, [(b"content-type", b"application/json")])
    assert (status, body, app.body) == (200, b"ok", b"".join(chunks))


async def test_too_many_json_containers_is_400_before_parsing() -> None:
    hostile = b"[" + b",".join([b"[]"] * 40) + b"]"
    status, body, app, _ = await call([hostile], max_containers=30)
    assert status == 400 and app.body is None
    assert orjson.loads(body)["detail"][0]["type"] == "json_too_complex"
    # The same bytes under another content type are not JSON to the app: left alone.
    status, *_ = await call([hostile], [(b"content-type", b"text/plain")], max_containers=30)
    assert status == 200
    assert (await call([b"[" + b",".join([b"[]"] * 29) + b"]"], max_containers=30))[0] == 200


async def test_client_gone_mid_body_sends_nothing() -> None:
    app, sent = Stub(), []
    messages = iter([{"type": "http.request", "body": b"{", "more_body": True},
                     {"type": "http.disconnect"}])

    async def receive() -> dict:
        return next(messages)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": []}
    await BodyLimitMiddleware(app, max_bytes=100)(scope, receive, send)
    assert sent == [] and app.body is None


# --- Error replies through the app: one shape, echoes clipped -------------------------------


@pytest.fixture(scope="module")
async def app_client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    # No artifacts: the admin and history routes need none, and nothing loads in the way.
    missing = tmp_path_factory.mktemp("none") / "missing"
    async with running(Settings(artifacts_dir=missing, admin_token="tok")) as c:
        yield c


ADMIN = {"authorization": "Bearer tok", "content-type": "application/json"}


def one_shape(r: Any) -> list[dict[str, Any]]:
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail
    for err in detail:
        assert isinstance(err["loc"], list) and isinstance(err["msg"], str) and err["type"]
    return detail


async def test_422_echo_is_clipped(app_client: Any) -> None:
    huge = {"shares": {"control": "x" * 500_000}}
    r = await app_client.put("/admin/experiment/shares", json=huge, headers=ADMIN)
    assert r.status_code == 422 and len(r.content) < 2_000
    assert one_shape(r)[0]["input"].startswith("xxx")
    many = {"shares": [[n] for n in range(10_000)]}
    r = await app_client.put("/admin/experiment/shares", json=many, headers=ADMIN)
    assert r.status_code == 422 and len(r.content) < 2_000
    assert one_shape(r)[0]["input"][-1] == "... (9995 more)"


@pytest.mark.parametrize(("raw", "kind"), [
    (b'{"shares": {"a": "\\xff\\xfe"}}'.replace(b"\\xff\\xfe", b"\xff\xfe"), "json_invalid"),
    (b"[" * 5_000 + b"]" * 5_000, "json_too_deep"),
    (b'{"shares": ' + b"9" * 5_000 + b"}", "json_invalid"),
    (b"[" + b",".join([b"[]"] * 30_000) + b"]", "json_too_complex"),
])
async def test_undecodable_body_is_400_in_the_list_shape(app_client: Any, raw: bytes,
                                                         kind: str) -> None:
    r = await app_client.put("/admin/experiment/shares", content=raw, headers=ADMIN)
    assert r.status_code == 400 and len(r.content) < 1_000
    assert one_shape(r)[0]["type"] == kind and one_shape(r)[0]["loc"] == ["body"]


async def test_framework_errors_use_the_list_shape(app_client: Any) -> None:
    r = await app_client.get("/nope")
    assert r.status_code == 404 and one_shape(r)[0]["type"] == "not_found"
    r = await app_client.delete("/healthz")
    assert r.status_code == 405 and one_shape(r)[0]["type"] == "method_not_allowed"
    assert r.headers["allow"] == "GET"


async def test_openapi_declares_the_error_responses(app_client: Any) -> None:
    spec = (await app_client.get("/openapi.json")).json()
    paths = spec["paths"]
    assert set(paths["/events"]["post"]["responses"]) == {"200", "400", "413", "422", "503"}
    assert set(paths["/admin/experiment"]["get"]["responses"]) >= {"401", "403", "503"}
    assert set(paths["/users/{user_id}/history"]["get"]["responses"]) >= {"404", "422", "503"}
    assert set(paths["/healthz"]["get"]["responses"]) == {"200"}
    assert list(paths["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    err = paths["/recommend"]["post"]["responses"]["413"]["content"]["application/json"]
    assert err["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert "ErrorItem" in spec["components"]["schemas"]
