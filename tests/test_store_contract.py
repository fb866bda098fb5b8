"""One behavioural contract for every ``UserStore`` backend: each test runs against the
in-memory store and a real Redis, so the two can't drift apart."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
import redis.asyncio as aioredis

from service.stores import (
    EVENT_TYPES,
    Event,
    InMemoryStore,
    Interaction,
    RedisStore,
    UserStore,
    create_store,
)
from tests.helpers import delete_keys

MakeStore = Callable[..., UserStore]
CONTRACT_TIMEOUT_MS = 5_000.0


@pytest.fixture(params=["memory", "redis"])
async def make_store(request: pytest.FixtureRequest, key_prefix: str) -> AsyncIterator[MakeStore]:
    """Builds stores of the parametrized backend (so tests can pick ``max_history``) and
    closes them; on Redis it also deletes the test's keys, for runs on a shared server."""
    created: list[UserStore] = []
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None

    def build(max_history: int = 200) -> UserStore:
        # A generous time bound: these tests check the contract, not latency, on a busy box.
        s = create_store(redis_url, prefix=key_prefix, max_history=max_history,
                         timeout_ms=CONTRACT_TIMEOUT_MS)
        assert isinstance(s, RedisStore if redis_url else InMemoryStore)
        created.append(s)
        return s

    yield build
    for s in created:
        await s.close()
    if redis_url:
        await delete_keys(redis_url, key_prefix)


@pytest.fixture
def store(make_store: MakeStore) -> UserStore:
    return make_store()


def ev(user: str, item: str, ts: float = 0.0, type_: str = "view") -> Event:
    return Event(user_id=user, item_id=item, type=type_, ts=ts)


async def snapshot(s: UserStore, user: str) -> tuple[list[Interaction], set[str], int]:
    return (
        await s.get_history(user, 10_000),
        await s.get_consumed(user),
        await s.history_version(user),
    )


async def test_unknown_user_is_empty(store: UserStore) -> None:
    assert await store.get_history("nobody", 10) == []
    assert await store.get_consumed("nobody") == set()
    assert await store.history_version("nobody") == 0
    assert await store.is_seeded("never") is False
    assert await store.ping() is True


async def test_append_then_get_returns_arrival_order(store: UserStore) -> None:
    events = [ev("u1", f"i{n}", ts=100 + n, type_=EVENT_TYPES[n % 4]) for n in range(6)]
    assert await store.append_events(events[:2]) == 2
    assert await store.append_events(events[2:]) == 4
    want = [Interaction(e.item_id, e.type, float(e.ts)) for e in events]
    assert await store.get_history("u1", 100) == want
    assert await store.get_consumed("u1") == {f"i{n}" for n in range(6)}
    assert await store.append_events([]) == 0


async def test_limit_returns_most_recent(store: UserStore) -> None:
    await store.append_events([ev("u1", f"i{n}", ts=n) for n in range(10)])
    assert [i.item_id for i in await store.get_history("u1", 3)] == ["i7", "i8", "i9"]
    assert len(await store.get_history("u1", 10)) == 10
    assert len(await store.get_history("u1", 50)) == 10
    assert await store.get_history("u1", 0) == []


async def test_cap_drops_oldest_but_consumed_keeps_all(make_store: MakeStore) -> None:
    s = make_store(max_history=5)
    await s.append_events([ev("u1", f"i{n}", ts=n) for n in range(4)])
    await s.append_events([ev("u1", f"i{n}", ts=n) for n in range(4, 12)])
    assert [i.item_id for i in await s.get_history("u1", 100)] == [f"i{n}" for n in range(7, 12)]
    assert await s.get_consumed("u1") == {f"i{n}" for n in range(12)}


async def test_version_changes_on_every_write(store: UserStore) -> None:
    seen = [await store.history_version("u1")]
    for n in range(3):
        await store.append_events([ev("u1", f"i{n}")])
        seen.append(await store.history_version("u1"))
    await store.seed({"u1": [Interaction("s")]}, marker="m")
    seen.append(await store.history_version("u1"))
    assert len(set(seen)) == len(seen), seen  # every write produced a new version
    # Reads and writes to other users leave it alone.
    await store.get_history("u1", 5)
    await store.append_events([ev("u2", "x")])
    assert await store.history_version("u1") == seen[-1]


BAD_EVENTS = {
    "unknown type": ev("b", "bad", type_="hover"),
    "empty item": ev("b", ""),
    "empty user": ev("", "x"),
    "non-str item": Event(user_id="b", item_id=42, type="view"),  # type: ignore[arg-type]
    "nan ts": ev("b", "x", ts=math.nan),
    "not an Event": ("b", "x"),
}


@pytest.mark.parametrize("bad", BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
async def test_failed_batch_writes_nothing(store: UserStore, bad: Event) -> None:
    await store.append_events([ev("a", "a0"), ev("b", "b0")])
    before = {u: await snapshot(store, u) for u in ("a", "b", "c")}
    # Valid events for existing and new users on both sides of the bad one.
    batch = [ev("a", "a1"), ev("c", "c1"), bad, ev("b", "b1"), ev("a", "a2")]
    with pytest.raises(ValueError, match="event #2"):
        await store.append_events(batch)
    assert {u: await snapshot(store, u) for u in ("a", "b", "c")} == before
    assert await store.history_version("c") == 0


async def test_seed_replaces_histories_and_sets_marker(store: UserStore) -> None:
    await store.append_events([ev("a", "old1"), ev("a", "old2"), ev("c", "keep")])
    ver_a, c_before = await store.history_version("a"), await snapshot(store, "c")
    seeded = {
        "a": [Interaction("s1", "click", 1.0), Interaction("s2", "like", 2.0)],
        "b": [Interaction("t1", "purchase", 3.0)],
        "e": [],
    }
    await store.seed(seeded, marker="ml-100k:v1")
    assert await store.get_history("a", 10) == seeded["a"]
    assert await store.get_consumed("a") == {"s1", "s2"}  # old items are gone too
    assert await store.get_history("b", 10) == seeded["b"]
    assert await store.get_history("e", 10) == []
    assert await store.history_version("a") != ver_a
    assert await snapshot(store, "c") == c_before  # users not in the seed are untouched
    assert await store.is_seeded("ml-100k:v1") is True
    assert await store.is_seeded("ml-100k:v2") is False


async def test_seed_caps_history_but_not_consumed(make_store: MakeStore) -> None:
    s = make_store(max_history=3)
    await s.seed({"u": [Interaction(f"i{n}", ts=n) for n in range(5)]}, marker="m")
    assert [i.item_id for i in await s.get_history("u", 10)] == ["i2", "i3", "i4"]
    assert await s.get_consumed("u") == {f"i{n}" for n in range(5)}


async def test_seed_with_bad_input_writes_nothing(store: UserStore) -> None:
    await store.append_events([ev("a", "a0")])
    before = await snapshot(store, "a")
    with pytest.raises(ValueError):
        await store.seed({"a": [Interaction("x")], "b": [Interaction("y", "hover")]}, "m")
    assert await snapshot(store, "a") == before
    assert await store.get_history("b", 10) == []
    assert await store.is_seeded("m") is False


async def test_large_seed(store: UserStore) -> None:
    histories = {f"u{u}": [Interaction(f"i{u}-{n}", ts=n) for n in range(200)] for u in range(1000)}
    await store.seed(histories, marker="big")
    assert await store.is_seeded("big")
    for u in (0, 499, 999):
        assert await store.get_history(f"u{u}", 200) == histories[f"u{u}"]
        assert len(await store.get_consumed(f"u{u}")) == 200


async def test_user_ids_with_separators_and_unicode(store: UserStore) -> None:
    # 'a:seen' and 'a:hist' would collide with user 'a' without the fixed key suffix.
    users = ["a", "a:b", "a:seen", "a:hist", "a:b:ver", "ü ser 🚀", "*?[glob]", "seeded:x"]
    await store.append_events([ev(u, f"item of {u} ✓") for u in users])
    for u in users:
        assert await store.get_history(u, 10) == [Interaction(f"item of {u} ✓")]
        assert await store.get_consumed(u) == {f"item of {u} ✓"}
        assert await store.history_version(u) > 0
    assert await store.is_seeded("x") is False


async def test_concurrent_appends_lose_nothing(store: UserStore) -> None:
    users = ["u0", "u1", "u2"]
    events = [ev(users[n % 3], f"i{n}", ts=n) for n in range(150)]
    counts = await asyncio.gather(*(store.append_events([e]) for e in events))
    assert sum(counts) == 150
    for u in users:
        mine = {e.item_id for e in events if e.user_id == u}
        assert {i.item_id for i in await store.get_history(u, 200)} == mine
        assert len(await store.get_history(u, 200)) == 50
        assert await store.get_consumed(u) == mine


async def test_redis_store_really_writes_redis(redis_url: str, key_prefix: str) -> None:
    store = create_store(redis_url, prefix=key_prefix, max_history=2)
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert isinstance(store, RedisStore)
        await store.append_events([ev("u:1", "x", 1.5, "click"), ev("u:1", "y"), ev("u:1", "z")])
        await store.seed({"v": [Interaction("w")]}, marker="m1")
        p = key_prefix
        # One short-lived marker per append batch (it settles a timed-out batch's fate).
        batches = set(await raw.keys(f"{p}batch:*"))
        assert len(batches) == 1
        (batch,) = batches
        assert await raw.get(batch) == "applied" and 0 < await raw.pttl(batch) <= 10_000
        assert set(await raw.keys(f"{p}*")) - batches == {
            f"{p}u:u:1:hist",
            f"{p}u:u:1:seen",
            f"{p}u:u:1:ver",
            f"{p}u:v:hist",
            f"{p}u:v:seen",
            f"{p}u:v:ver",
            f"{p}seeded:m1",
        }
        assert await raw.type(f"{p}u:u:1:hist") == "list"
        assert await raw.type(f"{p}u:u:1:seen") == "set"
        stored = [orjson.loads(r) for r in await raw.lrange(f"{p}u:u:1:hist", 0, -1)]
        assert [d["i"] for d in stored] == ["y", "z"]  # LTRIM kept the 2 most recent
        assert await raw.smembers(f"{p}u:u:1:seen") == {"x", "y", "z"}
        assert await raw.get(f"{p}u:u:1:ver") == "1"  # one batch = one INCR
    finally:
        keys = await raw.keys(f"{key_prefix}*")
        if keys:
            await raw.delete(*keys)
        await raw.aclose()
        await store.close()


async def test_redis_ping_false_when_unreachable() -> None:
    store = RedisStore.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    assert await store.ping() is False
    await store.close()


@pytest.mark.parametrize("url", [None, "", "memory://"])
async def test_factory_memory(url: str | None) -> None:
    s = create_store(url, max_history=7)
    assert isinstance(s, InMemoryStore) and s.max_history == 7


@pytest.mark.parametrize("url", ["redis://h:6379/0", "rediss://h/1", "unix:///tmp/r.sock"])
async def test_factory_redis(url: str) -> None:
    s = create_store(url, prefix="p:", max_history=9)  # lazy: no connection is attempted
    assert isinstance(s, RedisStore) and (s.prefix, s.max_history) == ("p:", 9)
    await s.close()


@pytest.mark.parametrize("url", ["http://u:secret@h/", "postgres://h/db", "localhost:6379"])
def test_factory_rejects_unknown_scheme(url: str) -> None:
    scheme = url.split(":", 1)[0]
    with pytest.raises(ValueError, match=scheme) as err:
        create_store(url)
    assert "secret" not in str(err.value)
