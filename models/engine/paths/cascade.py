"""The classic funnel: several recall sources (two-tower ANN, ItemCF, the sequential
retrievers, TDM, popularity) -> a ranker (DIN or DeepFM) -> rank fusion -> a diversity
reranker. ``FusedPath`` (``fused.py``) runs it; this module adds the arm params."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.engine.paths.fused import FusedPath
from models.engine.paths.params import CascadeParams, validate_params
from models.registry import RECALL, canonical


class Cascade(FusedPath):
    path = "cascade"

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
