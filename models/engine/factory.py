"""Wires a loaded runtime into stage objects, by ``models.registry``: every recall method and
ranker whose components the artifacts hold, the rerankers, and the paths with their fitted
fusion plans. The service and ``genrec eval`` both build their engine here, so offline numbers
measure exactly what is served."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.engine.core.pipeline import Pipeline, RecallSource
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.paths.cascade import Cascade
from models.engine.paths.fused import FusedPath
from models.engine.paths.generative import GENERATOR, Generative
from models.engine.rank.fusion import RANKER, FusionPlan
from models.engine.rank.rerank import Reranker
from models.registry import PATH_SPECS, RANKERS, RECALL, RERANKERS, Stage, resolve

PATH_CLASSES: dict[str, type[FusedPath]] = {"cascade": Cascade, "generative": Generative}
LEGACY_DIVERSITY = 0.05  # artifacts without a fitted plan


@dataclass
class Components:
    recall: dict[str, RecallSource]  # canonical method name -> source
    rankers: dict[str, Any]  # canonical model name -> Ranker | HSTURankStage
    rerankers: dict[str, Reranker]
    # Path name ("cascade", "generative") -> pipeline; A/B arms pick one by their ``path``.
    pipelines: dict[str, Pipeline]


def _make(entries: tuple[Stage, ...], rt: Runtime, settings: EngineSettings) -> dict[str, Any]:
    return {e.name: resolve(e.make)(rt, settings, e.name) for e in entries if rt.has(*e.needs)}


def legacy_plan(path: str, settings: EngineSettings) -> FusionPlan:
    """The plan of artifacts built before fusion: the configured sources, in the ranker's order
    (weight 0 on every source, so the fused order is the ranker's)."""
    if path == "cascade":
        sources = {"ann": settings.recall_ann_k, "itemcf": settings.recall_itemcf_k,
                   "popular": settings.recall_popular_k}
    else:
        sources = {GENERATOR: settings.generative_candidates}
    sources = {name: q for name, q in sources.items() if q > 0}
    return FusionPlan(sources=sources, weights={**dict.fromkeys(sources, 0.0), RANKER: 1.0},
                      diversity=LEGACY_DIVERSITY)


def plan_for(rt: Runtime, path: str, settings: EngineSettings) -> FusionPlan:
    plans = rt.documents.get("fusion", {})
    if path in plans:
        return FusionPlan.from_dict(plans[path])
    return legacy_plan(path, settings)


def build_paths(rt: Runtime, settings: EngineSettings, recall: dict[str, RecallSource],
                rankers: dict[str, Any], reranker: Reranker | None) -> dict[str, Pipeline]:
    """Every path whose ranker and required sources the artifacts hold."""
    pipelines: dict[str, Pipeline] = {}
    for spec in PATH_SPECS:
        ranker_name = settings.ranker if spec.name == "cascade" else spec.ranker
        if ranker_name not in rankers or not all(r in recall for r in spec.required):
            continue
        pipelines[spec.name] = PATH_CLASSES[spec.name](
            plan_for(rt, spec.name, settings), recall, rankers[ranker_name], reranker,
            recall["popular"], rerank_window=settings.rerank_window,
            diversity=settings.rerank_diversity)
    return pipelines


def build_components(rt: Runtime, settings: EngineSettings) -> Components:
    recall = _make(RECALL, rt, settings)
    rankers = _make(RANKERS, rt, settings)
    rerankers = {m: Reranker(m, rt.item_emb) for m in RERANKERS}
    reranker = None if settings.rerank == "none" else rerankers[settings.rerank]
    return Components(recall, rankers, rerankers,
                      build_paths(rt, settings, recall, rankers, reranker))
