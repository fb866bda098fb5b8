"""Offline evaluation: leave-one-out, full ranking over every item, HR@K and NDCG@K.

Every recall source and the whole cascade are evaluated through the same stage objects the
service runs (``service.pipeline.factory``), so the offline table measures what is served.
Each method returns its top ``max(ks)`` list for the user's pre-target history, with the history
items blocked exactly as ``/recommend`` blocks consumed items; the target's 0-based position in
that list is its rank (absent = a miss). For a method that ranks every item this equals the
full-ranking metric at every K <= max(ks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from rich.progress import Progress

from models.data.dataset import Split
from models.metrics import summarize
from service.config import Settings
from service.pipeline.context import UserContext
from service.pipeline.factory import Components, build_components
from service.runtime import Runtime

MISS = np.iinfo(np.int64).max // 2
METHODS = ("popular", "itemcf", "ann", "gru4rec", "sasrec", "hstu", "tdm", "semantic_id",
           "cascade", "generative")

ListFn = Callable[[UserContext, int], np.ndarray]


def eval_context(rt: Runtime, split: Split, user: int, stage: str,
                 timestamps: list[np.ndarray] | None = None) -> UserContext:
    hist = split.history(user, stage)
    ts = None if timestamps is None else timestamps[user][: len(hist)].astype(np.float64)
    return UserContext(
        user_id=rt.users.ids[user],
        user_index=user,
        history=hist[-rt.max_history:].astype(np.int64),
        user_codes=rt.user_features(user),
        blocked=set(hist.tolist()),
        timestamps=None if ts is None else ts[-rt.max_history:],
    )


def list_functions(comp: Components) -> dict[str, ListFn]:
    fns: dict[str, ListFn] = {
        name: (lambda ctx, k, src=src: src.recall(ctx, k)[0]) for name, src in comp.recall.items()
    }
    for path, pipeline in comp.pipelines.items():
        fns[path] = lambda ctx, k, pipeline=pipeline: pipeline.run(ctx, k).items
    return fns


def rank_in_list(items: np.ndarray, target: int) -> int:
    hit = np.flatnonzero(items == target)
    return int(hit[0]) if len(hit) else MISS


def evaluate(
    rt: Runtime,
    split: Split,
    methods: Iterable[str] | None = None,
    stage: str = "test",
    ks: tuple[int, ...] = (5, 10, 50),
    settings: Settings | None = None,
    progress: bool = True,
    timestamps: list[np.ndarray] | None = None,
) -> dict[str, dict[str, float]]:
    """-> {method: {"HR@5": ..., "NDCG@5": ..., ...}} averaged over users with a target; HR@K
    is Recall@K here (one held-out item per user)."""
    comp = build_components(rt, settings or Settings())
    fns = list_functions(comp)
    # None: every method these artifacts serve, in METHODS order.
    methods = [m for m in METHODS if m in fns] if methods is None else list(methods)
    unknown = [m for m in methods if m not in fns]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {sorted(fns)}")
    users = split.eval_users(stage)
    targets = split.valid_target if stage == "valid" else split.test_target
    depth = max(ks)
    ranks = {m: np.empty(len(users), dtype=np.int64) for m in methods}
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"evaluating {', '.join(methods)}", total=len(users))
        for row, u in enumerate(users.tolist()):
            ctx = eval_context(rt, split, u, stage, timestamps)
            for m in methods:
                ranks[m][row] = rank_in_list(fns[m](ctx, depth), int(targets[u]))
            bar.advance(task)
    out = {m: summarize(ranks[m], ks) for m in methods}
    for m in methods:
        out[m]["users"] = float(len(users))
    return out
