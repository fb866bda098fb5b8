"""Redis-backed ``ExposureLog``, shared by every worker and replica, so counters survive
restarts.

Key layout (``{prefix}`` is the store's key prefix, GENREC_REDIS_PREFIX):

    {prefix}ab:exposures           stream capped near ``stream_maxlen`` (XADD MAXLEN ~): one
                                   entry per exposure: request_id, user_id, experiment, arm,
                                   items (JSON list), ts
    {prefix}ab:req:{request_id}:exp
                                   hash, expires after ``ttl_s``: ``x`` (experiment name),
                                   ``arm``, and ``i:{item_id}`` -> "0" (exposed) or "1" (a
                                   click was already credited)
    {prefix}ab:counts:{experiment} hash: ``exposures:{arm}`` and ``clicks:{arm}``, cumulative

Every key ends in a fixed suffix or starts with a fixed infix, so no request id or experiment
name can make two kinds of key collide. Both writes are one Lua script each, so they are
atomic: a duplicate request id records nothing, and concurrent identical clicks are credited
once. A click on an exposure recorded under another experiment name is not credited.

Calls go through the ``RedisLink`` shared with the user store (one circuit breaker per Redis
URL); a failure raises ``StoreUnavailable``, which callers turn into a dropped exposure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis

from service.stores.link import DEFAULT_TIMEOUT_S, RedisLink

_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fields = {'x', ARGV[3], 'arm', ARGV[4]}
for i = 9, #ARGV do
  fields[#fields + 1] = 'i:' .. ARGV[i]
  fields[#fields + 1] = '0'
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'request_id', ARGV[8],
           'user_id', ARGV[5], 'experiment', ARGV[3], 'arm', ARGV[4], 'items', ARGV[7],
           'ts', ARGV[6])
redis.call('HINCRBY', KEYS[3], 'exposures:' .. ARGV[4], 1)
return 1
"""

_CLICK = """
local got = redis.call('HMGET', KEYS[1], 'x', 'arm', 'i:' .. ARGV[2])
if got[1] ~= ARGV[1] or got[3] ~= '0' then return false end
redis.call('HSET', KEYS[1], 'i:' .. ARGV[2], '1')
redis.call('HINCRBY', KEYS[2], 'clicks:' .. got[2], 1)
return got[2]
"""


def _b(text: str) -> bytes:
    # surrogatepass: a lone surrogate in an id round-trips instead of raising mid-request.
    return text.encode("utf-8", "surrogatepass")


def _s(raw: bytes | str) -> str:
    return raw.decode("utf-8", "surrogatepass") if isinstance(raw, bytes) else raw


class RedisExposureLog:
    """``ExposureLog`` on Redis; see the module docstring for the key layout."""

    def __init__(
        self,
        client: aioredis.Redis | RedisLink,
        prefix: str = "genrec:",
        *,
        owns_link: bool = True,
        experiment: str = "default",
        arms: Sequence[str] = (),
        stream_maxlen: int = 100_000,
        ttl_s: float = 86_400.0,
    ) -> None:
        if stream_maxlen < 1:
            raise ValueError("stream_maxlen must be >= 1")
        if not ttl_s > 0:
            raise ValueError("ttl_s must be > 0")
        self.link = client if isinstance(client, RedisLink) else RedisLink(client)
        self.client = self.link.client
        self.owns_link = owns_link
        self.prefix = prefix
        self.experiment = experiment
        self.arms = list(arms)
        self.stream_maxlen = stream_maxlen
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self.stream_key = f"{prefix}ab:exposures"
        self.counts_key = f"{prefix}ab:counts:{experiment}"
        self._record = self.client.register_script(_RECORD)
        self._click = self.client.register_script(_CLICK)

    @classmethod
    def from_url(cls, url: str, prefix: str = "genrec:", *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 breaker_failures: int = 3, breaker_reset_s: float = 1.0,
                 **kwargs: Any) -> RedisExposureLog:
        """A log on its own lazy link (pool + breaker), like ``RedisStore.from_url``'s."""
        link = RedisLink.from_url(url, timeout_s=timeout_s, breaker_failures=breaker_failures,
                                  breaker_reset_s=breaker_reset_s)
        return cls(link, prefix, **kwargs)

    def request_key(self, request_id: str) -> str:
        return f"{self.prefix}ab:req:{request_id}:exp"

    async def record_exposure(
        self, request_id: str, user_id: str, arm: str, item_ids: Sequence[str], ts: float
    ) -> bool:
        items = list(item_ids)
        args = [self.ttl_ms, self.stream_maxlen, _b(self.experiment), _b(arm), _b(user_id),
                repr(float(ts)), orjson.dumps(items), _b(request_id), *map(_b, items)]
        keys = [_b(self.request_key(request_id)), self.stream_key, _b(self.counts_key)]
        return bool(await self.link.call(
            "record_exposure", lambda: self._record(keys=keys, args=args)))

    async def attribute_click(self, request_id: str, item_id: str) -> str | None:
        keys = [_b(self.request_key(request_id)), _b(self.counts_key)]
        arm = await self.link.call(
            "attribute_click", lambda: self._click(keys=keys, args=[_b(self.experiment),
                                                                   _b(item_id)]))
        return None if arm is None else _s(arm)

    async def counters(self) -> dict[str, dict[str, int]]:
        out = {arm: {"exposures": 0, "clicks": 0} for arm in self.arms}
        raw = await self.link.call("counters", lambda: self.client.hgetall(_b(self.counts_key)))
        for field, value in raw.items():
            kind, _, arm = _s(field).partition(":")
            if kind in ("exposures", "clicks"):
                out.setdefault(arm, {"exposures": 0, "clicks": 0})[kind] = int(value)
        return out

    async def close(self) -> None:
        if self.owns_link:
            await self.link.close()
