"""HR / NDCG from target ranks; ranking with history masking and pessimistic ties, on numpy
or torch scores, with either policy for a target the user already consumed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.evaluate.rank_metrics import MISS, hit_rate, ndcg, summarize, target_ranks


def test_hand_computed_hr_ndcg():
    ranks = np.array([0, 2, 9, 10, 49, 50])
    np.testing.assert_array_equal(hit_rate(ranks, 10), [1, 1, 1, 0, 0, 0])
    np.testing.assert_allclose(ndcg(ranks, 10), [1.0, 0.5, 1 / math.log2(11), 0.0, 0.0, 0.0])
    np.testing.assert_allclose(ndcg(ranks, 50)[4], 1 / math.log2(51))
    assert ndcg(ranks, 50)[5] == 0.0


def test_summarize_keys_and_means():
    out = summarize(np.array([0, 2, 20, 100]))
    assert list(out) == ["HR@10", "NDCG@10", "HR@50", "NDCG@50"]
    assert out["HR@10"] == pytest.approx(0.5)
    assert out["NDCG@10"] == pytest.approx((1 + 0.5) / 4)
    assert out["HR@50"] == pytest.approx(0.75)
    assert out["NDCG@50"] == pytest.approx((1 + 0.5 + 1 / math.log2(22)) / 4)
    assert all(isinstance(v, float) for v in out.values())
    assert summarize(np.array([], dtype=np.int64), ks=(5,)) == {"HR@5": 0.0, "NDCG@5": 0.0}


def test_target_ranks_plain():
    scores = np.array([[0.1, 0.9, 0.5, 0.3], [4.0, 3.0, 2.0, 1.0]])
    np.testing.assert_array_equal(target_ranks(scores, np.array([2, 3])), [1, 3])


def test_exclusion_masks_history_but_not_target():
    scores = np.array([[0.1, 0.9, 0.5, 0.3, 0.8]])
    # Items 1 and 4 beat the target 2; masking them moves it to the top.
    assert target_ranks(scores, np.array([2]), [np.array([1, 4])])[0] == 0
    # The target itself in the history is not masked (rank stays computed on its score).
    assert target_ranks(scores, np.array([2]), [np.array([1, 2, 4])])[0] == 0
    # Out-of-range ids (e.g. the padding id N) are ignored; input is not modified.
    before = scores.copy()
    assert target_ranks(scores, np.array([2]), [np.array([5, -1])])[0] == 2
    np.testing.assert_array_equal(scores, before)


def test_ties_are_pessimistic():
    scores = np.zeros((1, 100), dtype=np.float32)
    assert target_ranks(scores, np.array([37]))[0] == 99
    assert summarize(target_ranks(scores, np.array([37])))["HR@50"] == 0.0
    # Masked items are -inf, so with constant scores they no longer count against the target.
    assert target_ranks(scores, np.array([37]), [np.arange(60)])[0] == 99 - 59
    # A tie with one other item costs one position.
    s = np.array([[1.0, 2.0, 2.0, 0.5]])
    assert target_ranks(s, np.array([1]))[0] == 1
    assert target_ranks(s, np.array([2]))[0] == 1


def test_nan_target_is_worst_and_validation():
    s = np.array([[np.nan, 1.0, 2.0]])
    assert target_ranks(s, np.array([0]))[0] == 2
    with pytest.raises(ValueError):
        target_ranks(s, np.array([3]))
    with pytest.raises(ValueError):
        target_ranks(s, np.array([0, 1]))


def test_served_policy_makes_an_excluded_target_a_miss():
    scores = np.array([[0.1, 0.9, 0.5, 0.3, 0.8], [1.0, 1.0, 1.0, np.nan, 0.0]])
    hist = [np.array([1, 2]), np.array([0])]
    ranked = target_ranks(scores, np.array([2, 3]), hist)
    assert ranked.tolist() == [1, 4]  # item 4 beats 2; user 1's NaN target is worst (N - 1)
    served = target_ranks(scores, np.array([2, 3]), hist, excluded_target="miss")
    assert served.tolist() == [MISS, MISS]  # consumed target; NaN target
    # A target outside the history ranks the same under both policies (the masked item 1
    # no longer beats user 0's target); ties still count against, NaN scores never do.
    for policy in ("ranked", "miss"):
        assert target_ranks(scores, np.array([4, 1]), hist, policy).tolist() == [0, 1]
    with pytest.raises(ValueError):
        target_ranks(scores, np.array([2, 3]), hist, excluded_target="hit")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        target_ranks(scores, np.array([2, 3]), hist[:1])


def test_torch_scores_rank_like_numpy():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(64, 30)).astype(np.float32)  # many ties
    targets = rng.integers(0, 30, size=64)
    exclude = [rng.integers(-1, 31, size=int(rng.integers(0, 8))) for _ in range(64)]
    t = torch.from_numpy(scores.copy())
    for policy in ("ranked", "miss"):
        got = target_ranks(t, targets, exclude, policy)  # type: ignore[arg-type]
        want = target_ranks(scores, targets, exclude, policy)  # type: ignore[arg-type]
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)
    assert torch.equal(t, torch.from_numpy(scores))  # not modified
    # Integer scores compare exactly (no float32 rounding of large ids).
    big = np.array([[2**24 + 1, 2**24]], dtype=np.int64)
    assert target_ranks(big, np.array([1]))[0] == 1
