"""One contract for every ``ExposureLog`` backend: each test runs against the in-memory log and
``RedisExposureLog`` on a real Redis, so click attribution can't drift between them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
import redis.asyncio as aioredis

from service.exposures import (
    ExposureLog,
    InMemoryExposureLog,
    RedisExposureLog,
    close_exposure_log,
    create_exposure_log,
)
from tests.helpers import delete_keys

MakeLog = Callable[..., ExposureLog]


@pytest.fixture(params=["memory", "redis"])
async def make_log(request: pytest.FixtureRequest, key_prefix: str) -> AsyncIterator[MakeLog]:
    created: list[ExposureLog] = []
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None

    def build(arms: tuple[str, ...] = ("control", "treatment"), experiment: str = "exp",
              ttl_s: float = 60.0) -> ExposureLog:
        log = create_exposure_log(url, key_prefix, experiment=experiment, arms=arms,
                                  stream_maxlen=1_000, ttl_s=ttl_s, timeout_ms=5_000.0)
        assert isinstance(log, RedisExposureLog if url else InMemoryExposureLog)
        created.append(log)
        return log

    yield build
    for log in created:
        await close_exposure_log(log)
    if url:
        await delete_keys(url, key_prefix)


@pytest.fixture
def log(make_log: MakeLog) -> ExposureLog:
    return make_log()


async def test_fresh_counters_list_configured_arms(log: ExposureLog) -> None:
    assert await log.counters() == {"control": {"exposures": 0, "clicks": 0},
                                    "treatment": {"exposures": 0, "clicks": 0}}


async def test_record_attribute_and_count(log: ExposureLog) -> None:
    assert await log.record_exposure("r1", "u1", "control", ["i1", "i2"], 1.0)
    assert await log.record_exposure("r2", "u2", "treatment", ["i1", "i3"], 2.0)
    assert await log.attribute_click("r1", "i1") == "control"
    assert await log.attribute_click("r1", "i1") is None  # second identical click
    assert await log.attribute_click("r1", "i3") is None  # not in that exposure
    assert await log.attribute_click("nope", "i1") is None  # unknown request
    assert await log.attribute_click("r2", "i1") == "treatment"  # same item, other request
    assert await log.attribute_click("r1", "i2") == "control"
    assert await log.counters() == {"control": {"exposures": 1, "clicks": 2},
                                    "treatment": {"exposures": 1, "clicks": 1}}


async def test_duplicate_request_id_records_nothing(log: ExposureLog) -> None:
    assert await log.record_exposure("r1", "u1", "control", ["i1"], 1.0)
    assert not await log.record_exposure("r1", "u9", "treatment", ["i9"], 2.0)
    assert await log.attribute_click("r1", "i9") is None  # the first exposure stands
    assert await log.attribute_click("r1", "i1") == "control"
    counts = await log.counters()
    assert counts["control"] == {"exposures": 1, "clicks": 1}
    assert counts["treatment"] == {"exposures": 0, "clicks": 0}


async def test_unconfigured_arm_and_odd_ids(make_log: MakeLog) -> None:
    log = make_log(arms=())
    odd = "a:b:exp \u00e9 \U0001f600"
    assert await log.record_exposure(odd, "u:1", "arm:x", [odd, "i"], 0.0)
    assert await log.attribute_click(odd, odd) == "arm:x"
    assert await log.counters() == {"arm:x": {"exposures": 1, "clicks": 1}}


async def test_empty_exposure(log: ExposureLog) -> None:
    assert await log.record_exposure("r", "u", "control", [], 0.0)
    assert await log.attribute_click("r", "i1") is None
    assert (await log.counters())["control"] == {"exposures": 1, "clicks": 0}


async def test_concurrent_identical_clicks_count_once(log: ExposureLog) -> None:
    assert await log.record_exposure("r", "u", "control", ["i1", "i2"], 0.0)
    got = await asyncio.gather(*(log.attribute_click("r", "i1") for _ in range(20)),
                               *(log.attribute_click("r", "i2") for _ in range(20)))
    assert sorted(a for a in got if a is not None) == ["control", "control"]
    assert (await log.counters())["control"]["clicks"] == 2


async def test_concurrent_duplicate_records_count_once(log: ExposureLog) -> None:
    got = await asyncio.gather(*(log.record_exposure("r", "u", "control", ["i"], 0.0)
                                 for _ in range(20)))
    assert sum(got) == 1
    assert (await log.counters())["control"]["exposures"] == 1


# ---- Redis only ------------------------------------------------------------------------------


async def test_redis_ttl_expiry_and_counters_survive(
    redis_url: str, key_prefix: str
) -> None:
    log = create_exposure_log(redis_url, key_prefix, experiment="exp", arms=("a",), ttl_s=0.2)
    try:
        assert await log.record_exposure("r1", "u", "a", ["i1", "i2"], 0.0)
        assert await log.attribute_click("r1", "i1") == "a"
        await asyncio.sleep(0.35)
        assert await log.attribute_click("r1", "i2") is None  # forgotten: nothing counted
        assert await log.counters() == {"a": {"exposures": 1, "clicks": 1}}
    finally:
        await close_exposure_log(log)
    # A new process (a restart, another replica) sees the same counters.
    again = create_exposure_log(redis_url, key_prefix, experiment="exp", arms=("a",))
    try:
        assert await again.counters() == {"a": {"exposures": 1, "clicks": 1}}
    finally:
        await close_exposure_log(again)


async def test_redis_stream_is_capped_and_complete(redis_url: str, key_prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    log = RedisExposureLog(client, key_prefix, experiment="exp", arms=("a",), stream_maxlen=10)
    try:
        for n in range(300):
            await log.record_exposure(f"r{n}", f"u{n}", "a", ["i1", "i2"], 5.0)
        # MAXLEN ~ trims whole macro nodes (100 entries by default), so "near" 10.
        assert await client.xlen(log.stream_key) <= 110
        _, fields = (await client.xrevrange(log.stream_key, count=1))[0]
        assert fields[b"request_id"] == b"r299" and fields[b"user_id"] == b"u299"
        assert fields[b"arm"] == b"a" and fields[b"experiment"] == b"exp"
        assert orjson.loads(fields[b"items"]) == ["i1", "i2"] and float(fields[b"ts"]) == 5.0
        ttl = await client.pttl(log.request_key("r0"))
        assert 0 < ttl <= 86_400_000
    finally:
        await log.close()


async def test_redis_other_experiment_is_not_credited(redis_url: str, key_prefix: str) -> None:
    old = create_exposure_log(redis_url, key_prefix, experiment="old", arms=("a",))
    new = create_exposure_log(redis_url, key_prefix, experiment="new", arms=("a",))
    try:
        assert await old.record_exposure("r", "u", "a", ["i"], 0.0)
        assert await new.attribute_click("r", "i") is None
        assert await new.counters() == {"a": {"exposures": 0, "clicks": 0}}
        assert await old.attribute_click("r", "i") == "a"
    finally:
        await close_exposure_log(old)
        await close_exposure_log(new)


def test_factory_rejects_unknown_scheme() -> None:
    with pytest.raises(ValueError, match="'mysql'"):
        create_exposure_log("mysql://u:secret@h/db")
    with pytest.raises(ValueError):
        RedisExposureLog(aioredis.Redis(), ttl_s=0)


# ---- the in-process twin's own surface (len, get_exposure, its size bound) ----------------


async def test_attribution_counts() -> None:
    log = InMemoryExposureLog(arms=["control", "gen"])
    assert await log.counters() == {
        "control": {"exposures": 0, "clicks": 0},
        "gen": {"exposures": 0, "clicks": 0},
    }
    assert await log.record_exposure("r1", "u1", "control", ["i1", "i2"], 1.0)
    assert await log.record_exposure("r2", "u2", "gen", ["i1", "i3"], 2.0)
    assert not await log.record_exposure("r1", "u1", "control", ["i9"], 3.0)  # duplicate id

    assert await log.attribute_click("r1", "i1") == "control"
    assert await log.attribute_click("r1", "i1") is None  # duplicate click
    assert await log.attribute_click("r1", "i3") is None  # not in that exposure
    assert await log.attribute_click("r404", "i1") is None  # unknown request
    assert await log.attribute_click("r2", "i1") == "gen"  # same item, other request
    assert await log.attribute_click("r1", "i2") == "control"

    assert await log.counters() == {
        "control": {"exposures": 1, "clicks": 2},
        "gen": {"exposures": 1, "clicks": 1},
    }
    exposure = await log.get_exposure("r1")
    assert exposure is not None and exposure.item_ids == ("i1", "i2") and exposure.ts == 1.0


async def test_eviction_is_bounded_and_oldest_first() -> None:
    log = InMemoryExposureLog(max_exposures=3)
    for i in range(5):
        await log.record_exposure(f"r{i}", "u", "a", ["x"], float(i))
    assert len(log) == 3
    assert await log.attribute_click("r0", "x") is None  # evicted
    assert await log.attribute_click("r1", "x") is None  # evicted
    assert await log.attribute_click("r2", "x") == "a"
    # Counters are cumulative: eviction does not take exposures back.
    assert await log.counters() == {"a": {"exposures": 5, "clicks": 1}}
    with pytest.raises(ValueError):
        InMemoryExposureLog(max_exposures=0)


async def test_counters_are_a_copy() -> None:
    log = InMemoryExposureLog()
    await log.record_exposure("r", "u", "a", ["x"], 0.0)
    snapshot = await log.counters()
    snapshot["a"]["exposures"] = 99
    assert (await log.counters())["a"]["exposures"] == 1
