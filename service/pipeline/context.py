"""Who the request is for: the user's history and the items that must not come back, resolved
to the models' dense ids once, so every stage works on ints."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from service.errors import UnknownItemError
from service.runtime import Runtime
from service.stores.base import UserStore


@dataclass
class UserContext:
    user_id: str | None
    user_index: int | None  # dense id when the models saw this user in training
    history: np.ndarray  # (L,) int64 dense item ids, oldest first
    user_codes: np.ndarray  # (F,) int64 user feature codes (zeros for unknown users)
    blocked: set[int] = field(default_factory=set)  # consumed or excluded: never returned
    # (L,) float64 unix seconds aligned with ``history``; None for caller-given histories.
    timestamps: np.ndarray | None = None
    # The store's history version (None for caller-given histories): a cache keyed by
    # (user_id, version) is valid until the user's next event.
    version: int | None = None

    @property
    def cold(self) -> bool:
        return len(self.history) == 0


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


def _known(rt: Runtime, ids: Iterable[str]) -> list[int]:
    # Stored ids the models don't know (e.g. the store outlived a rebuild on other data) are
    # skipped rather than failing every request for that user.
    index = rt.items.index
    return [index[i] for i in ids if i in index]


async def build_context(
    rt: Runtime,
    store: UserStore,
    user_id: str | None,
    history: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    limit: int = 200,
) -> UserContext:
    """A given ``history`` replaces the stored one (stateless callers); otherwise the store's
    most recent ``limit`` interactions are used and its consumed set is blocked."""
    ts: list[float] | None = None
    version: int | None = None
    if history is not None:
        hist = resolve_items(rt, history, "history")
        blocked = set(hist)
    elif user_id is not None:
        # The version is read before the history: an event racing this request bumps it, so
        # the next request misses any cache entry computed from this (possibly older) read.
        version = await store.history_version(user_id)
        stored = await store.get_history(user_id, limit)
        index = rt.items.index
        known = [x for x in stored if x.item_id in index]
        hist = [index[x.item_id] for x in known]
        ts = [x.ts for x in known]
        blocked = set(_known(rt, await store.get_consumed(user_id))) | set(hist)
    else:
        hist, blocked = [], set()
    index = rt.items.index
    blocked.update(index[e] for e in exclude if e in index)
    user_index = rt.users.index.get(user_id) if user_id is not None else None
    return UserContext(
        user_id=user_id,
        user_index=user_index,
        history=np.asarray(hist[-limit:], dtype=np.int64),
        user_codes=rt.user_features(user_index),
        blocked=blocked,
        timestamps=None if ts is None else np.asarray(ts[-limit:], dtype=np.float64),
        version=version,
    )
