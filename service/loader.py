"""Start-up work: load the artifacts, wire the pipeline, check the experiment's arms against it,
seed the store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import torch

from models.artifacts.versions import resolve_artifacts
from models.data import load_dataset
from models.engine.core.pipeline import Pipeline
from models.engine.core.runtime import Runtime
from models.engine.factory import Components, build_components
from models.registry import RANKERS, RECALL, Stage, canonical
from service import metrics
from service.errors import InvalidFieldError
from service.experiments import Experiment, ExperimentConfigError
from service.state import AppState
from service.stores.base import Interaction

log = logging.getLogger("genrec")
T = TypeVar("T")


class Available(dict[str, T]):
    """A name -> stage dict for the request handlers: an earlier name (``models.registry``
    aliases, e.g. ``hstu``) finds its stage, and a name this deployment doesn't build (yet) is
    a 422 naming the request field, never a KeyError 500 (e.g. ``/recall`` with ``"method":
    "semantic_id"`` on artifacts without it)."""

    def __init__(self, entries: Mapping[str, T], loc: Sequence[str], what: str,
                 table: tuple[Stage, ...] = ()) -> None:
        super().__init__(entries)
        self.loc, self.what, self.table = list(loc), what, table

    def __missing__(self, key: str) -> T:
        name = canonical(self.table, key)
        if name != key and name in self:
            return self[name]
        raise InvalidFieldError(self.loc, f"{self.what} {key!r} is not available in this "
                                          f"deployment (available: {', '.join(sorted(self))})")


def guard(components: Components) -> Components:
    components.recall = Available(components.recall, ["body", "method"], "recall method", RECALL)
    components.rankers = Available(components.rankers, ["body", "model"], "ranker", RANKERS)
    components.rerankers = Available(components.rerankers, ["body", "method"], "rerank method")
    return components


def check_arms(experiment: Experiment, pipelines: Mapping[str, Pipeline]
               ) -> dict[str, dict[str, Any]]:
    """Each arm's params as checked by its path's pipeline. An arm whose path isn't served, or
    whose params its pipeline rejects, raises ``ExperimentConfigError`` naming the arm."""
    checked: dict[str, dict[str, Any]] = {}
    for i, arm in enumerate(experiment.arms):
        where = f"experiment {experiment.name!r}: arms.{i} ({arm.name!r})"
        pipeline = pipelines.get(arm.path)
        if pipeline is None:
            raise ExperimentConfigError(
                f"{where}: path: {arm.path!r} is not served by this deployment "
                f"(served: {', '.join(sorted(pipelines)) or 'none'})")
        try:
            checked[arm.name] = pipeline.check_params(arm.params)
        except ValueError as exc:
            raise ExperimentConfigError(f"{where}: {exc}") from None
    return checked


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
        # An artifacts root serves its current version, resolved once (resolve_artifacts).
        directory = await asyncio.to_thread(resolve_artifacts, s.artifacts_dir)
        rt = await asyncio.to_thread(Runtime.load, directory, s.hnsw_ef_search)
        components = guard(build_components(rt, s))
        state.arm_params = check_arms(state.experiment, components.pipelines)
        if s.seed_store:
            await seed_store(state, rt)
        state.runtime, state.components = rt, components
        for name in ("two_tower", *components.rankers):
            metrics.MODEL_INFO.labels(name, rt.version).set(1)
        metrics.READY.set(1)
        log.info("artifacts %s loaded (version %s)", rt.directory, rt.version)
    except Exception as exc:  # surfaced through /readyz rather than crashing the server
        log.exception("loading artifacts failed")
        state.load_error = f"{type(exc).__name__}: {exc}"
