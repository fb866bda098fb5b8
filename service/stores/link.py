"""One Redis URL's connection pool and circuit breaker, shared by the user store, the exposure
log and the experiment sync, so one outage opens one circuit for all of them.

Every call goes through ``RedisLink.call``: refused at once while the circuit is open, bounded
by ``timeout_s`` as a whole (pool wait + connect + send + reply; the socket timeouts are the
same value, so a hung Redis, reachable but silent, fails like a dead one), timed into
``REDIS_LATENCY{op}`` and, on failure, counted in ``REDIS_ERRORS{op,kind}``. The client never
retries a command (``Retry(NoBackoff(), 0)``): a MULTI/EXEC or script whose request may have
reached Redis must not be sent twice. Connections are made lazily, so the pool reconnects by
itself once Redis answers again; after a connection failure the idle connections are dropped
so a restarted Redis isn't met with a pool of dead sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service import metrics
from service.stores.breaker import OPEN, CircuitBreaker, StoreUnavailable

T = TypeVar("T")
# Connections per link (per worker process).
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_TIMEOUT_S = 0.05


def _on_breaker_change(state: str) -> None:
    metrics.REDIS_BREAKER_OPEN.set(1 if state == OPEN else 0)


class RedisLink:
    """A Redis client plus its breaker and time bound. ``owned`` links close their pool."""

    def __init__(self, client: aioredis.Redis, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 breaker: CircuitBreaker | None = None, url: str | None = None) -> None:
        self.client = client
        self.url = url  # for bulk clients with a longer timeout (seeding); None: use client
        self.timeout_s = timeout_s
        self.breaker = breaker or CircuitBreaker(on_change=_on_breaker_change)
        self.last_error: str | None = None
        self.last_error_at: float | None = None  # unix seconds

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 breaker_failures: int = 3, breaker_reset_s: float = 1.0,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, **kwargs: Any) -> RedisLink:
        """A lazy, blocking pool: a caller waits at most ``timeout_s`` for a free connection
        (then fails like any other timeout) instead of failing at once when it is exhausted.
        Extra keyword arguments go to the pool (and override the timeouts)."""
        options: dict[str, Any] = {
            "socket_timeout": timeout_s, "socket_connect_timeout": timeout_s,
            "retry": Retry(NoBackoff(), 0), "timeout": timeout_s,
            "max_connections": max_connections, **kwargs,
        }
        pool = aioredis.BlockingConnectionPool.from_url(url, **options)
        breaker = CircuitBreaker(breaker_failures, breaker_reset_s, on_change=_on_breaker_change)
        # from_pool hands ownership to the client, so close() also disconnects the pool.
        return cls(aioredis.Redis.from_pool(pool), timeout_s=timeout_s, breaker=breaker, url=url)

    def _failed(self, op: str, kind: str, exc: BaseException,
                breaker: CircuitBreaker) -> StoreUnavailable:
        breaker.failure()
        self.last_error = f"{op}: {kind}: {type(exc).__name__}"  # never the URL
        self.last_error_at = time.time()
        metrics.REDIS_ERRORS.labels(op, kind).inc()
        return StoreUnavailable(op, kind, type(exc).__name__, self.breaker)

    async def call(self, op: str, fn: Callable[[], Awaitable[T]],
                   timeout_s: float | None = None, *, gated: bool = True) -> T:
        """``await fn()`` under the breaker and the time bound. Raises ``StoreUnavailable``
        for a timeout, a lost connection or an open circuit; a Redis error reply (the server
        answered) passes through and counts as the server being up. ``gated=False``: a
        recovery check that must reach Redis even while the circuit is open (it neither waits
        for nor reports to the breaker, whose single half-open trial stays the requests').

        A cancellation that arrives during the call is always raised, also when the client
        dropped it: redis-py sends through ``asyncio.wait_for``, which on Python 3.11 returns
        normally when the send completes as the cancellation arrives, and a background loop
        that lost its cancellation would never end (the app's shutdown would wait forever)."""
        breaker = self.breaker if gated else CircuitBreaker()  # ungated: a throwaway one
        if not breaker.allow():
            metrics.REDIS_ERRORS.labels(op, "breaker_open").inc()
            raise StoreUnavailable(op, "breaker_open", breaker=self.breaker)
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        t0 = time.perf_counter()
        done = False
        try:
            async with asyncio.timeout(timeout_s or self.timeout_s):
                result = await fn()
            done = True
        except ResponseError:
            done = True
            breaker.success()
            raise
        except (TimeoutError, RedisTimeoutError) as exc:  # before OSError: TimeoutError is one
            done = True
            raise self._failed(op, "timeout", exc, breaker) from None
        except (RedisError, OSError) as exc:
            done = True
            await self._drop_idle()
            raise self._failed(op, "connection", exc, breaker) from None
        finally:
            metrics.REDIS_LATENCY.labels(op).observe(time.perf_counter() - t0)
            if not done:  # cancelled by the caller: neither an answer nor a fault
                breaker.release()
        breaker.success()
        if task is not None and task.cancelling() > cancels:
            raise asyncio.CancelledError  # a cancellation the client swallowed (docstring)
        return result

    async def _drop_idle(self) -> None:
        # Idle sockets to a Redis that went away are dead; dropping them makes the next call
        # connect afresh instead of failing once per stale connection after a restart.
        # Best effort: the next call reconnects anyway.
        with contextlib.suppress(Exception):
            await self.client.connection_pool.disconnect(inuse_connections=False)

    def bulk_client(self, timeout_s: float) -> aioredis.Redis | None:
        """A separate, single-connection client whose socket timeout fits multi-MB pipelines
        (seeding); None when the link was built from a client (use ``client``). Close it."""
        if self.url is None:
            return None
        return aioredis.Redis.from_url(
            self.url, socket_timeout=timeout_s, socket_connect_timeout=self.timeout_s,
            retry=Retry(NoBackoff(), 0), max_connections=1)

    def health(self) -> dict[str, Any]:
        return {"breaker": self.breaker.state, "last_error": self.last_error,
                "last_error_at": self.last_error_at}

    async def close(self) -> None:
        await self.client.aclose()
