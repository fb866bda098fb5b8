"""Two-tower ANN: the user tower's vector -> MIPS over the item vectors in the HNSW index."""

from __future__ import annotations

import numpy as np
import torch

from index.base import VectorIndex, search_excluding
from models.engine.core.context import UserContext
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.nets.features import pad_histories


class ANNRecall:
    name = "ann"

    def __init__(self, two_tower: torch.nn.Module, index: VectorIndex) -> None:
        self.model = two_tower
        self.index = index

    def user_vector(self, ctx: UserContext) -> np.ndarray:
        cfg = self.model.cfg
        codes = torch.from_numpy(ctx.user_codes).long()  # (F,)
        hist = pad_histories([ctx.history], cfg.max_history, cfg.n_items)  # (1, L)
        with torch.inference_mode():
            vec = self.model.user_embed(codes[None], hist)  # (1, D)
        return vec[0].numpy().astype(np.float32)

    def recall(self, ctx: UserContext, k: int) -> tuple[np.ndarray, np.ndarray]:
        ids, scores = search_excluding(self.index, self.user_vector(ctx), k, ctx.blocked)
        return ids.astype(np.int64), scores.astype(np.float32)


def make(rt: Runtime, settings: EngineSettings, name: str) -> ANNRecall:
    return ANNRecall(rt.nets["two_tower"], rt.indexes["two_tower_items"])
