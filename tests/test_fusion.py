"""Rank fusion: the fused score against a dictionary-based reference, the fit's served-order
rank against a brute-force sort, the fit's guarantees on synthetic pools (never below the best
single source; a useful ranker is switched on, a harmful one off), and on real (tiny) artifacts
the fitted plan's validation figures reproduced by the served pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.data import leave_one_out, load_dataset
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.factory import build_components
from models.engine.paths.cascade import Cascade
from models.engine.rank.fusion import RANKER, FusionPlan, fuse, reciprocal_ranks, union
from models.evaluate.fusion_fit import REQUIRED_FLOOR, fit_plan, prune_costly
from models.evaluate.fusion_matrix import (
    K,
    Matrix,
    PoolRun,
    collect,
    fused_ranks,
    matrix,
    target_rank,
)
from models.evaluate.offline import eval_context, rank_in_list
from models.evaluate.rank_metrics import MISS, objective, significant_gain


def _reference(ids, lists, ranker, weights, c):
    """Weighted RRF by dictionaries, one candidate at a time."""
    out = []
    order = sorted(range(len(ids)), key=lambda j: -ranker[j]) if ranker is not None else []
    ranker_rank = {int(ids[j]): r + 1 for r, j in enumerate(order)}
    for i in ids.tolist():
        s = 0.0
        for name, ranked in lists.items():
            pos = ranked.tolist().index(i) + 1 if i in ranked.tolist() else None
            if pos is not None:
                s += weights.get(name, 1.0) / (c + pos)
        if ranker is not None and weights.get(RANKER, 0.0) > 0:
            s += weights[RANKER] / (c + ranker_rank[i])
        out.append(s)
    return np.array(out)


@pytest.mark.parametrize("seed", range(5))
def test_fuse_equals_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lists = {name: rng.choice(60, size=int(rng.integers(0, 25)), replace=False)
             for name in ("a", "b", "c")}
    ids = union(list(lists.values()))
    assert len(set(ids.tolist())) == len(ids)
    assert set(ids.tolist()) == set().union(*(set(v.tolist()) for v in lists.values()))
    ranker = rng.permutation(len(ids)).astype(np.float64)  # distinct: no tie rule needed
    weights = {"a": 1.0, "b": 0.25, RANKER: 2.0}  # "c" unweighted -> 1.0
    got = fuse(ids, lists, ranker, weights, c=7.0)
    np.testing.assert_allclose(got, _reference(ids, lists, ranker, weights, 7.0))


def test_reciprocal_ranks_zero_for_absent() -> None:
    ids = np.array([5, 3, 9])
    np.testing.assert_allclose(reciprocal_ranks(ids, np.array([9, 4, 5]), 0.0),
                               [1 / 3, 0.0, 1.0])


def test_union_keeps_first_appearance_order() -> None:
    assert union([np.array([3, 1]), np.array([1, 7, 3, 2])]).tolist() == [3, 1, 7, 2]


@pytest.mark.parametrize("seed", range(5))
def test_target_rank_is_the_served_sort_position(seed: int) -> None:
    rng = np.random.default_rng(seed)
    users, width = 40, 12
    score = rng.integers(0, 4, size=(users, width)).astype(np.float64)  # many ties
    valid = rng.random((users, width)) < 0.8
    target = np.where(rng.random(users) < 0.8, rng.integers(0, width, users), -1)
    target = np.where((target >= 0) & valid[np.arange(users), np.maximum(target, 0)], target, -1)
    ids = np.stack([rng.permutation(100)[:width] for _ in range(users)])  # distinct per row
    m = Matrix(np.zeros((users, width, 1), np.int32), np.zeros((users, width), np.int32),
               valid, target, ids)
    got = target_rank(score, m)
    for u in range(users):
        cols = np.flatnonzero(valid[u])
        # Higher score first, ties by the smaller item id (what best_first serves).
        order = cols[sorted(range(len(cols)), key=lambda j: (-score[u, cols[j]], ids[u, cols[j]]))]
        want = int(np.flatnonzero(order == target[u])[0]) if target[u] >= 0 else MISS
        assert got[u] == want


def _synthetic_run(n_users: int, seed: int, ranker: str) -> tuple[PoolRun, dict[str, int]]:
    """Source "good" holds the target at rank 0-4 for 60% of users, "noise" never holds it
    (it overlaps "good" at random); the ranker is an oracle (target first), an anti-oracle
    (target last) or absent."""
    rng = np.random.default_rng(seed)
    lists, pool, scores, targets = [], [], [], []
    for _ in range(n_users):
        items = rng.permutation(500)
        target = int(items[0])
        good = items[1:31].copy()
        if rng.random() < 0.6:
            good[int(rng.integers(0, 5))] = target
        noise = rng.choice(items[1:100], size=30, replace=False)
        per = {"noise": noise, "good": good}
        ids = union([noise, good])
        s = rng.random(len(ids))
        if ranker != "none":
            s[ids == target] = 2.0 if ranker == "oracle" else -1.0
        lists.append(per)
        pool.append(ids)
        scores.append(s)
        targets.append(target)
    run = PoolRun(["noise", "good"], lists, pool, None if ranker == "none" else scores,
                  np.array(targets))
    return run, {"noise": 30, "good": 30}


@pytest.mark.parametrize("ranker", ["none", "oracle", "anti"])
def test_fit_is_never_below_the_best_single_source(ranker: str) -> None:
    run, quotas = _synthetic_run(200, 0, ranker)
    plan = fit_plan(run, quotas, (), None, c_grid=(5.0, 20.0))
    v = plan.validation
    assert v["best_single"] == "good"
    assert tuple(v["rank"]) >= tuple(v["single"]["good"])
    assert "good" in plan.sources and plan.weights["good"] > 0
    if ranker == "oracle":
        reachable = np.mean([t in lst["good"] for t, lst in zip(run.targets, run.lists,
                                                                 strict=True)])
        assert plan.weights[RANKER] > 0
        assert v["rank"] == pytest.approx([reachable, reachable])  # every reachable target first
    if ranker == "anti":  # a ranker that only hurts is switched off
        assert plan.weights[RANKER] == 0.0
        assert tuple(v["rank"]) == tuple(v["single"]["good"])


def test_required_source_stays_in_the_plan() -> None:
    run, quotas = _synthetic_run(100, 1, "none")
    plan = fit_plan(run, quotas, ("noise",), None, c_grid=(20.0,))
    assert set(plan.sources) == {"noise", "good"}
    # "noise" never holds a target, so only the floor keeps it served (weight 0 would run
    # it and discard its answer)
    assert plan.weights["noise"] == REQUIRED_FLOOR


def test_objective_known_answer() -> None:
    ndcg, hr = objective(np.array([0, 1, MISS, 10]))
    assert hr == pytest.approx(0.5)
    assert ndcg == pytest.approx((1.0 + 1 / np.log2(3)) / 4)


@pytest.fixture(scope="module")
def served(tiny_artifacts: Path):
    torch.set_num_threads(1)
    rt = Runtime.load(tiny_artifacts)
    comp = build_components(rt, EngineSettings())
    ds = load_dataset("ml-100k")
    return rt, comp, ds, leave_one_out(ds)


def test_single_source_plan_serves_that_source_order(served) -> None:
    rt, comp, ds, split = served
    plan = FusionPlan({"itemcf": 50, "ann": 50}, {"itemcf": 1.0, "ann": 0.0, RANKER: 0.0})
    path = Cascade(plan, comp.recall, comp.rankers["din"], None, comp.recall["popular"])
    for u in range(0, ds.n_users, 50):
        ctx = eval_context(rt, split, u, "test", ds.timestamps)
        want = comp.recall["itemcf"].recall(ctx, 10)[0]
        assert path.run(ctx, 10).items.tolist() == want.tolist()


def test_fitted_validation_figures_are_what_the_path_serves(served, tiny_artifacts) -> None:
    """The fit's matrix evaluation (``fused_ranks`` over collected lists and ranker scores)
    and the served cascade stopped after fusion (``last_stage: rank``) rank each of 150
    validation users' targets at the same place in the top 10."""
    rt, comp, ds, split = served
    path = comp.pipelines["cascade"]
    users = split.eval_users("valid")[:150]
    contexts = [eval_context(rt, split, int(u), "valid", ds.timestamps) for u in users]
    targets = split.valid_target[users]
    run = collect(path, contexts, targets, path.plan.sources)
    m = matrix(run, list(path.plan.sources))
    w = np.array([path.plan.weights[s] for s in path.plan.sources])
    ranks = fused_ranks(m, w, path.plan.weights[RANKER], path.plan.c)
    served_ranks = [rank_in_list(path.run(ctx, K, {"last_stage": "rank"}).items, int(t))
                    for ctx, t in zip(contexts, targets, strict=True)]
    capped = np.where(ranks < K, ranks, MISS)
    mismatches = int((capped != np.array(served_ranks)).sum())
    assert mismatches <= 2  # float noise in batched ranker scores may swap a near tie


def _built_run(n_users: int, seed: int, names: list[str], lists_of) -> PoolRun:
    """A run without a ranker: user u's target is ``items[0]`` of a random permutation of 400
    items, and ``lists_of(u, target, items)`` gives its sources' ranked lists."""
    rng = np.random.default_rng(seed)
    lists, pool, targets = [], [], []
    for u in range(n_users):
        items = rng.permutation(400)
        per = lists_of(u, int(items[0]), items)
        lists.append(per)
        pool.append(union(list(per.values())))
        targets.append(int(items[0]))
    return PoolRun(names, lists, pool, None, np.array(targets))


def _halves_run(n_users: int, seed: int, third: str) -> PoolRun:
    """Sources A and B each hold the target first for half of the users (A for odd users);
    ``third`` holds 30 other items and never the target."""
    def lists_of(u: int, target: int, items: np.ndarray) -> dict[str, np.ndarray]:
        a, b = items[1:31].copy(), items[31:61].copy()
        (a if u % 2 else b)[0] = target
        return {"A": a, "B": b, third: items[100:130]}
    return _built_run(n_users, seed, ["A", "B", third], lists_of)


def test_start_plan_is_a_floor() -> None:
    """Sources A and B each hold the target first for half of the users; together they hold
    it for everyone. With the greedy step switched off (min_gain 10), only the start plan
    (another path's A + B) reaches every target."""
    run = _halves_run(60, 3, "C")
    quotas = {"A": 30, "B": 30, "C": 30}
    alone = fit_plan(run, quotas, ("C",), None, c_grid=(20.0,), min_gain=10.0)
    assert alone.validation["rank"][1] == pytest.approx(0.5)
    start = FusionPlan({"A": 30, "B": 30}, {"A": 1.0, "B": 1.0})
    fitted = fit_plan(run, quotas, ("C",), None, c_grid=(20.0,), min_gain=10.0, start=start)
    assert fitted.validation["rank"][1] == pytest.approx(1.0)
    assert {"A", "B", "C"} == set(fitted.sources)


def test_a_ranker_below_min_gain_is_switched_off() -> None:
    """The oracle ranker gains a lot; required to gain 1000% it must stay off, and the plan is
    then the sources' own fit."""
    run, quotas = _synthetic_run(200, 0, "oracle")
    plan = fit_plan(run, quotas, (), None, c_grid=(20.0,), min_gain=10.0)
    assert plan.weights[RANKER] == 0.0
    assert tuple(plan.validation["rank"]) == tuple(plan.validation["recall"])


class _TargetFirst:
    """A reranker that, at diversity d > 0, puts the target first for the users in
    ``helped[d]`` (by target id) and keeps the fused order otherwise: a known gain per d."""

    def __init__(self, helped: dict[float, set[int]]) -> None:
        self.helped = helped

    def select(self, ids: np.ndarray, scores: np.ndarray, k: int, d: float) -> np.ndarray:
        hit = [j for j, i in enumerate(ids) if int(i) in self.helped.get(d, set())]
        order = hit + [j for j in range(len(ids)) if j not in hit]
        return np.asarray(order[:k])


def test_diversity_is_kept_only_for_a_gain_above_min_gain() -> None:
    run, quotas = _synthetic_run(200, 4, "none")
    for u, t in enumerate(run.targets):  # a target id of each user's own, so it names the user
        for arr in (*run.lists[u].values(), run.pool[u]):
            arr[arr == t] = 1000 + u
    run.targets = 1000 + np.arange(len(run.targets))
    reachable = [int(t) for t, lst in zip(run.targets, run.lists, strict=True)
                 if t in lst["good"]]
    rr = _TargetFirst({0.02: set(reachable[:1]), 0.05: set(reachable)})
    small = fit_plan(run, quotas, (), rr, c_grid=(20.0,), diversity_grid=(0.0, 0.02),
                     min_gain=0.02)
    v = small.validation["rerank"]
    assert 1.0 < v["0.02"][0] / v["0.0"][0] < 1.02  # it gains, by one user of 200 ...
    assert small.diversity == 0.0  # ... which is below min_gain
    large = fit_plan(run, quotas, (), rr, c_grid=(20.0,), diversity_grid=(0.0, 0.02, 0.05),
                     min_gain=0.02)
    assert large.diversity == 0.05


def test_a_source_fitted_to_weight_zero_leaves_the_plan() -> None:
    """A start plan (A + B + noise N) beats A alone, so the fit starts from it; coordinate
    ascent then sets N's weight to 0 (its top items tie with the targets). N must not stay
    in the plan: it would be called on every request for nothing."""
    run = _halves_run(80, 5, "N")
    start = FusionPlan({"A": 30, "B": 30, "N": 30}, {"A": 1.0, "B": 1.0, "N": 1.0})
    plan = fit_plan(run, {"A": 30, "B": 30, "N": 30}, (), None, c_grid=(20.0,),
                    min_gain=10.0, start=start)
    assert set(plan.sources) == {"A", "B"}
    assert all(plan.weights[s] > 0 for s in plan.sources)
    assert plan.validation["rank"][1] == pytest.approx(1.0)  # every target in the top 10


class _HelpsAndHurts:
    """At diversity d > 0, puts the target first for the users in ``helped`` and drops it
    from the top k for those in ``hurt`` (target ids name users); the fused order otherwise."""

    def __init__(self, helped: set[int], hurt: set[int]) -> None:
        self.helped, self.hurt = helped, hurt

    def select(self, ids: np.ndarray, scores: np.ndarray, k: int, d: float) -> np.ndarray:
        order = list(range(len(ids)))
        if d > 0:
            first = [j for j in order if int(ids[j]) in self.helped]
            last = [j for j in order if int(ids[j]) in self.hurt]
            order = first + [j for j in order if j not in first and j not in last] + last
        return np.asarray(order[:k])


def test_a_rerank_gain_within_its_noise_is_not_kept() -> None:
    """A rerank that helps 9 users and hurts 3 raises mean NDCG@10 by more than min_gain,
    but by less than two paired standard errors: it stays off. Helping the same 9 and
    hurting none is significant and is kept."""
    run, quotas = _synthetic_run(200, 4, "none")
    for u, t in enumerate(run.targets):  # a target id of each user's own, so it names the user
        for arr in (*run.lists[u].values(), run.pool[u]):
            arr[arr == t] = 1000 + u
    run.targets = 1000 + np.arange(len(run.targets))
    good = [int(t) for t, lst in zip(run.targets, run.lists, strict=True) if t in lst["good"]]
    # Users whose target is reachable but not yet first / already in the top 10.
    plain = fit_plan(run, quotas, (), None, c_grid=(20.0,))
    m = matrix(run, list(plain.sources))
    w = np.array([plain.weights[s] for s in plain.sources])
    ranks = dict(zip(run.targets.tolist(), fused_ranks(m, w, 0.0, plain.c).tolist(),
                     strict=True))
    helped = {t for t in good if ranks[t] >= 3}
    hurt = {t for t in good if ranks[t] == 0}
    helped, hurt = set(sorted(helped)[:9]), set(sorted(hurt)[:3])
    assert len(helped) == 9 and len(hurt) == 3
    noisy = fit_plan(run, quotas, (), _HelpsAndHurts(helped, hurt), c_grid=(20.0,),
                     diversity_grid=(0.0, 0.02), min_gain=0.005)
    v = noisy.validation["rerank"]
    assert v["0.02"][0] > v["0.0"][0] * 1.005  # above min_gain alone ...
    assert noisy.diversity == 0.0  # ... but within its noise
    clear = fit_plan(run, quotas, (), _HelpsAndHurts(helped, set()), c_grid=(20.0,),
                     diversity_grid=(0.0, 0.02), min_gain=0.005)
    assert clear.diversity == 0.02


def test_a_plan_with_a_ranker_keeps_its_sources() -> None:
    """One source holds every target; an oracle ranker may then rank alone (source weight 0),
    but the source still feeds the pool: the plan keeps it and serves what it measured."""
    rng = np.random.default_rng(7)
    lists, pool, scores, targets = [], [], [], []
    for _ in range(60):
        items = rng.permutation(300)
        a = items[:30].copy()
        target = int(a[int(rng.integers(0, 30))])
        ids = union([a])
        lists.append({"A": a})
        pool.append(ids)
        scores.append(np.where(ids == target, 2.0, rng.random(len(ids))))
        targets.append(target)
    run = PoolRun(["A"], lists, pool, scores, np.array(targets))
    plan = fit_plan(run, {"A": 30}, (), None, c_grid=(20.0,))
    assert "A" in plan.sources
    assert plan.validation["rank"][1] >= plan.validation["single"]["A"][1]
    assert plan.validation["rank"] == pytest.approx([1.0, 1.0])  # the oracle ranks it first


def test_objective_orders_by_the_sum_of_ndcg_and_hr() -> None:
    """A plan higher in NDCG@10 but lower in HR@10 by more loses: the paths are judged on both
    metrics (per user, a hit at rank r counts 1 + 1 / log2(r + 2))."""
    one_top_hit = objective(np.array([0, MISS]))  # NDCG .5, HR .5
    two_low_hits = objective(np.array([9, 9]))  # NDCG 1 / log2(11) = .289, HR 1
    assert one_top_hit[0] > two_low_hits[0] and one_top_hit[1] < two_low_hits[1]
    assert two_low_hits > one_top_hit and max(one_top_hit, two_low_hits) == two_low_hits


def _copies_run(n_users: int, seed: int) -> PoolRun:
    """A holds the target first for odd users, B for even users except every tenth; for
    those only C1 and C2, two identical sources that answer no one else, hold it first."""
    def lists_of(u: int, target: int, items: np.ndarray) -> dict[str, np.ndarray]:
        a, b = items[1:31].copy(), items[31:61].copy()
        per = {"A": a, "B": b}
        if u % 2:
            a[0] = target
        elif u % 10:
            b[0] = target
        else:
            per["C1"] = np.concatenate([[target], items[100:129]])
            per["C2"] = per["C1"].copy()
        return per
    return _built_run(n_users, seed, ["A", "B", "C1", "C2"], lists_of)


@pytest.mark.parametrize("costlier", ["C1", "C2"])
def test_the_costlier_of_two_copies_is_pruned(costlier: str) -> None:
    """With both copies served, either one adds nothing: the costlier leaves the plan. The
    other then holds every tenth user's target alone and stays."""
    run = _copies_run(200, 8)
    names, w = ["A", "B", "C1", "C2"], np.ones(4)
    costs = {"A": 1.0, "B": 1.0, "C1": 1.0, "C2": 1.0, costlier: 5.0}
    kept, w_kept, w_r, m, pruned = prune_costly(run, names, w, 0.0, 20.0, (), (), costs,
                                                0.005)
    assert pruned == [costlier]
    assert kept == [s for s in names if s != costlier]
    before = objective(fused_ranks(matrix(run, names), w, 0.0, 20.0))
    assert before[1] == 1.0  # every target in the top 10
    assert objective(fused_ranks(m, w_kept, w_r, 20.0)) >= before
    # fitted with these costs: a start plan's copies stay; without one, the greedy step adds
    # the cheaper copy only
    start = FusionPlan({s: 30 for s in names}, dict.fromkeys(names, 1.0))
    plan = fit_plan(run, dict.fromkeys(names, 30), (), None, c_grid=(20.0,), start=start,
                    costs=costs)
    assert plan.validation["pruned"] == [] and set(plan.sources) == set(names)  # start kept
    plan = fit_plan(run, dict.fromkeys(names, 30), (), None, c_grid=(20.0,), costs=costs)
    assert costlier not in plan.sources and plan.validation["rank"][1] == 1.0


def test_a_source_worth_min_gain_stays_though_within_its_noise() -> None:
    """C holds the target alone for 3 users of 100 and, weighted above A, pushes A's
    rank-10 target out of the top 10 for 2 more. Without C the plan loses 3.4% of the
    objective: above min_gain (0.5%), below one paired standard error. A source worth what
    the greedy step asks of it stays, whatever its cost."""
    helped, edge = {3, 40, 77}, {10, 60}

    def lists_of(u: int, target: int, items: np.ndarray) -> dict[str, np.ndarray]:
        a = items[1:31].copy()
        if u in edge:
            a[9] = target
        elif u not in helped:
            a[0] = target
        per = {"A": a}
        if u in helped or u in edge:
            per["C"] = np.concatenate([[target] if u in helped else [items[200]],
                                       items[201:210]])
        return per

    run = _built_run(100, 11, ["A", "C"], lists_of)
    names, w = ["A", "C"], np.array([1.0, 1.5])
    fitted = fused_ranks(matrix(run, names), w, 0.0, 20.0)
    alone = fused_ranks(matrix(run, ["A"]), np.ones(1), 0.0, 20.0)
    # the premise: a loss above min_gain, within one standard error
    assert significant_gain(fitted, alone, 0.005, z=0.0)
    assert not significant_gain(fitted, alone, 0.005, z=1.0)
    kept, *_, pruned = prune_costly(run, names, w, 0.0, 20.0, (), (), {"A": 1.0, "C": 50.0},
                                    0.005)
    assert kept == names and pruned == []


@pytest.mark.parametrize("budget", [1.5, 0.5])
def test_a_latency_budget_prunes_by_loss_per_ms_down_to_one_source(budget: float) -> None:
    """A and B each hold half of the targets: both are served without a budget. Over a
    budget of 1.5 ms one must leave; each loses the same, so the costlier (B) goes. A budget
    no plan meets (0.5) stops at one source, never an empty plan."""
    run = _halves_run(80, 9, "C")
    quotas, costs = {"A": 30, "B": 30, "C": 30}, {"A": 1.0, "B": 2.0, "C": 3.0}
    free = fit_plan(run, quotas, (), None, c_grid=(20.0,), costs=costs)
    assert set(free.sources) == {"A", "B"} and free.validation["pruned"] == []
    plan = fit_plan(run, quotas, (), None, c_grid=(20.0,), costs=costs, budget_ms=budget)
    assert list(plan.sources) == ["A"] and plan.validation["pruned"] == ["B"]
    assert plan.validation["budget_ms"] == budget
    assert tuple(plan.validation["rank"]) == tuple(plan.validation["single"]["A"])


def test_required_sources_are_never_pruned() -> None:
    """C never holds a target and is required: it stays however costly."""
    run = _halves_run(60, 3, "C")
    costs = {"A": 1.0, "B": 1.0, "C": 100.0}
    plan = fit_plan(run, {"A": 30, "B": 30, "C": 30}, ("C",), None, c_grid=(20.0,),
                    costs=costs)
    assert "C" in plan.sources and plan.validation["pruned"] == []
    assert {"A", "B"} <= set(plan.sources)  # each holds half of the targets: significant


def test_fit_plan_reports_the_pruned_plan_it_serves(monkeypatch) -> None:
    """With a bar no source can pass, every source but the best single one leaves (the floor
    keeps that one), and the plan's validation figures are the pruned plan's own."""
    from models.evaluate import fusion_fit

    run = _halves_run(80, 9, "C")
    quotas = {"A": 30, "B": 30, "C": 30}
    costs = {"A": 1.0, "B": 2.0, "C": 3.0}
    kept = fit_plan(run, quotas, (), None, c_grid=(20.0,), costs=costs)
    assert {"A", "B"} <= set(kept.sources) and kept.validation["pruned"] == []
    monkeypatch.setattr(fusion_fit, "PRUNE_Z", 1e6)
    plan = fit_plan(run, quotas, (), None, c_grid=(20.0,), costs=costs)
    v = plan.validation
    assert len(plan.sources) == 1 and v["pruned"]
    assert set(v["pruned"]) | set(plan.sources) == set(kept.sources)
    served = list(plan.sources)
    w = np.array([plan.weights[s] for s in served])
    assert v["rank"] == list(objective(fused_ranks(matrix(run, served), w, 0.0, plan.c)))
    assert tuple(v["rank"]) == tuple(v["single"][served[0]])  # the best single source
    assert tuple(v["unpruned"]) > tuple(v["rank"])
