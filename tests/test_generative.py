"""The generative path on real (tiny) artifacts: semantic-ID generation over the whole ml-100k
test split, the generative pipeline's contract (exactly k, nothing blocked, no duplicates,
stages filled in, fallbacks), and agreement of the served HSTU stage with direct scoring."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from models.data import leave_one_out, load_dataset
from models.engine.core.runtime import Runtime
from models.engine.factory import Components, build_components
from models.engine.paths.generative import Generative
from models.engine.rank.fusion import FusionPlan
from models.evaluate.offline import eval_context
from service.config import Settings


@pytest.fixture(scope="module")
def loaded(tiny_artifacts: Path) -> tuple[Runtime, Components]:
    torch.set_num_threads(1)
    rt = Runtime.load(tiny_artifacts)
    return rt, build_components(rt, Settings(artifacts_dir=tiny_artifacts))


@pytest.fixture(scope="module")
def data():
    ds = load_dataset("ml-100k")
    return ds, leave_one_out(ds)


def test_generation_is_valid_and_unblocked_for_every_test_user(loaded, data) -> None:
    rt, comp = loaded
    ds, split = data
    gen = comp.recall["semantic_id"]
    sids = gen.sids
    rng = np.random.default_rng(0)
    users = split.eval_users("test")
    assert len(users) == ds.n_users
    k = 20
    for u in users.tolist():
        ctx = eval_context(rt, split, u, "test", ds.timestamps)
        excluded = set(rng.choice(ds.n_items, size=10, replace=False).tolist())
        ctx = dataclasses.replace(ctx, blocked=ctx.blocked | excluded)
        ids, scores = gen.recall(ctx, k)
        assert len(ids) == k and len(set(ids.tolist())) == k
        assert not set(ids.tolist()) & ctx.blocked
        # every returned ID is a real item's full semantic ID
        assert bool(np.all(sids.is_valid(sids.ids[ids])))
        assert np.all(np.diff(scores) <= 1e-6)


def test_generative_pipeline_contract(loaded, data) -> None:
    rt, comp = loaded
    ds, split = data
    pipe = comp.pipelines["generative"]
    for u in range(0, ds.n_users, 97):
        ctx = eval_context(rt, split, u, "test", ds.timestamps)
        res = pipe.run(ctx, 10)
        assert res.path == "generative" and not res.cold_start
        assert len(res.items) == 10 and len(set(res.items.tolist())) == 10
        assert not set(res.items.tolist()) & ctx.blocked
        names = [(s.name, s.source) for s in res.stages]
        # The generator always runs first; the fitted plan may add sequential retrievers.
        assert names[0][0] == "recall" and names[0][1].split("+")[0] == "semantic_id"
        assert (("rank", "hstu") in names) == pipe.plan.uses_ranker
        assert ("fusion", "rrf") in names and names[-1] == ("rerank", "dpp")


def test_generative_falls_back_when_few_items_are_left(loaded, data) -> None:
    rt, comp = loaded
    ds, split = data
    ctx = eval_context(rt, split, 0, "test", ds.timestamps)
    left = [i for i in range(ds.n_items) if i not in ctx.blocked][:7]
    ctx = dataclasses.replace(ctx, blocked=set(range(ds.n_items)) - set(left))
    res = comp.pipelines["generative"].run(ctx, 10)
    assert sorted(res.items.tolist()) == sorted(left)  # all that is left, nothing blocked


def test_generative_cold_user_gets_popular(loaded) -> None:
    rt, comp = loaded
    ctx = eval_context(rt, leave_one_out(load_dataset("ml-100k")), 0, "test")
    cold = dataclasses.replace(ctx, history=np.empty(0, np.int64), timestamps=None,
                               blocked=set())
    res = comp.pipelines["generative"].run(cold, 5)
    assert res.cold_start and len(res.items) == 5
    top = [i for i, _ in comp.recall["popular"].popularity.top(5, exclude=set())]
    assert res.items.tolist() == top


def test_arm_params_are_checked_and_applied(loaded, data) -> None:
    rt, comp = loaded
    ds, split = data
    # The generator alone, so the recall stage counts its candidates only.
    pipe = Generative(FusionPlan({"semantic_id": 50}, {"ranker": 1.0}), comp.recall,
                      comp.rankers["hstu_ranker"], None, comp.recall["popular"])
    with pytest.raises(ValueError, match="params.beam"):
        pipe.check_params({"beam": 3})
    with pytest.raises(ValueError, match="params.n_candidates"):
        pipe.check_params({"n_candidates": 0})
    # An explicit null means "not set": the pipeline's own value applies, nothing breaks.
    assert pipe.check_params({"last_stage": None, "diversity": None}) == {}
    assert len(pipe.run(eval_context(rt, split, 5, "test", ds.timestamps), 10,
                        pipe.check_params({"last_stage": None})).items) == 10
    ctx = eval_context(rt, split, 5, "test", ds.timestamps)
    res = pipe.run(ctx, 10, pipe.check_params({"n_candidates": 30, "beam_size": 30}))
    recall = res.stages[0]
    assert recall.source == "semantic_id" and recall.candidates == 30


def test_served_hstu_scores_equal_direct_scoring(loaded, data) -> None:
    rt, comp = loaded
    ds, split = data
    stage = comp.rankers["hstu_ranker"]
    ctx = eval_context(rt, split, 3, "test", ds.timestamps)
    items = np.arange(0, ds.n_items, 37, dtype=np.int64)
    served = stage.score(ctx, items)
    L = rt.nets["hstu"].cfg.max_history
    hist = torch.from_numpy(ctx.history[-L:])[None]
    ts = torch.from_numpy(ctx.timestamps[-L:])[None]
    with torch.no_grad():
        direct = rt.nets["hstu"].score_items(torch.zeros(1, 0, dtype=torch.long), hist,
                                     torch.from_numpy(items)[None], ts)[0].numpy()
    np.testing.assert_allclose(served, direct, atol=1e-5)
