"""Embedded, process-local ``ExposureLog``: the twin used when the store is in memory.

Requests live in a bounded ``cachetools.FIFOCache``, so no I/O happens and the methods are async
only to satisfy the protocol. Like the Redis twin's TTL, a request is forgotten by age of
recording (oldest first), never refreshed by a click. Data is lost on restart and not shared
between workers.
"""

from __future__ import annotations

from collections.abc import Sequence

from cachetools import FIFOCache

from service.exposures.base import Exposure

# One remembered request: the exposure, its item ids as a set, and the items already credited.
_Entry = tuple[Exposure, frozenset[str], set[str]]


class InMemoryExposureLog:
    """Process-local ``ExposureLog``. Remembers at most ``max_exposures`` requests (oldest
    dropped first); counters are cumulative and unaffected by eviction."""

    def __init__(self, max_exposures: int = 100_000, arms: Sequence[str] = ()) -> None:
        if max_exposures < 1:
            raise ValueError("max_exposures must be >= 1")
        self.max_exposures = max_exposures
        self._entries: FIFOCache[str, _Entry] = FIFOCache(maxsize=max_exposures)
        self._counts: dict[str, dict[str, int]] = {a: {"exposures": 0, "clicks": 0} for a in arms}

    def __len__(self) -> int:
        return len(self._entries)

    def _counter(self, arm: str) -> dict[str, int]:
        return self._counts.setdefault(arm, {"exposures": 0, "clicks": 0})

    async def record_exposure(
        self, request_id: str, user_id: str, arm: str, item_ids: Sequence[str], ts: float
    ) -> bool:
        if request_id in self._entries:
            return False
        exposure = Exposure(request_id, user_id, arm, tuple(item_ids), float(ts))
        # A full cache drops its oldest entry to make room.
        self._entries[request_id] = (exposure, frozenset(exposure.item_ids), set())
        self._counter(arm)["exposures"] += 1
        return True

    async def attribute_click(self, request_id: str, item_id: str) -> str | None:
        entry = self._entries.get(request_id)
        if entry is None:
            return None
        exposure, items, clicked = entry
        if item_id not in items or item_id in clicked:
            return None
        clicked.add(item_id)
        self._counter(exposure.arm)["clicks"] += 1
        return exposure.arm

    async def get_exposure(self, request_id: str) -> Exposure | None:
        entry = self._entries.get(request_id)
        return entry[0] if entry is not None else None

    async def counters(self) -> dict[str, dict[str, int]]:
        return {arm: dict(c) for arm, c in self._counts.items()}
