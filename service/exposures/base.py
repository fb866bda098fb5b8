"""The exposure-log interface: the ``ExposureLog`` protocol, the ``Exposure`` record and
``CLICK_TYPES``. Callers only see this protocol; the backend (``memory`` or ``redis``) is
picked by the store URL in ``service.exposures.factory``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

# Event types that count as a click on an exposed item ("view" is an impression, not a click).
CLICK_TYPES = frozenset({"click", "like", "purchase"})


@dataclass(frozen=True, slots=True)
class Exposure:
    request_id: str
    user_id: str
    arm: str
    item_ids: tuple[str, ...]
    ts: float


class ExposureLog(Protocol):
    """Records which arm served which items per request, and attributes clicks back to arms."""

    async def record_exposure(
        self, request_id: str, user_id: str, arm: str, item_ids: Sequence[str], ts: float
    ) -> bool:
        """Remember one served list; False (and nothing counted) if ``request_id`` is known."""
        ...

    async def attribute_click(self, request_id: str, item_id: str) -> str | None:
        """The arm credited with this click, or None when the request is unknown (or forgotten),
        the item was not in that exposure, or this (request_id, item_id) was already counted."""
        ...

    async def counters(self) -> dict[str, dict[str, int]]:
        """``{arm: {"exposures": n, "clicks": m}}`` since start (eviction does not decrement)."""
        ...
