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

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries (Q, dim) float32 -> (scores (Q, k) float32, ids (Q, k) int64).
        Rows are sorted by descending score; when k > len(self) the tail is padded with
        score -inf and id -1."""
        ...

    def save(self, path: Path) -> None: ...
