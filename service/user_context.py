"""Request -> engine context: reads the user's history, timestamps, consumed set and version
from the store, resolves external item ids to dense ints (an unknown caller-given id is a 422
naming its position), and hands ``models.engine.context.make_context`` plain arrays.

When the store is unavailable (Redis down, hung, circuit open) the context degrades instead of
failing: a request's own ``history`` needs no store, and without one the user is served as
cold (the popular list), flagged ``degraded`` and counted in ``DEGRADED{reason="store"}``."""

from __future__ import annotations

from collections.abc import Sequence

from models.engine.core.context import UserContext, make_context
from models.engine.core.runtime import Runtime
from service import metrics
from service.errors import UnknownItemError
from service.stores.base import StoreUnavailable, UserStore


def resolve_items(rt: Runtime, ids: Sequence[str], field_name: str) -> list[int]:
    """Dense ids of caller-given item ids; an unknown id is a 422 naming its position."""
    out: list[int] = []
    index = rt.items.index
    for pos, ext in enumerate(ids):
        dense = index.get(ext)
        if dense is None:
            raise UnknownItemError(["body", field_name, pos], ext)
        out.append(dense)
    return out


async def load_context(
    rt: Runtime,
    store: UserStore,
    user_id: str | None,
    history: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    limit: int = 200,
) -> tuple[UserContext, bool]:
    """-> (context, degraded). A given ``history`` replaces the stored one (stateless
    callers); otherwise the store's most recent ``limit`` interactions are used and its
    consumed set is blocked. A store that is unavailable gives the cold context (no history,
    only ``exclude`` blocked) and ``degraded`` True."""
    index = rt.items.index
    ts: list[float] | None = None
    version: int | None = None
    degraded = False
    if history is not None:
        hist = resolve_items(rt, history, "history")
        blocked = set(hist)
    elif user_id is not None:
        try:
            hist, ts, blocked, version = await _read_user(rt, store, user_id, limit)
        except StoreUnavailable:
            # The first failed read ends the attempt: one timeout, not one per read.
            hist, ts, blocked, version, degraded = [], None, set(), None, True
            metrics.DEGRADED.labels("store").inc()
    else:
        hist, blocked = [], set()
    blocked.update(index[e] for e in exclude if e in index)
    return make_context(rt, user_id, hist, blocked, ts, version, limit=limit), degraded


async def _read_user(rt: Runtime, store: UserStore, user_id: str, limit: int
                     ) -> tuple[list[int], list[float], set[int], int]:
    index = rt.items.index
    # The version is read before the history: an event racing this request bumps it, so
    # the next request misses any cache entry computed from this (possibly older) read.
    version = await store.history_version(user_id)
    stored = await store.get_history(user_id, limit)
    # Stored ids the models don't know (e.g. the store outlived a rebuild on other data)
    # are skipped rather than failing every request for that user.
    known = [x for x in stored if x.item_id in index]
    hist = [index[x.item_id] for x in known]
    consumed = await store.get_consumed(user_id)
    blocked = {index[i] for i in consumed if i in index} | set(hist)
    return hist, [x.ts for x in known], blocked, version

