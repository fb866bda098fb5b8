"""Recall sources: one module per source, each an adapter from a model's numpy/torch API to
``RecallSource.recall(ctx, k)`` (``models/engine/core/pipeline.py``), with a
``make(runtime, settings, name)`` factory that ``models.registry.RECALL`` names. This package
is where a new source is added."""

from __future__ import annotations

import numpy as np

from models.engine.core.pipeline import Answer

__all__ = ["Answer", "empty", "pairs"]


def empty() -> tuple[np.ndarray, np.ndarray]:
    """No candidates (e.g. a history-based source for a user without history)."""
    return np.empty(0, np.int64), np.empty(0, np.float32)


def pairs(items: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    """[(id, score), ...] -> (ids int64, scores float32)."""
    ids = np.fromiter((p[0] for p in items), dtype=np.int64, count=len(items))
    scores = np.fromiter((p[1] for p in items), dtype=np.float32, count=len(items))
    return ids, scores
