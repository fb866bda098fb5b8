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


def make(rt: Runtime, settings: EngineSettings, name: str) -> Ranker:
    return Ranker(name, rt.nets[name])
