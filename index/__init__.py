"""Vector indexes for candidate retrieval: exact (reference) and HNSW (serving)."""

from __future__ import annotations

from pathlib import Path

import faiss

from index.base import VectorIndex, search_excluding
from index.exact import ExactIndex
from index.hnsw import HNSWIndex

__all__ = ["ExactIndex", "HNSWIndex", "VectorIndex", "load_index", "search_excluding"]


def load_index(path: Path | str, ef_search: int | None = None) -> VectorIndex:
    """Read an index written by ``ExactIndex.save`` or ``HNSWIndex.save``.

    The kind is detected from the index inside the id map; ``ef_search`` (HNSW only)
    overrides the saved value and is ignored for an exact index."""
    raw = faiss.read_index(str(path))
    if not isinstance(raw, faiss.IndexIDMap2 | faiss.IndexIDMap):
        raise ValueError(f"{path}: not an id-mapped index ({type(raw).__name__})")
    inner = faiss.downcast_index(raw.index)
    if isinstance(inner, faiss.IndexHNSW):
        return HNSWIndex.from_faiss(raw, ef_search=ef_search)
    if isinstance(inner, faiss.IndexFlat):
        return ExactIndex.from_faiss(raw)
    raise ValueError(f"{path}: unsupported inner index {type(inner).__name__}")
