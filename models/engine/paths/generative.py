"""The generative path: semantic-ID generation (TIGER) -> HSTU ranking (M-FALCON) -> DPP.

Candidates come from trie-constrained beam search over semantic IDs, with the user's consumed
and excluded items pruned inside the decoding. When the generator yields fewer than the
candidate budget (a small catalog, or a user who consumed most of a code's items) the two-tower
ANN fills the rest, and popularity fills whatever is still missing, so the path returns ``k``
items whenever the catalog holds that many unblocked items. Same ``PipelineResult`` as the
cascade, with ``path = "generative"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from models.engine.core.context import UserContext
from models.engine.core.pipeline import Clock, PipelineResult, StageTiming, top_up
from models.engine.paths.params import GenerativeParams, validate_params
from models.engine.rank.hstu import HSTURankStage
from models.engine.rank.rerank import Reranker
from models.engine.recall.ann import ANNRecall
from models.engine.recall.popular import PopularRecall
from models.engine.recall.semantic_id import SemanticIdRecall


class Generative:
    path = "generative"

    def __init__(self, generator: SemanticIdRecall, fallback: ANNRecall, ranker: HSTURankStage,
                 reranker: Reranker | None, popular: PopularRecall, n_candidates: int = 50,
                 diversity: float = 0.05) -> None:
        self.generator = generator
        self.fallback = fallback
        self.ranker = ranker
        self.reranker = reranker
        self.popular = popular
        self.n_candidates = n_candidates
        self.diversity = diversity

    def check_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return validate_params(GenerativeParams, params)

    def run(self, ctx: UserContext, k: int,
            params: Mapping[str, Any] | None = None) -> PipelineResult:
        p = params or {}
        n_cand = max(int(p.get("n_candidates", self.n_candidates)), k)
        diversity = float(p.get("diversity", self.diversity))
        clock = Clock()
        stages: list[StageTiming] = []
        if ctx.cold:
            ids, scores = self.popular.recall(ctx, k)
            stages.append(StageTiming("recall", self.popular.name, len(ids), clock.lap()))
            return PipelineResult(ids, scores, stages, cold_start=True, path=self.path)

        ids, scores = self.generator.recall(ctx, n_cand, p.get("beam_size"), p.get("temperature"))
        stages.append(StageTiming("recall", self.generator.name, len(ids), clock.lap()))
        if len(ids) < n_cand:
            ids, scores, n = top_up(self.fallback, ctx, ids, scores, n_cand)
            stages.append(StageTiming("recall_fallback", self.fallback.name, n, clock.lap()))
        if len(ids) < k:
            ids, scores, n = top_up(self.popular, ctx, ids, scores, k)
            stages.append(StageTiming("recall_fallback", self.popular.name, n, clock.lap()))

        if len(ids):
            scores = self.ranker.score(ctx, ids)
            stages.append(StageTiming("rank", self.ranker.name, len(ids), clock.lap()))
        order = np.argsort(-scores, kind="stable")
        ids, scores = ids[order], scores[order]

        if self.reranker is not None and len(ids) > k:
            picked = self.reranker.select(ids, scores, k, diversity)
            ids, scores = ids[picked], scores[picked]
            stages.append(StageTiming("rerank", self.reranker.name, len(ids), clock.lap()))
        return PipelineResult(ids[:k], scores[:k], stages, cold_start=False, path=self.path)
