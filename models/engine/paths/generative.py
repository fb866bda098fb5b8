"""The generative path: semantic-ID generation (TIGER, trie-constrained beam search with the
user's consumed and excluded items pruned inside decoding), plus the sequential retrievers'
candidates where the fit found they help -> the HSTU ranker (M-FALCON) -> rank fusion -> DPP.
``FusedPath`` (``fused.py``) runs it; this module adds the generator's arm params
(candidates, beam, temperature)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.engine.core.context import UserContext
from models.engine.core.pipeline import RecallSource
from models.engine.paths.fused import FusedPath
from models.engine.paths.params import GenerativeParams, validate_params
from models.engine.recall.semantic_id import SemanticIdRecall

GENERATOR = "semantic_id"


class Generative(FusedPath):
    path = "generative"

    def check_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return validate_params(GenerativeParams, params)

    def quotas(self, params: Mapping[str, Any]) -> Sequence[tuple[str, int]]:
        """The plan's sources; ``n_candidates`` replaces the generator's quota."""
        n = params.get("n_candidates")
        return [(name, n if name == GENERATOR and n else quota)
                for name, quota in self.plan.sources.items()]

    def recall_one(self, source: RecallSource, ctx: UserContext, quota: int,
                   params: Mapping[str, Any]) -> np.ndarray:
        if isinstance(source, SemanticIdRecall):
            return source.recall(ctx, quota, params.get("beam_size"),
                                 params.get("temperature"))[0]
        return source.recall(ctx, quota)[0]
