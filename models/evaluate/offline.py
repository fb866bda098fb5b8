"""Offline evaluation: leave-one-out, full ranking over every item, HR@K and NDCG@K.

Every recall source and both paths are evaluated through the same stage objects the service
runs (``models.engine.factory``), so the offline table measures what is served; the
sequential retrievers' ranks come from their batched full-ranking form, which a test checks
against the served stage.
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
from models.engine.core.context import UserContext, make_context
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.factory import Components, build_components
from models.engine.recall.sequential import SequentialRecall
from models.evaluate.rank_metrics import MISS, summarize
from models.evaluate.sequential import sequential_ranks
from models.registry import PATHS, RECALL, canonical, names

# Every method `genrec eval` knows, in table order: the recall sources, then the paths.
METHODS = (*names(RECALL), *PATHS)

ListFn = Callable[[UserContext, int], np.ndarray]


def eval_context(rt: Runtime, split: Split, user: int, stage: str,
                 timestamps: list[np.ndarray] | None = None) -> UserContext:
    """The context ``/recommend`` would build for ``user`` just before the held-out target:
    the pre-target history, every item of it blocked."""
    hist = split.history(user, stage)
    ts = None if timestamps is None else timestamps[user][: len(hist)]
    return make_context(rt, rt.users.ids[user], hist, blocked=hist.tolist(), timestamps=ts)


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
    settings: EngineSettings | None = None,
    progress: bool = True,
    timestamps: list[np.ndarray] | None = None,
) -> dict[str, dict[str, float]]:
    """-> {method: {"HR@5": ..., "NDCG@5": ..., ...}} averaged over users with a target; HR@K
    is Recall@K here (one held-out item per user)."""
    comp = build_components(rt, settings or EngineSettings())
    fns = list_functions(comp)
    # None: every method these artifacts serve, in METHODS order.
    methods = ([m for m in METHODS if m in fns] if methods is None
               else [canonical(RECALL, m) for m in methods])
    unknown = [m for m in methods if m not in fns]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {sorted(fns)}")
    users = split.eval_users(stage)
    targets = split.valid_target if stage == "valid" else split.test_target
    depth = max(ks)
    # Sequential retrievers rank every item in batched matrix products: the same ranks as
    # their served exact MIPS (tests/test_eval_sequential.py checks it user by user).
    ranks = {m: sequential_ranks(comp.recall[m].model, split, stage, timestamps)
             for m in methods if isinstance(comp.recall.get(m), SequentialRecall)}
    looped = [m for m in methods if m not in ranks]
    ranks.update({m: np.empty(len(users), dtype=np.int64) for m in looped})
    with Progress(disable=not (progress and looped), transient=True) as bar:
        task = bar.add_task(f"evaluating {', '.join(looped)}", total=len(users))
        for row, u in enumerate(users.tolist() if looped else []):
            ctx = eval_context(rt, split, u, stage, timestamps)
            for m in looped:
                ranks[m][row] = rank_in_list(fns[m](ctx, depth), int(targets[u]))
            bar.advance(task)
    out = {m: summarize(ranks[m], ks) for m in methods}
    for m in methods:
        out[m]["users"] = float(len(users))
    return out
