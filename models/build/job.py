"""One `genrec build` run as its steps see it: the training job (data, split, seed, device),
the profile, the directory being assembled and the run's records (configs, timings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from safetensors.numpy import load_file

from models.build.profiles import Profile
from models.nets.features import ItemFeatureTables, user_codes_from_dataset
from models.train.job import TrainJob


@dataclass
class BuildJob(TrainJob):
    profile: Profile = field(default_factory=lambda: Profile(name="defaults", groups={}))
    out: Path = Path(".")  # the directory being assembled (renamed into place when whole)
    console: Console = field(default_factory=lambda: Console(quiet=True))
    timings: dict[str, float] = field(default_factory=dict)  # step -> seconds

    def params(self, key: str) -> dict[str, Any]:
        """The profile's settings under ``key`` (a copy; {} when the profile has none)."""
        return self.profile.params(key)

    @cached_property
    def tables(self) -> ItemFeatureTables:
        return ItemFeatureTables.from_dataset(self.ds)

    @cached_property
    def user_codes(self) -> tuple[torch.Tensor, list[int]]:
        """(codes (n_users, F) int64, cardinality per feature)."""
        return user_codes_from_dataset(self.ds)

    @property
    def feature_sizes(self) -> dict[str, Any]:
        """The config fields every feature-based model (two-tower, DeepFM, DIN) shares."""
        return {"n_items": self.ds.n_items, "user_cardinalities": self.user_codes[1],
                "n_genres": self.tables.n_genres, "n_year_buckets": self.tables.n_year_buckets}

    def item_vectors(self) -> np.ndarray:
        """(n_items, D) two-tower item vectors, trained in this run or kept from the last."""
        return load_file(str(self.out / "item_embeddings.safetensors"))["two_tower"]
