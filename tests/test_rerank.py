"""MMR and greedy DPP against brute-force references of their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from models.nets.rerank import cosine_similarity, dpp, dpp_kernel, mmr, pick_scores


def _inputs(seed: int, n: int = 12, d: int = 6):
    rng = np.random.default_rng(seed)
    return rng.normal(size=n) * 3 + 1, rng.normal(size=(n, d))


def brute_mmr(rel, emb, k, diversity):
    r = (rel - rel.min()) / (rel.max() - rel.min())
    u = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sel: list[int] = []
    for _ in range(min(k, len(rel))):
        best, best_v = -1, -np.inf
        for i in range(len(rel)):
            if i in sel:
                continue
            if sel:
                v = (1 - diversity) * r[i] - diversity * max(float(u[i] @ u[j]) for j in sel)
            else:
                v = r[i]
            if v > best_v:
                best, best_v = i, v
        sel.append(best)
    return sel


def brute_dpp(rel, emb, k, diversity, eps=1e-10):
    """Greedy argmax of log det L[S+i, S+i] via slogdet; stop when the best gain
    det(L_{S+i}) / det(L_S) < eps, then fill by relevance."""
    L = dpp_kernel(rel, emb, diversity)
    sel: list[int] = []
    logdet_s = 0.0
    while len(sel) < min(k, len(rel)):
        best, best_ld = -1, -np.inf
        for i in range(len(rel)):
            if i in sel:
                continue
            idx = sel + [i]
            sign, ld = np.linalg.slogdet(L[np.ix_(idx, idx)])
            if sign > 0 and ld > best_ld:
                best, best_ld = i, ld
        if best < 0 or np.exp(best_ld - logdet_s) < eps:
            break
        sel.append(best)
        logdet_s = best_ld
    rest = [int(i) for i in np.argsort(-np.asarray(rel), kind="stable") if i not in sel]
    return sel + rest[: min(k, len(rel)) - len(sel)]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("diversity", [0.0, 0.3, 0.7, 1.0])
def test_mmr_matches_definition(seed, diversity):
    rel, emb = _inputs(seed)
    assert mmr(rel, emb, 6, diversity) == brute_mmr(rel, emb, 6, diversity)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("diversity", [0.2, 0.5, 0.8])
def test_dpp_matches_slogdet_greedy(seed, diversity):
    rel, emb = _inputs(seed, d=8)
    got = dpp(rel, emb, 6, diversity)
    assert got == brute_dpp(rel, emb, 6, diversity)


def test_mmr_no_diversity_is_relevance_order():
    rel, emb = _inputs(42, n=30)
    assert mmr(rel, emb, 10, 0.0) == list(np.argsort(-rel)[:10])


def test_dpp_no_diversity_is_relevance_order():
    # alpha is capped, so this holds for well-separated relevance, as here.
    rel = np.linspace(10.0, 0.0, 20)
    emb = np.random.default_rng(0).normal(size=(20, 4))
    assert dpp(rel, emb, 8, 0.0) == list(range(8))


@pytest.mark.parametrize("fn", [mmr, dpp])
@pytest.mark.parametrize("k", [0, 1, 5, 12, 20])
def test_length_and_uniqueness(fn, k):
    rel, emb = _inputs(3)
    for diversity in (0.0, 0.5, 1.0):
        out = fn(rel, emb, k, diversity)
        assert len(out) == min(k, 12) and len(set(out)) == len(out)
        assert all(isinstance(i, int) and 0 <= i < 12 for i in out)


def test_dpp_fills_after_early_stop():
    # Three distinct directions, each duplicated 4 times: after 3 picks every gain is ~jitter.
    base = np.eye(3)
    emb = np.repeat(base, 4, axis=0)
    rel = np.arange(12, dtype=float)[::-1]  # position 0 most relevant
    out = dpp(rel, emb, 8, 0.5, eps=1e-4)
    assert sorted(out[:3]) == [0, 4, 8]  # one per direction, best of each
    assert out[3:] == [1, 2, 3, 5, 6]  # then by relevance
    assert len(set(out)) == 8


@pytest.mark.parametrize("fn", [mmr, dpp])
def test_constant_relevance_and_degenerate_inputs(fn):
    emb = np.random.default_rng(1).normal(size=(5, 3))
    assert sorted(fn(np.ones(5), emb, 5, 0.5)) == list(range(5))
    assert fn(np.ones(1), emb[:1], 3, 0.5) == [0]
    assert fn(np.zeros(0), np.zeros((0, 3)), 3, 0.5) == []
    with pytest.raises(ValueError):
        fn(np.ones(5), emb, 3, 1.5)


@pytest.mark.parametrize("fn", [mmr, dpp])
def test_more_diversity_lowers_similarity(fn):
    # 4 tight clusters of 10; relevance favours cluster 0, so pure relevance picks it only.
    rng = np.random.default_rng(7)
    centers = rng.normal(size=(4, 16)) * 3
    emb = np.repeat(centers, 10, axis=0) + rng.normal(size=(40, 16)) * 0.3
    rel = np.repeat([4.0, 3.0, 2.0, 1.0], 10) + rng.uniform(0, 0.5, size=40)
    sim = cosine_similarity(emb)

    def mean_pairwise(sel):
        s = sim[np.ix_(sel, sel)]
        return (s.sum() - np.trace(s)) / (len(sel) * (len(sel) - 1))

    values = [mean_pairwise(fn(rel, emb, 8, d)) for d in (0.0, 0.5, 0.9)]
    assert values[0] > values[1] >= values[2]
    assert values[0] > 0.9  # one cluster


@pytest.mark.parametrize("fn,name", [(mmr, "mmr"), (dpp, "dpp")])
@pytest.mark.parametrize("diversity", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("seed", range(5))
def test_pick_scores_never_increase_and_match_the_greedy(fn, name, diversity, seed):
    rng = np.random.default_rng(seed)
    rel, emb = rng.normal(size=40), rng.normal(size=(40, 6))
    picked = fn(rel, emb, 12, diversity)
    s = pick_scores(name, rel, emb, picked, diversity)
    assert s.shape == (12,) and np.all(np.diff(s) <= 0)
    if name == "mmr":  # the definition, pick by pick
        r = (rel - rel.min()) / (rel.max() - rel.min())
        u = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        for t in range(1, 12):
            prior = max(float(u[picked[t]] @ u[picked[j]]) for j in range(t))
            want = (1 - diversity) * r[picked[t]] - diversity * prior
            assert s[t] == pytest.approx(min(want, s[t - 1]), abs=1e-12)
    else:  # the log-det gains of the picked prefix, from slogdet
        kernel = dpp_kernel(rel, emb, diversity)[np.ix_(picked, picked)]
        logdets = [0.0] + [np.linalg.slogdet(kernel[:t, :t])[1] for t in range(1, 13)]
        want = np.minimum.accumulate(np.diff(logdets))
        np.testing.assert_allclose(s, want, rtol=1e-6, atol=1e-6)
