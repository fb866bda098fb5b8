"""What both paths run: several recall sources -> a ranker -> rank fusion -> a diversity
reranker, by a ``FusionPlan`` (``models/engine/rank/fusion.py``).

The cascade and the generative path differ only in their sources (the generative path's
include the semantic-ID generator, whose beam an arm may set), their ranker (DIN or the HSTU
ranker) and their arm params. Both get their stages injected (they never build models or touch a
store), record a timing per stage, and keep the contract: no blocked item, no duplicate, and
exactly ``k`` items whenever the catalog holds that many unblocked items.

An arm may stop a path early with ``last_stage``: "recall" (the sources' fused order, no ranker,
no rerank), "rank" (+ ranker, no rerank) or "rerank" (everything, the default); this is how
the offline ablation measures each stage's gain.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.engine.core.context import UserContext
from models.engine.core.pipeline import Clock, PipelineResult, RecallSource, StageTiming, top_up
from models.engine.rank.fusion import FusionPlan, best_first, fuse, union
from models.engine.rank.rerank import Reranker
from models.engine.recall.popular import PopularRecall

STAGE_DEPTH = {"recall": 0, "rank": 1, "rerank": 2}


class FusedPath:
    path = "fused"
    # Set by the factory when the artifacts lack some of the path's models (its ranker, its
    # fitted plan's sources): the path then fuses whatever sources are live.
    partial = False

    def __init__(self, plan: FusionPlan, available: Mapping[str, RecallSource], ranker: Any,
                 reranker: Reranker | None, popular: PopularRecall,
                 rerank_window: int = 100, diversity: float | None = None) -> None:
        missing = [s for s in plan.sources if s not in available]
        if missing:
            raise ValueError(f"{self.path}: the fusion plan names recall sources these "
                             f"artifacts lack: {missing}; rebuild the artifacts")
        self.plan = plan
        # Every recall source an arm may name in its ``recall`` param (name -> source).
        self.available = dict(available)
        self.ranker = ranker  # .name, .score(ctx, ids (C,)) -> (C,) scores; None = no ranker
        self.reranker = reranker
        self.popular = popular
        self.rerank_window = rerank_window
        self.diversity = plan.diversity if diversity is None else diversity

    def check_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def recall_args(self, name: str, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """Extra args the arm's params give source ``name``'s recall (the generative path's
        beam params to its generator); none here."""
        return ()

    def recall_one(self, source: RecallSource, ctx: UserContext, quota: int,
                   params: Mapping[str, Any]) -> np.ndarray:
        """One source's ranked ids."""
        return source.recall(ctx, quota, *self.recall_args(source.name, params))[0]

    def samples(self, name: str, params: Mapping[str, Any]) -> bool:
        """Whether source ``name`` draws at random under these params (the generator at a
        temperature above 0); every other source is a function of the context."""
        return not getattr(self.available[name], "deterministic", True)

    def deterministic(self, params: Mapping[str, Any]) -> bool:
        return not any(self.samples(name, params) for name, _ in self.quotas(params))

    def will_rank(self, params: Mapping[str, Any]) -> bool:
        """Whether a warm request with these params reaches the ranker."""
        return (STAGE_DEPTH[params.get("last_stage", "rerank")] >= 1
                and self.ranker is not None and self.plan.uses_ranker)

    def with_parts(self, available: Mapping[str, RecallSource], ranker: Any) -> FusedPath:
        """This path over other recall sources and ranker (the batch's memos): a shallow
        copy, the original untouched."""
        view = copy.copy(self)
        view.available, view.ranker = dict(available), ranker
        return view

    def quotas(self, params: Mapping[str, Any]) -> Sequence[tuple[str, int]]:
        """(source, quota) in priority order: the plan's, or an arm's own ``recall``."""
        return params.get("recall") or list(self.plan.sources.items())

    def recall(self, ctx: UserContext, k: int, params: Mapping[str, Any] | None = None,
               ) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
        """-> (the candidate union (C,), source -> its ranked ids, sources that answered),
        topped up from popularity when the union is smaller than ``k``."""
        p = params or {}
        lists: dict[str, np.ndarray] = {}
        for name, quota in self.quotas(p):
            ids = self.recall_one(self.available[name], ctx, quota, p)
            if len(ids):
                lists[name] = ids
        ids = union(list(lists.values()))
        used = list(lists)
        if len(ids) < k:
            ids, _, _ = top_up(self.popular, ctx, ids, np.zeros(len(ids), np.float32), k)
            used.append(self.popular.name)
        return ids, lists, used

    def run(self, ctx: UserContext, k: int,
            params: Mapping[str, Any] | None = None) -> PipelineResult:
        """``params`` (an arm's, checked by ``check_params``) override the plan's sources,
        the diversity, the rerank window and how far the path runs."""
        p = params or {}
        depth = STAGE_DEPTH[p.get("last_stage", "rerank")]
        clock = Clock()
        stages: list[StageTiming] = []
        if ctx.cold:
            ids, scores = self.popular.recall(ctx, k)
            stages.append(StageTiming("recall", self.popular.name, len(ids), clock.lap()))
            return PipelineResult(ids, scores, stages, cold_start=True, path=self.path,
                                  partial=self.partial)

        ids, lists, used = self.recall(ctx, k, p)
        stages.append(StageTiming("recall", "+".join(used), len(ids), clock.lap()))

        ranker_scores = None
        if self.will_rank(p) and len(ids):
            ranker_scores = self.ranker.score(ctx, ids)
            stages.append(StageTiming("rank", self.ranker.name, len(ids), clock.lap()))
        scores = fuse(ids, lists, ranker_scores, self.plan.weights, self.plan.c)
        order = best_first(ids, scores)
        ids, scores = ids[order], scores[order].astype(np.float32)
        stages.append(StageTiming("fusion", "rrf", len(ids), clock.lap()))
        relevance = scores

        if depth >= 2 and self.reranker is not None and len(ids) > k:
            window = max(int(p.get("rerank_window", self.rerank_window)), k)
            ids, scores = ids[:window], scores[:window]
            diversity = float(p.get("diversity", self.diversity))
            picked = self.reranker.select(ids, scores, k, diversity)
            # The fused scores become each item's relevance; the list's own scores are the
            # reranker's, so they never increase down the list it ordered.
            relevance = scores[picked]
            scores = self.reranker.list_scores(ids, scores, picked, diversity)
            ids = ids[picked]
            stages.append(StageTiming("rerank", self.reranker.name, len(ids), clock.lap()))
        return PipelineResult(ids[:k], scores[:k], stages, cold_start=False, path=self.path,
                              partial=self.partial, relevance=relevance[:k])
