"""Pick the ``ExposureLog`` backend from the store URL, like ``service.stores.factory`` does for
the user store, so the exposure log always lives where the user store lives."""

from __future__ import annotations

from collections.abc import Sequence

from service.exposures.base import ExposureLog
from service.exposures.memory import InMemoryExposureLog
from service.exposures.redis import RedisExposureLog
from service.stores.factory import store_kind
from service.stores.link import RedisLink


def create_exposure_log(
    url: str | None,
    prefix: str = "genrec:",
    *,
    experiment: str = "default",
    arms: Sequence[str] = (),
    stream_maxlen: int = 100_000,
    ttl_s: float = 86_400.0,
    link: RedisLink | None = None,
    timeout_ms: float = 50.0,
    breaker_failures: int = 3,
    breaker_reset_s: float = 1.0,
) -> ExposureLog:
    """The store URL picks the backend: none/memory:// -> ``InMemoryExposureLog`` (remembers
    ``stream_maxlen`` requests, no TTL); redis://, rediss://, unix:// -> ``RedisExposureLog``
    under the same key prefix, on ``link`` (shared with the store, not closed by the log) or
    on its own link from the timeout and breaker settings. Other schemes raise ``ValueError``
    (as ``create_store`` does)."""
    if store_kind(url) == "memory":
        return InMemoryExposureLog(max_exposures=stream_maxlen, arms=arms)
    options = {"experiment": experiment, "arms": arms, "stream_maxlen": stream_maxlen,
               "ttl_s": ttl_s}
    if link is not None:
        return RedisExposureLog(link, prefix, owns_link=False, **options)  # type: ignore[arg-type]
    return RedisExposureLog.from_url(
        url or "", prefix, timeout_s=timeout_ms / 1000.0, breaker_failures=breaker_failures,
        breaker_reset_s=breaker_reset_s, **options,  # type: ignore[arg-type]
    )


async def close_exposure_log(log: ExposureLog) -> None:
    """Release the log's connections (a Redis pool it owns); a no-op for the in-memory log."""
    if isinstance(log, RedisExposureLog):
        await log.close()
