"""Popularity and ItemCF on tiny hand-made data with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.evaluate.rank_metrics import target_ranks
from models.nets.itemcf import ItemCF
from models.nets.popularity import Popularity

DAY = 86400


def _arr(*xs):
    return np.array(xs, dtype=np.int64)


# ---------------------------------------------------------------- popularity

SEQS = [_arr(0, 1, 1), _arr(2, 2, 0, 3, 2)]
TS = [_arr(0, 100 * DAY, 101 * DAY), _arr(95 * DAY, 99 * DAY, 1 * DAY, 2 * DAY, 3 * DAY)]


def test_popularity_window_and_ties():
    # Latest = day 101; the 30-day window holds item 1 twice and item 2 twice.
    pop = Popularity().fit(SEQS, TS, n_items=6, window_days=30)
    np.testing.assert_array_equal(pop.window_counts, [0, 2, 2, 0, 0, 0])
    np.testing.assert_array_equal(pop.counts, [2, 2, 3, 1, 0, 0])
    # 1 and 2 tie in the window, 2 has more all-time; 0 beats 3 on all-time; 4 vs 5 by id.
    assert [i for i, _ in pop.top(6)] == [2, 1, 0, 3, 4, 5]
    assert pop.scores.dtype == np.float32 and pop.scores.shape == (6,)
    assert list(np.argsort(-pop.scores)) == [2, 1, 0, 3, 4, 5]  # strict, same order
    assert [s for _, s in pop.top(2)] == [pytest.approx(1.0), pytest.approx(5 / 6)]


def test_popularity_all_time_without_timestamps_and_exclusion():
    pop = Popularity().fit(SEQS, None, n_items=6)
    np.testing.assert_array_equal(pop.window_counts, pop.counts)
    assert [i for i, _ in pop.top(3, exclude={2})] == [0, 1, 3]
    assert [i for i, _ in pop.top(10, exclude={0, 1, 2})] == [3, 4, 5]
    assert pop.top(0) == []


def test_popularity_state_round_trip():
    pop = Popularity().fit(SEQS, TS, n_items=6, window_days=30)
    state = pop.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    back = Popularity.from_state(state)
    assert back.top(6) == pop.top(6)
    np.testing.assert_array_equal(back.scores, pop.scores)
    assert back.window_days == 30.0


# ---------------------------------------------------------------- itemcf

# u0 {0,1,2}, u1 {0,1}, u2 {1,2} (2 repeated), u3 {3}; item 4 unseen.
CF_SEQS = [_arr(0, 1, 2), _arr(0, 1), _arr(1, 2, 2), _arr(3), _arr()]
W3, W2 = 1 / math.log(1 + 3), 1 / math.log(1 + 2)  # IUF of a 3-item and a 2-item user
S01 = (W3 + W2) / math.sqrt(2 * 3)  # users u0, u1; |U(0)| = 2, |U(1)| = 3
S12 = (W3 + W2) / math.sqrt(3 * 2)  # users u0, u2
S02 = W3 / math.sqrt(2 * 2)  # user u0 only


@pytest.fixture
def cf():
    return ItemCF().fit(CF_SEQS, n_items=5, top_n=3)


def test_itemcf_hand_computed_similarities(cf):
    assert cf.neighbors.shape == cf.sims.shape == (5, 3)
    assert cf.neighbors.dtype == np.int64 and cf.sims.dtype == np.float32
    np.testing.assert_array_equal(cf.neighbors[0], [1, 2, -1])
    np.testing.assert_allclose(cf.sims[0], [S01, S02, 0], rtol=1e-6)
    np.testing.assert_array_equal(cf.neighbors[1], [0, 2, -1])  # equal sims: lower id first
    np.testing.assert_allclose(cf.sims[1], [S01, S12, 0], rtol=1e-6)
    np.testing.assert_array_equal(cf.neighbors[2], [1, 0, -1])
    np.testing.assert_allclose(cf.sims[2], [S12, S02, 0], rtol=1e-6)
    np.testing.assert_array_equal(cf.neighbors[3], [-1, -1, -1])  # co-occurs with nothing
    np.testing.assert_array_equal(cf.neighbors[4], [-1, -1, -1])  # unseen


def test_itemcf_top_n_cap_and_sorting():
    cf = ItemCF().fit(CF_SEQS, n_items=5, top_n=1)
    np.testing.assert_array_equal(cf.neighbors[:, 0], [1, 0, 1, -1, -1])
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 60, size=rng.integers(1, 20)) for _ in range(300)]
    big = ItemCF().fit(seqs, n_items=60, top_n=10)
    assert big.neighbors.shape == (60, 10)
    assert np.all(np.diff(big.sims, axis=1) <= 0)
    assert not np.any(big.neighbors == np.arange(60)[:, None])  # no self-neighbours
    # The kept neighbours are the true top 10 of a dense reference computation.
    r = np.zeros((300, 60))
    for u, s in enumerate(seqs):
        r[u, np.unique(s)] = 1
    w = 1 / np.log1p(r.sum(1))
    co = (r * w[:, None]).T @ r / np.sqrt(np.outer(r.sum(0), r.sum(0)))
    np.fill_diagonal(co, 0)
    np.testing.assert_allclose(big.sims, -np.sort(-co, axis=1)[:, :10], rtol=1e-5)


def test_itemcf_block_path_matches(monkeypatch):
    import models.nets.itemcf as mod

    whole = ItemCF().fit(CF_SEQS, n_items=5, top_n=3)
    monkeypatch.setattr(mod, "_BLOCK_CELLS", 7)  # one row per block
    blocked = ItemCF().fit(CF_SEQS, n_items=5, top_n=3)
    np.testing.assert_array_equal(whole.neighbors, blocked.neighbors)
    np.testing.assert_array_equal(whole.sims, blocked.sims)


def test_itemcf_recall_and_exclusion(cf):
    got = cf.recall(_arr(0), k=5, exclude={0})
    assert [i for i, _ in got] == [1, 2]
    assert [s for _, s in got] == pytest.approx([S01, S02], rel=1e-6)
    got = cf.recall(_arr(0, 2), k=5, exclude={0, 2})
    assert got == [(1, pytest.approx(S01 + S12, rel=1e-6))]
    assert [i for i, _ in cf.recall(_arr(0, 2), k=1, exclude=set())] == [1]
    assert cf.recall(_arr(3), k=5, exclude=set()) == []  # no neighbours, no candidates


def test_itemcf_recent_window_decay_and_repeats(cf):
    # Only the last item counts with recent=1.
    assert [i for i, _ in cf.recall(_arr(0, 2), k=5, exclude=set(), recent=1)] == [1, 0]
    # decay 0.5: item 2 (newest) weight 1, item 0 weight 0.5.
    s = cf.score_all(_arr(0, 2), decay=0.5)
    np.testing.assert_allclose(s, [S02, 0.5 * S01 + S12, 0.5 * S02, 0, 0], rtol=1e-6)
    # Repeats count once; padding id n_items is ignored.
    np.testing.assert_allclose(cf.score_all(_arr(0, 0, 5)), cf.score_all(_arr(0)))
    assert cf.score_all(_arr(0)).dtype == np.float32


def test_itemcf_state_round_trip_and_full_ranking(cf):
    back = ItemCF.from_state(cf.state_dict())
    np.testing.assert_array_equal(back.neighbors, cf.neighbors)
    assert back.recall(_arr(0), 5, {0}) == cf.recall(_arr(0), 5, {0})
    scores = np.stack([cf.score_all(_arr(0)), cf.score_all(_arr(1))])
    ranks = target_ranks(scores, _arr(1, 0), [_arr(0), _arr(1)])
    # User 1 (history {1}) has 0 and 2 tied at S01 == S12: the tie costs one position.
    np.testing.assert_array_equal(ranks, [0, 1])


def test_itemcf_scoring_defaults_travel_with_the_state():
    seqs = [np.array([0, 1, 2]), np.array([1, 2, 3]), np.array([0, 3])]
    cf = ItemCF(recent=2, decay=0.5).fit(seqs, 4, top_n=3)
    back = ItemCF.from_state(cf.state_dict())
    assert (back.recent, back.decay) == (2, 0.5)
    hist = np.array([0, 1, 2])
    np.testing.assert_array_equal(back.score_all(hist), cf.score_all(hist, recent=2, decay=0.5))
    # Only the last `recent` items count: the oldest item (0) must not contribute.
    np.testing.assert_array_equal(back.score_all(hist), cf.score_all(np.array([1, 2]), 2, 0.5))
