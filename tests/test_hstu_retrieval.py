"""HSTU retrieval: shared layer with the ranker, causality, left-padding invariance (with and
without timestamps), time buckets, unit vectors, the sampled-softmax loss, learning a rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.nets.features import pad_histories
from models.nets.hstu_layer import HSTULayer
from models.nets.hstu_ranker import HSTURanker, HSTURankerConfig
from models.nets.hstu_retrieval import HSTURetrieval, HSTURetrievalConfig
from models.train.hstu_retrieval import (
    HSTURetrievalTrainConfig,
    sampled_softmax_loss,
    train_hstu_retrieval,
)
from tests.test_sasrec import rule_sequences  # the same next-item rule, same item count

N_ITEMS = 30

# Tiny tensors: extra intra-op threads only add sync cost on a busy 2-core box.
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**overrides: object) -> HSTURetrievalConfig:
    base: dict[str, object] = dict(n_items=N_ITEMS, dim=16, n_layers=2, n_heads=2, qk_dim=8,
                                   v_dim=8, max_len=16, n_exact_positions=4, n_pos_buckets=8,
                                   n_time_buckets=16, dropout=0.1)
    return HSTURetrievalConfig(**{**base, **overrides})


def make_model(seed: int = 0, dtype: torch.dtype = torch.float64,
               **overrides: object) -> HSTURetrieval:
    """Tiny model with every weight randomised (position/time biases too), so no term is
    trivially zero."""
    torch.manual_seed(seed)
    model = HSTURetrieval(tiny_config(**overrides)).to(dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, 0.3)
    return model.eval()


def random_times(gen: torch.Generator, b: int, length: int) -> torch.Tensor:
    """(b, length) increasing timestamps in seconds with gaps spread over many log2 buckets."""
    gaps = torch.exp(torch.rand(b, length, generator=gen, dtype=torch.float64) * 12.0)
    return 1.6e9 + gaps.cumsum(1)


def test_shares_the_rankers_layer_class() -> None:
    ret = HSTURetrieval(tiny_config())
    rank = HSTURanker(HSTURankerConfig(n_items=N_ITEMS, dim=16, n_layers=2, qk_dim=8, v_dim=8))
    assert len(ret.layers) == 2
    assert all(type(layer) is HSTULayer for layer in [*ret.layers, *rank.layers])
    assert ret.layers[0].__class__ is rank.layers[0].__class__


def test_shapes_padding_zero_and_unit_vectors() -> None:
    m = make_model()
    seqs = pad_histories([np.array([1, 2, 3]), np.array([4]), np.array([], dtype=np.int64)],
                         6, N_ITEMS)
    with torch.no_grad():
        h = m(seqs)
        u = m.user_vector(seqs)
        items = m.item_vectors()
    assert h.shape == (3, 6, 16) and torch.isfinite(h).all()
    assert torch.equal(h[0, :3], torch.zeros(3, 16, dtype=h.dtype))  # padding -> zeros
    assert torch.allclose(h[0, 3:].norm(dim=-1), torch.ones(3, dtype=h.dtype))
    assert u.shape == (3, 16)
    assert torch.allclose(u[:2].norm(dim=-1), torch.ones(2, dtype=u.dtype))
    assert torch.equal(u[2], torch.zeros(16, dtype=u.dtype))  # empty history -> zeros
    assert items.shape == (N_ITEMS, 16)  # no padding row
    assert torch.allclose(items.norm(dim=-1), torch.ones(N_ITEMS, dtype=items.dtype))
    assert torch.allclose(m.logits(h[0, -1], torch.tensor(5)), h[0, -1] @ items[5])


@pytest.mark.parametrize("with_time", [False, True])
def test_causal(with_time: bool) -> None:
    """Changing a later item (and its timestamp) leaves every earlier state unchanged."""
    m = make_model()
    gen = torch.Generator().manual_seed(0)
    seq = torch.tensor([[5, 9, 2, 7, 11, 3, 8, 0]])
    ts = random_times(gen, 1, 8) if with_time else None
    other = seq.clone()
    other[0, 5] = 21
    ots = None
    if ts is not None:
        ots = ts.clone()
        ots[0, 5:] += 5000.0  # the changed item also comes at another time
    with torch.no_grad():
        a, b = m(seq, ts), m(other, ots)
    assert torch.allclose(a[0, :5], b[0, :5], atol=1e-12)
    assert not torch.allclose(a[0, 5:], b[0, 5:], atol=1e-4)


@pytest.mark.parametrize("with_time", [False, True])
def test_left_padding_invariance(with_time: bool) -> None:
    """Extra left padding (with garbage padding timestamps) changes no real state (float64)."""
    m = make_model()
    gen = torch.Generator().manual_seed(1)
    lengths = (1, 4, 7, 10)
    hists = [torch.randint(0, N_ITEMS, (n,), generator=gen).numpy() for n in lengths]
    short, long = pad_histories(hists, 10, N_ITEMS), pad_histories(hists, 25, N_ITEMS)
    ts_short = ts_long = None
    if with_time:
        ts_short = random_times(gen, len(lengths), 10)
        garbage = torch.rand(len(lengths), 15, generator=gen, dtype=torch.float64) * 1e9
        ts_long = torch.cat([garbage, ts_short], 1)
        ts_short = torch.where(short == N_ITEMS, -7.0e8, ts_short)  # padding times: garbage
    with torch.no_grad():
        a, b = m(short, ts_short), m(long, ts_long)
        ua, ub = m.user_vector(short, ts_short), m.user_vector(long, ts_long)
    assert torch.allclose(a, b[:, 15:], atol=1e-12)
    assert torch.equal(b[:, :15], torch.zeros_like(b[:, :15]))
    assert torch.allclose(ua, ub, atol=1e-12)


def test_time_buckets_matter() -> None:
    """With timestamps, a different gap between two earlier items changes the user vector; a
    constant shift of every timestamp (same gaps) does not; query_time changes nothing."""
    m = make_model()
    gen = torch.Generator().manual_seed(2)
    seq = torch.tensor([[5, 9, 2, 7, 11, 3]])
    ts = random_times(gen, 1, 6)
    later = ts.clone()
    later[0, 2:] += 3.0e6  # items 2.. come ~35 days later: one gap changes, the rest keep
    with torch.no_grad():
        base = m.user_vector(seq, ts)
        moved = m.user_vector(seq, later)
        shifted = m.user_vector(seq, ts + 1.0e5)
        no_time = m.user_vector(seq)
        with_query = m.user_vector(seq, ts, query_time=ts[:, -1] + 1.0e7)
    assert not torch.allclose(base, moved, atol=1e-4)
    assert not torch.allclose(base, no_time, atol=1e-4)
    assert torch.allclose(base, shifted, atol=1e-12)
    assert torch.equal(base, with_query)


def test_loss_masks_negative_equal_to_positive() -> None:
    """Hand-made unit vectors: state e0, target e0 (cos 1), negatives [target, e1 (cos 0),
    e0 again under another id (cos 1)]. The first negative IS the target and is masked."""
    eye = torch.eye(3, dtype=torch.float64)
    states = eye[[0]]  # (1, 3)
    pos_vecs, pos_ids = eye[[0]], torch.tensor([4])
    neg_vecs, neg_ids = eye[[0, 1, 0]], torch.tensor([4, 7, 9])
    tau = 0.5
    want = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.0) + math.exp(2.0)))
    got = sampled_softmax_loss(states, pos_vecs, neg_vecs, pos_ids, neg_ids, tau)
    assert got.item() == pytest.approx(want, rel=1e-12)
    unmasked = -math.log(math.exp(2.0) / (2 * math.exp(2.0) + math.exp(0.0) + math.exp(2.0)))
    assert got.item() != pytest.approx(unmasked, rel=1e-6)
    # Per-position negatives (n, k, d) give the same value, and mask per row.
    per_row = sampled_softmax_loss(states, pos_vecs, neg_vecs[None], pos_ids, neg_ids[None],
                                   tau)
    assert per_row.item() == pytest.approx(want, rel=1e-12)
    # Two positions sharing the negatives: only the row whose target is id 4 masks it.
    two = sampled_softmax_loss(eye[[0, 0]], eye[[0, 0]], neg_vecs, torch.tensor([4, 5]),
                               neg_ids, tau)
    assert two.item() == pytest.approx((want + unmasked) / 2, rel=1e-12)


def test_state_dict_rebuilds_exactly() -> None:
    m = make_model(dtype=torch.float32)
    clone = HSTURetrieval(m.cfg).eval()
    clone.load_state_dict(m.state_dict(), strict=True)
    seqs = pad_histories([np.array([1, 2, 3]), np.array([7, 8])], 6, N_ITEMS)
    ts = random_times(torch.Generator().manual_seed(3), 2, 6)
    with torch.no_grad():
        assert torch.equal(clone.user_vector(seqs, ts), m.user_vector(seqs, ts))
        assert torch.equal(clone.item_vectors(), m.item_vectors())
    no_pos = HSTURetrieval(tiny_config(pos_emb=False))
    assert not any(k.startswith("pos_emb") for k in no_pos.state_dict())


@pytest.mark.parametrize("with_time", [False, True])
def test_training_learns_next_item_rule(with_time: bool) -> None:
    seqs = rule_sequences(400, np.random.default_rng(0))
    # Timestamps aligned with the FULL sequences: one extra (held-out) value per user.
    rng_t = np.random.default_rng(5)
    times = [1.6e9 + np.cumsum(rng_t.exponential(3600.0, size=len(s) + 1)) for s in seqs]
    torch.manual_seed(0)
    m = HSTURetrieval(tiny_config(n_heads=1, max_len=12, dropout=0.0))
    cfg = HSTURetrievalTrainConfig(epochs=15, batch_size=32, lr=1e-2, n_negatives=16,
                                   temperature=0.05, seed=0, num_threads=None)
    losses = train_hstu_retrieval(m, seqs, N_ITEMS, cfg, timestamps=times if with_time else None,
                                  progress=False)
    assert len(losses) == 15 and losses[-1] < 0.3 * losses[0], losses
    assert not m.training
    # Held-out users, MIPS top-1 among the items they have not consumed (negatives are uniform
    # over the catalogue, but retrieval filters consumed items as /recommend does).
    test = rule_sequences(200, np.random.default_rng(1))
    truth = np.array([(3 * int(s[-1]) + 1) % N_ITEMS for s in test])
    new_next = np.array([t not in s for s, t in zip(test, truth, strict=True)])
    assert new_next.sum() > 100
    ts = None
    if with_time:
        gaps = np.random.default_rng(6).exponential(3600.0, size=(len(test), 12))
        ts = torch.from_numpy(1.6e9 + np.cumsum(gaps, 1))
    with torch.no_grad():
        scores = m.user_vector(pad_histories(test, 12, N_ITEMS), ts) @ m.item_vectors().T
    for row, s in enumerate(test):
        scores[row, torch.from_numpy(s)] = -torch.inf
    hit = scores.argmax(1).numpy() == truth
    assert hit[new_next].mean() > 0.8, hit[new_next].mean()


@pytest.mark.parametrize("with_time", [False, True])
def test_windows_reach_early_targets(with_time: bool) -> None:
    """With windows (every target once per epoch) a rule seen only in the first half of long
    sequences is learned, timestamps cut with the same rows."""
    rng = np.random.default_rng(0)
    seqs = [np.concatenate([np.array([0, 1] * 10), rng.integers(10, N_ITEMS, size=20)])
            for _ in range(200)]  # 40 items: the 0 <-> 1 cycle first, random items later
    times = [1.6e9 + np.cumsum(rng.exponential(3600.0, size=len(s) + 1)) for s in seqs]
    torch.manual_seed(0)
    m = HSTURetrieval(tiny_config(n_heads=1, max_len=10, dropout=0.0))
    cfg = HSTURetrievalTrainConfig(epochs=15, batch_size=32, lr=1e-2, n_negatives=16,
                                   temperature=0.05, seed=0, num_threads=None, windows=True)
    train_hstu_retrieval(m, seqs, N_ITEMS, cfg, timestamps=times if with_time else None,
                         progress=False)
    ts = torch.tensor([[1.6e9, 1.6e9 + 3600.0, 1.6e9 + 7200.0]]) if with_time else None
    with torch.no_grad():
        v = m.user_vector(pad_histories([np.array([0, 1, 0])], 3, N_ITEMS), ts)
    assert int((v @ m.item_vectors().T).argmax()) == 1
