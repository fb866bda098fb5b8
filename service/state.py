"""The app's shared state: settings, the store, the A/B experiment and its exposure log, and
the runtime once artifacts are loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models.engine.core.runtime import Runtime
from models.engine.factory import Components
from service import metrics
from service.config import Settings
from service.errors import NotReadyError
from service.experiments import Experiment
from service.exposures import ExposureLog
from service.stores.base import UserStore


@dataclass
class AppState:
    settings: Settings
    store: UserStore
    experiment: Experiment
    exposures: ExposureLog
    runtime: Runtime | None = None
    components: Components | None = None
    # Arm name -> params as checked by its pipeline's ``check_params`` (set by the loader).
    arm_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    load_error: str | None = None

    def __post_init__(self) -> None:
        self.set_experiment(self.experiment)

    @property
    def ready(self) -> bool:
        return self.runtime is not None and self.components is not None

    def require(self) -> tuple[Runtime, Components]:
        if self.runtime is None or self.components is None:
            raise NotReadyError()
        return self.runtime, self.components

    def set_experiment(self, experiment: Experiment) -> None:
        """Swap the experiment (one reference assignment: a request sees the old split or the
        new one, never a mix). Only shares may change at runtime: arms and params stay."""
        self.experiment = experiment
        metrics.AB_SHARE.clear()
        for arm in experiment.arms:
            metrics.AB_SHARE.labels(arm.name).set(arm.share)
