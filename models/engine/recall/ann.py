"""Two-tower ANN: the user tower's vector -> MIPS over the item vectors in the HNSW index.

``recall`` serves one request; ``recall_batch`` (offline evaluation) runs the user tower for
many users in one forward pass, then searches per user (each with its own blocked items)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from index.base import VectorIndex, search_excluding
from models.engine.core.context import UserContext
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.recall import Answer
from models.nets.features import pad_histories


class ANNRecall:
    name = "ann"

    def __init__(self, two_tower: torch.nn.Module, index: VectorIndex) -> None:
        self.model = two_tower
        self.index = index

    def user_vectors(self, contexts: Sequence[UserContext]) -> np.ndarray:
        """(U, D) float32 user-tower vectors, one forward pass for all contexts."""
        cfg = self.model.cfg
        codes = torch.from_numpy(np.stack([ctx.user_codes for ctx in contexts])).long()  # (U, F)
        hist = pad_histories([ctx.history for ctx in contexts], cfg.max_history,
                             cfg.n_items)  # (U, L)
        with torch.inference_mode():
            vecs = self.model.user_embed(codes, hist)  # (U, D)
        return vecs.numpy().astype(np.float32)

    def user_vector(self, ctx: UserContext) -> np.ndarray:
        return self.user_vectors([ctx])[0]

    def recall(self, ctx: UserContext, k: int) -> Answer:
        ids, scores = search_excluding(self.index, self.user_vector(ctx), k, ctx.blocked)
        return ids.astype(np.int64), scores.astype(np.float32)

    def recall_batch(self, contexts: Sequence[UserContext], k: int,
                     users_per_pass: int = 512) -> list[Answer]:
        """``recall`` for each context: the user vectors ``users_per_pass`` at a time (they
        may differ from one-user passes in the last float bits), each searched as served."""
        out: list[Answer] = []
        for lo in range(0, len(contexts), users_per_pass):
            part = contexts[lo:lo + users_per_pass]
            for ctx, vec in zip(part, self.user_vectors(part), strict=True):
                ids, scores = search_excluding(self.index, vec, k, ctx.blocked)
                out.append((ids.astype(np.int64), scores.astype(np.float32)))
        return out


def make(rt: Runtime, settings: EngineSettings, name: str) -> ANNRecall:
    return ANNRecall(rt.nets["two_tower"], rt.indexes["two_tower_items"])
