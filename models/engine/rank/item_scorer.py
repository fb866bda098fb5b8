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
        return self._pass([ctx], [np.asarray(items, dtype=np.int64)])[0]

    def score_batch(self, contexts: list[UserContext], items: list[np.ndarray],
                    cands_per_pass: int = 256) -> list[np.ndarray]:
        """``score(contexts[i], items[i])`` for every i, several users per forward pass while
        their candidates fit in ``cands_per_pass`` (candidates padded with item 0, whose
        scores are dropped; a row's scores never depend on another row's) -> one (C_i,)
        float32 array each. Why a budget: DIN's cost is its (rows, C, L) attention, which
        batching does not shrink; measured on ml-100k (C ~ 230, L 30), 8 or 16 users per pass
        cost 2-3x more per user than one (the tensors leave the cache), 2 about the same."""
        out = [np.empty(0, np.float32) for _ in items]
        rows = [i for i, ids in enumerate(items) if len(ids)]
        start = 0
        while start < len(rows):
            end, width = start + 1, len(items[rows[start]])
            while end < len(rows) and (end - start + 1) * max(width, len(items[rows[end]])) \
                    <= cands_per_pass:
                width = max(width, len(items[rows[end]]))
                end += 1
            for i, scores in zip(rows[start:end], self._pass(
                    [contexts[i] for i in rows[start:end]], [items[i] for i in rows[start:end]]),
                    strict=True):
                out[i] = scores
            start = end
        return out

    def _pass(self, contexts: list[UserContext], items: list[np.ndarray]) -> list[np.ndarray]:
        """One forward pass over every row -> (C_i,) float32 scores per row."""
        cfg = self.model.cfg
        codes = torch.from_numpy(np.stack([c.user_codes for c in contexts])).long()  # (B, F)
        hist = pad_histories([c.history for c in contexts], cfg.max_history,
                             cfg.n_items)  # (B, L)
        cand = np.zeros((len(items), max(len(ids) for ids in items)), np.int64)  # (B, C)
        for row, ids in enumerate(items):
            cand[row, :len(ids)] = ids
        with torch.inference_mode():
            scores = self.model.score_items(codes, hist, torch.from_numpy(cand)).numpy()
        return [scores[row, :len(ids)].astype(np.float32) for row, ids in enumerate(items)]

def make(rt: Runtime, settings: EngineSettings, name: str) -> Ranker:
    return Ranker(name, rt.nets[name])
