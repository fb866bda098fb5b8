"""The result cache: a served list kept for the next request that would compute it again.

A pipeline run is a pure function of the version being served, the arm (its path and
params, fixed for the life of a version), ``k`` and the request's ``UserContext``: its
history (and timestamps), its user's index and feature codes, and the items it blocks. Nothing
in the engine reads the clock, and the one source that can sample (the generator at a
temperature above 0) makes its path say it is not ``deterministic``: such runs are never
kept. So a list computed once answers every later
request with the same inputs exactly, as Gorse serves its cached lists: a user who asks again
before their next event (a refresh, the next page of an app) costs a lookup instead of every
model of the path. An event changes the history, so the next request's key differs and the
list is recomputed; a new version is part of the key, so nothing outlives a swap.

The key is a digest of the context's arrays, so a caller-given history (``history`` in the
request) is cached too and a store reset and re-seeded (its versions counted again from 0)
cannot alias two histories; the store's history version is in it as well, because the HSTU
ranker reuses the encoding it cached under (user, version): a context read while an event
landed (the version read before the history) could pair an old version with a new history,
and that one answer must not outlive the request.

Not cached: degraded contexts (the store failed: the history is missing, not empty) and
partial results (a progressive build's early version). Entries are evicted least recently
used first; the cache lives on the event loop's thread only, so it needs no lock."""

from __future__ import annotations

import hashlib

import numpy as np
from cachetools import LRUCache

from models.engine.core.context import UserContext
from models.engine.core.pipeline import PipelineResult

Key = tuple[str, str, str, int, bytes]


def context_digest(ctx: UserContext) -> bytes:
    """16 bytes that change with anything in ``ctx`` a pipeline reads."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.int64(-1 if ctx.user_index is None else ctx.user_index).tobytes())
    h.update(np.int64(-1 if ctx.version is None else ctx.version).tobytes())
    for arr in (ctx.history, ctx.user_codes,
                np.sort(np.fromiter(ctx.blocked, np.int64, len(ctx.blocked)))):
        a = np.ascontiguousarray(arr, dtype=np.int64)
        h.update(np.int64(len(a)).tobytes())  # lengths delimit the arrays
        h.update(a.tobytes())
    if ctx.timestamps is not None:
        h.update(np.ascontiguousarray(ctx.timestamps, dtype=np.float64).tobytes())
    return h.digest()


class ResultCache:
    """At most ``size`` results (0 turns the cache off)."""

    def __init__(self, size: int) -> None:
        self._lru: LRUCache[Key, PipelineResult] | None = LRUCache(size) if size else None

    @staticmethod
    def key(version: str, arm: str, path: str, k: int, ctx: UserContext) -> Key:
        return version, arm, path, k, context_digest(ctx)

    def get(self, key: Key) -> PipelineResult | None:
        return None if self._lru is None else self._lru.get(key)

    def put(self, key: Key, result: PipelineResult) -> None:
        if self._lru is not None and not result.partial:
            self._lru[key] = result

    def clear(self) -> None:
        if self._lru is not None:
            self._lru.clear()

    def __len__(self) -> int:
        return 0 if self._lru is None else len(self._lru)
