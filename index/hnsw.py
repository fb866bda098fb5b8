"""Approximate maximum-inner-product search with faiss HNSW (``IndexHNSWFlat``, inner-product
metric) under an id map. ``ef_search`` trades recall for latency and can be changed on a
loaded index."""

from __future__ import annotations

import faiss
import numpy as np

from index.exact import FaissIdMapIndex, _as_vectors


class HNSWIndex(FaissIdMapIndex):
    """HNSW graph over the item vectors; search returns item ids like ``ExactIndex``.

    m: graph degree (memory ~ N * m * 2 ints); ef_construction: build-time beam width;
    ef_search: query-time beam width (faiss uses max(ef_search, k)).
    """

    def __init__(
        self,
        vectors: np.ndarray,
        ids: np.ndarray,
        m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
    ) -> None:
        x, i = _as_vectors(vectors, ids)
        inner = faiss.IndexHNSWFlat(x.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = ef_construction
        inner.hnsw.efSearch = ef_search
        idmap = faiss.IndexIDMap2(inner)
        if len(x):
            idmap.add_with_ids(x, i)
        self._inner = inner  # the id map does not own a Python-created inner index
        super().__init__(idmap)

    def _params(self, k: int, sel: faiss.IDSelector) -> faiss.SearchParameters:
        return faiss.SearchParametersHNSW(sel=sel, efSearch=max(self.ef_search, k))

    @property
    def ef_search(self) -> int:
        return int(self._inner.hnsw.efSearch)

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        self._inner.hnsw.efSearch = int(value)

    @classmethod
    def from_faiss(cls, idmap: faiss.IndexIDMap2, ef_search: int | None = None) -> HNSWIndex:
        """Wrap an id map already holding an HNSW index (as read back from disk). The saved
        efSearch is kept unless ``ef_search`` is given."""
        inner = faiss.downcast_index(idmap.index)
        if not isinstance(inner, faiss.IndexHNSW):
            raise TypeError(f"expected an HNSW index inside the id map, got {type(inner)}")
        obj = cls.__new__(cls)
        obj._inner = inner
        FaissIdMapIndex.__init__(obj, idmap)
        if ef_search is not None:
            obj.ef_search = ef_search
        return obj
