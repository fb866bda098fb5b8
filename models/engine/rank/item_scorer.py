"""Rankers for the cascade (DIN, DeepFM): logits for a user's candidates, higher is better.
The HSTU ranker with its M-FALCON cache is ``models/engine/hstu_ranker.py``."""

from __future__ import annotations

import numpy as np
import torch

from models.engine.core.context import UserContext
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.nets.features import pad_histories


class Ranker:
    """Scores candidates for one user with an ``ItemScorer`` (DeepFM, DIN)."""

    def __init__(self, name: str, model: torch.nn.Module) -> None:
        self.name = name
        self.model = model

    def score(self, ctx: UserContext, items: np.ndarray) -> np.ndarray:
        """items (C,) dense ids -> logits (C,) float32."""
        if len(items) == 0:
            return np.empty(0, np.float32)
        cfg = self.model.cfg
        codes = torch.from_numpy(ctx.user_codes).long()  # (F,)
        hist = pad_histories([ctx.history], cfg.max_history, cfg.n_items)[0]  # (L,)
        with torch.inference_mode():
            out = self.model.score_candidates(codes, hist, torch.from_numpy(items).long())
        return out.numpy().astype(np.float32)

    def score_batch(self, contexts: list[UserContext], items: list[np.ndarray],
                    ) -> list[np.ndarray]:
        """``score(contexts[i], items[i])`` for every i in one forward pass (candidates padded
        with item 0, whose scores are dropped; a row's scores never depend on another row's)
        -> one (C_i,) float32 array each."""
        rows = [i for i, ids in enumerate(items) if len(ids)]
        out = [np.empty(0, np.float32) for _ in items]
        if not rows:
            return out
        cfg = self.model.cfg
        codes = torch.from_numpy(np.stack([contexts[i].user_codes for i in rows])).long()  # (B, F)
        hist = pad_histories([contexts[i].history for i in rows], cfg.max_history,
                             cfg.n_items)  # (B, L)
        cand = np.zeros((len(rows), max(len(items[i]) for i in rows)), np.int64)  # (B, C)
        for row, i in enumerate(rows):
            cand[row, :len(items[i])] = items[i]
        with torch.inference_mode():
            scores = self.model.score_items(codes, hist, torch.from_numpy(cand)).numpy()
        for row, i in enumerate(rows):
            out[i] = scores[row, :len(items[i])].astype(np.float32)
        return out


def make(rt: Runtime, settings: EngineSettings, name: str) -> Ranker:
    return Ranker(name, rt.nets[name])
