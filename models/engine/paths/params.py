"""What an A/B arm may override per request, as pydantic models: unknown names, wrong types and
out-of-range values are errors naming ``params.<field>``, raised as ``ValueError`` so the
experiment loader reports the arm that carries them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError


def _number(value: Any) -> Any:
    # JSON numbers only: pydantic's lax mode would take true as 1 and "5" as 5.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return value


Int = Annotated[int, BeforeValidator(_number)]
Float = Annotated[float, BeforeValidator(_number)]
MAX_QUOTA = 2_000  # candidates per recall source an arm may ask for


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _PathParams(_Params):
    # How far the path runs: "recall" (the sources' fused order), "rank" (+ the ranker),
    # "rerank" (everything, the default); the offline ablation uses it.
    last_stage: Literal["recall", "rank", "rerank"] | None = None


class CascadeParams(_PathParams):
    diversity: Annotated[Float, Field(ge=0.0, le=1.0)] | None = None
    rerank_window: Annotated[Int, Field(ge=1, le=2_000)] | None = None
    # The arm's own recall sources, {name: quota} in priority order, e.g. {"sasrec": 200}.
    recall: Annotated[dict[str, Annotated[Int, Field(ge=1, le=MAX_QUOTA)]],
                      Field(min_length=1)] | None = None


class GenerativeParams(_PathParams):
    n_candidates: Annotated[Int, Field(ge=1, le=1_000)] | None = None
    beam_size: Annotated[Int, Field(ge=1, le=1_000)] | None = None
    temperature: Annotated[Float, Field(ge=0.0, le=10.0)] | None = None
    diversity: Annotated[Float, Field(ge=0.0, le=1.0)] | None = None


def validate_params(model: type[_Params], params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` checked by ``model`` -> the given fields, converted; ValueError names the
    first bad one as ``params.<field>[.<key>]``."""
    try:
        parsed = model.model_validate(dict(params))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        raise ValueError(f"params.{loc}: {err['msg']} (got {err.get('input')!r})") from None
    # An explicit null means "not set": the pipeline's own value applies.
    return parsed.model_dump(exclude_unset=True, exclude_none=True)
