"""What a trainer is handed: the dataset, its leave-one-out split and how to run. Trainers that
the build calls generically (``models.registry.Component.trainer``) expose
``fit(job, model, params) -> (train config, losses)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from models.data import Dataset, Split


@dataclass
class TrainJob:
    ds: Dataset
    split: Split
    seed: int = 0
    progress: bool = True
    device: str = "cpu"
    # Runs before each epoch e (e.g. a validation check after e epochs); set by the build.
    on_epoch: Callable[[int], None] | None = None
