"""The single stages as endpoints, for debugging and for callers that own part of the funnel:
POST /recall, POST /rank, POST /rerank. /recall and /rank degrade like /recommend when the store
is unavailable (``degraded: true``, see ``service/user_context.py``)."""

from __future__ import annotations

import time

import numpy as np
from fastapi import APIRouter

from service import metrics
from service.deps import ComponentsDep, ComputeDep, RuntimeDep, StoreDep
from service.errors import InvalidFieldError
from service.schemas import (
    RankRequest,
    RankResponse,
    RecallRequest,
    RecallResponse,
    RerankRequest,
    RerankResponse,
    ScoredItem,
)
from service.user_context import load_context, resolve_items

router = APIRouter(tags=["stages"])


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


def _scored(rt, ids: np.ndarray, scores: np.ndarray) -> list[ScoredItem]:
    names = rt.items.ids
    return [ScoredItem(item_id=names[i], score=float(s))
            for i, s in zip(ids.tolist(), scores.tolist(), strict=True)]


@router.post("/recall", response_model=RecallResponse)
async def recall(
    req: RecallRequest, rt: RuntimeDep, comp: ComponentsDep, store: StoreDep,
    compute: ComputeDep,
) -> RecallResponse:
    t0 = time.perf_counter()
    ctx, degraded = await load_context(rt, store, req.user_id, req.history,
                                       req.exclude_item_ids, limit=rt.max_history)
    ids, scores = await compute.run(t0, comp.recall[req.method].recall, ctx, req.k)
    return RecallResponse(method=req.method, items=_scored(rt, ids, scores), ms=_ms(t0),
                          degraded=degraded)


@router.post("/rank", response_model=RankResponse)
async def rank(
    req: RankRequest, rt: RuntimeDep, comp: ComponentsDep, store: StoreDep,
    compute: ComputeDep,
) -> RankResponse:
    t0 = time.perf_counter()
    items = np.asarray(resolve_items(rt, req.item_ids, "item_ids"), dtype=np.int64)
    ctx, degraded = await load_context(rt, store, req.user_id, req.history,
                                       limit=rt.max_history)
    scores = await compute.run(t0, comp.rankers[req.model].score, ctx, items)
    metrics.record_hstu_cache(comp)  # M-FALCON hits/misses (model hstu_ranker)
    order = np.argsort(-scores, kind="stable")
    return RankResponse(model=req.model, items=_scored(rt, items[order], scores[order]),
                        ms=_ms(t0), degraded=degraded)


@router.post("/rerank", response_model=RerankResponse)
async def rerank(req: RerankRequest, rt: RuntimeDep, comp: ComponentsDep) -> RerankResponse:
    t0 = time.perf_counter()
    ids = resolve_items(rt, [x.item_id for x in req.items], "items")
    seen: dict[int, int] = {}
    for pos, i in enumerate(ids):
        if i in seen:
            raise InvalidFieldError(["body", "items", pos, "item_id"],
                                    f"duplicate of items[{seen[i]}]")
        seen[i] = pos
    items = np.asarray(ids, dtype=np.int64)
    # A finite JSON number beyond float32's range (e.g. 1e308) overflows to inf here; that is
    # caught just below, so the cast's overflow warning is noise.
    with np.errstate(over="ignore"):
        scores = np.asarray([x.score for x in req.items], dtype=np.float32)
    if not np.all(np.isfinite(scores)):
        bad = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise InvalidFieldError(["body", "items", bad, "score"],
                                "score must be a finite number within float32 range (±3.4e38)")
    picked = comp.rerankers[req.method].select(items, scores, req.k, req.diversity)
    return RerankResponse(method=req.method, items=_scored(rt, items[picked], scores[picked]),
                          ms=_ms(t0))
