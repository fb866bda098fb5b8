"""Start-up work: load the artifacts, wire the pipeline, seed the store."""

from __future__ import annotations

import asyncio
import logging

import torch

from models.data import load_dataset
from service import metrics
from service.pipeline.factory import build_components
from service.runtime import Runtime
from service.state import AppState
from service.stores.base import Interaction

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
    try:
        torch.set_num_threads(s.torch_threads)
        rt = await asyncio.to_thread(Runtime.load, s.artifacts_dir, s.hnsw_ef_search)
        components = build_components(rt, s)
        if s.seed_store:
            await seed_store(state, rt)
        state.runtime, state.components = rt, components
        for name in ("two_tower", *rt.rankers):
            metrics.MODEL_INFO.labels(name, rt.version).set(1)
        metrics.READY.set(1)
        log.info("artifacts %s loaded (version %s)", s.artifacts_dir, rt.version)
    except Exception as exc:  # surfaced through /readyz rather than crashing the server
        log.exception("loading artifacts failed")
        state.load_error = f"{type(exc).__name__}: {exc}"
