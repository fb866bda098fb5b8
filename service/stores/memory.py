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
from array import array
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from service import metrics
from service.stores.base import EVENT_TYPES, Event, Interaction, SeedLog

# Distinct item ids whose one string object is shared by every user (see ``_item``).
ITEM_ID_TABLE_MAX = 250_000
_TYPE_CODE = {name: code for code, name in enumerate(EVENT_TYPES)}


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


class _User:
    """One user's state. History is kept column-wise (item ids, a float array of timestamps, a
    byte per event type) rather than as ``Interaction`` objects: about 17 bytes per kept event
    instead of ~130, and ``Interaction``s are built only for the rows a read returns.

    ``dropped`` holds the consumed items that have left the capped history, so the consumed
    set is ``items`` plus ``dropped``: no set at all for the many users who never filled their
    history (a set of 20 ids is 2.2 KB, as much as the rest of such a user)."""

    __slots__ = ("items", "ts", "types", "dropped", "version")

    def __init__(self) -> None:
        self.items: list[str] = []
        self.ts = array("d")
        self.types = bytearray()
        self.dropped: set[str] | None = None
        self.version = 0

    def append(self, item_id: str, type_code: int, ts: float, cap: int) -> None:
        self.items.append(item_id)
        self.ts.append(ts)
        self.types.append(type_code)
        if len(self.items) > cap:  # oldest out; a memmove of at most `cap` slots
            if self.dropped is None:
                self.dropped = set()
            self.dropped.add(self.items[0])
            del self.items[0], self.ts[0], self.types[0]

    def consumed(self) -> set[str]:
        """A new set: every item ever appended."""
        out = set(self.items)
        if self.dropped is not None:
            out |= self.dropped
        return out

    def tail(self, limit: int) -> list[Interaction]:
        start = max(0, len(self.items) - limit)
        return [Interaction(i, EVENT_TYPES[c], t) for i, c, t in
                zip(self.items[start:], self.types[start:], self.ts[start:], strict=True)]


class InMemoryStore:
    """Per user: the last ``max_history`` interactions, the uncapped set of every item consumed
    and a version.

    At most ``max_users`` users are kept; past that the least recently used one (read or
    written) is evicted, so ``/events`` from an unbounded stream of new users can't grow the
    process without bound. An evicted user reads as unknown (empty history, version 0) and
    starts afresh if written again.

    The users live in one ``OrderedDict`` of ``_User`` records, hand-rolled rather than
    cachetools' ``LRUCache``: one map keeps history, consumed set and version in lock-step, and
    eviction is one ``popitem(last=False)`` that can count itself (LRUCache keeps a second
    ordering map per key and needs a ``popitem`` override for the counter)."""

    def __init__(self, max_history: int = 200, max_users: int = 200_000) -> None:
        if max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {max_history}")
        if max_users < 1:
            raise ValueError(f"max_users must be >= 1, got {max_users}")
        self.max_history, self.max_users = max_history, max_users
        self._users: OrderedDict[str, _User] = OrderedDict()
        # Versions come from one store-wide counter, so a user evicted and written again never
        # gets a version it had before: (user, version) cache keys stay unique.
        self._clock = 0
        # One string object per distinct item id, shared by every user's history and consumed
        # set (~50 bytes saved per stored event); bounded, so arbitrary ids can't grow it.
        self._item_ids: dict[str, str] = {}
        self._markers: set[str] = set()
        self.seeding = SeedLog()  # what the service asked of this store's seeding (/readyz)
        # The write paths contain no awaits today, so they are already atomic on one event loop;
        # the lock keeps them atomic if an await (e.g. persistence) is ever added inside them.
        self._lock = asyncio.Lock()
        metrics.STORE_USERS.set(0)

    def __len__(self) -> int:
        return len(self._users)

    def _item(self, item_id: str) -> str:
        shared = self._item_ids.get(item_id)
        if shared is not None:
            return shared
        if len(self._item_ids) < ITEM_ID_TABLE_MAX:
            self._item_ids[item_id] = item_id
        return item_id

    def _used(self, user_id: str) -> _User | None:
        """The user's record, marked most recently used; None (and no entry) if unknown."""
        user = self._users.get(user_id)
        if user is not None:
            self._users.move_to_end(user_id)
        return user

    def _for_write(self, user_id: str, fresh: bool = False) -> _User:
        """The user's record (a new one if unknown or ``fresh``), most recently used, with a
        new version; evicts the least recently used users beyond ``max_users``."""
        user = None if fresh else self._used(user_id)
        if user is None:
            user = self._users[user_id] = _User()
            self._users.move_to_end(user_id)  # a replaced key keeps its old position
            while len(self._users) > self.max_users:
                self._users.popitem(last=False)
                metrics.STORE_EVICTIONS.inc()
        self._clock += 1
        user.version = self._clock
        return user

    async def append_events(self, events: Sequence[Event]) -> int:
        """Append all events atomically (all or nothing); returns how many were written.

        Raises ``ValueError`` (and writes nothing) if any event is malformed."""
        events = list(events)
        validate_events(events)  # everything is checked before the first mutation
        if not events:
            return 0
        async with self._lock:
            touched: dict[str, _User] = {}
            for ev in events:
                user = touched.get(ev.user_id)
                # One version bump per user and batch. A record evicted by this very batch
                # (more distinct users than max_users) is written afresh.
                if user is None or self._users.get(ev.user_id) is not user:
                    user = touched[ev.user_id] = self._for_write(ev.user_id)
                user.append(self._item(ev.item_id), _TYPE_CODE[ev.type], float(ev.ts),
                            self.max_history)
            metrics.STORE_USERS.set(len(self._users))
        return len(events)

    async def get_history(self, user_id: str, limit: int) -> list[Interaction]:
        """The most recent ``limit`` interactions, oldest first; [] for an unknown user."""
        user = self._used(user_id)
        if user is None or limit <= 0:
            return []
        return user.tail(limit)

    async def get_consumed(self, user_id: str) -> set[str]:
        user = self._used(user_id)
        return user.consumed() if user is not None else set()  # a new set: callers may mutate

    async def history_version(self, user_id: str) -> int:
        user = self._used(user_id)
        return user.version if user is not None else 0

    async def is_seeded(self, marker: str) -> bool:
        return marker in self._markers

    async def seed(self, histories: Mapping[str, Sequence[Interaction]], marker: str) -> None:
        """Replace the given users' histories and consumed sets, then record ``marker``.

        Versions are bumped, never reset, so (user, version) cache keys can't be reused."""
        validate_histories(histories)
        async with self._lock:
            for user_id, history in histories.items():
                user = self._for_write(user_id, fresh=True)
                for it in history:
                    user.append(self._item(it.item_id), _TYPE_CODE[it.type], float(it.ts),
                                self.max_history)
            self._markers.add(marker)
            metrics.STORE_USERS.set(len(self._users))

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None
