"""The per-user methods of ``genrec eval`` (recall sources other than the sequential
retrievers' rows, and both paths) over many users, with the per-user loop's results.

Users go in chunks. For each chunk:

1. every recall request the methods will make is listed: each source row at the list depth,
   each path's plan sources at their quotas (the paths call the same sources as the rows);
2. each source answers its requests for the whole chunk at once where it has a batched form
   (TIGER's and TDM's beam searches, the two-tower and sequential user towers), into a
   ``RecallMemo``;
3. the methods then run user by user exactly as served (the paths' ``available`` sources
   are the memos), so every request is computed once and the expensive ones in batches.

Chunks spread over ``workers`` forked processes (one torch and one faiss thread each).

What can differ from the per-user loop: a batched forward pass sums floats in another order
than a one-user pass, so scores may differ in the last bits and items (or, in a beam search,
beams) whose scores tie within float tolerance may come back in the other order
(``tests/test_eval_batched.py`` checks exactly that). Sources that sample (TIGER with a
temperature) are neither shared nor batched: every call draws anew, as in the loop.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from rich.progress import Progress

from models.engine.core.context import UserContext
from models.engine.core.memo import RecallMemo
from models.engine.factory import Components
from models.evaluate.rank_metrics import MISS

ContextFn = Callable[[int], UserContext]  # user -> the context its methods run on
ListFn = Callable[[UserContext, int], np.ndarray]  # (context, depth) -> ranked item ids


def rank_in_list(items: np.ndarray, target: int) -> int:
    """0-based position of ``target`` in a ranked list, ``MISS`` when absent."""
    hit = np.flatnonzero(items == target)
    return int(hit[0]) if len(hit) else MISS


def memos(comp: Components) -> dict[str, RecallMemo]:
    """A memo per deterministic recall source, each with its batched form where it has one."""
    out = {}
    for name, src in comp.recall.items():
        if getattr(src, "deterministic", True):
            out[name] = RecallMemo(src)
    return out


def requests(comp: Components, methods: Sequence[str], depth: int) -> list[tuple[str, int]]:
    """(source, k) of every recall the methods will make for a warm user: each source row at
    ``depth``, each path's plan sources at their quotas; in first-asked order, once each."""
    out: dict[tuple[str, int], None] = {}
    for m in methods:
        if m in comp.recall:
            out[(m, depth)] = None
        elif m in comp.pipelines:
            for name, quota in comp.pipelines[m].quotas({}):
                out[(name, int(quota))] = None
    return list(out)


@dataclass
class Job:
    """Everything a (forked) worker needs to evaluate a chunk of users."""

    users: np.ndarray  # (U,) the evaluated users
    targets: np.ndarray  # (n_users,) each user's held-out item
    context: ContextFn
    fns: dict[str, ListFn]  # method -> its list function (over the memos)
    memos: dict[str, RecallMemo]
    requests: list[tuple[str, int]]
    depth: int

    def chunk(self, users: np.ndarray) -> dict[str, np.ndarray]:
        """-> method -> (len(users),) 0-based target ranks (``MISS`` when absent)."""
        contexts = [self.context(int(u)) for u in users]
        for name, k in self.requests:
            if name in self.memos:
                self.memos[name].fill(contexts, k)
        out = {m: np.empty(len(users), np.int64) for m in self.fns}
        for row, (u, ctx) in enumerate(zip(users.tolist(), contexts, strict=True)):
            for m, fn in self.fns.items():
                out[m][row] = rank_in_list(fn(ctx, self.depth), int(self.targets[u]))
        for memo in self.memos.values():  # answers are keyed by these contexts' identity
            memo.clear()
        return out


_JOB: Job | None = None  # the job a forked worker inherits


def _worker_init() -> None:
    import faiss
    import torch

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)


def _worker_chunk(bounds: tuple[int, int]) -> tuple[int, dict[str, np.ndarray]]:
    assert _JOB is not None
    lo, hi = bounds
    return lo, _JOB.chunk(_JOB.users[lo:hi])


def run(job: Job, workers: int = 1, chunk: int = 512, progress: bool = True,
        label: str = "evaluating") -> dict[str, np.ndarray]:
    """-> method -> (U,) ranks of ``job.users`` in order, ``chunk`` users at a time over
    ``workers`` forked processes (in this process when 1)."""
    global _JOB
    n = len(job.users)
    bounds = [(lo, min(lo + chunk, n)) for lo in range(0, n, chunk)]
    ranks = {m: np.empty(n, np.int64) for m in job.fns}
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(label, total=n)

        def put(lo: int, part: dict[str, np.ndarray]) -> None:
            for m, r in part.items():
                ranks[m][lo:lo + len(r)] = r
            bar.advance(task, len(next(iter(part.values()))) if part else 0)

        if workers <= 1 or len(bounds) <= 1:
            for lo, hi in bounds:
                put(lo, job.chunk(job.users[lo:hi]))
            return ranks
        _JOB = job
        try:
            # fork: the workers share the loaded models copy-on-write, nothing is pickled
            # but the chunk bounds and the ranks.
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(min(workers, len(bounds)), initializer=_worker_init) as pool:
                for lo, part in pool.imap_unordered(_worker_chunk, bounds):
                    put(lo, part)
        finally:
            _JOB = None
    return ranks
