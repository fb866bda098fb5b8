"""The fusion fit's data: each validation user's pool (every source's ranked list, the
ranker's scores), laid out as matrices so that a plan's served order is a few array
operations (``target_rank`` sorts as ``fusion.best_first`` does when serving)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.engine.core.context import UserContext
from models.engine.paths.fused import FusedPath
from models.engine.rank.fusion import ranker_order, union
from models.evaluate.rank_metrics import MISS, objective

K = 10


@dataclass
class PoolRun:
    """Per fit user: each pool source's ranked ids, the pool union and the ranker's scores over
    it (None without a ranker), and the validation target."""

    names: list[str]
    lists: list[dict[str, np.ndarray]]
    pool: list[np.ndarray]
    ranker: list[np.ndarray] | None
    targets: np.ndarray  # (U,)


def collect(path: FusedPath, contexts: Sequence[UserContext], targets: np.ndarray,
            quotas: dict[str, int]) -> PoolRun:
    """Runs the path's own recall (every source in ``quotas``) and its ranker for each user."""
    params = {"recall": list(quotas.items())}
    lists, pool, scores = [], [], []
    for ctx in contexts:
        ids, per_source, _ = path.recall(ctx, K, params)
        lists.append(per_source)
        pool.append(ids)
        if path.ranker is not None:
            scores.append(path.ranker.score(ctx, ids))
    return PoolRun(list(quotas), lists, pool, scores if path.ranker is not None else None,
                   np.asarray(targets, np.int64))


@dataclass
class Matrix:
    """The candidates of ``active`` sources per user, padded to C columns."""

    ranks: np.ndarray  # (U, C, S) int32: 1-based rank in each active source, 0 = absent
    ranker_rank: np.ndarray  # (U, C) int32: rank by the ranker within the union, 0 = padding
    valid: np.ndarray  # (U, C) bool
    target: np.ndarray  # (U,) column of the target, -1 when it is no candidate
    ids: np.ndarray  # (U, C) int64, -1 = padding

    def recip(self, c: float) -> tuple[np.ndarray, np.ndarray]:
        """(U, C, S) and (U, C) reciprocal ranks ``1 / (c + rank)``, 0 where absent."""
        r = np.where(self.ranks > 0, 1.0 / (c + self.ranks.astype(np.int64)), 0.0)
        rr = np.where(self.ranker_rank > 0, 1.0 / (c + self.ranker_rank.astype(np.int64)), 0.0)
        return r, rr


def matrix(run: PoolRun, active: Sequence[str]) -> Matrix:
    unions = [union([lst[s] for s in active if s in lst]) for lst in run.lists]
    n_users, width = len(unions), max(1, max(len(u) for u in unions))
    m = Matrix(np.zeros((n_users, width, len(active)), np.int32),
               np.zeros((n_users, width), np.int32), np.zeros((n_users, width), bool),
               np.full(n_users, -1, np.int64), np.full((n_users, width), -1, np.int64))
    for u, ids in enumerate(unions):
        n = len(ids)
        m.valid[u, :n] = True
        m.ids[u, :n] = ids
        hit = np.flatnonzero(ids == run.targets[u])
        m.target[u] = hit[0] if len(hit) else -1
        pos = {int(i): j for j, i in enumerate(ids)}
        for s, name in enumerate(active):
            ranked = run.lists[u].get(name, ())
            cols = [pos[int(i)] for i in ranked]
            m.ranks[u, cols, s] = np.arange(1, len(cols) + 1)
        if run.ranker is not None and n:
            order = np.argsort(run.pool[u], kind="stable")
            at = order[np.searchsorted(run.pool[u][order], ids)]
            m.ranker_rank[u, :n] = ranker_order(ids, run.ranker[u][at])
    return m


def target_rank(score: np.ndarray, m: Matrix) -> np.ndarray:
    """score (U, C) -> (U,) 0-based rank of each target as served (``best_first``: higher
    score first, ties by the smaller item id), MISS when the target is no candidate."""
    score = np.where(m.valid, score, -np.inf)
    rows = np.arange(len(score))
    col = np.maximum(m.target, 0)
    t = score[rows, col][:, None]
    t_id = m.ids[rows, col][:, None]
    rank = (score > t).sum(1) + ((score == t) & m.valid & (m.ids < t_id)).sum(1)
    return np.where(m.target >= 0, rank, MISS)


def fused_scores(r: np.ndarray, w: np.ndarray, rr: np.ndarray, w_ranker: float) -> np.ndarray:
    """(U, C) fused scores summed column by column, as ``fusion.fuse`` sums them when serving
    (the same floats in the same order, so ties and near-ties fall the same way)."""
    score = np.zeros(r.shape[:2], np.float64)
    for j, x in enumerate(w):
        if x > 0:
            score += x * r[..., j]
    if w_ranker > 0:
        score += w_ranker * rr
    return score


def fused_ranks(m: Matrix, w: np.ndarray, w_ranker: float, c: float) -> np.ndarray:
    r, rr = m.recip(c)
    return target_rank(fused_scores(r, w, rr, w_ranker), m)


def restricted(full: Matrix, active: Sequence[int]) -> Matrix:
    """``full`` with only the candidates some ``active`` source holds."""
    valid = (full.ranks[..., list(active)] > 0).any(-1)
    target = np.where((full.target >= 0) & valid[np.arange(len(valid)),
                                                 np.maximum(full.target, 0)], full.target, -1)
    return Matrix(full.ranks, full.ranker_rank, valid, target, full.ids)


def source_alone(full: Matrix) -> list[tuple[float, float]]:
    """Each source's own order, as served when it is the only source (ties by item id make
    the pool's candidate order irrelevant)."""
    r, _ = full.recip(20.0)
    return [objective(target_rank(r[..., s], restricted(full, [s])))
            for s in range(r.shape[-1])]
