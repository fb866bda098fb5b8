"""The app's shared state: settings, the store, the A/B experiment and its exposure log, and
the artifact version being served.

The served version is one immutable ``Serving`` snapshot (runtime, components, checked arm
params). A reload builds and validates a new snapshot off to the side and swaps it in with one
reference assignment, so a request that took the old snapshot (``service.deps.get_serving``)
finishes on it while the next request gets the new one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.engine.core.runtime import Runtime
from models.engine.factory import Components
from models.registry import COMPONENTS
from service import metrics
from service.compute import ComputeLane
from service.config import Settings
from service.errors import NotReadyError
from service.experiments import Experiment
from service.exposures import ExposureLog
from service.result_cache import ResultCache
from service.stores.base import UserStore


@dataclass(frozen=True)
class Serving:
    """One loaded and validated artifact version. Never mutated once built: a new version is a
    new snapshot."""

    runtime: Runtime
    components: Components
    # Arm name -> params as checked by its pipeline's ``check_params``.
    arm_params: dict[str, dict[str, Any]]
    loaded_at: float  # unix seconds when it started serving

    @property
    def version(self) -> str:
        return self.runtime.version

    @property
    def directory(self) -> Path:
        return self.runtime.directory

    @property
    def partial(self) -> bool:
        """A progressive build's early version: some components are not built yet."""
        return bool(self.runtime.manifest.get("partial", False))

    @property
    def models(self) -> dict[str, str]:
        """Component -> state: "live" when this version holds it (validated, serving),
        "absent" when it does not (a partial version, or an optional one not built)."""
        return {c.name: "live" if c.name in self.runtime.components else "absent"
                for c in COMPONENTS}


@dataclass(frozen=True)
class Rejection:
    """A version that failed validation, and why (the reason names the file or component)."""

    version: str
    directory: Path
    reason: str
    at: float  # unix seconds


@dataclass
class ModelStatus:
    """The loader's bookkeeping (``service.lifecycle``), read by ``GET /admin/models``."""

    reloading: bool = False
    last_rejection: Rejection | None = None
    # Resolved directories that failed validation: the watch never retries them (an explicit
    # POST /admin/models/reload still may).
    rejected: set[Path] = field(default_factory=set)
    # The version that served before the current one (where a rollback goes first).
    previous: Path | None = None
    # One load / validate / swap at a time: the watch, reloads and rollbacks queue on it.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Seeds the store for a version's dataset before its smoke queries (set at start-up when
    # GENREC_SEED_STORE is on; a no-op once that dataset is in).
    seed: Callable[[Runtime], Awaitable[None]] | None = None


@dataclass
class AppState:
    settings: Settings
    store: UserStore
    experiment: Experiment
    exposures: ExposureLog
    serving: Serving | None = None
    # Why nothing serves (start-up failed: every version was rejected or none exists).
    load_error: str | None = None
    models: ModelStatus = field(default_factory=ModelStatus)
    # Where every model call runs (one thread, off the event loop); made from the settings.
    compute: ComputeLane = field(init=False)
    # Served lists by request inputs; the version is part of each key.
    results: ResultCache = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.compute = ComputeLane(s.compute_deadline_ms / 1e3, batch_max=s.batch_max,
                                   batch_wait_s=s.batch_wait_ms / 1e3)
        self.results = ResultCache(s.result_cache_size)
        self.set_experiment(self.experiment)

    # Views of the current snapshot, for callers that predate it. A request handler takes one
    # snapshot through ``service.deps.get_serving`` instead, so a swap cannot split it.
    @property
    def runtime(self) -> Runtime | None:
        return None if self.serving is None else self.serving.runtime

    @property
    def components(self) -> Components | None:
        return None if self.serving is None else self.serving.components

    @property
    def arm_params(self) -> dict[str, dict[str, Any]]:
        return {} if self.serving is None else self.serving.arm_params

    @property
    def ready(self) -> bool:
        return self.serving is not None

    def require_serving(self) -> Serving:
        serving = self.serving  # read once: a swap between two reads cannot mix versions
        if serving is None:
            raise NotReadyError()
        return serving

    def require(self) -> tuple[Runtime, Components]:
        serving = self.require_serving()
        return serving.runtime, serving.components

    def set_experiment(self, experiment: Experiment) -> None:
        """Swap the experiment (one reference assignment: a request sees the old split or the
        new one, never a mix). Only shares may change at runtime: arms and params stay."""
        self.experiment = experiment
        metrics.AB_SHARE.clear()
        for arm in experiment.arms:
            metrics.AB_SHARE.labels(arm.name).set(arm.share)
