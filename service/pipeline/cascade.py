"""The classic funnel: several recall sources -> one ranker -> a diversity reranker.

The cascade gets its stages injected (it never builds models or touches a store), records a
timing per stage, and guarantees the contract's invariants: no blocked item, no duplicate, and
exactly ``k`` items whenever the catalog holds that many unblocked items.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from service.pipeline.context import UserContext
from service.pipeline.stages import PopularRecall, Ranker, RecallSource, Reranker


@dataclass
class StageTiming:
    name: str
    source: str
    candidates: int
    ms: float


@dataclass
class PipelineResult:
    items: np.ndarray  # (k,) int64 dense ids, in display order
    scores: np.ndarray  # (k,) float32
    stages: list[StageTiming] = field(default_factory=list)
    cold_start: bool = False
    path: str = "cascade"


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


class Pipeline(Protocol):
    """What ``/recommend`` runs for an arm: the cascade or the generative path."""

    path: str

    def check_params(self, params: Mapping[str, Any]) -> dict[str, Any]: ...

    def run(self, ctx: UserContext, k: int,
            params: Mapping[str, Any] | None = None) -> PipelineResult: ...


class _Clock:
    def __init__(self) -> None:
        self.t = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        ms, self.t = (now - self.t) * 1e3, now
        return ms


def check_params(params: Mapping[str, Any], allowed: Mapping[str, tuple[type, float, float]]
                 ) -> dict[str, Any]:
    """An A/B arm's ``params`` against ``{name: (type, min, max)}``: unknown names, wrong types
    and out-of-range values raise ``ValueError`` naming ``params.<name>``."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        if name not in allowed:
            raise ValueError(f"params.{name}: unknown parameter (allowed: {', '.join(allowed)})")
        kind, lo, hi = allowed[name]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind is int:
            ok = ok and float(value).is_integer()
        if not ok or not lo <= value <= hi:
            raise ValueError(f"params.{name}: expected {kind.__name__} in [{lo}, {hi}], "
                             f"got {value!r}")
        out[name] = kind(value)
    return out


class Cascade:
    path = "cascade"
    # What an A/B arm may override per request (see ``run``).
    PARAMS: dict[str, tuple[type, float, float]] = {
        "diversity": (float, 0.0, 1.0), "rerank_window": (int, 1, 2_000)}
    MAX_QUOTA = 2_000  # per recall source, for the ``recall`` param

    def __init__(
        self,
        sources: Sequence[tuple[RecallSource, int]],
        ranker: Ranker | None,
        reranker: Reranker | None,
        fallback: PopularRecall,
        rerank_window: int = 100,
        diversity: float = 0.05,
        available: Mapping[str, RecallSource] | None = None,
    ) -> None:
        self.sources = [(s, q) for s, q in sources if q > 0]
        # Every recall source an arm may name in its ``recall`` param (name -> source).
        self.available = dict(available or {s.name: s for s, _ in self.sources})
        self.ranker = ranker
        self.reranker = reranker
        self.fallback = fallback
        self.rerank_window = rerank_window
        self.diversity = diversity

    def recall(self, ctx: UserContext, k: int,
               sources: Sequence[tuple[RecallSource, int]] | None = None,
               ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Union of the sources' candidates (first source wins on duplicates), topped up from
        popularity when the union is smaller than ``k``. ``sources`` (an arm's ``recall``
        param) replaces the configured (source, quota) list."""
        ids: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        used: list[str] = []
        for source, quota in self.sources if sources is None else sources:
            i, s = source.recall(ctx, quota)
            if len(i):
                ids.append(i)
                scores.append(s)
                used.append(source.name)
        merged = np.concatenate(ids) if ids else np.empty(0, np.int64)
        merged_scores = np.concatenate(scores) if scores else np.empty(0, np.float32)
        _, first = np.unique(merged, return_index=True)
        keep = np.sort(first)
        merged, merged_scores = merged[keep], merged_scores[keep]
        if len(merged) < k:
            merged, merged_scores, _ = top_up(self.fallback, ctx, merged, merged_scores, k)
            used.append(self.fallback.name)
        return merged, merged_scores, used

    def check_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Numeric params as ``PARAMS`` says, plus ``recall``: {source name: quota}, the arm's
        own recall sources (e.g. ``{"sasrec": 200, "itemcf": 100}``), in priority order."""
        rest = {n: v for n, v in params.items() if n != "recall"}
        out = check_params(rest, self.PARAMS)
        if "recall" in params:
            out["recall"] = self._check_recall(params["recall"])
        return out

    def _check_recall(self, value: Any) -> list[tuple[str, int]]:
        if not isinstance(value, Mapping) or not value:
            raise ValueError("params.recall: expected a non-empty object {source: quota}")
        out = []
        for name, quota in value.items():
            if name not in self.available:
                raise ValueError(f"params.recall.{name}: unknown recall source (available: "
                                 f"{', '.join(sorted(self.available))})")
            if (isinstance(quota, bool) or not isinstance(quota, (int, float))
                    or not float(quota).is_integer() or not 1 <= quota <= self.MAX_QUOTA):
                raise ValueError(f"params.recall.{name}: expected int in [1, {self.MAX_QUOTA}],"
                                 f" got {quota!r}")
            out.append((str(name), int(quota)))
        return out

    def run(self, ctx: UserContext, k: int,
            params: Mapping[str, Any] | None = None) -> PipelineResult:
        """``params`` (an arm's, checked by ``check_params``) override diversity,
        rerank_window and the recall sources for this request."""
        p = params or {}
        diversity = float(p.get("diversity", self.diversity))
        rerank_window = int(p.get("rerank_window", self.rerank_window))
        sources = None
        if "recall" in p:
            sources = [(self.available[name], quota) for name, quota in p["recall"]]
        clock = _Clock()
        stages: list[StageTiming] = []
        if ctx.cold:
            ids, scores = self.fallback.recall(ctx, k)
            stages.append(StageTiming("recall", self.fallback.name, len(ids), clock.lap()))
            return PipelineResult(ids, scores, stages, cold_start=True, path=self.path)

        ids, scores, used = self.recall(ctx, k, sources)
        stages.append(StageTiming("recall", "+".join(used), len(ids), clock.lap()))

        if self.ranker is not None and len(ids):
            scores = self.ranker.score(ctx, ids)
            stages.append(StageTiming("rank", self.ranker.name, len(ids), clock.lap()))
        order = np.argsort(-scores, kind="stable")
        ids, scores = ids[order], scores[order]

        if self.reranker is not None and len(ids) > k:
            window = max(rerank_window, k)
            ids, scores = ids[:window], scores[:window]
            picked = self.reranker.select(ids, scores, k, diversity)
            ids, scores = ids[picked], scores[picked]
            stages.append(StageTiming("rerank", self.reranker.name, len(ids), clock.lap()))
        return PipelineResult(ids[:k], scores[:k], stages, cold_start=False, path=self.path)
