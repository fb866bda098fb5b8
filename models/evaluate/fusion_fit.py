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
4. Cost (when the sources' measured costs are given): the plan's sources, costliest first,
   each leave it when the plan without them (weights re-tuned) is not worse than the fitted
   plan by ``min_gain`` (``prune_costly``; always against the fitted plan, so that several
   prunes cannot lose more together): a source that no longer adds what step 1 asked of it,
   once the others are in, costs a call on every request for nothing. Required sources and
   those of the start plan stay, so the generative path keeps the cascade's sources.
5. Diversity: the reranker runs on the fused list for each value in ``diversity_grid``; the
   best by the validation objective is kept if it beats no rerank (0) as the ranker must.

Objective: NDCG@10 + HR@10 (``Score``), NDCG@10 breaking ties; the significance rules compare
the same per-user sum. Ties in the fused score are broken by candidate order,
as served. The test split is never read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from models.engine.rank.fusion import RANKER, FusionPlan, best_first
from models.evaluate.fusion_matrix import (
    K,
    Matrix,
    PoolRun,
    fused_ranks,
    fused_scores,
    matrix,
    restricted,
    source_alone,
    target_rank,
)
from models.evaluate.rank_metrics import MISS, Score, objective, significant_gain

WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
# A path's required sources (the generative path's generator) are served, so they keep at
# least this weight: a weight of 0 would run the source and throw its answer away. Small, so
# that a generator weaker than the other sources can be turned down until it only adds its
# candidates and breaks near-ties: at 0.1 it still reordered the top 10 of sources weighted
# 0.25 (Beauty's CPU default: validation NDCG@10 0.0798 against 0.0801 for the same plan
# without it). The fit tries the floor and every grid weight above it.
REQUIRED_FLOOR = 0.01
# Step 4 keeps a served source when the plan without it loses at least ``min_gain``, the bar
# step 1 sets for adding one, whatever that is in standard errors (0 here). At one paired
# standard error (the earlier setting), an ml-100k build pruned the two-tower and TDM from
# its cascade for a 2.8% validation loss: on 943 users one standard error is several
# percent, so nearly every source looked droppable (docs/benchmarks.md, 2026-12-07 late).
PRUNE_Z = 0.0


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


def select_sources(full: Matrix, names: Sequence[str], required: Sequence[str], c: float,
                   min_gain: float, single: Sequence[tuple[float, float]],
                   start: dict[str, float] | None = None,
                   costs: Mapping[str, float] | None = None) -> tuple[list[int], np.ndarray]:
    """Step 1 (no ranker): -> (active source columns, weights (S,)). ``single``: each
    source's objective alone (``source_alone``; a monotone weight keeps its order, so it does
    not depend on ``c``). ``start`` (another
    path's source weights, e.g. the cascade's) is a second starting point beside the best
    single source, so this path's fit is never below it on validation either. ``costs``:
    of sources that add the same, the cheapest is added."""
    r, _ = full.recip(c)
    n = len(names)

    def score(w: np.ndarray, active: Sequence[int]) -> tuple[float, float]:
        return objective(target_rank(fused_scores(r, w, r[..., 0], 0.0),
                                      restricted(full, active)))

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
    by_cost = sorted(range(n), key=lambda s: (costs or {}).get(names[s], 0.0))
    while len(active) < n:
        add = None
        for s in (s for s in by_cost if s not in active):
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


def _without(run: PoolRun, names: list[str], w: np.ndarray, w_r: float, c: float,
             required: Sequence[str], s: str) -> tuple[list[str], np.ndarray, float, Matrix]:
    """The plan without source ``s``, its weights re-tuned -> (names, weights, ranker, matrix)."""
    idx = [j for j, x in enumerate(names) if x != s]
    trial = [names[j] for j in idx]
    m_t = matrix(run, trial)
    floors = np.array([REQUIRED_FLOOR if x in required else 0.0 for x in trial])
    w_t, wr_t, _ = tune_weights(m_t, w[idx].copy(), w_r > 0, c, floors=floors)
    return trial, w_t, wr_t, m_t


def prune_costly(run: PoolRun, names: list[str], w: np.ndarray, w_r: float, c: float,
                 required: Sequence[str], keep: Sequence[str], costs: Mapping[str, float],
                 min_gain: float, floor: tuple[float, float] = (0.0, 0.0),
                 budget_ms: float | None = None,
                 ) -> tuple[list[str], np.ndarray, float, Matrix, list[str]]:
    """Step 4: -> (names, weights, ranker weight, matrix, the sources pruned, in order).
    ``keep``: sources never pruned (the required ones are kept too). ``floor``: a pruned
    plan must still reach this objective (the best single source's). ``budget_ms``: then,
    while the plan's summed cost exceeds it, the source whose removal loses the least
    objective per ms saved leaves, as long as the floor holds."""
    keep = {*required, *keep}
    m = matrix(run, names)
    fitted = fused_ranks(m, w, w_r, c)  # each trial is held to the plan as fitted, so the
    pruned = []  # losses of several prunes cannot add up past the bound
    for s in sorted((s for s in names if s not in keep), key=lambda s: -costs.get(s, 0.0)):
        if len(names) == 1:
            break
        trial = _without(run, names, w, w_r, c, required, s)
        ranks_t = fused_ranks(trial[3], trial[1], trial[2], c)
        if significant_gain(fitted, ranks_t, min_gain, z=PRUNE_Z) or \
                Score(objective(ranks_t)) < Score(floor):
            continue  # s earns its cost
        names, w, w_r, m = trial
        pruned.append(s)
    while budget_ms is not None and sum(costs.get(s, 0.0) for s in names) > budget_ms:
        now = sum(objective(fused_ranks(m, w, w_r, c)))
        options = []  # (loss per ms saved, source, trial plan)
        for s in (s for s in names if s not in keep) if len(names) > 1 else ():
            trial = _without(run, names, w, w_r, c, required, s)
            obj = objective(fused_ranks(trial[3], trial[1], trial[2], c))
            if Score(obj) >= Score(floor):
                options.append(((now - sum(obj)) / max(costs.get(s, 0.0), 1e-6), s, trial))
        if not options:
            break  # the budget cannot be met above the floor: the cheapest plan that can
        _, s, (names, w, w_r, m) = min(options, key=lambda o: (o[0], o[1]))
        pruned.append(s)
    return names, w, w_r, m, pruned


def fit_plan(run: PoolRun, quotas: dict[str, int], required: Sequence[str], reranker,
             c_grid: Sequence[float] = (5.0, 20.0, 60.0), min_gain: float = 0.005,
             diversity_grid: Sequence[float] = (0.0, 0.02, 0.05), window: int = 100,
             start: FusionPlan | None = None, costs: Mapping[str, float] | None = None,
             budget_ms: float | None = None) -> FusionPlan:
    """Steps 1-5 above -> the plan, its validation figures in ``plan.validation``.
    ``costs``: each source's measured ms per request; None skips step 4. ``budget_ms``:
    step 4 then also prunes until the sources' summed cost fits it (``prune_costly``)."""
    names = run.names
    full = matrix(run, names)
    singles = dict(zip(names, source_alone(full), strict=True))
    best = None
    for c in c_grid:
        start_w = None if start is None else {s: start.weights.get(s, 0.0)
                                              for s in start.sources}
        active, w = select_sources(full, names, required, c, min_gain,
                                   list(singles.values()), start_w, costs)
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
    pruned: list[str] = []
    unpruned = val
    if costs is not None:
        keep = list(start.sources) if start is not None else []
        active_names, w_active, w_r, m, pruned = prune_costly(
            run, active_names, w_active, w_r, c, required, keep, costs, min_gain,
            max(singles.values(), key=Score), budget_ms)
        val = objective(fused_ranks(m, w_active, w_r, c))
        if w_r == 0:  # re-tuning may have set a remaining source's weight to 0
            active_names, w_active, m, val = drop_unweighted(run, active_names, w_active, c,
                                                             val, m, required)
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
        "pruned": pruned, "unpruned": list(unpruned), "budget_ms": budget_ms,
        "cost_ms": None if costs is None else {s: round(float(costs[s]), 2)
                                               for s in names if s in costs},
    }
    return FusionPlan(sources={s: quotas[s] for s in active_names}, weights=weights, c=c,
                      diversity=diversity, validation=validation)
