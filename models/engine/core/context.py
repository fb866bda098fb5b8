"""Who a request is for, as the engine sees it: the user's history and the items that must not
come back, already dense ints. No store and no HTTP types: the service reads its store and
resolves external ids (``service/user_context.py``); offline evaluation builds contexts straight
from the split. Both then run the same pipelines."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from models.engine.core.runtime import Runtime


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


def make_context(rt: Runtime, user_id: str | None, history: Iterable[int],
                 blocked: Iterable[int] = (), timestamps: Iterable[float] | None = None,
                 version: int | None = None, limit: int | None = None) -> UserContext:
    """A context over dense ids: ``history`` oldest first (cut to its last ``limit`` items,
    default ``rt.max_history``), ``blocked`` = consumed or excluded items, the history's items
    included by the caller."""
    limit = rt.max_history if limit is None else limit
    hist = np.asarray(list(history), dtype=np.int64)[-limit:]
    ts = None if timestamps is None else np.asarray(list(timestamps), dtype=np.float64)[-limit:]
    user_index = rt.users.index.get(user_id) if user_id is not None else None
    return UserContext(user_id=user_id, user_index=user_index, history=hist,
                       user_codes=rt.user_features(user_index), blocked=set(blocked),
                       timestamps=ts, version=version)
