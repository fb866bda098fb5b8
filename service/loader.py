"""Start-up: the first load of the artifacts (with a fallback to an older version when the
current one is rejected), the store's seeding, then the watch on ``current`` that reloads new
versions. Loading, validating and swapping a version is ``service.lifecycle``'s.

``load_into`` is the app's one background task (``service.app``): the first load, then the
watch, inside that task, so cancelling it on shutdown ends both."""

from __future__ import annotations

import asyncio
import functools
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
from service.stores.base import Interaction

__all__ = ["Available", "check_arms", "guard", "load_into", "seed_store", "start", "watch"]
log = logging.getLogger("genrec")


async def seed_store(state: AppState, rt: Runtime) -> None:
    """Seed the store with the training dataset's histories, once per dataset fingerprint."""
    info = rt.manifest["dataset"]
    marker = info["fingerprint"]
    if await state.store.is_seeded(marker):
        return
    ds = await asyncio.to_thread(load_dataset, info["source"])
    if ds.fingerprint != marker:
        log.warning("dataset %s changed since the artifacts were built; not seeding",
                    info["source"])
        return
    items = ds.items.ids
    histories = {}
    for u, seq in enumerate(ds.sequences):
        ts = ds.timestamps[u] if ds.timestamps is not None else None
        histories[ds.users.ids[u]] = [
            Interaction(items[i], "view", float(ts[j]) if ts is not None else 0.0)
            for j, i in enumerate(seq.tolist())
        ]
    await state.store.seed(histories, marker)
    log.info("seeded the store with %d users", len(histories))


async def load_into(state: AppState) -> None:
    s = state.settings
    torch.set_num_threads(s.torch_threads)
    if s.seed_store:  # every version offered seeds first (a no-op once its dataset is in)
        state.models.seed = functools.partial(seed_store, state)
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
