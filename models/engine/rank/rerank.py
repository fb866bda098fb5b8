"""Diversity rerankers (MMR, DPP over two-tower item similarity) as one stage type."""

from __future__ import annotations

import numpy as np

from models.nets.rerank import dpp, mmr
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
        fn = _METHODS[self.name]
        return list(fn(scores.astype(np.float64), self.item_emb[items], k, diversity))
