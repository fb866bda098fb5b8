"""RQ-VAE semantic IDs: model, k-means init, STE, training, the ID map / prefix trie, and
the MiniLM content encoder."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import faiss
import numpy as np
import pytest
import safetensors.torch
import torch

from index.semantic_ids import SemanticIds, append_dedup_token
from models.artifacts.checkpoint import config_from_dict
from models.data import load_dataset
from models.nets.rqvae import RQVAE, RQVAEConfig, code_stats, sq_err
from models.train.rqvae import RQVAETrainConfig, train_rqvae

FIX = Path(__file__).parent / "fixtures" / "data"
TINY = RQVAEConfig(in_dim=16, hidden=(32,), code_dim=4, levels=2, codebook_size=8)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one thread each for torch and faiss avoids OpenMP spin-wait contention
    on a busy 2-core machine (it made the training test 10x slower at times)."""
    torch_before, faiss_before = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(torch_before)
    faiss.omp_set_num_threads(faiss_before)


def clustered(n: int = 256, k: int = 8, dim: int = 16, noise: float = 0.05,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n points (float32) around k well-separated centres; returns (x, centres)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)).astype(np.float32) * 2.0
    x = centres[rng.integers(0, k, size=n)] + noise * rng.normal(size=(n, dim))
    return x.astype(np.float32), centres


def fresh(cfg: RQVAEConfig = TINY, seed: int = 0) -> RQVAE:
    torch.manual_seed(seed)
    return RQVAE(cfg)


# ---- RQ-VAE -----------------------------------------------------------------------------
def test_shapes_and_config_roundtrip():
    m = fresh()
    x = torch.randn(10, 16)
    x_hat, codes, q_loss = m(x)
    assert x_hat.shape == (10, 16) and q_loss.ndim == 0
    assert codes.shape == (10, 2) and codes.dtype == torch.int64
    assert torch.equal(m.encode_codes(x), codes)
    assert codes.min() >= 0 and codes.max() < TINY.codebook_size
    # the config rebuilds from its JSON form, the state is safetensors-ready
    assert config_from_dict(RQVAEConfig, dataclasses.asdict(TINY)) == TINY
    blob = safetensors.torch.save({k: v.contiguous() for k, v in m.state_dict().items()})
    m2 = RQVAE(TINY)
    m2.load_state_dict(safetensors.torch.load(blob))
    assert torch.equal(m2.encode_codes(x), codes)


def test_kmeans_init_puts_codebooks_on_cluster_centres():
    x, centres = clustered()
    m = fresh()
    before = m.codebooks.detach().clone()
    m.init_codebooks(torch.from_numpy(x))
    assert int(m.initialised) == 1
    cb0 = m.codebooks[0].detach()  # (8, 4)
    assert not torch.allclose(cb0, before[0])
    with torch.no_grad():
        z_centres = m.encoder(torch.from_numpy(centres))  # (8, 4) images of the true centres
        z = m.encoder(torch.from_numpy(x))
    spread = torch.cdist(z_centres, z_centres)
    scale = spread[spread > 0].min()  # smallest distance between two centres
    d = torch.cdist(cb0, z_centres)  # (8 codes, 8 centres)
    # codes sit on cluster centres (k-means may merge/split a pair: allow up to two misses)
    assert (d.min(dim=0).values < 0.2 * scale).sum() >= 6
    # a k-means fixed point: each used code is the mean of the encoded rows nearest to it
    assign = torch.cdist(z, cb0).argmin(dim=1)
    for c in assign.unique():
        torch.testing.assert_close(cb0[c], z[assign == c].mean(0), atol=1e-3, rtol=1e-3)
    # far better than the random codebook it replaced
    assert torch.cdist(z, cb0).min(1).values.pow(2).mean() < \
        0.1 * torch.cdist(z, before[0]).min(1).values.pow(2).mean()
    # level 1 is fitted on what level 0 left over: again a k-means fixed point, on residuals
    r = z - cb0[assign]
    cb1 = m.codebooks[1].detach()
    assign1 = torch.cdist(r, cb1).argmin(dim=1)
    for c in assign1.unique():
        torch.testing.assert_close(cb1[c], r[assign1 == c].mean(0), atol=1e-3, rtol=1e-3)


def test_kmeans_init_with_fewer_rows_than_codes():
    m = fresh()
    m.init_codebooks(torch.randn(5, 16))
    assert torch.isfinite(m.codebooks).all() and int(m.initialised) == 1


def test_straight_through_gradient_reaches_encoder():
    m = fresh()
    m.init_codebooks(torch.randn(64, 16))
    x = torch.randn(32, 16)
    x_hat, _, _ = m(x)
    sq_err(x_hat, x).backward()  # reconstruction only: no commitment-loss path to the encoder
    first = m.encoder[0].weight.grad
    assert first is not None and first.abs().sum() > 0
    assert m.codebooks.grad is None or m.codebooks.grad.abs().sum() == 0  # STE skips codebooks


def test_training_beats_random_codebooks():
    x, _ = clustered(n=512, noise=0.3, seed=1)
    xt = torch.from_numpy(x)
    m = fresh(seed=1)
    untrained_mse = sq_err(m.reconstruct(xt), xt).item()
    losses = train_rqvae(m, x, RQVAETrainConfig(epochs=40, batch_size=128, lr=3e-3,
                                                num_threads=None), progress=False)
    assert len(losses) == 40 and losses[-1] < losses[0]
    trained_mse = sq_err(m.reconstruct(xt), xt).item()
    # the same trained network with its codebooks swapped for random, untrained ones
    random_cb = RQVAE(TINY)
    random_cb.load_state_dict(m.state_dict())
    with torch.no_grad():
        random_cb.codebooks.copy_(torch.randn_like(m.codebooks) * 0.1)
    random_mse = sq_err(random_cb.reconstruct(xt), xt).item()
    assert trained_mse < 0.5 * random_mse
    assert trained_mse < 0.5 * untrained_mse
    stats = code_stats(m.encode_codes(xt).numpy(), TINY.codebook_size)
    assert stats["utilisation"][0] == 1.0  # 8 clusters use all 8 level-0 codes


def test_code_stats():
    codes = np.array([[0, 1], [0, 1], [2, 3], [1, 1]])
    s = code_stats(codes, 4)
    assert s["utilisation"] == [0.75, 0.5]
    assert s["collision_rate"] == 0.5 and s["unique_rate"] == 0.75 and s["max_group"] == 2


# ---- semantic IDs -----------------------------------------------------------------------
def test_dedup_token_makes_every_id_unique():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 3, size=(300, 2))  # 9 tuples for 300 items: heavy collisions
    sids = SemanticIds.from_codes(codes)
    ids = sids.ids
    assert ids.shape == (300, 3) and len({tuple(r) for r in ids}) == 300
    np.testing.assert_array_equal(ids[:, :2], codes)
    for key in {tuple(r) for r in codes}:  # 0, 1, 2, ... in item order inside each group
        members = np.flatnonzero((codes == key).all(axis=1))
        np.testing.assert_array_equal(ids[members, 2], np.arange(len(members)))
    for item in range(300):
        assert sids.item_of(sids.tuple_of(item)) == item
    np.testing.assert_array_equal(sids.items_of(ids), np.arange(300))
    # no collisions: the extra token is all zeros
    np.testing.assert_array_equal(append_dedup_token(np.arange(6).reshape(3, 2))[:, 2], 0)


def test_trie_matches_brute_force():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 4, size=(40, 3))
    sids = SemanticIds.from_codes(codes)
    trie = sids.trie
    assert sids.trie is trie  # built once per SemanticIds
    t = sids.length
    valid = {tuple(int(v) for v in r) for r in sids.ids}
    prefixes = {v[:p] for v in valid for p in range(t + 1)}
    radix = [int(r) for r in sids.radix]
    # every tuple of every length over a token range a little wider than the real one
    for p in range(t + 1):
        for cand in itertools.product(range(-1, max(radix) + 1), repeat=p):
            expect = sorted({v[p] for v in valid if v[:p] == cand}) if p < t else []
            assert trie.valid_next(cand).tolist() == expect, cand
            assert trie.is_prefix(cand) == (cand in prefixes), cand
            if p < t:
                mask = trie.next_mask(cand)
                assert mask.tolist() == [i in expect for i in range(radix[p])], cand
            if p == t:
                assert sids.is_valid(cand) == (cand in valid), cand
                assert (sids.item_of(cand) >= 0) == (cand in valid)
    assert not sids.is_valid((0, 0)) and not trie.is_prefix((0,) * (t + 1))
    assert sids.item_of((0, 0)) == -1
    batch = np.array([list(next(iter(valid))), [9, 9, 9, 9]])
    assert sids.is_valid(batch).tolist() == [True, False]
    mask = trie.next_mask(())
    assert mask.tolist() == [i in {v[0] for v in valid} for i in range(radix[0])]
    assert trie.next_mask((), vocab=2).tolist() == mask[:2].tolist()


def test_trie_group_arrays():
    """The arrays constrained beam search walks: groups, their tokens, sizes and children."""
    ids = np.array([[1, 0, 0], [0, 2, 0], [0, 1, 0], [0, 1, 1], [1, 0, 1]])
    sids = SemanticIds(ids)
    trie = sids.trie
    # sorted rows: 010 011 020 100 101 -> items 2 3 1 0 4
    np.testing.assert_array_equal(trie.item_of_row, [2, 3, 1, 0, 4])
    np.testing.assert_array_equal(trie.item_of_row[trie.row_of_item], np.arange(5))
    assert [trie.n_groups(p) for p in range(3)] == [2, 3, 5]
    assert [g.tolist() for g in trie.tok] == [[0, 1], [1, 2, 0], [0, 1, 0, 0, 1]]
    assert [g.tolist() for g in trie.size] == [[3, 2], [2, 1, 2], [1] * 5]
    assert trie.row_group[1].tolist() == [0, 0, 1, 2, 2]
    assert trie.child_lo[0].tolist() == [0] and trie.child_hi[0].tolist() == [2]
    assert trie.child_lo[1].tolist() == [0, 2] and trie.child_hi[1].tolist() == [2, 3]
    assert trie.child_lo[2].tolist() == [0, 2, 3] and trie.child_hi[2].tolist() == [2, 3, 5]
    assert trie.group_of(()) == 0 and trie.group_of((1, 0)) == 2 and trie.group_of((1, 1)) == -1
    for item, sid in enumerate(ids):  # a full ID's group is its sorted row
        assert trie.item_of_row[trie.start[2][trie.group_of(sid)]] == item
    empty = SemanticIds(np.zeros((0, 2), dtype=np.int64)).trie
    assert not empty.is_prefix(()) and empty.valid_next(()).tolist() == []


def test_save_load_roundtrip(tmp_path):
    sids = SemanticIds.from_codes(np.random.default_rng(2).integers(0, 5, size=(50, 3)))
    state = sids.state_dict()
    assert set(state) == {"ids"} and state["ids"].dtype == np.int64
    again = SemanticIds.from_state(state)
    np.testing.assert_array_equal(again.ids, sids.ids)
    sids.save(tmp_path / "sids.safetensors")
    loaded = SemanticIds.load(tmp_path / "sids.safetensors")
    np.testing.assert_array_equal(loaded.ids, sids.ids)
    assert loaded.trie.valid_next((1,)).tolist() == sids.trie.valid_next((1,)).tolist()


def test_duplicate_ids_rejected():
    with pytest.raises(ValueError):
        SemanticIds(np.array([[0, 1], [0, 1]]))


def test_rqvae_codes_to_semantic_ids_end_to_end():
    x, _ = clustered(n=200, seed=3)
    m = fresh()
    m.init_codebooks(torch.from_numpy(x))
    sids = SemanticIds.from_codes(m.encode_codes(torch.from_numpy(x)).numpy())
    assert len(sids) == 200 and len({tuple(r) for r in sids.ids}) == 200


# ---- content ----------------------------------------------------------------------------
def test_item_texts():
    from models.build.content import item_texts

    ds = load_dataset(str(FIX / "ml100k-tiny"))
    texts = item_texts(ds)
    assert len(texts) == ds.n_items
    title, genres, year = ds.item_side.titles[0], ds.item_side.genres[0], ds.item_side.years[0]
    assert texts[0].startswith(title)
    if genres:
        assert ", ".join(genres) in texts[0]
    if year:
        assert texts[0].endswith(f" | {year}")


def test_encode_texts_minilm():
    from models.build.content import encode_texts

    e = encode_texts(["Toy Story (1995) | Animation, Children's, Comedy",
                      "Toy Story 2 (1999) | Animation, Children's, Comedy",
                      "Schindler's List (1993) | Drama, War"])
    assert e.shape == (3, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.1
