"""The store watch: seeds what the store should hold but doesn't, without a restart.

Every ``interval_s`` the task asks the store whether the serving version's seed marker is
there, and runs ``service.loader.seed_store`` (its one seeding path) when it is not and
either:

- the store lost it: a marker the store has seen (seeded or found) and now finds gone is a
  reset, a Redis that came back empty (restarted without persistence, or flushed); the
  store's ``health()["resets"]`` counts it, ``STORE_RESETS`` once re-seeded; or
- its seeding is pending (``SeedLog``): Redis was unavailable when the version was loaded
  (the service started, or reloaded, while Redis was down or hung), or went away mid-seed.

A marker never asked for, or not to be written (seeding off, the dataset changed since the
build: ``skipped``), or whose seeding failed for another reason (``failed``, logged) is not
chased. Redis being unavailable is not a reset: the check is skipped until it answers again.
The check also points the store's ``seeding`` report (/readyz) at the serving version.
"""

from __future__ import annotations

import asyncio
import logging

from service import metrics
from service.loader import seed_store
from service.state import AppState
from service.stores.base import SEED_PENDING, SEEDED, StoreUnavailable

log = logging.getLogger("genrec")


async def check_once(state: AppState, lost: set[str]) -> bool:
    """One check; True when the store was seeded by it. ``lost`` holds the markers found gone
    but not yet re-seeded (kept by the caller between checks, so a re-seed cut short by
    another outage still counts as a reset's when it completes)."""
    rt, store = state.runtime, state.store
    resets = getattr(store, "resets", None)
    if rt is None or not state.settings.seed_store or resets is None:
        return False  # nothing served yet, seeding off, or a store that can't be reset
    marker = rt.manifest["dataset"]["fingerprint"]
    seeding = store.seeding
    seeding.focus(marker)
    try:
        present = await store.is_seeded(marker)
    except StoreUnavailable:
        return False
    if present:
        lost.discard(marker)
        if seeding.get(marker) != SEEDED:  # seeded by another replica meanwhile
            seeding.set(marker, SEEDED)
        return False
    if store.resets > resets:  # the store had seen this marker: Redis lost its data
        lost.add(marker)
        seeding.set(marker, SEED_PENDING)
    if seeding.get(marker) != SEED_PENDING:
        return False
    if marker in lost:
        log.warning("store reset detected (seed marker %s gone); re-seeding", marker)
    else:
        log.info("Redis answers: running the pending seeding (marker %s)", marker)
    if await seed_store(state, rt) != SEEDED:
        return False  # pending again (Redis went away mid-seed): tried at the next check
    if marker in lost:
        lost.discard(marker)
        metrics.STORE_RESETS.inc()
    return True


async def watch(state: AppState, interval_s: float) -> None:
    """Runs until cancelled (app shutdown)."""
    lost: set[str] = set()
    while True:
        await asyncio.sleep(interval_s)
        try:
            await check_once(state, lost)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not kill the watch; it is logged each time
            log.exception("store reset check failed")
