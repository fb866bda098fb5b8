"""The retrieval interface: search, save, load. Everything that finds items by vector sits
behind it, so the exact brute-force index can stand in for the ANN one in tests."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class VectorIndex(Protocol):
    """Maximum-inner-product search over a fixed set of item vectors.

    ``ids`` are the dense item ids stored with the vectors; search returns them, not row numbers.
    """

    dim: int

    def __len__(self) -> int: ...

    def search(
        self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """queries (Q, dim) float32 -> (scores (Q, k) float32, ids (Q, k) int64).
        Rows are sorted by descending score; ids in ``exclude`` never come back; when fewer
        than k remain the tail is padded with score -inf and id -1."""
        ...

    def save(self, path: Path) -> None: ...


def search_excluding(
    index: VectorIndex,
    query: np.ndarray,
    k: int,
    exclude: set[int] | frozenset[int],
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` items for one query (d,), skipping the ids in ``exclude`` (e.g. the history).

    Returns (ids (m,) int64, scores (m,) float32), best first, with
    m = min(k, len(index) - |exclude ∩ index ids|) for an exact index. The exclusion is
    passed to the index (filtered inside faiss), and the result is filtered again for indexes
    that ignore it; the fetch doubles (capped at len(index)) while too few survive. An ANN
    index that finds fewer than asked even at len(index) yields fewer items.
    """
    n = len(index)
    if k <= 0 or n == 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    q = np.asarray(query, dtype=np.float32).reshape(1, -1)
    banned = np.fromiter(exclude, dtype=np.int64, count=len(exclude))
    fetch = min(k, n)
    while True:
        scores, ids = index.search(q, fetch, exclude=banned)
        scores, ids = scores[0], ids[0]
        keep = (ids >= 0) & ~np.isin(ids, banned)
        ids, scores = ids[keep], scores[keep]
        if len(ids) >= k or fetch >= n:
            return ids[:k].astype(np.int64, copy=False), scores[:k].astype(np.float32, copy=False)
        fetch = min(2 * fetch, n)
