"""Pick the ``ExposureLog`` backend from the store URL, like ``service.stores.factory`` does for
the user store, so the exposure log always lives where the user store lives."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from service.exposures.base import ExposureLog
from service.exposures.memory import InMemoryExposureLog
from service.exposures.redis import RedisExposureLog
from service.stores.factory import REDIS_SCHEMES


def create_exposure_log(
    url: str | None,
    prefix: str = "genrec:",
    *,
    experiment: str = "default",
    arms: Sequence[str] = (),
    stream_maxlen: int = 100_000,
    ttl_s: float = 86_400.0,
) -> ExposureLog:
    """The store URL picks the backend: none/memory:// -> ``InMemoryExposureLog`` (remembers
    ``stream_maxlen`` requests, no TTL); redis://, rediss://, unix:// -> ``RedisExposureLog``
    under the same key prefix. Other schemes raise ``ValueError`` (as ``create_store`` does)."""
    scheme = urlsplit(url).scheme.lower() if url else "memory"
    if scheme == "memory":
        return InMemoryExposureLog(max_exposures=stream_maxlen, arms=arms)
    if scheme in REDIS_SCHEMES:
        return RedisExposureLog.from_url(
            url or "", prefix, experiment=experiment, arms=arms, stream_maxlen=stream_maxlen,
            ttl_s=ttl_s,
        )
    # Only the scheme is echoed: the rest of a URL may carry a password.
    raise ValueError(f"unsupported store URL scheme {scheme!r}; "
                     "use memory://, redis://, rediss:// or unix://")


async def close_exposure_log(log: ExposureLog) -> None:
    """Release the log's connections (a Redis pool); a no-op for the in-memory log."""
    if isinstance(log, RedisExposureLog):
        await log.close()
