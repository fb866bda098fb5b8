"""Memos: a recall source or a ranker that answers each request once, and can answer many at
once ahead of the per-user code (the service's micro-batches, ``core/batch.py``).

A recall source: the paths and the per-source rows of an
evaluation (``offline.py``), and the fusion fit's two paths (``models/build/fusion.py``), ask
the same sources for the same users, and a deterministic source's answer depends only on
(context, k, args).

Answers can also be computed ahead, for many contexts at once (``fill``), by a source's
batched entry point (``recall_batch(contexts, k, *args)``, e.g. TIGER's and TDM's beam
searches), and are then served to the per-user code as if computed one request at a time.

``RankMemo`` does the same for a ranker: every context's candidates scored in one pass.

Keys: the context object's identity (valid while the caller keeps its contexts alive; a
context copied with other blocked items, as the top-up does, is another request), ``k``,
and the extra args with trailing ``None`` dropped (``None`` = the source's default, so
``recall(ctx, k)`` and ``recall(ctx, k, None, None)`` are one request). A source whose answer
for k is provably the first k of its answer for a larger depth (``prefix_depth``: every
k <= it) is asked once at that depth and sliced: the same answer, one search.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from models.engine.core.context import UserContext
from models.engine.core.pipeline import Answer

BatchFn = Callable[..., list[Answer]]  # (contexts, k, *args) -> one answer per context


def _args(args: tuple) -> tuple:
    """Extra recall args with trailing Nones (the source's defaults) dropped."""
    end = len(args)
    while end and args[end - 1] is None:
        end -= 1
    return tuple(args[:end])


class RecallMemo:
    """Wraps ``source`` (a ``RecallSource``, any extra recall args allowed): same ``name``,
    same ``recall``, each distinct request computed once. ``batch``: computes many contexts'
    answers at once for ``fill`` (default: the source's ``recall_batch``, if any)."""

    def __init__(self, source: Any, batch: BatchFn | None = None) -> None:
        self.source, self.name = source, source.name
        self.batch = batch if batch is not None else getattr(source, "recall_batch", None)
        self.answers: dict[tuple, Answer] = {}

    def depth(self, k: int, args: tuple) -> int:
        """The depth a request for ``k`` is computed at: ``prefix_depth`` for default-arg
        requests within it (so every such k shares one search), else ``k`` itself."""
        prefix = int(getattr(self.source, "prefix_depth", 0))
        return prefix if not args and k <= prefix else k

    def recall(self, ctx: UserContext, k: int, *args: Any) -> Answer:
        args = _args(args)
        depth = self.depth(k, args)
        key = (id(ctx), depth, args)
        if key not in self.answers:
            self.answers[key] = self.source.recall(ctx, depth, *args)
        ids, scores = self.answers[key]
        return (ids, scores) if depth == k else (ids[:k], scores[:k])

    def fill(self, contexts: Sequence[UserContext], k: int, *args: Any) -> bool:
        """Computes the answers to ``recall(ctx, k, *args)`` for every context in one batched
        call -> False (nothing done) when the source has no batched form: ``recall`` then
        computes them one at a time."""
        if self.batch is None:
            return False
        args = _args(args)
        depth = self.depth(k, args)
        todo = [c for c in contexts if (id(c), depth, args) not in self.answers]
        if todo:
            for ctx, answer in zip(todo, self.batch(todo, depth, *args), strict=True):
                self.answers[(id(ctx), depth, args)] = answer
        return True

    def clear(self) -> None:
        """Forget every answer (before the contexts they were keyed by go away)."""
        self.answers.clear()


class RankMemo:
    """Wraps a ranker (``score(ctx, ids) -> (C,) scores``, ``name``): scores computed ahead
    for many (context, candidates) pairs in one pass by its ``score_batch`` (``fill``) are
    served to the per-user code that asks for exactly those candidates; any other request is
    computed as usual. Keys: the context object's identity, as in ``RecallMemo``."""

    def __init__(self, ranker: Any) -> None:
        self.ranker, self.name = ranker, ranker.name
        self.answers: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def fill(self, contexts: Sequence[UserContext], items: Sequence[np.ndarray]) -> bool:
        """Scores every context's candidates in one batched call -> False (nothing done)
        when the ranker has no batched form."""
        batch = getattr(self.ranker, "score_batch", None)
        if batch is None:
            return False
        for ctx, ids, scores in zip(contexts, items, batch(list(contexts), list(items)),
                                    strict=True):
            self.answers[id(ctx)] = (ids, scores)
        return True

    def score(self, ctx: UserContext, ids: np.ndarray) -> np.ndarray:
        hit = self.answers.get(id(ctx))
        if hit is not None and np.array_equal(hit[0], ids):
            return hit[1]
        return self.ranker.score(ctx, ids)
