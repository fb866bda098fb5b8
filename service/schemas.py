"""Request and response bodies: the JSON contract. Ids are strings. Later issues extend these
models with optional fields only, so existing clients keep working."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from models.registry import PATHS, RANKERS, RECALL, RERANKERS, names
from service.stores.base import EVENT_TYPES

MAX_IDS = 1_000

UserId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
ItemId = Annotated[str, StringConstraints(min_length=1, max_length=256)]
EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
# Stage and path names come from models.registry; earlier names (aliases) stay accepted.
RecallMethod = Literal[names(RECALL, aliases=True)]  # type: ignore[valid-type]
RankModel = Literal[names(RANKERS, aliases=True)]  # type: ignore[valid-type]
RerankMethod = Literal[RERANKERS]  # type: ignore[valid-type]
PathName = Literal[PATHS]  # type: ignore[valid-type]
# The service issues 32 hex chars; clients echo them back on /events.
RequestId = Annotated[str, StringConstraints(min_length=1, max_length=64,
                                             pattern=r"^[A-Za-z0-9_-]+$")]
ArmName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Share = Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False, strict=True)]


class _Strict(BaseModel):
    # Unknown fields are errors: a typo such as "exclude_items" must not pass silently.
    model_config = ConfigDict(extra="forbid")


class ScoredItem(BaseModel):
    item_id: str
    score: float


class Stage(BaseModel):
    name: str
    source: str
    candidates: int
    ms: float


class RecommendRequest(_Strict):
    user_id: UserId
    k: int = Field(10, ge=1, le=200)
    exclude_item_ids: list[ItemId] = Field(default_factory=list, max_length=MAX_IDS)
    history: list[ItemId] | None = Field(
        None, max_length=MAX_IDS, description="replaces the stored history (stateless callers)"
    )
    path: PathName | None = Field(
        None, description="QA: force the first arm serving this path (not recorded as an exposure)"
    )


class RecommendedItem(BaseModel):
    item_id: str
    score: float = Field(
        description="the item's score in the served list, never increasing down it: after a "
        "diversity rerank the reranker's marginal gain when it picked the item (DPP or MMR "
        "greedy selection), otherwise the relevance below"
    )
    relevance: float = Field(
        description="how relevant the path's ranking found the item: its rank-fusion score "
        "over the recall sources and the ranker (the popularity score on the cold-start path). "
        "Comparable within one response only; after a diversity rerank it need not decrease "
        "down the list"
    )


class RecommendResponse(BaseModel):
    request_id: str
    user_id: str
    arm: str
    path: str
    items: list[RecommendedItem] = Field(description="best first, in display order")
    stages: list[Stage]
    cold_start: bool
    degraded: bool = Field(
        False, description="the store (Redis) was unavailable: served from the request's "
        "`history` when given, else as a cold start (popular items); nothing consumed is "
        "known, so consumed items may come back, and the exposure may not have been recorded"
    )
    partial: bool = Field(
        False, description="the path ran without some of its models (a build still training "
        "them publishes each as it is ready): `stages` name the sources that were used"
    )
    cached: bool = Field(
        False, description="the list was computed for an earlier request with the same inputs "
        "(version, arm, k, history, exclusions) and kept: `stages` are that computation's"
    )


class _UserOrHistory(_Strict):
    user_id: UserId | None = None
    history: list[ItemId] | None = Field(None, max_length=MAX_IDS)

    @model_validator(mode="after")
    def _one_of(self) -> _UserOrHistory:
        if self.user_id is None and self.history is None:
            raise ValueError("give user_id or history")
        return self


class RecallRequest(_UserOrHistory):
    method: RecallMethod
    k: int = Field(100, ge=1, le=MAX_IDS)
    exclude_item_ids: list[ItemId] = Field(default_factory=list, max_length=MAX_IDS)


_STAGE_DEGRADED = Field(
    False, description="the store (Redis) was unavailable: the request's `history` was used "
    "when given, else the user was treated as having none"
)


class RecallResponse(BaseModel):
    method: str
    items: list[ScoredItem]
    ms: float
    degraded: bool = _STAGE_DEGRADED


class RankRequest(_UserOrHistory):
    item_ids: list[ItemId] = Field(min_length=1, max_length=MAX_IDS)
    model: RankModel = "din"


class RankResponse(BaseModel):
    model: str
    items: list[ScoredItem]
    ms: float
    degraded: bool = _STAGE_DEGRADED


class RerankRequest(_Strict):
    items: list[ScoredItem] = Field(min_length=1, max_length=MAX_IDS)
    method: RerankMethod = "dpp"
    k: int = Field(10, ge=1, le=200)
    diversity: float = Field(0.5, ge=0.0, le=1.0)


class RerankResponse(BaseModel):
    method: str
    items: list[ScoredItem]
    ms: float


class EventIn(_Strict):
    user_id: UserId
    item_id: ItemId
    type: EventType = "view"
    # The stores reject non-finite timestamps; rejecting them here makes that a 422, not a 500.
    ts: float | None = Field(None, ge=0, allow_inf_nan=False)
    request_id: RequestId | None = Field(
        None, description="the /recommend response's request_id: a click, like or purchase of "
        "an item of that list is credited to its A/B arm (once per request and item)"
    )


class EventsRequest(_Strict):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_IDS)


class EventsResponse(BaseModel):
    accepted: int


class HistoryItem(BaseModel):
    item_id: str
    type: str
    ts: float


class HistoryResponse(BaseModel):
    user_id: str
    items: list[HistoryItem]


class ArmOut(BaseModel):
    name: str
    path: str
    share: float
    params: dict[str, Any]
    exposures: int
    clicks: int
    ctr: float | None = Field(description="clicks / exposures; null before any exposure")


class ExperimentOut(BaseModel):
    name: str
    salt: str
    arms: list[ArmOut]
    revision: int = Field(
        0, description="revision of the shared experiment state this process applies (bumped "
        "by every share change; 0 = the configured split)"
    )


class SharesIn(_Strict):
    shares: dict[ArmName, Share] = Field(
        min_length=1, max_length=100,
        description="new shares by arm name; arms not named keep theirs; the total must be 1",
    )
