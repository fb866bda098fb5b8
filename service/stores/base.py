"""The user-sequence store interface. The pipeline only sees this protocol; the backend is
picked by URL in ``service.stores.factory``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from service.stores.breaker import StoreUnavailable

__all__ = ["EVENT_TYPES", "Event", "Interaction", "StoreUnavailable", "UserStore", "store_health"]

EVENT_TYPES = ("view", "click", "like", "purchase")


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
    also has ``async health() -> dict`` (see ``store_health``)."""

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
        """Replace the given users' histories and consumed sets, then record ``marker``."""
        ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


async def store_health(store: UserStore) -> dict[str, Any]:
    """The store's ``health()``: ``{"ok": bool, "backend": "redis" | "memory", "breaker":
    "closed" | "open" | "half_open", "last_error": str | None, "last_error_at": unix seconds |
    None, "resets": int}``. Never raises. A store without ``health()`` (the embedded one) is
    always up."""
    health = getattr(store, "health", None)
    if health is not None:
        return await health()
    return {"ok": await store.ping(), "backend": "memory", "breaker": "closed",
            "last_error": None, "last_error_at": None, "resets": 0}
