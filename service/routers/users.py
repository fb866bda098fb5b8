"""POST /events (interaction ingestion, click attribution) and GET /users/{user_id}/history.

With the store unavailable both answer 503 with Retry-After: when the circuit breaker lets
Redis be tried again (whole seconds, at least 1). /events is all or nothing: a 2xx
means the batch was written, a 503 that it was not and never will be (``RedisStore``)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path, Query

from service import metrics
from service.deps import ExposuresDep, RuntimeDep, StoreDep
from service.errors import StoreUnavailableError, UnknownItemError
from service.exposures import CLICK_TYPES, ExposureLog
from service.schemas import EventIn, EventsRequest, EventsResponse, HistoryItem, HistoryResponse
from service.stores.base import Event, StoreUnavailable

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
    try:
        accepted = await store.append_events(batch)
    except StoreUnavailable as exc:
        raise StoreUnavailableError.of(exc) from None
    for e in batch:
        metrics.EVENTS.labels(e.type).inc()
    await _attribute(exposures, req.events)
    return EventsResponse(accepted=accepted)


async def _attribute(exposures: ExposureLog, events: list[EventIn]) -> None:
    """A click, like or purchase carrying the request_id of a recorded exposure is credited to
    that exposure's arm, once per (request, item). An unknown or expired request_id, or an
    item that wasn't in that list, counts nothing and is not an error."""
    for e in events:
        if e.request_id is not None and e.type in CLICK_TYPES:
            try:
                arm = await exposures.attribute_click(e.request_id, e.item_id)
            except StoreUnavailable:
                # The events are written: the answer must stay 2xx. The credit is lost (the
                # first failure stops the loop, so a dead Redis costs one timeout, not many).
                return
            if arm is not None:
                metrics.AB_CLICKS.labels(arm).inc()


@router.get("/users/{user_id}/history", response_model=HistoryResponse)
async def history(
    user_id: Annotated[str, Path(min_length=1, max_length=128)],
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=1_000)] = 50,
) -> HistoryResponse:
    try:
        rows = await store.get_history(user_id, limit)
    except StoreUnavailable as exc:
        raise StoreUnavailableError.of(exc) from None
    return HistoryResponse(
        user_id=user_id,
        items=[HistoryItem(item_id=r.item_id, type=r.type, ts=r.ts) for r in rows],
    )
