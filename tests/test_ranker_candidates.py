"""Rankers trained on what they serve: hard negatives mined from a path's served recall sources
(models/build/ranker_candidates.py) and mixed with uniform ones (models/train/samples.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.build.job import BuildJob
from models.build.ranker_candidates import mine_pools, path_sources, ranked_path, user_vectors
from models.data import leave_one_out, load_dataset
from models.data.dataset import Split
from models.engine.core.context import make_context
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.factory import build_components
from models.train.samples import CandidatePools, consumed_keys, sample_mixed_negatives

pytestmark = pytest.mark.usefixtures("one_thread")

N_USERS = 30  # mining queries every source per user: a few users keep the test fast


@pytest.fixture(scope="module")
def mined(tiny_artifacts: Path):
    ds = load_dataset("ml-100k")
    full = leave_one_out(ds)
    split = Split(train=full.train[:N_USERS], valid_target=full.valid_target[:N_USERS],
                  test_target=full.test_target[:N_USERS], sequences=full.sequences[:N_USERS])
    job = BuildJob(ds=ds, split=split, progress=False, out=tiny_artifacts)
    pools, report = mine_pools(job, "generative", positions=2, quota=10, gap=1)
    return ds, split, pools, report


def test_paths_name_their_rankers() -> None:
    assert ranked_path("hstu_ranker") == "generative" and ranked_path("din") == "cascade"
    assert ranked_path("deepfm") is None  # no path's ranker: trained on uniform negatives
    assert "semantic_id" in path_sources("generative")


def test_pools_are_the_served_sources_lists_without_training_items(mined, tiny_artifacts) -> None:
    ds, split, pools, report = mined
    assert pools is not None and len(pools.sizes()) == N_USERS
    assert report["queries"] == sum(min(2, max(len(s) - 2, 0)) for s in split.train)
    names = [name for name, _ in report["sources"]]
    assert set(names) <= set(path_sources("generative")) and "ann" in names
    rt = Runtime.load(tiny_artifacts)
    recall = build_components(rt, EngineSettings()).recall
    contexts, owner = [], []
    for u, seq in enumerate(split.train):
        pool = pools.flat[pools.offsets[u]:pools.offsets[u + 1]]
        assert not set(pool.tolist()) & set(seq.tolist())  # never a positive
        assert np.all(np.diff(pool) > 0)  # sorted, distinct
        # Two training positions, one before the user's last (gap 1).
        for t in (t for t in (len(seq) - 2, len(seq) - 3) if t >= 1):
            contexts.append(make_context(rt, rt.users.ids[u], seq[:t], blocked=seq.tolist(),
                                         timestamps=ds.timestamps[u][:t], limit=t))
            owner.append(u)
    # Reference: each source's served recall, one request at a time.
    want: list[set[int]] = [set() for _ in split.train]
    for name, quota in report["sources"]:
        src = recall[name]
        vecs = user_vectors(src, contexts)
        if vecs is not None:  # batched user vectors = the served one-request vectors
            served = np.stack([src.user_vector(ctx) for ctx in contexts])
            np.testing.assert_allclose(vecs, served, rtol=0, atol=1e-5)
        for u, ctx in zip(owner, contexts, strict=True):
            want[u] |= set(src.recall(ctx, quota)[0].tolist())
    got = [set(pools.flat[pools.offsets[u]:pools.offsets[u + 1]].tolist()) for u in owner]
    same = sum(len(g & want[u]) for g, u in zip(got, owner, strict=True))
    # Equal up to near-ties at a list's end (batched vs one-request floats).
    assert same >= 0.98 * sum(len(want[u]) for u in owner)
    assert sum(len(g) for g in got) <= 1.02 * sum(len(want[u]) for u in owner)


def test_mixed_negatives_draw_hard_columns_from_pools() -> None:
    rng = np.random.default_rng(0)
    train = [np.array([0, 1, 2]), np.array([3, 4]), np.array([5])]
    consumed = consumed_keys(train, 50)
    pools = CandidatePools.from_lists([np.array([10, 11]), np.zeros(0, np.int64),
                                       np.array([12])])
    users = np.repeat(np.arange(3), 200)
    neg = sample_mixed_negatives(users, 3, 4, 50, consumed, rng, pools)
    assert neg.shape == (600, 7)
    assert set(neg[users == 0, :3].ravel().tolist()) == {10, 11}  # both drawn, nothing else
    assert set(neg[users == 2, :3].ravel().tolist()) == {12}
    for u, seq in enumerate(train):  # uniform columns, and the empty pool's: unconsumed items
        assert not set(neg[users == u].ravel().tolist()) & set(seq.tolist())
    assert len(set(neg[users == 1, :3].ravel().tolist())) > 10  # empty pool: uniform
    same = sample_mixed_negatives(users, 3, 4, 50, consumed, np.random.default_rng(0), None)
    assert same.shape == (600, 7) and not (same[users == 0, :3] >= 10).all()


def test_din_training_draws_hard_columns_from_pools() -> None:
    """train_ranker puts ``n_hard`` pool items after the positive, then uniform negatives."""
    import torch

    from models.nets.din import DIN, DINConfig
    from models.train.item_scorer import RankerTrainConfig, train_ranker

    n_items, rng = 40, np.random.default_rng(0)
    train = [rng.choice(n_items, 9, replace=False) for _ in range(20)]
    split = Split(train=train, valid_target=np.full(20, -1), test_target=np.full(20, -1),
                  sequences=train)
    pools = CandidatePools.from_lists([np.setdiff1d(np.arange(10), s) for s in train])
    model = DIN(DINConfig(n_items=n_items, max_history=5, item_dim=4, attention_hidden=[8],
                          hidden_dims=[8]))
    seen: list[torch.Tensor] = []
    score_items = model.score_items

    def spy(codes: torch.Tensor, history: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        seen.append(items.clone())
        return score_items(codes, history, items)

    model.score_items = spy  # type: ignore[method-assign]
    cfg = RankerTrainConfig(epochs=1, batch_size=16, neg_ratio=3, n_hard=2, num_threads=None)
    train_ranker(model, split, torch.zeros(20, 0, dtype=torch.long), n_items, cfg,
                 progress=False, pools=pools)
    items = torch.cat(seen)
    assert items.shape == (20 * 8, 6)  # every (history, next item) example, 1 + 2 + 3 columns
    assert bool((items[:, 1:3] < 10).all())
    assert not bool((items[:, 1:] == items[:, :1]).any())
    # recent_per_user: only each user's last 2 positions (frac 0), every epoch
    seen.clear()
    recent = RankerTrainConfig(epochs=2, batch_size=16, neg_ratio=3, n_hard=2,
                               recent_per_user=2, num_threads=None)
    train_ranker(model, split, torch.zeros(20, 0, dtype=torch.long), n_items, recent,
                 progress=False, pools=pools)
    targets = torch.cat(seen)[:, 0]
    assert len(targets) == 2 * 20 * 2
    last_two = sorted(int(i) for s in train for i in s[-2:])
    assert sorted(targets[:40].tolist()) == last_two
