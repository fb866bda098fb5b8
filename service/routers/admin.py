"""Operator endpoints for the A/B experiment, behind ``Authorization: Bearer <GENREC_ADMIN_TOKEN>``:
GET /admin/experiment (definition, current split, per-arm counters) and
PUT /admin/experiment/shares (change the split at runtime: with Redis, for every replica
within about ``experiment_sync_s``; see ``service/experiment_sync.py``)."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import ExposuresDep, RequireAdmin, StateDep
from service.errors import (
    InvalidFieldError,
    ShareConflictError,
    StoreUnavailableError,
    json_safe,
)
from service.experiment_sync import ConflictError, SyncDep
from service.experiments import Experiment, ExperimentConfigError
from service.exposures import ExposureLog
from service.schemas import ArmOut, ExperimentOut, SharesIn
from service.stores.base import StoreUnavailable

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[RequireAdmin])


async def _describe(experiment: Experiment, exposures: ExposureLog,
                    revision: int) -> ExperimentOut:
    try:
        counts = await exposures.counters()
    except StoreUnavailable as exc:
        raise StoreUnavailableError.of(exc) from None
    arms = []
    for arm in experiment.arms:
        c = counts.get(arm.name, {})
        shown, clicks = c.get("exposures", 0), c.get("clicks", 0)
        arms.append(ArmOut(name=arm.name, path=arm.path, share=arm.share,
                           params=json_safe(arm.params), exposures=shown, clicks=clicks,
                           ctr=clicks / shown if shown else None))
    return ExperimentOut(name=experiment.name, salt=experiment.salt, arms=arms,
                         revision=revision)


@router.get("/experiment", response_model=ExperimentOut)
async def get_experiment(state: StateDep, exposures: ExposuresDep,
                         sync: SyncDep) -> ExperimentOut:
    return await _describe(state.experiment, exposures, sync.revision)


@router.put("/experiment/shares", response_model=ExperimentOut)
async def put_shares(body: SharesIn, state: StateDep, exposures: ExposuresDep,
                     sync: SyncDep) -> ExperimentOut:
    """Arms not named keep their share; the result must still sum to 1. Applies to the next
    request of this process at once and, with Redis, of every replica within about one sync
    interval; stored in Redis, so it outlives restarts (the embedded store: until restart).
    Redis unavailable: 503, nothing changed."""
    current = state.experiment
    try:
        updated = await sync.publish(body.shares)
    except ExperimentConfigError as exc:
        unknown = [name for name in body.shares if name not in current.arm_names]
        loc = ["body", "shares", unknown[0]] if unknown else ["body", "shares"]
        raise InvalidFieldError(loc, str(exc)) from None
    except StoreUnavailable as exc:
        raise StoreUnavailableError.of(exc) from None
    except ConflictError:
        raise ShareConflictError() from None
    return await _describe(updated, exposures, sync.revision)
