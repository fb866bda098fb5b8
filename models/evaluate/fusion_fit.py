"""Fits a path's ``FusionPlan`` (``models/engine/rank/fusion.py``) on the validation split.

The served path objects produce the data: for a sample of validation users, every pool
source's ranked list (``FusedPath.recall``) and the path's ranker scores over the pool's union.
The search then runs on matrices, without calling a model again:

1. Sources. Start from the best single source alone (weight 1: its own top ``k``), or from
   another path's plan when that is better (the generative path starts from the cascade's,
   so it is never below the cascade on validation), with the path's required sources (the
   generator) beside it; add, one at a time, the pool source and weight that raise
   validation objective the most, while the gain is at least ``min_gain`` (relative): every
   added source costs latency on every request.
2. Ranker. With the active sources fixed, coordinate ascent over their weights, once without
   the ranker and once with it; the ranker is kept only when it raises the validation objective by
   at least ``min_gain`` and by two paired standard errors of the per-user difference
   (``significant_gain``: it costs latency on every request, and a gain within its noise on
   a thousand users need not carry over to the test split).
3. Both are repeated for each RRF constant ``c``; the best plan wins. Without a ranker, a
   source whose weight ended at 0 (and is not required) leaves the plan when that does not
   lower the objective (``drop_unweighted``): it would cost a call per request for nothing.
4. Diversity: the reranker runs on the fused list for each value in ``diversity_grid``; the
   best by the validation objective is kept if it beats no rerank (0) as the ranker must.

Objective: NDCG@10 + HR@10 (``Score``), NDCG@10 breaking ties; the significance rules compare
the same per-user sum. Ties in the fused score are broken by candidate order,
as served. The test split is never read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.engine.core.context import UserContext
from models.engine.paths.fused import FusedPath
from models.engine.rank.fusion import RANKER, FusionPlan, best_first, ranker_order, union
from models.evaluate.rank_metrics import MISS, Score, objective, significant_gain

K = 10
WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
# A path's required sources (the generative path's generator) are served, so they keep at
# least this weight: a weight of 0 would run the source and throw its answer away. Small, so
# that a generator weaker than the other sources can be turned down until it only adds its
# candidates and breaks near-ties: at 0.1 it still reordered the top 10 of sources weighted
# 0.25 (Beauty's CPU default: validation NDCG@10 0.0798 against 0.0801 for the same plan
# without it). The fit tries the floor and every grid weight above it.
REQUIRED_FLOOR = 0.01


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


def _best_weight(score_fn, current: float, floor: float = 0.0
                 ) -> tuple[float, tuple[float, float]]:
    """The weight from WEIGHTS (or ``current``), at least ``floor``, that maximises
    ``score_fn(w)``."""
    current = max(current, floor)
    best = (current, score_fn(current))
    grid = [w for w in WEIGHTS if w >= floor]
    if floor > 0 and floor not in grid:
        grid.insert(0, floor)  # a required source's own floor, below the grid's first step
    for w in grid:
        val = score_fn(w)
        if val > best[1]:
            best = (w, val)
    return best


def _restricted(full: Matrix, active: Sequence[int]) -> Matrix:
    """``full`` with only the candidates some ``active`` source holds."""
    valid = (full.ranks[..., list(active)] > 0).any(-1)
    target = np.where((full.target >= 0) & valid[np.arange(len(valid)),
                                                 np.maximum(full.target, 0)], full.target, -1)
    return Matrix(full.ranks, full.ranker_rank, valid, target, full.ids)


def source_alone(full: Matrix) -> list[tuple[float, float]]:
    """Each source's own order, as served when it is the only source (ties by item id make
    the pool's candidate order irrelevant)."""
    r, _ = full.recip(20.0)
    return [objective(target_rank(r[..., s], _restricted(full, [s])))
            for s in range(r.shape[-1])]


def select_sources(full: Matrix, names: Sequence[str], required: Sequence[str], c: float,
                   min_gain: float, single: Sequence[tuple[float, float]],
                   start: dict[str, float] | None = None) -> tuple[list[int], np.ndarray]:
    """Step 1 (no ranker): -> (active source columns, weights (S,)). ``single``: each
    source's objective alone (``source_alone``; a monotone weight keeps its order, so it does
    not depend on ``c``). ``start`` (another
    path's source weights, e.g. the cascade's) is a second starting point beside the best
    single source, so this path's fit is never below it on validation either."""
    r, _ = full.recip(c)
    n = len(names)

    def score(w: np.ndarray, active: Sequence[int]) -> tuple[float, float]:
        return objective(target_rank(fused_scores(r, w, r[..., 0], 0.0),
                                      _restricted(full, active)))

    best = max(range(n), key=lambda s: Score(single[s]))
    w, active = np.eye(n)[best], [best]
    if start and all(s in names for s in start):
        w_start = np.array([start.get(s, 0.0) for s in names])
        active_start = sorted(names.index(s) for s in start)
        if score(w_start, active_start) > single[best]:
            w, active = w_start, active_start
    for s in (names.index(s) for s in required if s in names):
        if s not in active:
            active = sorted([*active, s])
        w[s], _ = _best_weight(lambda x, s=s, a=active: score(_with(w, s, x), a), w[s],
                               REQUIRED_FLOOR)
    current = score(w, active)
    while len(active) < n:
        add = None
        for s in (s for s in range(n) if s not in active):
            trial = sorted([*active, s])
            for x in WEIGHTS[1:]:
                val = score(_with(w, s, x), trial)
                if val > (add[2] if add else current):
                    add = (s, x, val)
        if add is None or sum(add[2]) < sum(current) * (1.0 + min_gain):
            break
        w, active, current = _with(w, add[0], add[1]), sorted([*active, add[0]]), add[2]
    return active, w


def _with(w: np.ndarray, j: int, x: float) -> np.ndarray:
    out = w.copy()
    out[j] = x
    return out


def tune_weights(m: Matrix, w: np.ndarray, use_ranker: bool, c: float, sweeps: int = 2,
                 floors: np.ndarray | None = None,
                 ) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Step 2: coordinate ascent over the active sources' weights (each at least its
    ``floors`` entry) and the ranker's."""
    r, rr = m.recip(c)
    w_r = 0.0
    floors = np.zeros(len(w)) if floors is None else floors

    def score(ws: np.ndarray, wr: float) -> tuple[float, float]:
        return objective(target_rank(fused_scores(r, ws, rr, wr), m))

    for _ in range(sweeps):
        for j in range(len(w)):
            w[j], _ = _best_weight(lambda x, j=j, wr=w_r: score(_with(w, j, x), wr), float(w[j]),
                                   float(floors[j]))
        if use_ranker:
            w_r, _ = _best_weight(lambda x: score(w, x), w_r)
    return w, w_r, score(w, w_r)


def rerank_ranks(m: Matrix, scores: np.ndarray, reranker, diversity: float,
                 window: int) -> np.ndarray:
    """(U,) target ranks after the reranker picks K of each user's top ``window``."""
    out = np.full(len(scores), MISS, np.int64)
    for u in range(len(scores)):
        s = np.where(m.valid[u], scores[u], -np.inf)
        order = best_first(m.ids[u], s)[: min(window, int(m.valid[u].sum()))]
        picked = order[reranker.select(m.ids[u, order], s[order], K, diversity)]
        hit = np.flatnonzero(picked == m.target[u]) if m.target[u] >= 0 else []
        if len(hit):
            out[u] = int(hit[0])
    return out


def drop_unweighted(run: PoolRun, names: list[str], w: np.ndarray, c: float,
                    val: tuple[float, float], m: Matrix, required: Sequence[str]
                    ) -> tuple[list[str], np.ndarray, Matrix, tuple[float, float]]:
    """Without a ranker, a source at weight 0 (not required) is served on every request for
    nothing: its own candidates only join the pool at score 0. Drop such sources when the
    objective does not fall and one source stays; -> (names, weights, matrix, objective)."""
    keep = [j for j, s in enumerate(names) if w[j] > 0 or s in required]
    if not keep or len(keep) == len(names):
        return names, w, m, val
    kept, w_kept = [names[j] for j in keep], w[keep]
    m_kept = matrix(run, kept)
    val_kept = objective(fused_ranks(m_kept, w_kept, 0.0, c))
    return (kept, w_kept, m_kept, val_kept) if val_kept >= val else (names, w, m, val)


def fit_plan(run: PoolRun, quotas: dict[str, int], required: Sequence[str], reranker,
             c_grid: Sequence[float] = (5.0, 20.0, 60.0), min_gain: float = 0.005,
             diversity_grid: Sequence[float] = (0.0, 0.02, 0.05), window: int = 100,
             start: FusionPlan | None = None) -> FusionPlan:
    """Steps 1-4 above -> the plan, its validation figures in ``plan.validation``."""
    names = run.names
    full = matrix(run, names)
    singles = dict(zip(names, source_alone(full), strict=True))
    best = None
    for c in c_grid:
        start_w = None if start is None else {s: start.weights.get(s, 0.0)
                                              for s in start.sources}
        active, w = select_sources(full, names, required, c, min_gain,
                                   list(singles.values()), start_w)
        active_names = [names[s] for s in active]
        m = matrix(run, active_names)
        floors = np.array([REQUIRED_FLOOR if s in required else 0.0 for s in active_names])
        w_active, w_r, val = tune_weights(m, w[active].copy(), False, c, floors=floors)
        if run.ranker is not None:  # the ranker must earn its cost, like an added source
            ranked = tune_weights(m, w[active].copy(), True, c, floors=floors)
            if ranked[1] > 0 and significant_gain(fused_ranks(m, ranked[0], ranked[1], c),
                                                  fused_ranks(m, w_active, 0.0, c), min_gain):
                w_active, w_r, val = ranked
        if w_r == 0:
            active_names, w_active, m, val = drop_unweighted(run, active_names, w_active, c,
                                                             val, m, required)
        if best is None or val > best[0]:
            best = (val, c, active_names, w_active, w_r, m)
    val, c, active_names, w_active, w_r, m = best
    r, rr = m.recip(c)
    fused = fused_scores(r, w_active, rr, w_r)
    ranks_div = {} if reranker is None else {
        d: rerank_ranks(m, fused, reranker, d, window) for d in diversity_grid}
    by_div = {d: objective(x) for d, x in ranks_div.items()}
    diversity = max(by_div, key=lambda d: (by_div[d], -d)) if by_div else 0.0
    base = ranks_div[0.0] if 0.0 in ranks_div else target_rank(fused, m)
    if diversity and not significant_gain(ranks_div[diversity], base, min_gain):
        diversity = 0.0  # a gain within its noise on a few thousand users is not signal
    weights = {s: float(x) for s, x in zip(active_names, w_active, strict=True)}
    weights[RANKER] = float(w_r)
    validation = {
        "users": len(run.targets), "metric": f"NDCG@{K}, HR@{K}",
        "single": {s: list(v) for s, v in singles.items()},
        "best_single": max(singles, key=lambda s: singles[s]),
        "recall": list(objective(target_rank(fused_scores(r, w_active, rr, 0.0), m))),
        "rank": list(val),
        "rerank": {str(d): list(v) for d, v in by_div.items()},
    }
    return FusionPlan(sources={s: quotas[s] for s in active_names}, weights=weights, c=c,
                      diversity=diversity, validation=validation)
