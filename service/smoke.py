"""The smoke query of a candidate version: every pipeline, for a few known users (and each
experiment arm's params for the first), must give ``SMOKE_K`` valid, distinct, unblocked items
with no NaN score.

It runs in the serving process, one path at a time as a step on the compute lane (``step``:
the lane's ``run_background``), between requests. Run in a child process instead, it did
not lower the swap-window p99 on 2 cores and added ~300 MB during a swap, so that was not
kept (docs/benchmarks.md, "Hot reload under load again").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from models.engine.core.batch import Call, run_batch
from models.engine.core.context import UserContext
from models.engine.core.runtime import Runtime
from models.engine.factory import Components

SMOKE_K = 10  # items asked of each pipeline per smoke user
Arm = tuple[str, str, Mapping[str, Any]]  # (arm name, path, checked params)
Step = Callable[[Callable[[], Any]], Any]  # runs one piece of a candidate's work, -> its result


def inline(fn: Callable[[], Any]) -> Any:
    """The default ``Step``: run the piece here, on the calling thread."""
    return fn()


class SmokeFailed(Exception):
    """A pipeline failed the smoke query; the message names the path, arm and user."""


def smoke_users(rt: Runtime, n: int) -> list[str]:
    """``n`` users the models know, spread over the id map (deterministic)."""
    ids = rt.users.ids
    picks = np.unique(np.linspace(0, len(ids) - 1, num=min(n, len(ids))).astype(int))
    return [ids[i] for i in picks.tolist()] if len(ids) else []


def smoke(rt: Runtime, components: Components, contexts: list[UserContext],
          arms: Sequence[Arm], step: Step | None = None) -> None:
    """Raises ``SmokeFailed`` at the first pipeline run that fails the check above.

    Each path's runs go through ``run_batch`` at once, as a micro-batch of concurrent
    requests is served (one batched model pass per stage): about half the CPU of one run at a
    time. ``step(fn)`` runs each path's batch (default: here)."""
    run: Step = step or inline
    for path, pipeline in sorted(components.pipelines.items()):
        runs: list[tuple[str, Call]] = []
        for ctx, params, arm in [(ctx, None, "") for ctx in contexts] + [
                (contexts[0], params, f" (arm {name!r})")
                for name, arm_path, params in arms if arm_path == path and contexts]:
            where = f"smoke: path {path!r}{arm}, user {ctx.user_id!r}"
            runs.append((where, Call(pipeline, ctx, SMOKE_K, params)))
        results = run(lambda runs=runs: run_batch([call for _, call in runs]))
        for (where, call), result in zip(runs, results, strict=True):
            _check(rt, where, call.ctx, result)


def _check(rt: Runtime, where: str, ctx: UserContext, result: Any) -> None:
    if isinstance(result, Exception):
        raise SmokeFailed(f"{where}: {type(result).__name__}: {result}")
    ids = np.asarray(result.items)
    want = min(SMOKE_K, rt.n_items - len(ctx.blocked))
    problem = (f"{len(ids)} items, expected {want}" if len(ids) != want
               else "item ids out of range" if ((ids < 0) | (ids >= rt.n_items)).any()
               else "duplicate items" if len(set(ids.tolist())) != len(ids)
               else "a consumed or excluded item" if ctx.blocked & set(ids.tolist())
               else "NaN scores" if np.isnan(np.asarray(result.scores)).any()
               else None)
    if problem:
        raise SmokeFailed(f"{where}: {problem}")
