"""The generative path: semantic-ID generation (TIGER, trie-constrained beam search with the
user's consumed and excluded items pruned inside decoding), plus the sequential retrievers'
candidates where the fit found they help -> the HSTU ranker (M-FALCON) -> rank fusion -> DPP.
``FusedPath`` (``fused.py``) runs it; this module adds the generator's arm params
(candidates, beam, temperature)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from models.engine.paths.fused import FusedPath
from models.engine.paths.params import GenerativeParams, validate_params

GENERATOR = "semantic_id"


class Generative(FusedPath):
    path = "generative"

    def check_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return validate_params(GenerativeParams, params)

    def quotas(self, params: Mapping[str, Any]) -> Sequence[tuple[str, int]]:
        """The plan's sources (or the fit's whole pool); ``n_candidates`` replaces the
        generator's quota."""
        n = params.get("n_candidates")
        return [(name, n if name == GENERATOR and n else quota)
                for name, quota in super().quotas(params)]

    def samples(self, name: str, params: Mapping[str, Any]) -> bool:
        """An arm's ``temperature`` replaces the generator's own."""
        if name == GENERATOR and params.get("temperature") is not None:
            return params["temperature"] > 0
        return super().samples(name, params)

    def recall_args(self, name: str, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """The arm's beam params go to the generator (``SemanticIdRecall.recall``)."""
        if name == GENERATOR:
            return params.get("beam_size"), params.get("temperature")
        return ()
