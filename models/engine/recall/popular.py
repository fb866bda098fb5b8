"""Recent-window popularity: the cold-start answer and every path's last top-up."""

from __future__ import annotations

import numpy as np

from models.engine.core.context import UserContext
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.recall import pairs
from models.nets.popularity import Popularity


class PopularRecall:
    name = "popular"

    def __init__(self, popularity: Popularity) -> None:
        self.popularity = popularity

    def recall(self, ctx: UserContext, k: int) -> tuple[np.ndarray, np.ndarray]:
        return pairs(self.popularity.top(k, exclude=ctx.blocked))


def make(rt: Runtime, settings: EngineSettings, name: str) -> PopularRecall:
    return PopularRecall(Popularity.from_state(rt.arrays["popularity"]))
