"""Pick the ``UserStore`` backend from a URL, so deployment config is a single setting."""

from __future__ import annotations

from urllib.parse import urlsplit

from service.stores.base import UserStore
from service.stores.link import RedisLink
from service.stores.memory import InMemoryStore
from service.stores.redis import RedisStore

REDIS_SCHEMES = ("redis", "rediss", "unix")


def store_kind(url: str | None) -> str:
    """"memory" or "redis" for a store URL; anything else -> ``ValueError`` naming the scheme,
    so a typo fails at startup instead of silently falling back to a process-local store."""
    scheme = urlsplit(url).scheme.lower() if url else "memory"
    if scheme == "memory":
        return "memory"
    if scheme in REDIS_SCHEMES:
        return "redis"
    # Only the scheme is echoed: the rest of a URL may carry a password.
    raise ValueError(
        f"unsupported store URL scheme {scheme or '(none)'!r}; "
        "use memory://, redis://, rediss:// or unix://"
    )


def create_link(url: str | None, *, timeout_ms: float = 50.0, breaker_failures: int = 3,
                breaker_reset_s: float = 1.0) -> RedisLink | None:
    """The one ``RedisLink`` (pool + circuit breaker) for a Redis URL, None for the embedded
    store. The app makes one and hands it to the store, the exposure log and the experiment
    sync, so they share one breaker and one pool."""
    if store_kind(url) != "redis":
        return None
    return RedisLink.from_url(url or "", timeout_s=timeout_ms / 1000.0,
                              breaker_failures=breaker_failures, breaker_reset_s=breaker_reset_s)


def create_store(url: str | None, prefix: str = "genrec:", max_history: int = 200, *,
                 link: RedisLink | None = None, timeout_ms: float = 50.0,
                 breaker_failures: int = 3, breaker_reset_s: float = 1.0,
                 max_users: int = 200_000) -> UserStore:
    """None, "" or "memory://" -> ``InMemoryStore`` holding at most ``max_users`` users;
    redis://, rediss://, unix:// -> ``RedisStore`` on ``link`` (shared, not closed by the
    store) or on its own link built from the timeout and breaker settings (lazy: no
    connection until first use)."""
    if store_kind(url) == "memory":
        return InMemoryStore(max_history=max_history, max_users=max_users)
    if link is not None:
        return RedisStore(link, prefix=prefix, max_history=max_history, owns_link=False)
    own = create_link(url, timeout_ms=timeout_ms, breaker_failures=breaker_failures,
                      breaker_reset_s=breaker_reset_s)
    assert own is not None
    return RedisStore(own, prefix=prefix, max_history=max_history)
