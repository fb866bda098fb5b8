"""The embedded store's user cap: LRU eviction (reads and writes count as use), the
store metrics, versions never reused, the consumed set kept beyond the history cap. The cap
is the embedded store's own (Redis has its own ``maxmemory`` policies), so nothing here is
part of the shared store contract."""

from __future__ import annotations

import pytest

from service import metrics
from service.stores import Event, InMemoryStore, Interaction


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
