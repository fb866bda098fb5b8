"""Redis-backed ``UserStore``, shared by all workers/replicas of the service.

Key layout (user ids may contain any character, ':' included: every key ends in a fixed
suffix, so ``u:a:seen``'s history is ``u:a:seen:hist`` and can't collide with user ``a``):

    {prefix}u:{user_id}:hist   list of compact JSON interactions, oldest first, capped
    {prefix}u:{user_id}:seen   set of every consumed item id (never capped)
    {prefix}u:{user_id}:ver    INCR counter, bumped on every write to the user
    {prefix}seeded:{marker}    set once a seed run with that marker has completed

Writes to several users go through one MULTI/EXEC, so this layout assumes a single Redis (or
a proxy that keeps a transaction on one node), not Redis Cluster.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from itertools import islice
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from service.stores.base import Event, Interaction
from service.stores.memory import validate_events, validate_histories

# Users per seed pipeline: large enough to amortise round trips, small enough that one
# pipeline's request/reply buffers stay a few MB with 200-item histories.
SEED_BATCH_USERS = 250
# Connections per store (per worker process) and how long a caller waits for one.
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_POOL_TIMEOUT_S = 5.0


def _encode(item_id: str, type_: str, ts: float) -> bytes:
    # Short field names keep 200-item lists small; orjson emits compact JSON.
    return orjson.dumps({"i": item_id, "t": type_, "ts": float(ts)})


def _decode(raw: bytes | str) -> Interaction:
    d = orjson.loads(raw)
    return Interaction(item_id=d["i"], type=d["t"], ts=float(d["ts"]))


def _text(value: bytes | str) -> str:
    # Works whether or not the client was built with decode_responses=True.
    return value.decode("utf-8") if isinstance(value, bytes) else value


class RedisStore:
    """``UserStore`` on Redis; see the module docstring for the key layout."""

    def __init__(
        self, client: aioredis.Redis, prefix: str = "genrec:", max_history: int = 200
    ) -> None:
        if max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {max_history}")
        self.client = client
        self.prefix = prefix
        self.max_history = max_history

    @classmethod
    def from_url(
        cls,
        url: str,
        prefix: str = "genrec:",
        max_history: int = 200,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT_S,
        **kwargs: Any,
    ) -> RedisStore:
        """Build a store on a new client (``redis://``, ``rediss://`` or ``unix://``).

        Uses a *blocking* pool: under a burst of concurrent requests, callers wait up to
        ``pool_timeout`` seconds for a free connection instead of failing at once with
        ``MaxConnectionsError`` (the default pool's behaviour once it is exhausted). No
        connection is made until the first command; extra keyword arguments go to the pool
        (e.g. ``socket_timeout``)."""
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=pool_timeout, **kwargs
        )
        # from_pool hands ownership to the client, so close() also disconnects the pool.
        return cls(aioredis.Redis.from_pool(pool), prefix=prefix, max_history=max_history)

    # -- keys ---------------------------------------------------------------------------------
    def _hist(self, user_id: str) -> str:
        return f"{self.prefix}u:{user_id}:hist"

    def _seen(self, user_id: str) -> str:
        return f"{self.prefix}u:{user_id}:seen"

    def _ver(self, user_id: str) -> str:
        return f"{self.prefix}u:{user_id}:ver"

    def _marker(self, marker: str) -> str:
        return f"{self.prefix}seeded:{marker}"

    # -- protocol -----------------------------------------------------------------------------
    async def append_events(self, events: Sequence[Event]) -> int:
        """Append all events in one MULTI/EXEC transaction; returns how many were written.

        Malformed input raises ``ValueError`` before anything is sent. Once EXEC is sent Redis
        applies the whole queue atomically; a connection lost before EXEC applies nothing."""
        events = list(events)
        validate_events(events)
        if not events:
            return 0
        # Group per user, keeping arrival order, so each user costs 4 commands.
        per_user: dict[str, list[bytes]] = defaultdict(list)
        seen: dict[str, set[str]] = defaultdict(set)
        for ev in events:
            per_user[ev.user_id].append(_encode(ev.item_id, ev.type, ev.ts))
            seen[ev.user_id].add(ev.item_id)
        async with self.client.pipeline(transaction=True) as pipe:
            for user_id, payloads in per_user.items():
                hist = self._hist(user_id)
                pipe.rpush(hist, *payloads)
                pipe.ltrim(hist, -self.max_history, -1)
                pipe.sadd(self._seen(user_id), *seen[user_id])
                pipe.incr(self._ver(user_id))
            await pipe.execute()
        return len(events)

    async def get_history(self, user_id: str, limit: int) -> list[Interaction]:
        """The most recent ``limit`` interactions, oldest first; [] for an unknown user."""
        if limit <= 0:
            # LRANGE -0 -1 would mean "everything", so handle the degenerate case here.
            return []
        raw = await self.client.lrange(self._hist(user_id), -limit, -1)
        return [_decode(r) for r in raw]

    async def get_consumed(self, user_id: str) -> set[str]:
        return {_text(m) for m in await self.client.smembers(self._seen(user_id))}

    async def history_version(self, user_id: str) -> int:
        raw = await self.client.get(self._ver(user_id))
        return int(raw) if raw is not None else 0

    async def is_seeded(self, marker: str) -> bool:
        return bool(await self.client.exists(self._marker(marker)))

    async def seed(self, histories: Mapping[str, Sequence[Interaction]], marker: str) -> None:
        """Replace the given users' histories and consumed sets, then record ``marker``.

        Users are written in transactional batches of ``SEED_BATCH_USERS`` (each user is
        replaced atomically; readers never see a deleted-but-not-refilled list). The marker is
        set only after every batch succeeded, so an interrupted seed is simply re-run.
        Versions are INCRed, never reset, so (user, version) cache keys can't be reused."""
        validate_histories(histories)
        users = iter(histories.items())
        while batch := list(islice(users, SEED_BATCH_USERS)):
            async with self.client.pipeline(transaction=True) as pipe:
                for user_id, seq in batch:
                    history = list(seq)  # any Sequence; slicing a list is well defined
                    hist, seen = self._hist(user_id), self._seen(user_id)
                    pipe.delete(hist, seen)
                    recent = history[-self.max_history :]
                    if recent:
                        pipe.rpush(hist, *(_encode(it.item_id, it.type, it.ts) for it in recent))
                    if history:
                        pipe.sadd(seen, *{it.item_id for it in history})
                    pipe.incr(self._ver(user_id))
                await pipe.execute()
        await self.client.set(self._marker(marker), "1")

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            # A health check reports; it must not raise into the caller.
            return False

    async def close(self) -> None:
        await self.client.aclose()
