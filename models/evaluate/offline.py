"""Offline evaluation: leave-one-out, full ranking over every item, HR@K and NDCG@K.

Every recall source and both paths are evaluated through the same stage objects the service
runs (``models.engine.factory``), so the offline table measures what is served; the
sequential retrievers' ranks come from their batched full-ranking form, which a test checks
against the served stage. The other methods run user by user through the served objects, in
chunks whose recall answers are computed ahead in batches and shared between the rows and
the paths, optionally over several forked workers (``batched.py``); ``per_user=True`` runs
the plain per-user loop instead, the reference they are checked against.
Each method returns its top ``max(ks)`` list for the user's pre-target history, with the history
items blocked exactly as ``/recommend`` blocks consumed items; the target's 0-based position in
that list is its rank (absent = a miss). For a method that ranks every item this equals the
full-ranking metric at every K <= max(ks).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from rich.progress import Progress

from models.data.dataset import Split
from models.engine.core.context import UserContext, make_context
from models.engine.core.pipeline import RecallSource
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.factory import Components, build_components
from models.engine.recall.sequential import SequentialRecall
from models.evaluate import batched
from models.evaluate.batched import ListFn, rank_in_list
from models.evaluate.rank_metrics import summarize
from models.evaluate.sequential import sequential_ranks
from models.registry import PATHS, RECALL, canonical, names

# Every method `genrec eval` knows, in table order: the recall sources, then the paths.
METHODS = (*names(RECALL), *PATHS)

__all__ = ["METHODS", "eval_context", "evaluate", "list_functions", "method_ranks",
           "rank_in_list"]


def eval_context(rt: Runtime, split: Split, user: int, stage: str,
                 timestamps: list[np.ndarray] | None = None) -> UserContext:
    """The context ``/recommend`` would build for ``user`` just before the held-out target:
    the pre-target history, every item of it blocked."""
    hist = split.history(user, stage)
    ts = None if timestamps is None else timestamps[user][: len(hist)]
    return make_context(rt, rt.users.ids[user], hist, blocked=hist.tolist(), timestamps=ts)


def list_functions(comp: Components,
                   sources: Mapping[str, RecallSource] | None = None) -> dict[str, ListFn]:
    """method -> (context, depth) -> its ranked ids. ``sources`` (default: the components'
    own) replace the recall sources, for the source rows and inside both paths (views of the
    paths, ``with_parts``: the components stay as they are)."""
    pipelines = dict(comp.pipelines)
    if sources is not None:
        sources = {**comp.recall, **sources}
        pipelines = {path: p.with_parts(sources, p.ranker) for path, p in pipelines.items()}
    fns: dict[str, ListFn] = {
        name: (lambda ctx, k, src=src: src.recall(ctx, k)[0])
        for name, src in (sources or comp.recall).items()
    }
    for path, pipeline in pipelines.items():
        fns[path] = lambda ctx, k, pipeline=pipeline: pipeline.run(ctx, k).items
    return fns


def per_user_ranks(rt: Runtime, comp: Components, split: Split, methods: list[str],
                   stage: str, depth: int, timestamps: list[np.ndarray] | None,
                   users: np.ndarray, progress: bool = True) -> dict[str, np.ndarray]:
    """The reference: every method, one user at a time, each computing its own recalls."""
    fns = list_functions(comp)
    targets = split.valid_target if stage == "valid" else split.test_target
    ranks = {m: np.empty(len(users), dtype=np.int64) for m in methods}
    with Progress(disable=not (progress and methods), transient=True) as bar:
        task = bar.add_task(f"evaluating {', '.join(methods)}", total=len(users))
        for row, u in enumerate(users.tolist() if methods else []):
            ctx = eval_context(rt, split, u, stage, timestamps)
            for m in methods:
                ranks[m][row] = rank_in_list(fns[m](ctx, depth), int(targets[u]))
            bar.advance(task)
    return ranks


def method_ranks(
    rt: Runtime,
    split: Split,
    methods: Iterable[str] | None = None,
    stage: str = "test",
    depth: int = 50,
    settings: EngineSettings | None = None,
    progress: bool = True,
    timestamps: list[np.ndarray] | None = None,
    workers: int = 1,
    per_user: bool = False,
    chunk: int = 512,
    users: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """-> {method: (U,) 0-based rank of each user's ``stage`` target in the method's top
    ``depth`` list, ``MISS`` when absent}, in the order of ``users`` (default: every user
    with a ``stage`` target; a subset must be drawn from them). ``workers``: forked
    processes for the per-user methods, ``chunk`` users at a time; ``per_user``: the plain
    loop instead (the reference)."""
    comp = build_components(rt, settings or EngineSettings())
    known = [*comp.recall, *comp.pipelines]
    # None: every method these artifacts serve, in METHODS order.
    methods = ([m for m in METHODS if m in known] if methods is None
               else [canonical(RECALL, m) for m in methods])
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {sorted(known)}")
    every = split.eval_users(stage)
    users = every if users is None else np.asarray(users, dtype=np.int64)
    # Sequential retrievers rank every item in batched matrix products: the same ranks as
    # their served exact MIPS (tests/test_eval_sequential.py checks it user by user).
    seq = [m for m in methods if isinstance(comp.recall.get(m), SequentialRecall)]
    looped = [m for m in methods if m not in seq]
    if per_user:
        ranks = per_user_ranks(rt, comp, split, looped, stage, depth, timestamps, users,
                               progress)
    else:
        memos = batched.memos(comp)
        fns = list_functions(comp, memos)
        job = batched.Job(users, split.valid_target if stage == "valid" else split.test_target,
                          lambda u: eval_context(rt, split, u, stage, timestamps),
                          {m: fns[m] for m in looped}, memos,
                          batched.requests(comp, looped, depth), depth)
        ranks = batched.run(job, workers, chunk, progress and bool(looped),
                            f"evaluating {', '.join(looped)}")
    rows = np.searchsorted(every, users)  # eval_users is sorted
    for m in seq:
        ranks[m] = sequential_ranks(comp.recall[m].model, split, stage, timestamps)[rows]
    return {m: ranks[m] for m in methods}


def evaluate(
    rt: Runtime,
    split: Split,
    methods: Iterable[str] | None = None,
    stage: str = "test",
    ks: tuple[int, ...] = (5, 10, 50),
    settings: EngineSettings | None = None,
    progress: bool = True,
    timestamps: list[np.ndarray] | None = None,
    workers: int = 1,
    per_user: bool = False,
) -> dict[str, dict[str, float]]:
    """-> {method: {"HR@5": ..., "NDCG@5": ..., ...}} averaged over users with a target; HR@K
    is Recall@K here (one held-out item per user). ``workers`` and ``per_user``: see
    ``method_ranks`` (the figures do not depend on them)."""
    ranks = method_ranks(rt, split, methods, stage, max(ks), settings, progress, timestamps,
                         workers, per_user)
    out = {m: summarize(r, ks) for m, r in ranks.items()}
    for row in out.values():
        row["users"] = float(len(split.eval_users(stage)))
    return out
