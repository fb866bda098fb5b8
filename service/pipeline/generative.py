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
import torch

from index.semantic_ids import SemanticIds
from models.tiger import TIGER, user_bucket
from models.tiger_decode import generate
from service.pipeline.cascade import PipelineResult, StageTiming, _Clock, check_params, top_up
from service.pipeline.context import UserContext
from service.pipeline.hstu_stage import HSTURankStage
from service.pipeline.stages import ANNRecall, PopularRecall, Reranker

_EMPTY = (np.empty(0, np.int64), np.empty(0, np.float32))


class SemanticIdRecall:
    """TIGER beam search over the semantic-ID trie; scores are the IDs' log-probabilities."""

    name = "semantic_id"

    def __init__(self, model: TIGER, sids: SemanticIds, beam_size: int = 50,
                 temperature: float = 0.0) -> None:
        self.model = model
        self.sids = sids
        self.beam_size = beam_size
        self.temperature = temperature
        self.max_history = int(model.cfg.max_history)

    def recall(self, ctx: UserContext, k: int, beam_size: int | None = None,
               temperature: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        if ctx.cold:
            return _EMPTY
        # Users the model never saw share the trained anonymous bucket rather than landing in
        # some trained user's hashed bucket.
        known = ctx.user_id if ctx.user_index is not None else None
        bucket = user_bucket(known, self.model.cfg.n_user_buckets)
        beam = max(beam_size or self.beam_size, k)
        temp = self.temperature if temperature is None else temperature
        with torch.inference_mode():
            (ids, scores), = generate(self.model, self.sids, [ctx.history[-self.max_history:]],
                                      [bucket], k, beam, [ctx.blocked], temperature=temp)
        return ids.astype(np.int64), scores.astype(np.float32)


class Generative:
    path = "generative"
    PARAMS: dict[str, tuple[type, float, float]] = {
        "n_candidates": (int, 1, 1_000), "beam_size": (int, 1, 1_000),
        "temperature": (float, 0.0, 10.0), "diversity": (float, 0.0, 1.0)}

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
        return check_params(params, self.PARAMS)

    def run(self, ctx: UserContext, k: int,
            params: Mapping[str, Any] | None = None) -> PipelineResult:
        p = params or {}
        n_cand = max(int(p.get("n_candidates", self.n_candidates)), k)
        diversity = float(p.get("diversity", self.diversity))
        clock = _Clock()
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
