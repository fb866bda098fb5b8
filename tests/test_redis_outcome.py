"""A failed ``append_events`` answers exactly whether its batch was written, also when Redis ran
the batch and then froze before its reply went out: a TCP relay between the store and a real
redis-server holds either direction, as a stopped Redis's socket buffers do, and delivers what
it held on release."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
import redis.asyncio as aioredis

from service.stores import Event, RedisStore, StoreUnavailable
from service.stores.redis import RESOLVE_BOUND_S

TIMEOUT_S = 0.05


class Relay:
    """Loopback TCP relay to ``port``. ``up`` (client -> Redis) and ``down`` (Redis -> client)
    pass while set; a cleared one holds its bytes until set again. ``freeze_after_next()``:
    the next client chunk goes through, then both directions hold (Redis ran it and froze)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.up, self.down = asyncio.Event(), asyncio.Event()
        self.up.set()
        self.down.set()
        self._one_more = False
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    def freeze_after_next(self) -> None:
        self.down.clear()
        self._one_more = True

    def release(self) -> None:
        self.up.set()
        self.down.set()

    async def _serve(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        rr, rw = await asyncio.open_connection("127.0.0.1", self.target)
        pumps = [asyncio.create_task(self._pump(cr, rw, self.up, upward=True)),
                 asyncio.create_task(self._pump(rr, cw, self.down, upward=False))]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for w in (cw, rw):
            w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    gate: asyncio.Event, *, upward: bool) -> None:
        while data := await reader.read(65536):
            await gate.wait()
            if upward and self._one_more:
                self._one_more = False
                self.up.clear()  # this chunk still goes: Redis runs it, then freezes
            writer.write(data)
            await writer.drain()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1.0)


def _events(user: str) -> list[Event]:
    return [Event(user_id=user, item_id=str(i), type="view", ts=1.0 + i) for i in range(3)]


@pytest.fixture
async def relayed(redis_url: str, key_prefix: str):
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    relay = Relay(port)
    url = await relay.start()
    store = RedisStore.from_url(url, prefix=key_prefix, timeout_s=TIMEOUT_S)
    direct = aioredis.Redis.from_url(redis_url)
    assert await store.append_events(_events("warm")) == 3  # clock offset, script loaded
    try:
        yield relay, store, direct
    finally:
        relay.release()
        await store.close()
        await direct.aclose()
        await relay.close()


async def test_a_batch_run_just_before_a_freeze_is_reported_written(relayed) -> None:
    relay, store, direct = relayed
    relay.freeze_after_next()
    asyncio.get_running_loop().call_later(0.4, relay.release)  # a 0.4 s freeze
    t0 = time.perf_counter()
    assert await store.append_events(_events("ran")) == 3  # no StoreUnavailable: it was written
    assert 0.3 < time.perf_counter() - t0 < RESOLVE_BOUND_S + 0.5
    assert len(await direct.lrange(f"{store.prefix}u:ran:hist", 0, -1)) == 3


async def test_a_batch_held_before_redis_is_never_written_after_its_503(relayed) -> None:
    relay, store, direct = relayed
    relay.up.clear()  # nothing reaches Redis: the batch and the first checks wait in the relay
    asyncio.get_running_loop().call_later(0.4, relay.release)
    with pytest.raises(StoreUnavailable):
        await store.append_events(_events("held"))
    await asyncio.sleep(0.3)  # whatever the relay held has reached Redis by now
    assert await direct.lrange(f"{store.prefix}u:held:hist", 0, -1) == []


async def test_an_unanswered_check_gives_up_after_its_bound(relayed) -> None:
    relay, store, direct = relayed
    relay.up.clear()  # held for good: the outcome can't be learnt, and the deadline expires it
    t0 = time.perf_counter()
    with pytest.raises(StoreUnavailable):
        await store.append_events(_events("lost"))
    assert RESOLVE_BOUND_S - 0.1 < time.perf_counter() - t0 < RESOLVE_BOUND_S + 1.0
    relay.release()
    await asyncio.sleep(0.3)
    assert await direct.lrange(f"{store.prefix}u:lost:hist", 0, -1) == []
