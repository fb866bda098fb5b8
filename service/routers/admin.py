"""Operator endpoints for the A/B experiment, behind ``Authorization: Bearer <GENREC_ADMIN_TOKEN>``:
GET /admin/experiment (definition, current split, per-arm counters) and
PUT /admin/experiment/shares (change the split at runtime)."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import ExposuresDep, RequireAdmin, StateDep
from service.errors import InvalidFieldError, json_safe
from service.experiments import Experiment, ExperimentConfigError
from service.exposures import ExposureLog
from service.schemas import ArmOut, ExperimentOut, SharesIn

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[RequireAdmin])


async def _describe(experiment: Experiment, exposures: ExposureLog) -> ExperimentOut:
    counts = await exposures.counters()
    arms = []
    for arm in experiment.arms:
        c = counts.get(arm.name, {})
        shown, clicks = c.get("exposures", 0), c.get("clicks", 0)
        arms.append(ArmOut(name=arm.name, path=arm.path, share=arm.share,
                           params=json_safe(arm.params), exposures=shown, clicks=clicks,
                           ctr=clicks / shown if shown else None))
    return ExperimentOut(name=experiment.name, salt=experiment.salt, arms=arms)


@router.get("/experiment", response_model=ExperimentOut)
async def get_experiment(state: StateDep, exposures: ExposuresDep) -> ExperimentOut:
    return await _describe(state.experiment, exposures)


@router.put("/experiment/shares", response_model=ExperimentOut)
async def put_shares(body: SharesIn, state: StateDep, exposures: ExposuresDep) -> ExperimentOut:
    """Arms not named keep their share; the result must still sum to 1. Takes effect for the
    next request of this process; not persisted (a restart reads the file/env again)."""
    current = state.experiment
    try:
        updated = current.with_shares(body.shares)
    except ExperimentConfigError as exc:
        unknown = [name for name in body.shares if name not in current.arm_names]
        loc = ["body", "shares", unknown[0]] if unknown else ["body", "shares"]
        raise InvalidFieldError(loc, str(exc)) from None
    # No await between reading ``current`` and this swap: concurrent PUTs can't interleave.
    state.set_experiment(updated)
    return await _describe(updated, exposures)
