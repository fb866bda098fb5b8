"""HSTU ranker training (models/train/hstu.py) on a synthetic dataset where the next item is a
deterministic function of the last one, and the rating is >= 4 iff the item is even."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.artifacts.checkpoint import load_model, save_model
from models.data.dataset import Split
from models.nets.features import pad_histories
from models.nets.hstu_ranker import HSTURanker, HSTURankerConfig
from models.train.hstu_ranker import HSTUTrainConfig, length_batches, select_positions, train_hstu
from models.train.samples import CandidatePools

N_ITEMS = 40
N_USERS = 60
SEQ_LEN = 12  # the last item of each sequence is held out: the ranking check's target
MAX_HISTORY = 8


# Tiny tensors: extra intra-op threads only add sync cost on a busy 2-core box.
pytestmark = pytest.mark.usefixtures("one_thread")


def next_item(i: np.ndarray | int) -> np.ndarray | int:
    return (i * 7 + 3) % N_ITEMS  # a permutation of the items (gcd(7, 40) = 1)


def synthetic() -> tuple[Split, list[np.ndarray], list[np.ndarray]]:
    """Sequences following next_item from random starts; ratings 5 for even items, else 2;
    timestamps with random gaps. Training = all but the last item of each sequence."""
    rng = np.random.default_rng(0)
    seqs, ratings, stamps = [], [], []
    for _ in range(N_USERS):
        s = [int(rng.integers(N_ITEMS))]
        for _ in range(SEQ_LEN - 1):
            s.append(int(next_item(s[-1])))
        seq = np.asarray(s, dtype=np.int64)
        seqs.append(seq)
        ratings.append(np.where(seq % 2 == 0, 5.0, 2.0))
        stamps.append(10**9 + np.cumsum(rng.integers(60, 10**5, size=SEQ_LEN)).astype(np.int64))
    target = np.array([s[-1] for s in seqs], dtype=np.int64)
    split = Split(train=[s[:-1] for s in seqs], valid_target=target, test_target=target,
                  sequences=seqs)
    return split, ratings, stamps


def tiny_model(seed: int = 0) -> HSTURanker:
    torch.manual_seed(seed)
    return HSTURanker(HSTURankerConfig(
        n_items=N_ITEMS, dim=16, n_layers=1, n_heads=2, qk_dim=8, v_dim=8,
        max_history=MAX_HISTORY, n_exact_positions=4, n_pos_buckets=8, n_time_buckets=16,
        head_hidden=16, aux_head=True, dropout=0.0))


def train_cfg(**overrides: object) -> HSTUTrainConfig:
    base: dict[str, object] = dict(epochs=12, batch_size=32, lr=1e-2, n_negatives=8,
                                   aux_weight=1.0, recent_per_user=4, sample_frac=0.5,
                                   num_threads=None)
    return HSTUTrainConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def trained() -> tuple[HSTURanker, list[float], Split, list[np.ndarray]]:
    split, ratings, stamps = synthetic()
    model = tiny_model()
    losses = train_hstu(model, split, N_ITEMS, train_cfg(), ratings=ratings, timestamps=stamps,
                        progress=False)
    return model, losses, split, stamps


def held_out(split: Split, stamps: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Histories (U, L) before each held-out target and their timestamps (U, L)."""
    hist = pad_histories([s[:-1] for s in split.sequences], MAX_HISTORY, N_ITEMS)
    ts = torch.stack([torch.from_numpy(t[:-1][-MAX_HISTORY:].astype(np.float64))
                      for t in stamps])  # every history is longer than MAX_HISTORY
    return hist, ts


def test_training_lowers_loss_and_ranks_next_item(trained) -> None:
    model, losses, split, stamps = trained
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses
    hist, ts = held_out(split, stamps)
    rng = np.random.default_rng(1)
    cands = np.zeros((N_USERS, 11), dtype=np.int64)
    for u, target in enumerate(split.test_target):
        # Random items the user has not consumed, as training's negatives (and as serving,
        # which blocks consumed items): history items were never negatives.
        others = np.setdiff1d(np.arange(N_ITEMS), split.sequences[u])
        cands[u] = np.concatenate([[target], rng.choice(others, 10, replace=False)])
    with torch.no_grad():
        scores = model.score_items(torch.zeros(N_USERS, 0), hist, torch.from_numpy(cands), ts)
    first = (scores.argmax(1) == 0).float().mean().item()
    assert first > 0.9, first  # chance: 1/11
    assert model.layers[0].time_bias.weight.abs().sum() > 0  # the timestamps were used


def test_aux_head_learns_rating_rule(trained) -> None:
    model, _, split, stamps = trained
    hist, ts = held_out(split, stamps)
    target = torch.from_numpy(split.test_target)[:, None]  # (U, 1)
    with torch.no_grad():
        _, aux = model.score_items_with_aux(torch.zeros(N_USERS, 0), hist, target, ts)
    pred = (aux[:, 0] > 0).numpy()
    acc = float(np.mean(pred == (split.test_target % 2 == 0)))
    assert acc > 0.8, acc  # chance: about 0.5


def test_checkpoint_round_trip_of_trained_model(trained, tmp_path: Path) -> None:
    model, _, split, stamps = trained
    save_model(model, tmp_path, "hstu")
    back = load_model(tmp_path, "hstu")
    hist, ts = held_out(split, stamps)
    items = torch.randint(0, N_ITEMS, (N_USERS, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a = model.score_items_with_aux(torch.zeros(N_USERS, 0), hist, items, ts)
        b = back.score_items_with_aux(torch.zeros(N_USERS, 0), hist, items, ts)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_no_aux_without_ratings_or_head_and_bad_inputs() -> None:
    split, ratings, _ = synthetic()
    cfg = train_cfg(epochs=1)
    model = tiny_model()
    before = [p.clone() for p in model.aux_head.parameters()]
    train_hstu(model, split, N_ITEMS, cfg, progress=False)  # no ratings: aux head untouched
    assert all(torch.equal(p, q) for p, q in zip(before, model.aux_head.parameters(), strict=True))
    plain = HSTURanker(HSTURankerConfig(n_items=N_ITEMS, dim=8, n_layers=1, max_history=4))
    train_hstu(plain, split, N_ITEMS, cfg, ratings=ratings, progress=False)  # no head: main only
    with pytest.raises(ValueError):
        train_hstu(model, split, N_ITEMS, cfg, ratings=[r[:3] for r in ratings], progress=False)
    with pytest.raises(ValueError):
        train_hstu(model, split, N_ITEMS, train_cfg(recent_per_user=0, sample_frac=0.0),
                   progress=False)


def test_position_selection_and_length_batches() -> None:
    counts = np.array([3, 10, 0, 6])
    rng = np.random.default_rng(0)
    sel = select_positions(counts, recent=4, frac=0.5, rng=rng)
    recent = [0, 1, 2, 9, 10, 11, 12, 15, 16, 17, 18]  # every user's last (up to) 4 examples
    assert set(recent) <= set(sel.tolist())
    assert len(sel) == len(recent) + 4  # half of the 6 + 2 older examples
    lengths = np.arange(19) % 7
    batches = length_batches(sel, lengths, batch_size=4, chunk=2, rng=rng)
    assert len(batches) == 4
    assert sorted(np.concatenate(batches).tolist()) == sel.tolist()


def test_hard_negatives_come_from_pools_and_the_rule_is_still_learned() -> None:
    """Pools reach the batches: the first ``n_hard`` negative columns are pool items (here the
    user's unconsumed items among 0..9), the rest uniform; no negative is ever the target, and
    the next-item rule is learned as well as with uniform negatives only."""
    split, ratings, stamps = synthetic()
    pools = CandidatePools.from_lists(
        [np.setdiff1d(np.arange(10), s) for s in split.train])
    model = tiny_model()
    seen: list[torch.Tensor] = []
    list_states = model.list_states

    def spy(history: torch.Tensor, items: torch.Tensor, *rest: object) -> torch.Tensor:
        seen.append(items.clone())
        return list_states(history, items, *rest)

    model.list_states = spy  # type: ignore[method-assign]
    cfg = train_cfg(n_hard=4, n_negatives=6)
    train_hstu(model, split, N_ITEMS, cfg, ratings=ratings, timestamps=stamps, progress=False,
               pools=pools)
    items = torch.cat(seen)  # (examples over all epochs, 1 + 4 + 6)
    assert items.shape[1] == 11
    assert bool((items[:, 1:5] < 10).all())  # hard columns: pool items only
    assert bool((items[:, 5:] >= 10).any())  # uniform columns range over the catalogue
    assert not bool((items[:, 1:] == items[:, :1]).any())  # never the target
    del model.list_states
    hist, ts = held_out(split, stamps)
    rng = np.random.default_rng(1)
    cands = np.stack([np.concatenate([[t], rng.choice(np.setdiff1d(np.arange(N_ITEMS), s), 10,
                                                       replace=False)])
                      for t, s in zip(split.test_target, split.sequences, strict=True)])
    with torch.no_grad():
        scores = model.score_items(torch.zeros(N_USERS, 0), hist, torch.from_numpy(cands), ts)
    assert (scores.argmax(1) == 0).float().mean().item() > 0.9
