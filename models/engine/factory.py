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
from models.registry import PATH_SPECS, RANKERS, RECALL, RERANKERS, PathSpec, Stage, resolve

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


def partial_plan(spec: PathSpec, recall: dict[str, RecallSource],
                 settings: EngineSettings) -> FusionPlan:
    """The plan of a path whose models are not all live (a progressive build publishes a
    version after each model, and the fusion fit comes last): equal-weight reciprocal-rank
    fusion of the path's live sources, popularity only where nothing else is live. Unfitted,
    so the ranker and the diversity reranker stay off (fitted plans gave the rankers weight 0
    on validation)."""
    live = [s for s in spec.pool if s in recall and s != "popular"] or ["popular"]
    quota = max(settings.recall_ann_k, settings.generative_candidates)
    return FusionPlan(sources=dict.fromkeys(live, quota),
                      weights={**dict.fromkeys(live, 1.0), RANKER: 0.0}, diversity=0.0)


def build_paths(rt: Runtime, settings: EngineSettings, recall: dict[str, RecallSource],
                rankers: dict[str, Any], reranker: Reranker | None) -> dict[str, Pipeline]:
    """Every path. One whose ranker, required sources or plan's sources the artifacts lack
    is served ``partial`` from the sources that are live (``partial_plan``)."""
    pipelines: dict[str, Pipeline] = {}
    for spec in PATH_SPECS:
        ranker_name = settings.ranker if spec.name == "cascade" else spec.ranker
        plan = plan_for(rt, spec.name, settings)
        whole = (ranker_name in rankers and all(r in recall for r in spec.required)
                 and all(s in recall for s in plan.sources))
        if not whole:
            plan = partial_plan(spec, recall, settings)
        path = PATH_CLASSES[spec.name](
            plan, recall, rankers.get(ranker_name), reranker if whole else None,
            recall["popular"], rerank_window=settings.rerank_window,
            diversity=settings.rerank_diversity if whole else 0.0)
        path.partial = not whole
        pipelines[spec.name] = path
    return pipelines


def build_components(rt: Runtime, settings: EngineSettings) -> Components:
    recall = _make(RECALL, rt, settings)
    rankers = _make(RANKERS, rt, settings)
    # The rerankers measure similarity with the two-tower's item vectors.
    rerankers = ({m: Reranker(m, rt.item_emb) for m in RERANKERS}
                 if rt.has("two_tower") else {})
    reranker = rerankers.get(settings.rerank)  # None for "none"
    return Components(recall, rankers, rerankers,
                      build_paths(rt, settings, recall, rankers, reranker))
