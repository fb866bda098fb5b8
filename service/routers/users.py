"""POST /events (interaction ingestion, click attribution) and GET /users/{user_id}/history."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path, Query

from service import metrics
from service.deps import ExposuresDep, RuntimeDep, StoreDep
from service.errors import UnknownItemError
from service.exposures import CLICK_TYPES
from service.schemas import EventsRequest, EventsResponse, HistoryItem, HistoryResponse
from service.stores.base import Event

router = APIRouter(tags=["users"])


@router.post("/events", response_model=EventsResponse)
async def events(
    req: EventsRequest, rt: RuntimeDep, store: StoreDep, exposures: ExposuresDep
) -> EventsResponse:
    # Validate the whole batch before writing anything: it is all-or-nothing.
    known = rt.items.index
    for pos, ev in enumerate(req.events):
        if ev.item_id not in known:
            raise UnknownItemError(["body", "events", pos, "item_id"], ev.item_id)
    now = time.time()
    batch = [Event(e.user_id, e.item_id, e.type, e.ts if e.ts is not None else now)
             for e in req.events]
    accepted = await store.append_events(batch)
    for e in batch:
        metrics.EVENTS.labels(e.type).inc()
    # A click, like or purchase carrying the request_id of a recorded exposure is credited to
    # that exposure's arm, once per (request, item). An unknown or expired request_id, or an
    # item that wasn't in that list, counts nothing and is not an error.
    for e in req.events:
        if e.request_id is not None and e.type in CLICK_TYPES:
            arm = await exposures.attribute_click(e.request_id, e.item_id)
            if arm is not None:
                metrics.AB_CLICKS.labels(arm).inc()
    return EventsResponse(accepted=accepted)


@router.get("/users/{user_id}/history", response_model=HistoryResponse)
async def history(
    user_id: Annotated[str, Path(min_length=1, max_length=128)],
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=1_000)] = 50,
) -> HistoryResponse:
    rows = await store.get_history(user_id, limit)
    return HistoryResponse(
        user_id=user_id,
        items=[HistoryItem(item_id=r.item_id, type=r.type, ts=r.ts) for r in rows],
    )
