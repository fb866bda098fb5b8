"""Start-up: the first load of the artifacts (with a fallback to an older version when the
current one is rejected), the store's seeding, then the watch on ``current`` that reloads new
versions. Loading, validating and swapping a version is ``service.lifecycle``'s.

``load_into`` is the app's one background task (``service.app``): the first load, then the
watch, inside that task, so cancelling it on shutdown ends both."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
from pathlib import Path

import torch

from models.artifacts.versions import CURRENT, current_version, list_versions, resolve_artifacts
from models.data import load_dataset
from models.engine.core.runtime import Runtime
from service.lifecycle import (  # Available, guard, check_arms: re-exported for callers
    Available,
    Rejected,
    check_arms,
    guard,
    offer,
    reject,
    reload,
    swap,
    version_name,
    versions_root,
)
from service.state import AppState
from service.stores.base import (
    SEED_FAILED,
    SEED_PENDING,
    SEED_RUNNING,
    SEED_SKIPPED,
    SEEDED,
    Interaction,
    StoreUnavailable,
)

__all__ = ["Available", "check_arms", "guard", "load_into", "seed_store", "start", "watch"]
log = logging.getLogger("genrec")


def _histories(source: str, marker: str) -> dict[str, list[Interaction]] | None:
    """The dataset's histories by external ids; None when it changed since the build (its
    fingerprint is not ``marker``). Worker thread: it reads files and builds every event."""
    ds = load_dataset(source)
    if ds.fingerprint != marker:
        return None
    items = ds.items.ids
    histories = {}
    for u, seq in enumerate(ds.sequences):
        ts = ds.timestamps[u] if ds.timestamps is not None else None
        histories[ds.users.ids[u]] = [
            Interaction(items[i], "view", float(ts[j]) if ts is not None else 0.0)
            for j, i in enumerate(seq.tolist())
        ]
    return histories


async def seed_store(state: AppState, rt: Runtime) -> str:
    """Seed the store with the training dataset's histories, once per dataset fingerprint (the
    seed marker); -> the marker's state, as recorded in ``state.store.seeding`` (``SeedLog``).

    Redis unavailable (down, hung, circuit open, cut off or emptied mid-seed) is no error: the
    marker is left ``pending`` and ``service.store_watch`` runs this again once Redis answers.
    A marker in the store means every user was written (``UserStore.seed``). Other errors
    mark it ``failed`` and propagate. One run at a time per store (a reload and the watch may
    both ask)."""
    store = state.store
    info = rt.manifest["dataset"]
    marker = info["fingerprint"]
    seeding = store.seeding
    async with seeding.lock:
        try:
            if await store.is_seeded(marker):
                seeding.set(marker, SEEDED)
                return SEEDED
            seeding.set(marker, SEED_RUNNING)
            histories = await asyncio.to_thread(_histories, info["source"], marker)
            if histories is None:
                log.warning("dataset %s changed since the artifacts were built; not seeding",
                            info["source"])
                seeding.set(marker, SEED_SKIPPED)
                return SEED_SKIPPED
            await store.seed(histories, marker)
        except StoreUnavailable as exc:
            seeding.set(marker, SEED_PENDING)
            log.warning("seeding the store is pending (%s): retried once Redis answers", exc)
            return SEED_PENDING
        except Exception:
            seeding.set(marker, SEED_FAILED)
            raise
        seeding.set(marker, SEEDED)
        log.info("seeded the store with %d users", len(histories))
        return SEEDED


async def load_into(state: AppState) -> None:
    s = state.settings
    torch.set_num_threads(s.torch_threads)
    # Every version offered seeds first (a no-op once its dataset is in); with Redis
    # unavailable it still loads, and the store watch seeds once Redis answers.
    if s.seed_store:
        state.models.seed = functools.partial(seed_store, state)
    # Everything alive now (torch, numpy, the web stack: ~190k objects) lives as long as the
    # process: out of the cyclic GC's sight, a full collection no longer walks it on the event
    # loop (~50 ms). Frozen before any version loads, so every version stays collectable.
    gc.freeze()
    try:
        await start(state)
    except Exception as exc:  # surfaced through /readyz rather than crashing the server
        log.exception("loading artifacts failed")
        state.load_error = f"{type(exc).__name__}: {exc}"
    await watch(state)


async def start(state: AppState) -> None:
    """The first load: ``current`` (or the configured version), else the newest older version
    that validates; each rejection is reported. If none validates, ``load_error`` names the
    first failure (the current version's) and /readyz stays 503."""
    root = versions_root(state.settings)
    on_disk = [p.resolve() for p in await asyncio.to_thread(list_versions, root)] if root else []
    failures: list[str] = []
    try:
        first = (await asyncio.to_thread(resolve_artifacts, state.settings.artifacts_dir)
                 ).resolve()
        candidates = [first] + (on_disk[on_disk.index(first) + 1:] if first in on_disk else [])
    except FileNotFoundError as exc:
        if not on_disk:
            raise
        # A dangling ``current`` (its version deleted) is damage too: fall back like one.
        link = Path(state.settings.artifacts_dir) / CURRENT
        reject(state, Rejected(f"{CURRENT}: names no version ({exc})", link))
        failures.append(f"{CURRENT}: names no version ({exc})")
        candidates = on_disk
    async with state.models.lock:
        for directory in candidates:
            try:
                swap(state, await offer(state, directory))
                return
            except Rejected as exc:
                failures.append(f"{version_name(directory)}: {exc.reason}" if failures
                                else exc.reason)
    # The current version's reason first and verbatim (it names the file, or the arm).
    state.load_error = failures[0] + (f" (older versions rejected too: "
                                      f"{'; '.join(failures[1:])})" if failures[1:] else "")


async def watch(state: AppState) -> None:
    """Poll ``current`` every ``reload_poll_s`` seconds (0 = off) and reload when it points
    somewhere new. Runs until cancelled (the app's lifespan cancels it on shutdown)."""
    poll = state.settings.reload_poll_s
    root = versions_root(state.settings)
    if poll <= 0 or root is None:
        return
    while True:
        await asyncio.sleep(poll)
        try:
            target = await asyncio.to_thread(current_version, root)
            serving = state.serving
            if (target is None or state.models.lock.locked()
                    or target in state.models.rejected
                    or (serving is not None and serving.directory == target)):
                continue
            await reload(state)
        except Rejected:
            pass  # recorded by reject(); the old version keeps serving
        except Exception:
            log.exception("the reload watch failed; it keeps polling")
