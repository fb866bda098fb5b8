"""Redis-backed ``UserStore``, shared by all workers/replicas of the service.

Key layout (user ids may contain any character, ':' included: every key ends in a fixed
suffix, so ``u:a:seen``'s history is ``u:a:seen:hist`` and can't collide with user ``a``):

    {prefix}u:{user_id}:hist   list of compact JSON interactions, oldest first, capped
    {prefix}u:{user_id}:seen   set of every consumed item id (never capped)
    {prefix}u:{user_id}:ver    INCR counter, bumped on every write to the user
    {prefix}seeded:{marker}    set once a seed run with that marker has completed
    {prefix}seeding:{run_id}   a seed run's count of batches written (deleted when it completes)
    {prefix}batch:{batch_id}   "applied" or "aborted", for a few seconds: see below

Every call goes through the shared ``RedisLink`` (time bound, circuit breaker, metrics); a
failure raises ``StoreUnavailable``.

An ``append_events`` batch is one Lua script (atomic like MULTI/EXEC: all or nothing, and its
effects, not the script, go to the AOF and replicas) with a fresh batch id. The promise: a
batch that answers ``StoreUnavailable`` (HTTP 503) is never applied later. A request whose
reply timed out may still sit in a hung Redis's socket buffer and run when Redis resumes, so:

1. the script refuses to run after its deadline: send time + twice the timeout + the clock
   error, in Redis's own clock (the offset to it is measured with TIME, so host clock skew
   doesn't matter), and a failed batch is not answered before that deadline has passed;
2. it claims ``batch:{id}`` with SET NX before writing; after a timeout the store claims the
   same key as "aborted" on a fresh connection: whichever runs first wins, so the answer is
   exact whenever Redis answers that check (a batch found "applied" is reported as written).
   The check is retried for ``RESOLVE_BOUND_S``, so a freeze shorter than that (the batch ran,
   then Redis stopped before its reply went out) is still answered exactly;
3. the client never retries a command, so nothing is sent twice.

The remaining gap: Redis runs the batch before its deadline and then stops answering for
longer than ``RESOLVE_BOUND_S`` before its reply gets back (a long freeze or partition in that
instant); then a 503 can hide an applied batch. Writes to several users in one batch assume a
single Redis (or a proxy that keeps a script on one node), not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from itertools import islice
from typing import Any

import orjson
import redis.asyncio as aioredis

from service.stores.base import Event, Interaction, SeedLog
from service.stores.breaker import StoreUnavailable
from service.stores.link import DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT_S, RedisLink
from service.stores.memory import validate_events, validate_histories
from service.stores.redis_scripts import APPEND, RESOLVE, SEAL

__all__ = ["DEFAULT_MAX_CONNECTIONS", "RedisStore"]

# Users per seed pipeline: large enough to amortise round trips, small enough that one
# pipeline's request/reply buffers stay a few MB with 200-item histories.
SEED_BATCH_USERS = 250
# Seeding sends multi-MB pipelines on its own connection: this bounds each one.
SEED_TIMEOUT_S = 60.0
# The batch marker outlives its batch's deadline by this much (it only has to separate the
# batch from its "aborted" check, which both happen before or near the deadline).
BATCH_MARKER_TTL_MS = 10_000
# A failed append's outcome is asked of Redis for this long before "not written" is answered
# (``_applied_after_all``); the marker outlives it, and its checks are this far apart.
RESOLVE_BOUND_S = 2.0
RESOLVE_RETRY_S = 0.05
# Redis's clock offset is measured again after this long (drift, NTP steps).
CLOCK_REFRESH_S = 30.0
# A seed run's batch counter outlives a run cut short by this much (then Redis drops it).
SEED_RUN_TTL_MS = 3_600_000

def _encode(item_id: str, type_: str, ts: float) -> bytes:
    # Short field names keep 200-item lists small; orjson emits compact JSON.
    return orjson.dumps({"i": item_id, "t": type_, "ts": float(ts)})


def _decode(raw: bytes | str) -> Interaction:
    d = orjson.loads(raw)
    return Interaction(item_id=d["i"], type=d["t"], ts=float(d["ts"]))


def _text(value: bytes | str) -> str:
    # Works whether or not the client was built with decode_responses=True.
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _now_ms() -> float:
    return time.time() * 1000.0


class RedisStore:
    """``UserStore`` on Redis; see the module docstring for the key layout and guarantees."""

    def __init__(
        self, link: RedisLink | aioredis.Redis, prefix: str = "genrec:", max_history: int = 200,
        *, owns_link: bool = True,
    ) -> None:
        if max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {max_history}")
        self.link = link if isinstance(link, RedisLink) else RedisLink(link)
        self.client = self.link.client
        self.owns_link = owns_link
        self.prefix = prefix
        self.max_history = max_history
        self.resets = 0  # seed markers seen, then found gone (Redis restarted empty)
        self._markers_seen: set[str] = set()
        self.seeding = SeedLog()  # what the service asked of this store's seeding (/readyz)
        self._offset_ms: float | None = None  # Redis clock - local clock
        self._offset_err_ms = 0.0
        self._offset_at = 0.0
        self._offset_lock = asyncio.Lock()
        self._append = self.client.register_script(APPEND)
        self._resolve = self.client.register_script(RESOLVE)
        self._seal = self.client.register_script(SEAL)

    @classmethod
    def from_url(
        cls,
        url: str,
        prefix: str = "genrec:",
        max_history: int = 200,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        breaker_failures: int = 3,
        breaker_reset_s: float = 1.0,
        **kwargs: Any,
    ) -> RedisStore:
        """A store on its own ``RedisLink`` (lazy: no connection until the first command);
        extra keyword arguments go to the pool (e.g. ``socket_connect_timeout``)."""
        link = RedisLink.from_url(url, timeout_s=timeout_s, breaker_failures=breaker_failures,
                                  breaker_reset_s=breaker_reset_s, **kwargs)
        return cls(link, prefix=prefix, max_history=max_history)

    # -- keys ---------------------------------------------------------------------------------
    def _hist(self, user_id: str) -> str:
        return f"{self.prefix}u:{user_id}:hist"

    def _seen(self, user_id: str) -> str:
        return f"{self.prefix}u:{user_id}:seen"

    def _ver(self, user_id: str) -> str:
        return f"{self.prefix}u:{user_id}:ver"

    def _marker(self, marker: str) -> str:
        return f"{self.prefix}seeded:{marker}"

    def _batch(self, batch_id: str) -> str:
        return f"{self.prefix}batch:{batch_id}"

    # -- writes -------------------------------------------------------------------------------
    async def _redis_offset_ms(self) -> tuple[float, float]:
        """(Redis's clock minus ours, its error bound: half the round trip of the TIME call)."""
        fresh = time.monotonic() - self._offset_at < CLOCK_REFRESH_S
        if self._offset_ms is None or not fresh:
            async with self._offset_lock:  # one TIME call, not one per concurrent batch
                if self._offset_ms is None or time.monotonic() - self._offset_at > CLOCK_REFRESH_S:
                    before = _now_ms()
                    sec, usec = await self.link.call("time", self.client.time)
                    after = _now_ms()
                    self._offset_ms = sec * 1000.0 + usec / 1000.0 - (before + after) / 2
                    self._offset_err_ms = (after - before) / 2
                    self._offset_at = time.monotonic()
        return self._offset_ms, self._offset_err_ms

    async def append_events(self, events: Sequence[Event]) -> int:
        """Append all events in one atomic script; returns how many were written.

        Malformed input raises ``ValueError`` before anything is sent. ``StoreUnavailable``
        means nothing was written and nothing will be (module docstring)."""
        events = list(events)
        validate_events(events)
        if not events:
            return 0
        # Group per user, keeping arrival order.
        per_user: dict[str, list[bytes]] = defaultdict(list)
        seen: dict[str, set[str]] = defaultdict(set)
        for ev in events:
            per_user[ev.user_id].append(_encode(ev.item_id, ev.type, ev.ts))
            seen[ev.user_id].add(ev.item_id)
        marker = self._batch(uuid.uuid4().hex)
        keys: list[str] = [marker]
        users: list[Any] = []
        for user_id, payloads in per_user.items():
            keys += [self._hist(user_id), self._seen(user_id), self._ver(user_id)]
            users += [len(payloads), *payloads, len(seen[user_id]), *seen[user_id]]
        offset, err = await self._redis_offset_ms()
        # Twice the timeout: a loaded event loop fires the client's timer late, and a batch
        # should not expire while its caller still waits for it.
        window = 2 * self.link.timeout_s * 1000.0 + err
        sent = _now_ms()
        args = [int(sent + offset + window), BATCH_MARKER_TTL_MS, self.max_history,
                len(per_user), *users]
        try:
            done = await self.link.call(
                "append_events", lambda: self._append(keys=keys, args=args))
        except StoreUnavailable as exc:
            if exc.kind == "breaker_open":
                raise  # nothing was sent
            if await self._applied_after_all(marker, sent + window + err):
                return len(events)
            raise
        if done != 1:  # past its deadline (a slow Redis) or claimed as aborted: not written
            raise StoreUnavailable("append_events", "expired", breaker=self.link.breaker)
        return len(events)

    async def _applied_after_all(self, marker: str, deadline_ms: float) -> bool:
        """After a failed append: claim its batch as aborted, unless it was applied.

        Redis's answer is exact at any time (the batch and the claim both SET NX the marker),
        so the check is retried, past the open circuit, until Redis answers or
        ``RESOLVE_BOUND_S`` has passed; this closes the gap of a batch that ran just before a
        freeze whose reply never came back (only the few writes in flight when Redis stops
        wait this long: later ones meet the open circuit). Unanswered, it returns False only
        once ``deadline_ms`` (local clock, the batch's deadline plus the clock error) has
        passed, so the batch can no longer run when the caller hears "not written"."""
        give_up = max(deadline_ms, _now_ms() + RESOLVE_BOUND_S * 1000.0)
        while True:
            try:
                got = await self.link.call(
                    "resolve_batch", lambda: self._resolve(keys=[marker],
                                                           args=[BATCH_MARKER_TTL_MS]),
                    gated=False)
                return _text(got) == "applied"
            except StoreUnavailable:
                pass
            left_ms = give_up - _now_ms()
            if left_ms <= 0:
                return False
            await asyncio.sleep(min(RESOLVE_RETRY_S, left_ms / 1000.0))

    async def seed(self, histories: Mapping[str, Sequence[Interaction]], marker: str) -> None:
        """Replace the given users' histories and consumed sets, then record ``marker``.

        Users are written in transactional batches of ``SEED_BATCH_USERS`` (each user is
        replaced atomically; readers never see a deleted-but-not-refilled list). Each batch
        also counts itself in the run's own key, in the same transaction, and the marker is set
        by a script only if that count is every batch: a Redis restarted empty (or failed over
        to a replica that missed writes) between two batches, or before the marker, loses the
        count with the data, and the run fails (``StoreUnavailable``, kind "reset") instead of
        marking a half-seeded store. An interrupted seed is simply run again. Versions are
        INCRed, never reset, so (user, version) cache keys can't be reused."""
        validate_histories(histories)
        run = f"{self.prefix}seeding:{uuid.uuid4().hex}"
        bulk = self.link.bulk_client(SEED_TIMEOUT_S)
        client = bulk or self.client
        try:
            users = iter(histories.items())
            batches = 0
            while batch := list(islice(users, SEED_BATCH_USERS)):
                batches += 1
                count = await self.link.call(
                    "seed", lambda b=batch: self._seed_batch(client, run, b),
                    timeout_s=SEED_TIMEOUT_S)
                if count != batches:
                    raise StoreUnavailable("seed", "reset", f"batch {batches} of the run found "
                                           f"{count - 1} before it", self.link.breaker)
            sealed = await self.link.call(
                "seed", lambda: self._seal(keys=[run, self._marker(marker)], args=[batches]))
            if sealed != 1:
                raise StoreUnavailable("seed", "reset", "batches lost before the marker",
                                       self.link.breaker)
        finally:
            if bulk is not None:
                await bulk.aclose()
        self._markers_seen.add(marker)

    async def _seed_batch(self, client: aioredis.Redis, run: str,
                          batch: list[tuple[str, Any]]) -> int:
        """One transaction: the run's batch count (-> its new value), then the users."""
        async with client.pipeline(transaction=True) as pipe:
            pipe.incr(run)
            pipe.pexpire(run, SEED_RUN_TTL_MS)
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
            return int((await pipe.execute())[0])

    # -- reads --------------------------------------------------------------------------------
    async def get_history(self, user_id: str, limit: int) -> list[Interaction]:
        """The most recent ``limit`` interactions, oldest first; [] for an unknown user."""
        if limit <= 0:
            # LRANGE -0 -1 would mean "everything", so handle the degenerate case here.
            return []
        raw = await self.link.call(
            "get_history", lambda: self.client.lrange(self._hist(user_id), -limit, -1))
        return [_decode(r) for r in raw]

    async def get_consumed(self, user_id: str) -> set[str]:
        raw = await self.link.call(
            "get_consumed", lambda: self.client.smembers(self._seen(user_id)))
        return {_text(m) for m in raw}

    async def history_version(self, user_id: str) -> int:
        raw = await self.link.call(
            "history_version", lambda: self.client.get(self._ver(user_id)))
        return int(raw) if raw is not None else 0

    async def is_seeded(self, marker: str) -> bool:
        """Whether a seed with ``marker`` completed. A marker this store saw and now finds
        gone means Redis lost its data (restarted empty): counted in ``resets``."""
        found = bool(await self.link.call(
            "is_seeded", lambda: self.client.exists(self._marker(marker))))
        if found:
            self._markers_seen.add(marker)
        elif marker in self._markers_seen:
            self._markers_seen.discard(marker)
            self.resets += 1
        return found

    # -- health -------------------------------------------------------------------------------
    async def ping(self) -> bool:
        try:
            return bool(await self.link.call("ping", self.client.ping))
        except StoreUnavailable:
            # A health check reports; it must not raise into the caller.
            return False

    async def health(self) -> dict[str, Any]:
        """``{"ok", "backend", "breaker", "last_error", "last_error_at", "resets",
        "seeding"}``: ok is a PING answered within the timeout (never raises; fails fast while
        the circuit is open); seeding is the ``SeedLog`` state (None: never asked)."""
        ok = await self.ping()
        return {"ok": ok, "backend": "redis", **self.link.health(), "resets": self.resets,
                "seeding": self.seeding.state}

    async def close(self) -> None:
        if self.owns_link:
            await self.link.close()
