"""POST /recommend: the A/B arm's pipeline for one user, recorded as an exposure."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter

from service import metrics
from service.deps import (
    ComponentsDep,
    ExperimentDep,
    ExposuresDep,
    RuntimeDep,
    StateDep,
    StoreDep,
)
from service.experiments import resolve
from service.schemas import RecommendRequest, RecommendResponse, ScoredItem, Stage
from service.user_context import build_context

router = APIRouter(tags=["recommend"])


@router.post("/recommend", response_model=RecommendResponse)
async def recommend(
    req: RecommendRequest,
    rt: RuntimeDep,
    comp: ComponentsDep,
    store: StoreDep,
    state: StateDep,
    experiment: ExperimentDep,
    exposures: ExposuresDep,
) -> RecommendResponse:
    t0 = time.perf_counter()
    # Sticky hash of (salt, user_id), or the first arm serving a forced path (422 if none).
    arm = resolve(experiment, req.user_id, req.path)
    ctx = await build_context(
        rt, store, req.user_id, req.history, req.exclude_item_ids, limit=rt.max_history
    )
    # Model compute is a few ms of CPU; running it inline avoids a thread hop per request.
    # The loader checked every arm's path and params, so both lookups succeed.
    result = comp.pipelines[arm.path].run(ctx, req.k, state.arm_params[arm.name])
    for st in result.stages:
        metrics.STAGE_LATENCY.labels(result.path, st.name).observe(st.ms / 1e3)
        metrics.STAGE_CANDIDATES.labels(result.path, st.name).observe(st.candidates)
    if result.cold_start:
        metrics.COLD_START.inc()
    ids = rt.items.ids
    request_id = uuid.uuid4().hex
    items = [ScoredItem(item_id=ids[i], score=float(s))
             for i, s in zip(result.items.tolist(), result.scores.tolist(), strict=True)]
    # A forced path is QA traffic: served, but kept out of the experiment's exposures/CTR.
    if req.path is None and await exposures.record_exposure(
        request_id, req.user_id, arm.name, [x.item_id for x in items], time.time()
    ):
        metrics.AB_EXPOSURES.labels(arm.name).inc()
    metrics.AB_REQUESTS.labels(arm.name, result.path).inc()
    metrics.AB_LATENCY.labels(arm.name).observe(time.perf_counter() - t0)
    return RecommendResponse(
        request_id=request_id,
        user_id=req.user_id,
        arm=arm.name,
        path=result.path,
        items=items,
        stages=[Stage(name=s.name, source=s.source, candidates=s.candidates, ms=s.ms)
                for s in result.stages],
        cold_start=result.cold_start,
    )
