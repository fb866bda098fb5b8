"""Diversity rerankers (MMR, DPP over two-tower item similarity) as one stage type."""

from __future__ import annotations

import numpy as np

from models.engine.rank.fusion import best_first
from models.nets.rerank import dpp, mmr, pick_scores
from models.registry import RERANKERS

_METHODS = {"mmr": mmr, "dpp": dpp}


class Reranker:
    """Picks ``k`` of the given items; returns positions into the given arrays."""

    def __init__(self, method: str, item_emb: np.ndarray) -> None:
        if method not in RERANKERS:
            raise ValueError(f"unknown rerank method {method!r}; choose from {RERANKERS}")
        self.name = method
        self.item_emb = item_emb  # (n_items, D)

    def select(self, items: np.ndarray, scores: np.ndarray, k: int, diversity: float) -> list[int]:
        if diversity == 0.0:
            # Pure relevance, exactly: the greedy methods cap their relevance exponent and
            # would still let similarity swap near-equal items.
            return best_first(items, scores)[:k].tolist()
        fn = _METHODS[self.name]
        return list(fn(scores.astype(np.float64), self.item_emb[items], k, diversity))

    def list_scores(self, items: np.ndarray, scores: np.ndarray, picked: list[int],
                    diversity: float) -> np.ndarray:
        """(len(picked),) float32 scores of a ``select`` result, in its order and never
        increasing down the list: the relevance itself at diversity 0, else the greedy
        method's marginal gain per pick (``models.nets.rerank.pick_scores``)."""
        if diversity == 0.0:
            return np.asarray(scores, dtype=np.float32)[picked]
        out = pick_scores(self.name, scores.astype(np.float64), self.item_emb[items], picked,
                          diversity)
        return out.astype(np.float32)
