"""The classic funnel: several recall sources -> one ranker -> a diversity reranker.

The cascade gets its stages injected (it never builds models or touches a store), records a
timing per stage, and guarantees the contract's invariants: no blocked item, no duplicate, and
exactly ``k`` items whenever the catalog holds that many unblocked items.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.engine.core.context import UserContext
from models.engine.core.pipeline import Clock, PipelineResult, RecallSource, StageTiming, top_up
from models.engine.paths.params import CascadeParams, validate_params
from models.engine.rank.item_scorer import Ranker
from models.engine.rank.rerank import Reranker
from models.engine.recall.popular import PopularRecall
from models.registry import RECALL, canonical


class Cascade:
    path = "cascade"

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
        """An arm's params (``CascadeParams``); ``recall`` becomes [(source, quota), ...] in
        the arm's priority order, old method names mapped to their current ones."""
        out = validate_params(CascadeParams, params)
        if "recall" in out:
            recall = [(canonical(RECALL, name), quota) for name, quota in out["recall"].items()]
            for name, _ in recall:
                if name not in self.available:
                    raise ValueError(f"params.recall.{name}: unknown recall source (available: "
                                     f"{', '.join(sorted(self.available))})")
            out["recall"] = recall
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
        clock = Clock()
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
