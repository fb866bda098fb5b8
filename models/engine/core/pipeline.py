"""The engine's contracts: the ``RecallSource`` protocol every recall method implements, the
``Pipeline`` protocol ``/recommend`` and `genrec eval` run, its result, per-stage timings and
the top-up that keeps the contract (``k`` items whenever the catalog holds that many unblocked
ones)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from models.engine.core.context import UserContext

Answer = tuple[np.ndarray, np.ndarray]  # (ids (<=k,) int64, scores (<=k,) float32), best first


class RecallSource(Protocol):
    """A recall method (``models/engine/recall/``): ``k`` candidates for the context."""

    name: str

    def recall(self, ctx: UserContext, k: int) -> tuple[np.ndarray, np.ndarray]:
        """-> (ids (<=k,) int64, scores (<=k,) float32), best first, nothing in ctx.blocked."""
        ...


@dataclass
class StageTiming:
    name: str
    source: str
    candidates: int
    ms: float


@dataclass
class PipelineResult:
    items: np.ndarray  # (k,) int64 dense ids, in display order
    # (k,) float32, never increasing down the list: the last stage's own scores (the
    # reranker's where it ran, else the fused relevance).
    scores: np.ndarray
    stages: list[StageTiming] = field(default_factory=list)
    cold_start: bool = False
    path: str = "cascade"
    # The path ran without some of its models (a progressive build's early version): its
    # stages name what was used.
    partial: bool = False
    # (k,) float32 relevance of each item (the fused score); after a diversity reranker its
    # order can disagree with the list's. None where only one score exists (cold start).
    relevance: np.ndarray | None = None


class Pipeline(Protocol):
    """What ``/recommend`` runs for an arm: the cascade or the generative path."""

    path: str

    def check_params(self, params: Mapping[str, Any]) -> dict[str, Any]: ...

    def run(self, ctx: UserContext, k: int,
            params: Mapping[str, Any] | None = None) -> PipelineResult: ...

    def deterministic(self, params: Mapping[str, Any]) -> bool:
        """Whether ``run`` with these params answers equal inputs with equal lists (no
        source samples at random), so that an answer may be kept for a repeat."""
        ...


class Clock:
    """Lap timer for ``StageTiming``: each ``lap`` is the ms since the previous one."""

    def __init__(self) -> None:
        self.t = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        ms, self.t = (now - self.t) * 1e3, now
        return ms


def top_up(source: RecallSource, ctx: UserContext, ids: np.ndarray, scores: np.ndarray,
           want: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``ids`` topped up to ``want`` items from ``source``, never repeating or returning a
    blocked item -> (ids, scores, how many were added). Fill-ins rank after every real
    candidate: their scores come from another model and are not comparable."""
    blocked = ctx.blocked | set(ids.tolist())
    extra, _ = source.recall(dataclasses.replace(ctx, blocked=blocked), want - len(ids))
    floor = float(scores.min()) if len(scores) else 0.0
    extra_scores = np.full(len(extra), floor - 1.0, dtype=np.float32)
    return np.concatenate([ids, extra]), np.concatenate([scores, extra_scores]), len(extra)
