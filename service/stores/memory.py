"""Embedded, process-local ``UserStore``: the default when no store URL is configured.

Everything lives in dicts, so there is no I/O; the methods are async only to satisfy the
protocol. Data is lost on restart and not shared between workers, which is fine for tests,
demos and single-process serving.

This module also holds the input validation shared with ``RedisStore``: both backends reject
the same bad input with the same ``ValueError`` *before* writing anything, which is what makes
``append_events`` and ``seed`` all-or-nothing for malformed batches.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Mapping, Sequence
from itertools import islice

from service.stores.base import EVENT_TYPES, Event, Interaction


def _check_id(value: object, what: str, where: str) -> None:
    # Empty or non-string ids would create phantom users/items that no request can address.
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: {what} must be a non-empty string, got {value!r}")


def _check_interaction_fields(item_id: object, type_: object, ts: object, where: str) -> None:
    _check_id(item_id, "item_id", where)
    if type_ not in EVENT_TYPES:
        raise ValueError(f"{where}: type must be one of {EVENT_TYPES}, got {type_!r}")
    # bool is an int subclass but never a meaningful timestamp; NaN/inf can't round-trip JSON.
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise ValueError(f"{where}: ts must be a finite number, got {ts!r}")


def validate_events(events: Sequence[Event]) -> None:
    """Raise ``ValueError`` naming the first bad event; called before any write."""
    for i, ev in enumerate(events):
        where = f"event #{i}"
        if not isinstance(ev, Event):
            raise ValueError(f"{where}: expected Event, got {type(ev).__name__}")
        _check_id(ev.user_id, "user_id", where)
        _check_interaction_fields(ev.item_id, ev.type, ev.ts, where)


def validate_histories(histories: Mapping[str, Sequence[Interaction]]) -> None:
    """Raise ``ValueError`` naming the first bad user/interaction of a seed payload."""
    for user_id, history in histories.items():
        _check_id(user_id, "user_id", "seed")
        for i, it in enumerate(history):
            where = f"seed user {user_id!r} interaction #{i}"
            if not isinstance(it, Interaction):
                raise ValueError(f"{where}: expected Interaction, got {type(it).__name__}")
            _check_interaction_fields(it.item_id, it.type, it.ts, where)


def to_interaction(ev: Event) -> Interaction:
    # ts normalised to float so both backends return identical values (Redis goes via JSON).
    return Interaction(item_id=ev.item_id, type=ev.type, ts=float(ev.ts))


def normalise(it: Interaction) -> Interaction:
    return Interaction(item_id=it.item_id, type=it.type, ts=float(it.ts))


class InMemoryStore:
    """Per user: a deque capped at ``max_history`` (oldest dropped), an uncapped consumed set
    and a version counter."""

    def __init__(self, max_history: int = 200) -> None:
        if max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {max_history}")
        self.max_history = max_history
        self._history: dict[str, deque[Interaction]] = {}
        self._consumed: dict[str, set[str]] = {}
        self._version: dict[str, int] = {}
        self._markers: set[str] = set()
        # The write paths contain no awaits today, so they are already atomic on one event loop;
        # the lock keeps them atomic if an await (e.g. persistence) is ever added inside them.
        self._lock = asyncio.Lock()

    def _bump(self, user_id: str) -> None:
        self._version[user_id] = self._version.get(user_id, 0) + 1

    async def append_events(self, events: Sequence[Event]) -> int:
        """Append all events atomically (all or nothing); returns how many were written.

        Raises ``ValueError`` (and writes nothing) if any event is malformed."""
        events = list(events)
        validate_events(events)  # everything is checked before the first mutation
        if not events:
            return 0
        async with self._lock:
            touched: set[str] = set()
            for ev in events:
                hist = self._history.get(ev.user_id)
                if hist is None:
                    hist = self._history[ev.user_id] = deque(maxlen=self.max_history)
                hist.append(to_interaction(ev))
                self._consumed.setdefault(ev.user_id, set()).add(ev.item_id)
                touched.add(ev.user_id)
            for user_id in touched:
                self._bump(user_id)
        return len(events)

    async def get_history(self, user_id: str, limit: int) -> list[Interaction]:
        """The most recent ``limit`` interactions, oldest first; [] for an unknown user."""
        hist = self._history.get(user_id)
        if not hist or limit <= 0:
            return []
        return list(islice(hist, max(0, len(hist) - limit), None))

    async def get_consumed(self, user_id: str) -> set[str]:
        # A copy, so callers can't mutate the store's state.
        return set(self._consumed.get(user_id, ()))

    async def history_version(self, user_id: str) -> int:
        return self._version.get(user_id, 0)

    async def is_seeded(self, marker: str) -> bool:
        return marker in self._markers

    async def seed(self, histories: Mapping[str, Sequence[Interaction]], marker: str) -> None:
        """Replace the given users' histories and consumed sets, then record ``marker``.

        Versions are bumped, never reset, so (user, version) cache keys can't be reused."""
        validate_histories(histories)
        async with self._lock:
            for user_id, history in histories.items():
                items = [normalise(it) for it in history]
                self._history[user_id] = deque(items, maxlen=self.max_history)
                self._consumed[user_id] = {it.item_id for it in items}
                self._bump(user_id)
            self._markers.add(marker)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None
