"""Artifact versions in and out while the service runs.

A candidate version is loaded in a worker thread while the current one keeps serving, then
validated, in order: checksums (``versions.verify``), every config rebuilds its model
(``Runtime.load``), tensor shapes against the configs and the id maps (``check_shapes``) and
finite values (``check_values``), the experiment's arms against the new pipelines, and a
smoke query through every pipeline for a few known users (``service/smoke.py``). Only then
is it swapped in, with one assignment (``AppState.serving``): a request holds the snapshot it
started with, so in-flight requests finish on the old version.

A rejected version is logged, counted (``MODEL_RELOADS{result="rejected"}``), shown by
``GET /admin/models`` and remembered, so the watch on ``current`` does not retry it; the old
version keeps serving. New components bring new per-user caches (the HSTU ranker's M-FALCON
K/V store): nothing computed by one version's models is served by another's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

from models.artifacts.shapes import check_shapes, check_values, mismatched_net
from models.artifacts.versions import (
    CURRENT,
    MANIFEST,
    current_version,
    list_versions,
    resolve_artifacts,
    set_current,
    verify,
    version_path,
)
from models.engine.core.pipeline import Pipeline
from models.engine.core.runtime import Runtime
from models.engine.factory import Components, build_components
from models.registry import RANKERS, RECALL, Stage, canonical
from service import metrics
from service.config import Settings
from service.errors import InvalidFieldError
from service.experiments import Experiment, ExperimentConfigError
from service.smoke import SmokeFailed, Step, inline, smoke, smoke_users
from service.state import AppState, Rejection, Serving
from service.user_context import load_context

log = logging.getLogger("genrec")
MAX_REASON = 2_000  # characters of a rejection reason kept
T = TypeVar("T")


class Rejected(Exception):
    """A version failed validation; ``reason`` names the file or component."""

    def __init__(self, reason: str, directory: Path | None = None) -> None:
        # One line (torch's load errors span many), bounded: it goes to logs and JSON.
        reason = " ".join(reason.split())
        reason = reason if len(reason) <= MAX_REASON else reason[:MAX_REASON - 3] + "..."
        super().__init__(reason)
        self.reason, self.directory = reason, directory


class NoVersionsRoot(Exception):
    """The artifacts directory is one version itself: there is no ``current`` to move."""


# --- wiring a loaded version ---------------------------------------------------------------


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


# --- one candidate ------------------------------------------------------------------------


def load_candidate(directory: Path, settings: Settings, step: Step | None = None
                   ) -> tuple[Runtime, Components]:
    """Checksums, load, shapes, wiring: everything that needs no store. Runs in a worker
    thread; raises ``Rejected`` naming the file or component. ``step(fn)`` runs each piece
    of Python-heavy work (one component's load, the checks, the wiring): the service passes
    its compute lane's ``run_background``, so requests never share the GIL with them; the
    checksums stay on the worker thread (hashing and file reads release the GIL)."""
    run: Step = step or inline
    try:
        manifest = orjson.loads((directory / MANIFEST).read_bytes())
    except (OSError, ValueError) as exc:
        raise Rejected(f"{MANIFEST}: unreadable ({type(exc).__name__}: {exc})") from None
    if "files" in manifest:
        problems = verify(directory)
        if problems:
            raise Rejected("checksums: " + "; ".join(problems))
    else:  # the layout before versions listed no files: nothing to check against
        log.warning("%s: manifest lists no files, checksums not verified", directory)
    try:
        rt = Runtime.load(directory, settings.hnsw_ef_search, step=step)
    except Exception as exc:
        raise Rejected(f"load: {mismatched_net(directory)}{type(exc).__name__}: {exc}") from None
    problems = run(lambda: check_shapes(rt))
    if problems:
        raise Rejected("shapes: " + "; ".join(problems))
    problems = run(lambda: check_values(rt))
    if problems:
        raise Rejected("values: " + "; ".join(problems))
    try:
        return rt, guard(run(lambda: build_components(rt, settings)))
    except Exception as exc:
        raise Rejected(f"components: {type(exc).__name__}: {exc}") from None


async def prepare(state: AppState, directory: Path) -> Serving:
    """Load and validate ``directory`` off the event loop's thread; -> a snapshot ready to
    swap in. Raises ``Rejected``; the serving version is untouched either way."""
    s = state.settings
    try:
        lane = state.compute.run_background
        rt, components = await asyncio.to_thread(load_candidate, directory, s, lane)
        try:
            arm_params = check_arms(state.experiment, components.pipelines)
        except ExperimentConfigError as exc:
            raise Rejected(f"{type(exc).__name__}: {exc}") from None
        if state.models.seed is not None:
            try:  # the store's state is no fault of the version: serve it anyway
                await state.models.seed(rt)
            except Exception:
                log.exception("seeding the store for %s failed", directory)
        contexts = []
        for user in smoke_users(rt, s.smoke_users):
            # An unavailable store gives the cold context: a version is never rejected for
            # the store's state (it then serves degraded answers like any request).
            ctx, _ = await load_context(rt, state.store, user, limit=rt.max_history)
            # No store version: the smoke run must not fill the candidate's per-user caches.
            contexts.append(dataclasses.replace(ctx, version=None))
        try:
            await asyncio.to_thread(smoke, rt, components, contexts, [
                (a.name, a.path, arm_params[a.name]) for a in state.experiment.arms], lane)
        except SmokeFailed as exc:
            raise Rejected(str(exc)) from None
    except Rejected as exc:
        exc.directory = directory
        raise
    except Exception as exc:  # anything unforeseen still rejects, never half-swaps
        raise Rejected(f"{type(exc).__name__}: {exc}", directory) from exc
    return Serving(runtime=rt, components=components, arm_params=arm_params,
                   loaded_at=time.time())


# --- swapping -------------------------------------------------------------------------------


def swap(state: AppState, serving: Serving, result: str = "swapped") -> None:
    """Make ``serving`` the served version: one assignment, no await in between."""
    old = state.serving
    state.serving = serving
    state.results.clear()  # keyed by version: the old version's lists would only take room
    state.load_error = None
    if old is not None and old.directory != serving.directory:
        state.models.previous = old.directory
    metrics.MODEL_RELOADS.labels(result).inc()
    metrics.SERVING_VERSION.clear()
    metrics.SERVING_VERSION.labels(serving.version).set(1)
    metrics.MODEL_INFO.clear()
    for name in ("two_tower", *serving.components.rankers):
        metrics.MODEL_INFO.labels(name, serving.version).set(1)
    metrics.READY.set(1)
    log.info("serving artifacts %s (version %s, %s)", serving.directory, serving.version,
             result)


def reject(state: AppState, exc: Rejected) -> Rejection:
    directory = exc.directory or Path("?")
    rejection = Rejection(version=version_name(directory), directory=directory,
                          reason=exc.reason, at=time.time())
    state.models.last_rejection = rejection
    state.models.rejected.add(directory)
    metrics.MODEL_RELOADS.labels("rejected").inc()
    log.error("artifact version %s rejected, keeping what serves: %s", rejection.version,
              exc.reason)
    return rejection


def version_name(directory: Path) -> str:
    try:
        return str(orjson.loads((directory / MANIFEST).read_bytes())["version"])
    except (OSError, ValueError, TypeError, KeyError):
        return directory.name


async def offer(state: AppState, directory: Path) -> Serving:
    """Prepare ``directory`` with the reload flag up; a rejection is recorded and re-raised."""
    state.models.reloading = True
    try:
        return await prepare(state, directory)
    except Rejected as exc:
        reject(state, exc)
        raise
    finally:
        state.models.reloading = False


def versions_root(settings: Settings) -> Path | None:
    """The artifacts root that holds (or will hold) ``versions/`` and ``current``; None when
    the configured directory is one version itself (or the layout before versions)."""
    root = Path(settings.artifacts_dir)
    return None if (root / MANIFEST).is_file() else root


# --- reload, rollback, start, watch ----------------------------------------------------------


async def reload(state: AppState, version: str | None = None) -> tuple[Serving, bool]:
    """Serve what ``current`` points to, or the published ``version`` (then ``current`` is
    pointed at it too, so the watch does not take it away again); -> (serving, whether it
    changed). Raises ``Rejected`` (the old version keeps serving), FileNotFoundError or
    ValueError for an unknown version name, ``NoVersionsRoot``."""
    root = versions_root(state.settings)
    async with state.models.lock:
        if version is None:
            directory = (await asyncio.to_thread(resolve_artifacts, state.settings.artifacts_dir)
                         ).resolve()
        elif root is None:
            raise NoVersionsRoot(f"{state.settings.artifacts_dir} is a single version")
        else:
            directory = version_path(root, version).resolve()
        serving = state.serving
        if serving is not None and serving.directory == directory:
            if version is not None and root is not None:
                set_current(root, directory.name)  # serving it already; the watch keeps it
            return serving, False
        candidate = await offer(state, directory)
        if version is not None and root is not None:
            set_current(root, directory.name)
        swap(state, candidate)
        return candidate, True


async def rollback(state: AppState) -> Serving:
    """Serve the previous good version and point ``current`` back at it: the version that
    served before this one, else the newest older one on disk that validates. Raises
    ``NoVersionsRoot``, or ``Rejected`` when no earlier version validates."""
    root = versions_root(state.settings)
    if root is None:
        raise NoVersionsRoot(f"{state.settings.artifacts_dir} is a single version: there is no "
                             f"{CURRENT} to move")
    async with state.models.lock:
        serving = state.serving
        here = serving.directory if serving is not None else current_version(root)
        on_disk = [p.resolve() for p in await asyncio.to_thread(list_versions, root)]
        older = on_disk[on_disk.index(here) + 1:] if here in on_disk else on_disk
        targets = [state.models.previous] if state.models.previous in on_disk else []
        targets += [p for p in older if p not in state.models.rejected]
        reasons = []
        for directory in dict.fromkeys(t for t in targets if t != here):
            try:
                candidate = await offer(state, directory)
            except Rejected as exc:
                reasons.append(f"{directory.name}: {exc.reason}")
                continue
            set_current(root, directory.name)  # first: a failed flip leaves things as they were
            swap(state, candidate, "rollback")
            state.models.previous = None  # a second rollback goes further back, not forward
            return candidate
        if not reasons:
            raise Rejected(f"no version older than {here.name if here else 'none'} on disk")
        raise Rejected("no earlier version validates: " + "; ".join(reasons))
