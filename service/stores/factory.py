"""Pick the ``UserStore`` backend from a URL, so deployment config is a single setting."""

from __future__ import annotations

from urllib.parse import urlsplit

from service.stores.base import UserStore
from service.stores.memory import InMemoryStore
from service.stores.redis import RedisStore

REDIS_SCHEMES = ("redis", "rediss", "unix")


def create_store(url: str | None, prefix: str = "genrec:", max_history: int = 200) -> UserStore:
    """None, "" or "memory://" -> ``InMemoryStore``; redis://, rediss://, unix:// ->
    ``RedisStore.from_url`` (lazy: no connection until first use); anything else ->
    ``ValueError`` naming the scheme, so a typo fails at startup instead of silently
    falling back to a process-local store."""
    if not url:
        return InMemoryStore(max_history=max_history)
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return InMemoryStore(max_history=max_history)
    if scheme in REDIS_SCHEMES:
        return RedisStore.from_url(url, prefix=prefix, max_history=max_history)
    # Only the scheme is echoed: the rest of a URL may carry a password.
    raise ValueError(
        f"unsupported store URL scheme {scheme or '(none)'!r}; "
        "use memory://, redis://, rediss:// or unix://"
    )
