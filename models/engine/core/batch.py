"""Cross-request batching: several requests' pipeline runs with one model pass per stage.

The service's compute lane collects the calls of concurrent requests (a micro-batch) and runs
them here. For the calls of one fused path (the cascade or the generative path):

1. recall: every (source, quota, args) that the warm calls will ask is computed for all of
   them in one batched call (``RecallMemo.fill``: the two-tower and sequential user towers in
   one forward pass, TIGER's and TDM's beam searches over several users);
2. rank: each warm call's candidates are then known (its per-user union over the memos), and
   the ranker scores every call's candidates in one pass (``RankMemo.fill``: DIN/DeepFM, the
   HSTU ranker's M-FALCON caches stacked);
3. each call then runs its path's own per-user code over the memos (fusion, DPP), so every
   result is the unbatched one, up to float summation order in the batched passes.

Each call's stage timings include the batched passes it waited for (recall, rank). A batched
pass that raises (one call's input breaking it) costs the batch nothing: that path's calls are
run again one at a time, and each gets its own result or its own exception.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.engine.core.context import UserContext
from models.engine.core.memo import RankMemo, RecallMemo
from models.engine.core.pipeline import Clock, PipelineResult

Result = PipelineResult | Exception


@dataclass
class Call:
    """One request's pipeline run: ``pipeline.run(ctx, k, params)``."""

    pipeline: Any  # a Pipeline; fused paths (``with_parts``) batch, others run one by one
    ctx: UserContext
    k: int
    params: Mapping[str, Any] | None = None

    def run(self) -> Result:
        try:
            return self.pipeline.run(self.ctx, self.k, self.params)
        except Exception as exc:  # noqa: BLE001 - handed to this call's caller, not raised
            return exc


def run_batch(calls: Sequence[Call]) -> list[Result]:
    """-> each call's ``PipelineResult``, or the exception its run raised, in call order."""
    out: list[Result | None] = [None] * len(calls)
    groups: dict[int, list[int]] = {}  # one group per pipeline object
    for i, call in enumerate(calls):
        groups.setdefault(id(call.pipeline), []).append(i)
    for idx in groups.values():
        part = [calls[i] for i in idx]
        batchable = len(part) > 1 and hasattr(part[0].pipeline, "with_parts")
        try:
            results = _fused(part) if batchable else [c.run() for c in part]
        except Exception:  # noqa: BLE001 - a batched pass failed: one at a time instead
            results = [c.run() for c in part]
        for i, result in zip(idx, results, strict=True):
            out[i] = result
    return out  # type: ignore[return-value]


def _fused(calls: Sequence[Call]) -> list[Result]:
    """The calls of one fused path, batched as the module docstring says."""
    path = calls[0].pipeline
    warm = [c for c in calls if not c.ctx.cold]
    clock = Clock()
    memos = {name: RecallMemo(src) for name, src in path.available.items()}
    asks: dict[tuple[str, int, tuple], list[UserContext]] = {}
    for c in warm:
        p = c.params or {}
        for name, quota in path.quotas(p):
            key = (name, int(quota), tuple(path.recall_args(name, p)))
            asks.setdefault(key, []).append(c.ctx)
    for (name, quota, args), contexts in asks.items():
        memos[name].fill(contexts, quota, *args)
    recall_ms = clock.lap()

    ranker = RankMemo(path.ranker) if path.ranker is not None else None
    view = path.with_parts({**path.available, **memos}, ranker)
    rank_ms = 0.0
    ranked = [c for c in warm if path.will_rank(c.params or {})]
    if ranker is not None and ranked:
        candidates: list[np.ndarray] = [view.recall(c.ctx, c.k, c.params)[0] for c in ranked]
        ranker.fill([c.ctx for c in ranked], candidates)
        rank_ms = clock.lap()

    results = [Call(view, c.ctx, c.k, c.params).run() for c in calls]
    waited = {"recall": recall_ms, "rank": rank_ms}
    for result in results:
        if isinstance(result, PipelineResult) and not result.cold_start:
            for stage in result.stages:
                stage.ms += waited.get(stage.name, 0.0)
    return results
