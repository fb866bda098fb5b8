"""Semantic-ID balancing and collision handling: the Sinkhorn assignment is balanced where the
nearest code is not, spreading collisions is an optimal per-prefix assignment (brute force)
that touches only collided items, the build helper reports both collision rates, the
collaborative + content source, and the RQ-VAE step reproduces its codes run to run."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from index.semantic_ids import SemanticIds, spread_collisions
from models.build.generative import item_embedding_source, semantic_ids_from
from models.data import load_dataset
from models.nets.rqvae import RQVAE, RQVAEConfig, sinkhorn_codes
from models.train.rqvae import RQVAETrainConfig, train_rqvae

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sinkhorn_spreads_rows_that_share_a_nearest_code() -> None:
    rng = np.random.default_rng(0)
    k, n = 8, 64
    # every row is nearest to code 0, but the rest of its distances differ
    d = torch.from_numpy(rng.uniform(1.0, 2.0, size=(n, k)))
    d[:, 0] = 0.5
    assert torch.all(d.argmin(1) == 0)
    codes = sinkhorn_codes(d, eps=0.003, iters=100)
    counts = np.bincount(codes.numpy(), minlength=k)
    assert counts.max() <= n // k + 2 and counts.min() >= n // k - 2


def test_sinkhorn_keeps_an_already_balanced_nearest_assignment() -> None:
    d = torch.full((6, 3), 5.0)
    d[np.arange(6), np.arange(6) % 3] = 0.1  # rows 0, 3 -> code 0; 1, 4 -> 1; 2, 5 -> 2
    assert sinkhorn_codes(d, eps=0.01, iters=50).tolist() == [0, 1, 2, 0, 1, 2]


def brute_spread(codes: np.ndarray, dist: np.ndarray) -> float:
    """Least total last-level distance over the collided items of one prefix group, each on a
    distinct code that no collision-free item of the group holds."""
    _, inv, cnt = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    movers = np.flatnonzero(cnt[inv.reshape(-1)] > 1)
    free = [c for c in range(dist.shape[1]) if c not in set(codes[cnt[inv.reshape(-1)] == 1,
                                                                   -1].tolist())]
    return min(sum(dist[m, c] for m, c in zip(movers, perm, strict=True))
               for perm in itertools.permutations(free, len(movers)))


def test_spread_collisions_is_an_optimal_assignment_per_prefix() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        k = 5
        # one prefix group (first code 3): 4 items, two pairs collide, one item alone
        codes = np.array([[3, 1], [3, 1], [3, 2], [3, 2], [3, 4]])
        dist = rng.uniform(size=(5, k))
        out = spread_collisions(codes, dist)
        assert len(np.unique(out, axis=0)) == 5  # no collision left
        assert np.array_equal(out[:, 0], codes[:, 0]) and np.array_equal(out[4], codes[4])
        assert np.isclose(dist[np.arange(4), out[:4, 1]].sum(), brute_spread(codes, dist))


def test_spread_collisions_overflow_and_untouched_groups() -> None:
    # prefix 0 holds 3 items over a 2-code last level: one collision must stay;
    # prefix 1's items never collided and keep their codes even if another code is nearer
    codes = np.array([[0, 0], [0, 0], [0, 0], [1, 0], [1, 1]])
    dist = np.array([[0.0, 1.0], [0.1, 0.2], [0.3, 0.9], [5.0, 0.0], [0.0, 5.0]])
    out = spread_collisions(codes, dist)
    assert out[3:].tolist() == [[1, 0], [1, 1]]
    assert sorted(out[:3, 1].tolist()) in ([0, 0, 1], [0, 1, 1])
    assert len(np.unique(out[:3], axis=0)) == 2
    ids = SemanticIds.from_codes(out)  # the 4th token separates the overflow
    assert len(np.unique(ids.ids, axis=0)) == 5 and ids.radix[-1] == 2


def clustered(n: int = 300, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, 12)) * 2.0
    return (centres[rng.integers(0, 6, n)] + 0.02 * rng.normal(size=(n, 12))).astype(np.float32)


def test_semantic_ids_from_spreads_and_reports_both_rates() -> None:
    x = clustered()  # tight clusters: many items land on one code tuple
    cfg = RQVAEConfig(in_dim=12, hidden=(16,), code_dim=4, levels=2, codebook_size=16,
                      kmeans_iters=5)
    rates = {}
    for spread in (False, True):
        torch.manual_seed(0)
        model = RQVAE(RQVAEConfig(**{**cfg.__dict__, "reassign_collisions": spread}))
        train_rqvae(model, x, RQVAETrainConfig(epochs=3, batch_size=300, num_threads=None),
                    progress=False)
        sids, stats = semantic_ids_from(model, x)
        assert len(np.unique(sids.ids, axis=0)) == len(x)
        rates[spread] = (stats["collision_rate_nearest"], stats["collision_rate"])
        if spread:  # a prefix group of n items now holds min(n, K) distinct code tuples
            codes = sids.ids[:, :2]
            _, group_size = np.unique(codes[:, 0], return_counts=True)
            assert len(np.unique(codes, axis=0)) == np.minimum(group_size, 16).sum()
    assert rates[False][0] == rates[False][1] > 0.5
    assert rates[True][0] == rates[False][0]  # the same network and nearest codes
    assert rates[True][1] < rates[True][0]


def test_sinkhorn_training_uses_more_last_level_codes() -> None:
    x = clustered(seed=2)
    use = {}
    for eps in (0.0, 0.003):
        torch.manual_seed(0)
        model = RQVAE(RQVAEConfig(in_dim=12, hidden=(16,), code_dim=4, levels=2,
                                  codebook_size=16, kmeans_iters=5, sinkhorn_eps=eps))
        train_rqvae(model, x, RQVAETrainConfig(epochs=20, batch_size=300, num_threads=None,
                                               reset_dead_codes=False), progress=False)
        use[eps] = len(np.unique(model.encode_codes(torch.from_numpy(x))[:, 1]))
    assert use[0.003] > use[0.0]


def test_rqvae_training_reproducible_with_default_threads() -> None:
    """The default config (one torch thread) gives the same codes run to run."""
    x = np.random.default_rng(0).normal(size=(600, 24)).astype(np.float32)
    out = []
    for _ in range(2):
        torch.manual_seed(0)
        model = RQVAE(RQVAEConfig(in_dim=24, hidden=(64, 32), code_dim=8, levels=3,
                                  codebook_size=32, kmeans_iters=5))
        train_rqvae(model, x, RQVAETrainConfig(epochs=5, batch_size=128), progress=False)
        out.append(model.encode_codes(torch.from_numpy(x)).numpy())
        assert torch.get_num_threads() == 1
    np.testing.assert_array_equal(out[0], out[1])


def test_both_sources_concatenate_unit_parts(monkeypatch) -> None:
    ds = load_dataset("ml-100k")
    rng = np.random.default_rng(0)
    content = rng.normal(size=(ds.n_items, 6)).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    collab = rng.normal(size=(ds.n_items, 4)).astype(np.float32) * 7.0
    monkeypatch.setattr("models.build.generative.content_vectors", lambda ds, cache: content)
    src, x = item_embedding_source(ds, "both", lambda: collab)
    assert src == "both" and x.shape == (ds.n_items, 10) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(x[:, :6] * np.sqrt(2), content, rtol=1e-5, atol=1e-6)
    unit = collab / np.linalg.norm(collab, axis=1, keepdims=True)
    np.testing.assert_allclose(x[:, 6:] * np.sqrt(2), unit, rtol=1e-5, atol=1e-6)
    assert item_embedding_source(ds, "content", lambda: collab)[1] is content  # unchanged
    # "auto": both parts where items have text; the collaborative vectors alone otherwise.
    auto_src, auto_x = item_embedding_source(ds, "auto", lambda: collab)
    assert auto_src == "both"
    np.testing.assert_array_equal(auto_x, x)
    monkeypatch.setattr(ds.item_side, "titles", None)
    auto_src, auto_x = item_embedding_source(ds, "auto", lambda: collab)
    assert auto_src == "collaborative"
    np.testing.assert_allclose(auto_x, unit, rtol=1e-6)
    with pytest.raises(ValueError, match="needs item text"):
        item_embedding_source(ds, "both", lambda: collab)
    with pytest.raises(ValueError, match="both"):
        item_embedding_source(ds, "text", lambda: collab)
