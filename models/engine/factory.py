"""Wires a loaded runtime into stage objects, by ``models.registry``: every recall method and
ranker whose components the artifacts hold, the rerankers, and the paths. The service and
``genrec eval`` both build their engine here, so offline numbers measure exactly what is
served."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.engine.core.pipeline import Pipeline, RecallSource
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.paths.cascade import Cascade
from models.engine.paths.generative import Generative
from models.engine.rank.rerank import Reranker
from models.registry import RANKERS, RECALL, RERANKERS, Stage, resolve


@dataclass
class Components:
    recall: dict[str, RecallSource]  # canonical method name -> source
    rankers: dict[str, Any]  # canonical model name -> Ranker | HSTURankStage
    rerankers: dict[str, Reranker]
    cascade: Cascade
    # Path name ("cascade", "generative") -> pipeline; A/B arms pick one by their ``path``.
    pipelines: dict[str, Pipeline]


def _make(entries: tuple[Stage, ...], rt: Runtime, settings: EngineSettings) -> dict[str, Any]:
    return {e.name: resolve(e.make)(rt, settings, e.name) for e in entries if rt.has(*e.needs)}


def build_components(rt: Runtime, settings: EngineSettings) -> Components:
    recall = _make(RECALL, rt, settings)
    rankers = _make(RANKERS, rt, settings)
    rerankers = {m: Reranker(m, rt.item_emb) for m in RERANKERS}
    reranker = None if settings.rerank == "none" else rerankers[settings.rerank]
    popular = recall["popular"]
    cascade = Cascade(
        sources=[(recall["ann"], settings.recall_ann_k),
                 (recall["itemcf"], settings.recall_itemcf_k),
                 (popular, settings.recall_popular_k)],
        ranker=rankers[settings.ranker], reranker=reranker, fallback=popular,
        rerank_window=settings.rerank_window, diversity=settings.rerank_diversity,
        available=recall)
    pipelines: dict[str, Pipeline] = {cascade.path: cascade}
    if "semantic_id" in recall and "hstu_ranker" in rankers:
        generative = Generative(
            recall["semantic_id"], fallback=recall["ann"], ranker=rankers["hstu_ranker"],
            reranker=reranker, popular=popular, n_candidates=settings.generative_candidates,
            diversity=settings.rerank_diversity)
        pipelines[generative.path] = generative
    return Components(recall, rankers, rerankers, cascade, pipelines)
