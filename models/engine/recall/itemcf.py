"""ItemCF: neighbours of the user's recent items, decayed by recency."""

from __future__ import annotations

import numpy as np

from models.engine.core.context import UserContext
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.recall import empty, pairs
from models.nets.itemcf import ItemCF


class ItemCFRecall:
    name = "itemcf"

    def __init__(self, itemcf: ItemCF) -> None:
        self.itemcf = itemcf

    def recall(self, ctx: UserContext, k: int) -> tuple[np.ndarray, np.ndarray]:
        if ctx.cold:
            return empty()
        return pairs(self.itemcf.recall(ctx.history, k, exclude=ctx.blocked))


def make(rt: Runtime, settings: EngineSettings, name: str) -> ItemCFRecall:
    return ItemCFRecall(ItemCF.from_state(rt.arrays["itemcf"]))
