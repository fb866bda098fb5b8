"""POST /recommend: the whole pipeline for one user."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from service import metrics
from service.deps import ComponentsDep, RuntimeDep, SettingsDep, StoreDep
from service.pipeline.context import build_context
from service.schemas import RecommendRequest, RecommendResponse, ScoredItem, Stage

router = APIRouter(tags=["recommend"])


@router.post("/recommend", response_model=RecommendResponse)
async def recommend(
    req: RecommendRequest,
    rt: RuntimeDep,
    comp: ComponentsDep,
    store: StoreDep,
    settings: SettingsDep,
) -> RecommendResponse:
    ctx = await build_context(
        rt, store, req.user_id, req.history, req.exclude_item_ids, limit=rt.max_history
    )
    # Model compute is a few ms of CPU; running it inline avoids a thread hop per request.
    result = comp.cascade.run(ctx, req.k)
    for st in result.stages:
        metrics.STAGE_LATENCY.labels(result.path, st.name).observe(st.ms / 1e3)
        metrics.STAGE_CANDIDATES.labels(result.path, st.name).observe(st.candidates)
    if result.cold_start:
        metrics.COLD_START.inc()
    ids = rt.items.ids
    return RecommendResponse(
        request_id=uuid.uuid4().hex,
        user_id=req.user_id,
        path=result.path,
        items=[
            ScoredItem(item_id=ids[i], score=float(s))
            for i, s in zip(result.items.tolist(), result.scores.tolist(), strict=True)
        ],
        stages=[Stage(name=s.name, source=s.source, candidates=s.candidates, ms=s.ms)
                for s in result.stages],
        cold_start=result.cold_start,
    )
