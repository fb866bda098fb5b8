"""TIGER's quality levers: the item-causal encoder trained on whole chunks (every position of a
chunk equals the one-target forward on its prefix; the chunk cutter covers every target once),
tied output heads (one table per token, saved and reloaded), the head-count check, and the
generator's own evaluation and epoch selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.artifacts.checkpoint import load_model, save_model
from models.build.selection import EpochSelector
from models.data.dataset import Split
from models.evaluate.generator import generator_metrics, generator_ranks
from models.evaluate.rank_metrics import MISS
from models.nets.tiger import ANONYMOUS_BUCKET, TigerConfig, user_bucket
from models.nets.tiger_decode import generate
from models.train.tiger import TigerTrainConfig, chunk_ends, train_tiger
from tests.test_tiger import brute_force, random_sids, tensors, tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def test_chunk_positions_equal_single_target_forward() -> None:
    """Row i of forward_chunk must be forward() on history items 0..i alone: the causal masks
    hide every newer item from the encoder and from the decoder's cross-attention."""
    sids = random_sids(40)
    model = tiny(sids, dtype=torch.float64, scale=0.3, enc_layers=2, dec_layers=2, causal=True)
    hists = [np.array([3, 9, 1, 30, 7, 22]), np.array([5, 6, 8])]  # the second left-padded
    u, tok, val = tensors(sids, model, hists, [2, 5])  # (2, 6, T), (2, 6)
    nxt = [np.array([9, 1, 30, 7, 22, 11]), np.array([0, 0, 0, 6, 8, 13])]
    target = torch.from_numpy(sids.ids[np.stack(nxt)])  # (2, 6, T)
    with torch.no_grad():
        chunk = model.forward_chunk(u, tok, val, target)
        for b, h in enumerate(hists):
            for i in range(len(h)):
                col = tok.shape[1] - len(h) + i  # right-aligned column of history item i
                ub, tb, vb = tensors(sids, model, [h[: i + 1]], [int(u[b])])
                one = model(ub, tb, vb, target[b : b + 1, col])
                for j in range(model.length):
                    torch.testing.assert_close(chunk[j][b, col], one[j][0])


def test_causal_decoding_is_exact_beam_search() -> None:
    """The served beam search over a causal, tied model still equals brute force."""
    sids = random_sids(30, size=5, seed=2)
    model = tiny(sids, dtype=torch.float64, scale=0.5, causal=True, tie_heads=True)
    hist = np.array([4, 17, 2])
    (items, scores), = generate(model, sids, [hist], [3], k=30, beam_size=30, blocked=[{2}])
    ref_items, ref_scores = brute_force(model, sids, hist, 3, {2}, 30)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-6)
    assert set(items.tolist()) == set(ref_items.tolist())


def test_chunk_ends_cover_every_target_once() -> None:
    lengths = np.array([1, 2, 7, 13, 30])
    start = np.cumsum(lengths) - lengths
    end = start + lengths - 1
    rng = np.random.default_rng(0)
    for size in (1, 3, 5):
        for offset in (np.zeros(5, np.int64), rng.integers(0, size, 5)):
            ends, starts, firsts = chunk_ends(start, end, size, offset)
            covered = np.concatenate([np.arange(f, e + 1) for e, f in zip(ends, firsts,
                                                                           strict=True)])
            expect = np.concatenate([np.arange(a + 1, b + 1) for a, b in zip(start, end,
                                                                              strict=True)])
            assert sorted(covered.tolist()) == expect.tolist()  # each target exactly once
            assert np.all(ends - firsts < size) and np.all(firsts > starts)


def test_chunked_training_learns_deterministic_next_item() -> None:
    n_items = 24
    sids = random_sids(n_items, levels=2, size=4, seed=4)
    rng = np.random.default_rng(0)
    perm = rng.permutation(n_items)  # the next item depends only on the last
    seqs = []
    for _ in range(40):
        s = [int(rng.integers(n_items))]
        for _ in range(9):
            s.append(int(perm[s[-1]]))
        seqs.append(np.array(s, dtype=np.int64))
    model = tiny(sids, dim=32, ff_dim=64, dropout=0.0, causal=True, tie_heads=True)
    cfg = TigerTrainConfig(epochs=30, batch_size=16, lr=5e-3, num_threads=None,
                           samples_per_epoch=None, max_history=4)
    losses = train_tiger(model, sids, seqs, [str(i) for i in range(40)], cfg, progress=False)
    assert losses[-1] < 0.3 * losses[0]
    last = rng.integers(0, n_items, size=30)
    hists = [np.array([x, perm[x]]) for x in last]
    out = generate(model, sids, hists, [ANONYMOUS_BUCKET] * 30, k=3, beam_size=5,
                   blocked=[set()] * 30)
    hits = [int(perm[h[-1]]) in items.tolist() for h, (items, _) in zip(hists, out, strict=True)]
    assert np.mean(hits) >= 0.8


def test_tied_heads_share_the_token_tables_through_a_checkpoint(tmp_path) -> None:
    sids = random_sids(20)
    model = tiny(sids, scale=0.2, tie_heads=True)
    for head, emb in zip(model.heads, model.tok_emb, strict=True):
        assert head.weight is emb.weight and head.bias is None
    save_model(model, tmp_path, "tiger")
    again = load_model(tmp_path, "tiger")
    for head, emb, ref in zip(again.heads, again.tok_emb, model.tok_emb, strict=True):
        assert head.weight is emb.weight and torch.equal(emb.weight, ref.weight)


def test_head_count_must_divide_the_width() -> None:
    with pytest.raises(ValueError, match="nearest valid count is 4"):  # 4 and 8 tie: fewer
        TigerConfig(radix=[4, 4], dim=128, n_heads=6)  # TIGER's paper shape
    with pytest.raises(ValueError, match="nearest valid count is 6"):
        TigerConfig(radix=[4, 4], dim=96, n_heads=7)
    TigerConfig(radix=[4, 4], dim=96, n_heads=6)


def _cycle_split(n_items: int = 24, users: int = 30, length: int = 8) -> Split:
    """Sequences that walk one cycle through every item (no item repeats within a user), so
    each next item is a function of the last; leave-one-out targets."""
    rng = np.random.default_rng(1)
    order = rng.permutation(n_items)
    nxt = np.empty(n_items, dtype=np.int64)
    nxt[order] = np.roll(order, -1)
    seqs = []
    for _ in range(users):
        s = [int(rng.integers(n_items))]
        for _ in range(length - 1):
            s.append(int(nxt[s[-1]]))
        seqs.append(np.array(s, dtype=np.int64))
    return Split(train=[s[:-2] for s in seqs], valid_target=np.array([s[-2] for s in seqs]),
                 test_target=np.array([s[-1] for s in seqs]), sequences=seqs)


@pytest.mark.parametrize("stage", ["valid", "test"])
def test_generator_ranks_are_each_users_own_beam_search(stage: str) -> None:
    """Batched evaluation gives, per user, the target's position in that user's own served
    list (one generate() call per user, history blocked), or MISS; nothing invalid."""
    sids = random_sids(24, levels=2, size=4, seed=4)
    split = _cycle_split()
    model = tiny(sids, dim=16, ff_dim=32, scale=0.5)
    user_ids = [f"u{i}" for i in range(30)]
    users = np.arange(30)
    ranks, invalid = generator_ranks(model, sids, split, user_ids, users, stage, beam=8, k=10,
                                     batch=7)
    assert invalid == 0.0
    target = split.valid_target if stage == "valid" else split.test_target
    for u in users:
        h = split.history(int(u), stage)
        (items, _), = generate(model, sids, [h[-model.cfg.max_history:]],
                               [user_bucket(user_ids[u], model.cfg.n_user_buckets)], 10, 10, [h])
        hit = np.flatnonzero(items == target[u])
        assert ranks[u] == (hit[0] if len(hit) else MISS)
    assert np.any(ranks != MISS)  # the check can fail: some target is found


def test_generator_epoch_selection_restores_the_best_checked_weights() -> None:
    """The build's epoch selection with the generator's own validation check keeps the best
    epoch's weights: measuring again gives the selected epoch's figure."""
    sids = random_sids(24, levels=2, size=4, seed=4)
    split = _cycle_split()
    user_ids = [f"u{i}" for i in range(30)]
    model = tiny(sids, dim=32, ff_dim=64, dropout=0.0, causal=True)
    users = split.eval_users("valid")

    def measure() -> dict[str, float]:
        return generator_metrics(model, sids, split, user_ids, users, "valid", beam=8,
                                 ks=(10,))

    sel = EpochSelector(model, split, None, every=1, measure=measure)
    cfg = TigerTrainConfig(epochs=4, batch_size=16, lr=5e-3, num_threads=None,
                           samples_per_epoch=None, max_history=4)
    train_tiger(model, sids, split.train, user_ids, cfg, progress=False, after_epoch=sel)
    report = sel.restore(cfg.epochs)
    checks = report["validation"]
    assert [c["epoch"] for c in checks] == [1, 2, 3, 4]
    selected = next(c for c in checks if c["epoch"] == report["selected_epoch"])
    assert selected["valid_ndcg@10"] == max(c["valid_ndcg@10"] for c in checks)
    assert abs(measure()["NDCG@10"] - selected["valid_ndcg@10"]) < 1e-4
    assert not model.training


def test_epoch_selection_loads_the_best_checks_weights_not_the_last() -> None:
    """With check figures that peak at epoch 2 of 4, restore() must load the weights the
    model had at that check (training moved them afterwards)."""
    sids = random_sids(24, levels=2, size=4, seed=4)
    split = _cycle_split()
    user_ids = [f"u{i}" for i in range(30)]
    model = tiny(sids, dim=32, ff_dim=64, dropout=0.0, causal=True)
    figures = iter([0.3, 0.5, 0.2, 0.1])  # epochs 1, 2, 3 and the final check at 4
    seen: dict[float, dict[str, torch.Tensor]] = {}

    def measure() -> dict[str, float]:
        f = next(figures)
        seen[f] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return {"NDCG@10": f, "HR@10": f}

    sel = EpochSelector(model, split, None, every=1, measure=measure)
    cfg = TigerTrainConfig(epochs=4, batch_size=16, lr=5e-3, num_threads=None,
                           samples_per_epoch=None, max_history=4)
    train_tiger(model, sids, split.train, user_ids, cfg, progress=False, after_epoch=sel)
    report = sel.restore(cfg.epochs)
    assert report["selected_epoch"] == 2 and len(report["validation"]) == 4
    state = model.state_dict()
    assert any(not torch.equal(state[k], seen[0.1][k]) for k in state)  # not the last
    for k, v in state.items():
        assert torch.equal(v, seen[0.5][k]), k
