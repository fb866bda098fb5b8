"""Models, features, checkpoints and training loops on tiny synthetic datasets."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle

import numpy as np
import pytest
import torch

from models.artifacts.checkpoint import MODEL_REGISTRY, load_model, register_model, save_model
from models.data.dataset import CategoricalFeatures, Dataset, IdMap, ItemSide, leave_one_out
from models.nets.deepfm import DeepFM, DeepFMConfig
from models.nets.din import DIN, DINConfig
from models.nets.features import ItemFeatureTables, pad_histories, user_codes_from_dataset
from models.nets.two_tower import TwoTower, TwoTowerConfig
from models.train.item_scorer import RankerTrainConfig, train_ranker
from models.train.samples import build_samples, consumed_keys, sample_negatives
from models.train.two_tower import TwoTowerTrainConfig, in_batch_softmax_loss, train_two_tower

N_ITEMS, N_USERS, N_GROUPS = 40, 48, 4


def make_dataset(seq_len: int = 24, seed: int = 0, user_side: bool = True) -> Dataset:
    """Users of group g walk through group g's items (i % 4 == g) in order, with 10% noise:
    the next item is predictable from the history and, less sharply, from the user feature."""
    rng = np.random.default_rng(seed)
    seqs = []
    for u in range(N_USERS):
        g = u % N_GROUPS
        cur = g + N_GROUPS * int(rng.integers(N_ITEMS // N_GROUPS))
        seq = []
        for _ in range(seq_len):
            seq.append(cur)
            cur = (cur + N_GROUPS) % N_ITEMS if rng.random() < 0.9 else int(rng.integers(N_ITEMS))
        seqs.append(np.array(seq, dtype=np.int64))
    genres = [(f"g{i % N_GROUPS}",) + (("extra",) if i % 5 == 0 else ()) for i in range(N_ITEMS)]
    years = np.array([0 if i % 7 == 0 else 1980 + i for i in range(N_ITEMS)], dtype=np.int64)
    side = None
    if user_side:
        codes = np.stack([np.arange(N_USERS) % N_GROUPS + 1, np.arange(N_USERS) % 2 + 1], 1)
        vocab = {"group": ["<unk>"] + [f"G{g}" for g in range(N_GROUPS)],
                 "parity": ["<unk>", "even", "odd"]}
        side = CategoricalFeatures(["group", "parity"], codes.astype(np.int64), vocab)
    return Dataset(
        name="synthetic", users=IdMap.from_ids([f"u{u}" for u in range(N_USERS)]),
        items=IdMap.from_ids([f"i{i}" for i in range(N_ITEMS)]), sequences=seqs,
        item_side=ItemSide(titles=[f"t{i}" for i in range(N_ITEMS)], genres=genres,
                           years=years),
        user_side=side)


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return make_dataset()


def _common(ds: Dataset) -> dict:
    tables = ItemFeatureTables.from_dataset(ds)
    _, cards = user_codes_from_dataset(ds)
    return {"n_items": ds.n_items, "user_cardinalities": cards, "n_genres": tables.n_genres,
            "n_year_buckets": tables.n_year_buckets, "max_history": 8}


def build(kind: str, ds: Dataset, seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    tables = ItemFeatureTables.from_dataset(ds)
    common = _common(ds)
    if kind == "two_tower":
        cfg = TwoTowerConfig(**{**common, "item_dim": 8, "hidden_dim": 32, "out_dim": 16,
                                "attention_dim": 8, **overrides})
        return TwoTower(cfg, tables.genres, tables.year_bucket)
    if kind == "deepfm":
        cfg = DeepFMConfig(**{**common, "embed_dim": 8, "hidden_dims": [32, 16], **overrides})
        return DeepFM(cfg, tables.genres, tables.year_bucket)
    cfg = DINConfig(**{**common, "item_dim": 6, "attention_hidden": [16, 8],
                       "hidden_dims": [32, 16], **overrides})
    return DIN(cfg, tables.genres, tables.year_bucket)


VARIANTS = [("two_tower", {}), ("two_tower", {"pooling": "mean"}), ("deepfm", {}),
            ("din", {}), ("din", {"attention_softmax": True}), ("din", {"activation": "dice"})]


def _inputs(ds: Dataset, B: int = 5, L: int = 8):
    codes, _ = user_codes_from_dataset(ds)
    hists = [ds.sequences[u][: 2 + 3 * u] for u in range(B)]  # lengths 2..14: some truncated
    hists[0] = np.zeros(0, dtype=np.int64)  # an empty history
    return codes[:B], pad_histories(hists, L, ds.n_items), torch.arange(B) * 7 % ds.n_items


# ---- features -------------------------------------------------------------------------------


def test_pad_histories_right_aligns_and_keeps_most_recent() -> None:
    out = pad_histories([np.array([1, 2]), np.array([], dtype=np.int64),
                         np.array([3, 4, 5, 6, 7])], max_len=4, pad=9)
    assert out.dtype == torch.int64 and out.shape == (3, 4)
    assert out.tolist() == [[9, 9, 1, 2], [9, 9, 9, 9], [4, 5, 6, 7]]


def test_item_tables_and_user_codes(ds: Dataset) -> None:
    t = ItemFeatureTables.from_dataset(ds)
    assert t.genre_names == ["extra", "g0", "g1", "g2", "g3"]
    assert t.genres.shape == (N_ITEMS + 1, 5) and t.genres.dtype == torch.float32
    assert t.genres[N_ITEMS].sum() == 0 and t.genres[5].tolist() == [1, 0, 1, 0, 0]
    assert t.year_bucket.shape == (N_ITEMS + 1,) and t.year_bucket.dtype == torch.int64
    assert t.year_bucket[0] == 0 and t.year_bucket[N_ITEMS] == 0  # unknown year, padding
    assert t.year_bucket[1] == 1 and t.year_bucket[5] == 2  # 1981 -> 1980-84, 1985 -> 1985-89
    assert t.n_year_buckets == int(t.year_bucket.max()) + 1
    codes, cards = user_codes_from_dataset(ds)
    assert codes.shape == (N_USERS, 2) and codes.dtype == torch.int64 and cards == [5, 3]
    codes0, cards0 = user_codes_from_dataset(make_dataset(user_side=False))
    assert codes0.shape == (N_USERS, 0) and cards0 == []


# ---- models ---------------------------------------------------------------------------------


def test_two_tower_shapes(ds: Dataset) -> None:
    m = build("two_tower", ds).eval()
    codes, hist, items = _inputs(ds)
    u, v = m.user_embed(codes, hist), m.item_embed(items)
    assert u.shape == (5, 16) and v.shape == (5, 16)
    assert torch.allclose(u.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert torch.allclose(v.norm(dim=-1), torch.ones(5), atol=1e-5)
    all_v = m.all_item_embeddings()
    assert all_v.shape == (N_ITEMS, 16)
    assert torch.allclose(all_v[items], v, atol=1e-6)
    assert torch.allclose(m(codes, hist, items), (u * v).sum(-1) / m.cfg.temperature, atol=1e-5)


def test_two_tower_without_user_features() -> None:
    ds = make_dataset(user_side=False)
    m = build("two_tower", ds).eval()
    codes, hist, items = _inputs(ds)
    assert codes.shape == (5, 0) and m.user_embed(codes, hist).shape == (5, 16)


@pytest.mark.parametrize(("kind", "overrides"), VARIANTS)
def test_extra_left_padding_changes_nothing(ds: Dataset, kind: str, overrides: dict) -> None:
    m = build(kind, ds, **overrides).eval()
    codes, hist, items = _inputs(ds)
    longer = torch.cat([torch.full((5, 6), ds.n_items), hist], dim=1)  # (5, 14)
    with torch.no_grad():
        if kind == "two_tower":
            a, b = m.user_embed(codes, hist), m.user_embed(codes, longer)
        else:
            a, b = m(codes, hist, items), m(codes, longer, items)
    assert torch.isfinite(a).all()
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize(("kind", "overrides"), [v for v in VARIANTS if v[0] != "two_tower"])
def test_ranker_shapes_and_score_candidates(ds: Dataset, kind: str, overrides: dict) -> None:
    m = build(kind, ds, **overrides)
    m.train()  # one Dice batch in train mode fills its running stats with something non-trivial
    codes, hist, items = _inputs(ds)
    m(codes, hist, items)
    m.eval()
    with torch.no_grad():
        out = m(codes, hist, items)
        assert out.shape == (5,) and torch.isfinite(out).all()
        cands = torch.tensor([3, 0, 17, 39, 3, 22])
        for u in range(5):
            single = m.score_candidates(codes[u], hist[u], cands)
            batch = m(codes[u].expand(6, -1), hist[u].expand(6, -1), cands)
            assert single.shape == (6,)
            assert torch.allclose(single, batch, atol=1e-5)


# ---- loss -----------------------------------------------------------------------------------


def test_in_batch_softmax_loss_applies_logq_and_masks_duplicates() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.5], [0.3, 1.5, -1.0], [1.0, 0.2, 0.7]])
    items = torch.tensor([4, 9, 4])  # rows 0 and 2 share their positive item
    log_q = torch.log(torch.tensor([0.5, 0.2, 0.5]))
    # Corrected logits z = s - log q; in rows 0 and 2 the other copy of item 4 is dropped.
    z = logits - log_q.unsqueeze(0)
    row0 = -z[0, 0] + math.log(math.exp(z[0, 0]) + math.exp(z[0, 1]))
    row1 = -z[1, 1] + math.log(sum(math.exp(x) for x in z[1].tolist()))
    row2 = -z[2, 2] + math.log(math.exp(z[2, 1]) + math.exp(z[2, 2]))
    expected = (row0 + row1 + row2) / 3
    got = in_batch_softmax_loss(logits, items, log_q)
    assert got.item() == pytest.approx(float(expected), rel=1e-6)
    # Without correction (and the mask still on) the value differs: the term is applied.
    plain = in_batch_softmax_loss(logits, items, None)
    assert plain.item() != pytest.approx(got.item(), rel=1e-3)
    # Gradients stay finite despite the -inf mask.
    x = logits.clone().requires_grad_(True)
    in_batch_softmax_loss(x, items, log_q).backward()
    assert torch.isfinite(x.grad).all() and x.grad[0, 2] == 0 and x.grad[2, 0] == 0


# ---- samples --------------------------------------------------------------------------------


def test_build_samples_matches_naive_loop() -> None:
    train = [np.array([5, 6, 7, 8]), np.array([1]), np.array([], dtype=np.int64),
             np.array([2, 3])]
    s = build_samples(train, max_history=3, pad=10)
    naive = [(u, list(seq[max(0, t - 3) : t]), seq[t])
             for u, seq in enumerate(train) for t in range(1, len(seq))]
    assert len(s) == len(naive) == 4
    hist = s.histories(np.arange(len(s))).tolist()
    for i, (u, h, target) in enumerate(naive):
        assert s.users[i] == u and s.targets[i] == target
        assert hist[i] == [10] * (3 - len(h)) + h


def test_negatives_avoid_consumed_items() -> None:
    train = [np.arange(0, 18), np.array([3, 4])]
    keys = consumed_keys(train, 20)
    users = np.array([0] * 50 + [1] * 50)
    neg = sample_negatives(users, 4, 20, keys, np.random.default_rng(0))
    assert neg.shape == (100, 4)
    assert set(neg[:50].ravel()) <= {18, 19}
    assert not set(neg[50:].ravel()) & {3, 4}


# ---- training -------------------------------------------------------------------------------


def test_two_tower_training_lowers_loss_and_is_deterministic(ds: Dataset) -> None:
    split = leave_one_out(ds)
    codes, _ = user_codes_from_dataset(ds)
    cfg = TwoTowerTrainConfig(epochs=12, batch_size=64, lr=5e-3, seed=3)  # 12 x 17 steps
    m = build("two_tower", ds)
    losses = train_two_tower(m, split, codes, cfg, progress=False)
    assert len(losses) == 12 and losses[-1] < 0.7 * losses[0]
    assert not m.training
    again = train_two_tower(build("two_tower", ds), split, codes, cfg, progress=False)
    assert again == pytest.approx(losses, rel=1e-5)
    # The learnt structure: the true next item ranks in the top 5 of 40 for most users.
    users = split.eval_users("test")
    with torch.no_grad():
        hist = pad_histories([split.history(u, "test") for u in users], 8, ds.n_items)
        scores = m.user_embed(codes[torch.from_numpy(users)], hist) @ m.all_item_embeddings().T
    target = torch.from_numpy(split.test_target[users])
    rank = (scores > scores.gather(1, target[:, None])).sum(1)
    assert (rank < 5).float().mean() > 0.5


@pytest.mark.parametrize("kind", ["deepfm", "din"])
def test_ranker_training_lowers_loss(ds: Dataset, kind: str) -> None:
    split = leave_one_out(ds)
    codes, _ = user_codes_from_dataset(ds)
    cfg = RankerTrainConfig(epochs=8, batch_size=32, neg_ratio=4, lr=5e-3, seed=1)  # 8 x 33
    m = build(kind, ds)
    losses = train_ranker(m, split, codes, ds.n_items, cfg, progress=False)
    assert len(losses) == 8 and losses[-1] < 0.6 * losses[0]
    # Held-out: the test target outscores random unconsumed items for most users.
    users = split.eval_users("test")
    neg = sample_negatives(users, 10, ds.n_items, consumed_keys(split.sequences, ds.n_items),
                           np.random.default_rng(0))
    wins = []
    with torch.no_grad():
        for i, u in enumerate(users):
            hist = pad_histories([split.history(u, "test")], 8, ds.n_items)[0]
            items = torch.from_numpy(np.concatenate([[split.test_target[u]], neg[i]]))
            s = m.score_candidates(codes[u], hist, items)
            wins.append((s[0] > s[1:]).float().mean().item())
    assert np.mean(wins) > 0.75


# ---- checkpoints ----------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "overrides"), VARIANTS)
def test_checkpoint_round_trip(tmp_path, monkeypatch, ds: Dataset, kind: str,
                               overrides: dict) -> None:
    m = build(kind, ds, **overrides)
    m.train()
    codes, hist, items = _inputs(ds)
    m(codes, hist, items)  # moves Dice running stats off their initial values
    m.eval()
    save_model(m, tmp_path, "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta == {"type": kind, "config": dataclasses.asdict(m.cfg)}

    def no_pickle(*args, **kwargs):
        raise AssertionError("load_model must not unpickle anything")

    monkeypatch.setattr(torch, "load", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    loaded = load_model(tmp_path, "model")
    assert type(loaded) is type(m) and not loaded.training
    assert loaded.cfg == m.cfg
    # The item side buffers travelled in the safetensors file.
    assert torch.equal(loaded.items.genres, m.items.genres)
    assert torch.equal(loaded.items.year_bucket, m.items.year_bucket)
    with torch.no_grad():
        if kind == "two_tower":
            assert torch.equal(loaded.user_embed(codes, hist), m.user_embed(codes, hist))
            assert torch.equal(loaded.all_item_embeddings(), m.all_item_embeddings())
        else:
            assert torch.equal(loaded(codes, hist, items), m(codes, hist, items))


def test_registry_is_extensible(tmp_path) -> None:
    @dataclasses.dataclass
    class TinyConfig:
        n_items: int
        dims: tuple[int, ...] = (2, 3)

    class Tiny(torch.nn.Module):
        def __init__(self, cfg: TinyConfig) -> None:
            super().__init__()
            self.cfg = cfg
            self.w = torch.nn.Parameter(torch.randn(cfg.n_items, sum(cfg.dims)))

    register_model("tiny_test", TinyConfig, Tiny)
    try:
        m = Tiny(TinyConfig(n_items=3))
        save_model(m, tmp_path, "tiny")
        loaded = load_model(tmp_path, "tiny")
        assert loaded.cfg == m.cfg and torch.equal(loaded.w, m.w)
    finally:
        MODEL_REGISTRY.pop("tiny_test")
    with pytest.raises(KeyError):
        load_model(tmp_path, "tiny")


@pytest.mark.parametrize("k", [5, 9])  # fewer / more targets than h1: both forms
@pytest.mark.parametrize("softmax", [False, True])
def test_attention_unit_equals_the_concatenated_form(softmax: bool, k: int) -> None:
    """DIN's activation unit (shared with TDM's scorer) computes its first layer in split
    form; it must equal the paper's Linear on [h, t, h - t, h * t] for every (target, item)
    pair, masked sum or softmax over the valid history."""
    from models.nets.din import PReLU, attend_targets

    torch.manual_seed(3)
    b, n_hist, d, h1 = 3, 7, 4, 6
    att_in = torch.nn.Linear(4 * d, h1)
    att_rest = torch.nn.Sequential(PReLU(h1), torch.nn.Linear(h1, 1))
    with torch.no_grad():
        att_rest[0].alpha.uniform_(0.1, 0.5)
    hist, target = torch.randn(b, n_hist, d), torch.randn(b, k, d)
    mask = torch.rand(b, n_hist) > 0.3
    mask[0] = False  # an all-padding history gives a zero interest vector, not NaN
    w_h, _, w_d, _ = att_in.weight.split(d, dim=1)
    got = attend_targets(att_in, att_rest, hist, mask, hist @ (w_h + w_d).T, target, softmax)

    h = hist[:, None].expand(b, k, n_hist, d)
    t = target[:, :, None].expand(b, k, n_hist, d)
    scores = att_rest(att_in(torch.cat([h, t, h - t, h * t], dim=-1))).squeeze(-1)
    m = mask[:, None].expand_as(scores)
    if softmax:
        weights = torch.where(m, scores, torch.tensor(-torch.inf)).softmax(-1).nan_to_num(0.0)
    else:
        weights = scores * m
    want = weights @ hist
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.all(got[0] == 0)
