"""GRU4Rec: session-parallel batching, padding-free user vectors, BPR-max / TOP1-max, training."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from models.artifacts.checkpoint import load_model, save_model
from models.nets.features import pad_histories
from models.nets.gru4rec import GRU4Rec, GRU4RecConfig
from models.train.gru4rec import (
    GRU4RecTrainConfig,
    bpr_max_loss,
    session_parallel_batches,
    top1_max_loss,
    train_gru4rec,
)


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_session_parallel_batches_visit_every_pair_once() -> None:
    rng = np.random.default_rng(0)
    seqs = [np.arange(100 * u, 100 * u + n, dtype=np.int64)  # distinct items per sequence
            for u, n in enumerate([2, 5, 1, 0, 9, 3, 3, 7, 4, 2, 6])]
    expected = Counter((int(s[i]), int(s[i + 1])) for s in seqs for i in range(len(s) - 1))
    seen: Counter = Counter()
    prev_inputs = None
    for inputs, targets, reset in session_parallel_batches(seqs, 3, rng):
        assert inputs.shape == targets.shape == reset.shape == (3,)
        act = inputs >= 0
        assert np.array_equal(act, targets >= 0)
        for a, b in zip(inputs[act], targets[act], strict=True):
            seen[(int(a), int(b))] += 1
        if prev_inputs is None:
            assert reset.all()
        else:
            # A slot continuing its sequence reads the item after the previous input; a reset
            # slot starts a new sequence at its first item (id % 100 == 0).
            for s in np.flatnonzero(act):
                if reset[s]:
                    assert inputs[s] % 100 == 0
                else:
                    assert inputs[s] == prev_inputs[s] + 1
        prev_inputs = inputs
    assert seen == expected
    # Fewer usable sequences than slots: the batch shrinks to their number.
    batches = list(session_parallel_batches([np.array([1, 2, 3])], 4, rng))
    assert [(b[0].tolist(), b[1].tolist()) for b in batches] == [([1], [2]), ([2], [3])]
    assert list(session_parallel_batches([np.array([5])], 4, rng)) == []


def test_user_vector_ignores_left_padding() -> None:
    torch.manual_seed(0)
    model = GRU4Rec(GRU4RecConfig(n_items=20, dim=8, hidden=12, n_layers=2)).eval()
    hists = [np.array([3, 7, 1]), np.array([5]), np.array([2, 9, 11, 4, 6]), np.array([])]
    with torch.no_grad():
        short = model.user_vector(pad_histories(hists, 5, pad=20))
        long = model.user_vector(pad_histories(hists, 12, pad=20))
        torch.testing.assert_close(short, long, atol=1e-5, rtol=0)
        # Same as stepping through the real items one by one from the zero state.
        for row, hist in enumerate(hists):
            out, h = model.proj(torch.zeros(1, 12)), None
            for item in hist:
                out, h = model.step(torch.tensor([int(item)]), h)
            torch.testing.assert_close(short[row], out[0], atol=1e-5, rtol=0)
        assert model.item_vectors().shape == (20, 8)
        assert model(pad_histories(hists, 5, pad=20)).shape == (4, 20)


def test_losses_match_hand_computed() -> None:
    pos = torch.tensor([1.0, -0.5])
    neg = torch.tensor([[0.5, 2.0, 9.0], [0.0, 1.0, -1.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    bpr, top1 = 0.0, 0.0
    for i, (r_i, row, m) in enumerate(zip(pos.tolist(), neg.tolist(), mask.tolist(),
                                          strict=True)):
        rj = [r for r, keep in zip(row, m, strict=True) if keep]
        z = sum(math.exp(r) for r in rj)
        s = [math.exp(r) / z for r in rj]
        bpr += (-math.log(sum(sj * _sig(r_i - r) for sj, r in zip(s, rj, strict=True)))
                + 0.5 * sum(sj * r * r for sj, r in zip(s, rj, strict=True)))
        top1 += sum(sj * (_sig(r - r_i) + _sig(r * r)) for sj, r in zip(s, rj, strict=True))
        assert i < 2
    assert bpr_max_loss(pos, neg, mask, bpreg=0.5).item() == pytest.approx(bpr / 2, rel=1e-5)
    assert top1_max_loss(pos, neg, mask).item() == pytest.approx(top1 / 2, rel=1e-5)


def _rule_sequences(n_users: int, n_items: int, seed: int) -> list[np.ndarray]:
    """next = (3 * last + 1) mod n_items, from a random start, random length 4..10."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_users):
        cur, seq = int(rng.integers(n_items)), []
        for _ in range(int(rng.integers(4, 11))):
            seq.append(cur)
            cur = (3 * cur + 1) % n_items
        seqs.append(np.array(seq, dtype=np.int64))
    return seqs


@pytest.mark.parametrize("loss", ["bpr-max", "top1-max"])
def test_training_learns_next_item_rule(loss: str) -> None:
    n_items = 30
    seqs = _rule_sequences(120, n_items, seed=1)
    torch.manual_seed(0)
    model = GRU4Rec(GRU4RecConfig(n_items=n_items, dim=32, hidden=48))
    cfg = GRU4RecTrainConfig(epochs=8, batch_size=16, lr=3e-3, n_negatives=16, loss=loss,
                             bpreg=0.5, seed=0)
    losses = train_gru4rec(model, seqs, cfg, progress=False)
    assert len(losses) == 8 and losses[-1] < losses[0]
    test = _rule_sequences(100, n_items, seed=2)
    with torch.no_grad():
        u = model.user_vector(pad_histories(test, 12, pad=n_items))
        top1 = (u @ model.item_vectors().T).argmax(1).numpy()
    want = np.array([(3 * int(s[-1]) + 1) % n_items for s in test])
    assert (top1 == want).mean() > 0.8


def test_train_rejects_unknown_loss() -> None:
    model = GRU4Rec(GRU4RecConfig(n_items=5, dim=4, hidden=4))
    with pytest.raises(ValueError, match="loss"):
        train_gru4rec(model, [np.array([1, 2])], GRU4RecTrainConfig(loss="bpr"), progress=False)


def test_save_load_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    model = GRU4Rec(GRU4RecConfig(n_items=15, dim=8, hidden=10, n_layers=2, dropout=0.1)).eval()
    save_model(model, tmp_path, "gru")
    loaded = load_model(tmp_path, "gru")
    assert isinstance(loaded, GRU4Rec) and loaded.cfg == model.cfg
    hist = pad_histories([np.array([1, 4, 2]), np.array([14])], 6, pad=15)
    with torch.no_grad():
        torch.testing.assert_close(loaded.user_vector(hist), model.user_vector(hist))
        torch.testing.assert_close(loaded.item_vectors(), model.item_vectors())
