"""The store-reset watch: a Redis that comes back empty (restarted without persistence, or
flushed) has lost the seed marker, so the service re-seeds it without a restart.

Every ``interval_s`` the task asks the store whether the current artifacts' seed marker is
there. Only a marker the store has seen (seeded or found) and now finds gone counts as a reset
(the store's ``health()["resets"]``; ``STORE_RESETS`` once re-seeded); a marker never written
(seeding off, or the dataset changed since the build) is not chased. Redis being unavailable
is not a reset: the check is skipped until it answers again.
"""

from __future__ import annotations

import asyncio
import logging

from service import metrics
from service.loader import seed_store
from service.state import AppState
from service.stores.base import StoreUnavailable

log = logging.getLogger("genrec")


async def check_once(state: AppState, pending: set[str]) -> bool:
    """One check; True when a reset was found and the store re-seeded. ``pending`` holds the
    markers found gone but not yet re-seeded (kept by the caller between checks, so a re-seed
    cut short by another outage is tried again)."""
    rt, store = state.runtime, state.store
    resets = getattr(store, "resets", None)
    if rt is None or not state.settings.seed_store or resets is None:
        return False  # nothing served yet, seeding off, or a store that can't be reset
    marker = rt.manifest["dataset"]["fingerprint"]
    try:
        present = await store.is_seeded(marker)
    except StoreUnavailable:
        return False
    if present:
        pending.discard(marker)
        return False
    if store.resets > resets:  # the store had seen this marker: Redis lost its data
        pending.add(marker)
    if marker not in pending:
        return False
    log.warning("store reset detected (seed marker %s gone); re-seeding", marker)
    try:
        await seed_store(state, rt)
    except StoreUnavailable:
        return False  # Redis went away mid-seed; the marker is still absent: tried again
    pending.discard(marker)
    metrics.STORE_RESETS.inc()
    return True


async def watch(state: AppState, interval_s: float) -> None:
    """Runs until cancelled (app shutdown)."""
    pending: set[str] = set()
    while True:
        await asyncio.sleep(interval_s)
        try:
            await check_once(state, pending)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not kill the watch; it is logged each time
            log.exception("store reset check failed")
