"""Exact maximum-inner-product search: a flat faiss index under an id map.

It is the reference every approximate index is tested against, and small catalogs can serve
from it directly. The faiss id-map wrapper shared with ``HNSWIndex`` lives here too.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np


def _as_vectors(vectors: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to what faiss wants: C-contiguous (N, d) float32, (N,) int64."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"vectors must be (N, d), got shape {x.shape}")
    i = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    if len(i) != len(x):
        raise ValueError(f"{len(x)} vectors but {len(i)} ids")
    if len(np.unique(i)) != len(i):
        raise ValueError("ids must be unique")
    return x, i


class FaissIdMapIndex:
    """A faiss index wrapped in ``IndexIDMap2`` so that search returns item ids, not rows.

    Implements the ``VectorIndex`` protocol; subclasses only choose the inner index.
    """

    def __init__(self, idmap: faiss.IndexIDMap2 | faiss.IndexIDMap) -> None:
        self._index = idmap
        self.dim: int = int(idmap.d)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def _params(self, k: int, sel: faiss.IDSelector) -> faiss.SearchParameters:
        return faiss.SearchParameters(sel=sel)

    def search(
        self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """queries (Q, d) -> (scores (Q, k) float32, ids (Q, k) int64), best first.

        ``exclude`` (int64 ids) is filtered inside faiss with an ID selector, so an ANN graph
        keeps walking past excluded items instead of returning a short list.
        Slots faiss cannot fill (k > len(self), or an ANN search that found fewer) come back
        as id -1 with score -inf (faiss itself writes -FLT_MAX there)."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dim {q.shape[1]}, index has {self.dim}")
        if k <= 0 or len(q) == 0:
            return (
                np.empty((len(q), max(k, 0)), np.float32),
                np.empty((len(q), max(k, 0)), np.int64),
            )
        if exclude is not None and len(exclude):
            banned = np.ascontiguousarray(exclude, dtype=np.int64)
            # The selector must outlive the search call: keep both in locals.
            sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(banned))
            scores, ids = self._index.search(q, k, params=self._params(k, sel))
        else:
            scores, ids = self._index.search(q, k)
        scores = scores.astype(np.float32, copy=False)
        ids = ids.astype(np.int64, copy=False)
        scores[ids < 0] = -np.inf
        return scores, ids

    def save(self, path: Path) -> None:
        """Write with ``faiss.write_index``; ``index.load_index`` reads either kind back."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(path))


class ExactIndex(FaissIdMapIndex):
    """Brute-force inner product (``IndexFlatIP``): exact, O(N d) per query."""

    def __init__(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        x, i = _as_vectors(vectors, ids)
        inner = faiss.IndexFlatIP(x.shape[1])
        idmap = faiss.IndexIDMap2(inner)
        if len(x):
            idmap.add_with_ids(x, i)
        self._inner = inner  # keep the Python proxy alive alongside the id map
        super().__init__(idmap)

    @classmethod
    def from_faiss(cls, idmap: faiss.IndexIDMap2) -> ExactIndex:
        """Wrap an id map already holding a flat index (as read back from disk)."""
        obj = cls.__new__(cls)
        obj._inner = faiss.downcast_index(idmap.index)
        FaissIdMapIndex.__init__(obj, idmap)
        return obj
