"""The user-sequence store interface. The pipeline only sees this protocol; the backend is
picked by URL in ``service.stores.factory``."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from service.stores.breaker import StoreUnavailable

__all__ = ["EVENT_TYPES", "SEEDED", "SEED_FAILED", "SEED_PENDING", "SEED_RUNNING", "SEED_SKIPPED",
           "Event", "Interaction", "SeedLog", "StoreUnavailable", "UserStore", "store_health"]

EVENT_TYPES = ("view", "click", "like", "purchase")
# A seed marker's state in this process (``SeedLog``), as /readyz shows it (store.seeding).
SEED_PENDING, SEED_RUNNING, SEEDED = "pending", "running", "seeded"
SEED_SKIPPED, SEED_FAILED = "skipped", "failed"


class SeedLog:
    """What this process knows of a store's seeding, per seed marker: ``pending`` (wanted but
    not in the store: Redis was unavailable when it was tried, was cut off mid-seed, or lost
    the marker; the store watch retries once Redis answers), ``running``, ``seeded`` (written,
    or found there), ``skipped`` (the dataset changed since the build: never seeded) or
    ``failed`` (an error a retry would repeat); the reasons go to the log.
    ``service.loader.seed_store`` and ``service.store_watch`` write it; the store keeps it so
    its health reports it. ``state`` is the focused marker's (the serving version's, once the
    watch runs)."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.marker: str | None = None  # the marker whose state is reported
        self.lock = asyncio.Lock()  # one seed run at a time per store

    def set(self, marker: str, state: str) -> None:
        self.states[marker] = state
        self.marker = marker

    def focus(self, marker: str) -> None:
        """Report ``marker``'s state from now on."""
        self.marker = marker

    def get(self, marker: str) -> str | None:
        return self.states.get(marker)

    @property
    def state(self) -> str | None:
        """The focused marker's state; None before any seed was asked (or seeding is off)."""
        return None if self.marker is None else self.states.get(self.marker)


@dataclass(frozen=True, slots=True)
class Interaction:
    """One interaction of a user. Ids are the external string ids."""

    item_id: str
    type: str = "view"
    ts: float = 0.0  # unix seconds


@dataclass(frozen=True, slots=True)
class Event:
    user_id: str
    item_id: str
    type: str = "view"
    ts: float = 0.0


class UserStore(Protocol):
    """Per user: a capped list of recent interactions (time order, oldest first) and the set of
    every item id the user has consumed (never capped).

    A backend that can become unreachable raises ``StoreUnavailable`` from any method when it
    is (down, hung, circuit open); ``append_events`` then has written nothing. Such a backend
    also has ``async health() -> dict`` (see ``store_health``). Every backend carries a
    ``seeding`` ``SeedLog``."""

    seeding: SeedLog

    async def append_events(self, events: Sequence[Event]) -> int:
        """Append all events atomically (all or nothing); returns how many were written."""
        ...

    async def get_history(self, user_id: str, limit: int) -> list[Interaction]:
        """The most recent ``limit`` interactions, oldest first; [] for an unknown user."""
        ...

    async def get_consumed(self, user_id: str) -> set[str]: ...

    async def history_version(self, user_id: str) -> int:
        """A counter that changes whenever the user's history changes (0 for unknown users);
        caches keyed by (user, version) stay valid until the next write."""
        ...

    async def is_seeded(self, marker: str) -> bool: ...

    async def seed(self, histories: Mapping[str, Sequence[Interaction]], marker: str) -> None:
        """Replace the given users' histories and consumed sets, then record ``marker``: only
        once every user is in, so a seed cut short (an error, Redis restarted empty in
        between) is never taken as done, and is simply run again."""
        ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


async def store_health(store: UserStore) -> dict[str, Any]:
    """The store's ``health()``: ``{"ok": bool, "backend": "redis" | "memory", "breaker":
    "closed" | "open" | "half_open", "last_error": str | None, "last_error_at": unix seconds |
    None, "resets": int, "seeding": SeedLog.state}``. Never raises. A store without
    ``health()`` (the embedded one) is always up."""
    health = getattr(store, "health", None)
    if health is not None:
        return await health()
    return {"ok": await store.ping(), "backend": "memory", "breaker": "closed",
            "last_error": None, "last_error_at": None, "resets": 0,
            "seeding": store.seeding.state}
