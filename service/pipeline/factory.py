"""Wires loaded artifacts into stage objects. The service and ``genrec eval`` both build their
cascade here, so offline numbers measure exactly what is served."""

from __future__ import annotations

from dataclasses import dataclass

from service.config import Settings
from service.pipeline.cascade import Cascade, Pipeline
from service.pipeline.generative import Generative, SemanticIdRecall
from service.pipeline.hstu_stage import HSTUCacheStore, HSTURankStage
from service.pipeline.stages import (
    ANNRecall,
    ItemCFRecall,
    PopularRecall,
    Ranker,
    RecallSource,
    Reranker,
    SequentialRecall,
    TDMRecall,
)
from service.runtime import Runtime


@dataclass
class Components:
    recall: dict[str, RecallSource]
    rankers: dict[str, Ranker | HSTURankStage]
    rerankers: dict[str, Reranker]
    cascade: Cascade
    # Path name ("cascade", "generative") -> pipeline; A/B arms pick one by their ``path``.
    pipelines: dict[str, Pipeline]


def build_components(rt: Runtime, settings: Settings) -> Components:
    popular = PopularRecall(rt.popularity)
    recall: dict[str, RecallSource] = {
        "popular": popular,
        "itemcf": ItemCFRecall(rt.itemcf),
        "ann": ANNRecall(rt.two_tower, rt.ann),
    }
    for method, (model, index) in rt.retrievers.items():
        recall[method] = SequentialRecall(method, model, index)
    if rt.tdm is not None:
        recall["tdm"] = TDMRecall(*rt.tdm, beam=settings.tdm_beam)
    rankers: dict[str, Ranker | HSTURankStage] = {
        name: Ranker(name, model) for name, model in rt.rankers.items()}
    rerankers = {m: Reranker(m, rt.item_emb) for m in ("mmr", "dpp")}
    cascade = Cascade(
        sources=[
            (recall["ann"], settings.recall_ann_k),
            (recall["itemcf"], settings.recall_itemcf_k),
            (recall["popular"], settings.recall_popular_k),
        ],
        ranker=rankers[settings.ranker],
        reranker=None if settings.rerank == "none" else rerankers[settings.rerank],
        fallback=popular,
        rerank_window=settings.rerank_window,
        diversity=settings.rerank_diversity,
        available=recall,
    )
    pipelines: dict[str, Pipeline] = {cascade.path: cascade}
    if rt.tiger is not None and rt.semantic_ids is not None and rt.hstu is not None:
        generator = SemanticIdRecall(rt.tiger, rt.semantic_ids, settings.semantic_id_beam_size,
                                     settings.semantic_id_temperature)
        recall[generator.name] = generator
        hstu = HSTURankStage(rt.hstu, microbatch=settings.hstu_microbatch,
                             cache=HSTUCacheStore(ttl_s=settings.hstu_cache_ttl_s,
                                                  max_size=settings.hstu_cache_size))
        rankers[hstu.name] = hstu
        generative = Generative(
            generator, fallback=recall["ann"], ranker=hstu,
            reranker=None if settings.rerank == "none" else rerankers[settings.rerank],
            popular=popular, n_candidates=settings.generative_candidates,
            diversity=settings.rerank_diversity)
        pipelines[generative.path] = generative
    return Components(recall, rankers, rerankers, cascade, pipelines)
