"""HSTU layer and ranker: pointwise attention, masks, M-FALCON == naive scoring, training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.nets.hstu_layer import HSTULayer, position_buckets, time_buckets
from models.nets.hstu_ranker import HSTURanker, HSTURankerConfig

N_ITEMS = 30


# Tiny tensors: extra intra-op threads only add sync cost on a busy 2-core box.
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**overrides: object) -> HSTURankerConfig:
    """The small HSTU every test starts from; tests override what they exercise."""
    base: dict[str, object] = dict(n_items=N_ITEMS, dim=16, n_layers=2, n_heads=2, qk_dim=8,
                                   v_dim=8, max_history=16, n_exact_positions=4,
                                   n_pos_buckets=8, head_hidden=16)
    return HSTURankerConfig(**{**base, **overrides})


def make_model(
    seed: int = 0, causal: bool = True, dtype: torch.dtype = torch.float64, n_layers: int = 2,
    aux: bool = False,
) -> HSTURanker:
    """Tiny model with every weight randomised (biases too), so no term is trivially zero."""
    torch.manual_seed(seed)
    cfg = tiny_config(n_layers=n_layers, max_history=64, n_time_buckets=16,
                      causal_history=causal, aux_head=aux)
    model = HSTURanker(cfg).to(dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, 0.3)
    return model.eval()


def random_history(gen: torch.Generator, length: int, valid: int) -> torch.Tensor:
    """(length,) right-aligned: ``valid`` random items, left-padded with N_ITEMS."""
    h = torch.full((length,), N_ITEMS, dtype=torch.long)
    if valid:
        h[length - valid :] = torch.randint(0, N_ITEMS, (valid,), generator=gen)
    return h


def naive_scores(
    model: HSTURanker, history: torch.Tensor, items: torch.Tensor, ts: torch.Tensor | None
) -> torch.Tensor:
    """One sequence per candidate: history + that single candidate."""
    out = []
    for it in items:
        t = None if ts is None else ts[None]
        out.append(model.score_items(torch.zeros(1, 0), history[None], it.view(1, 1), t)[0, 0])
    return torch.stack(out)


# ---- layer -----------------------------------------------------------------------------------


def test_attention_is_pointwise_formula() -> None:
    """attend == sum_j SiLU(q.k_j + b_ij) m_ij v_j / sum_j m_ij, checked with explicit loops."""
    g = torch.Generator().manual_seed(1)
    B, Nq, Nk, h, dqk, dv = 2, 3, 5, 2, 4, 3
    q = torch.randn(B, Nq, h, dqk, generator=g, dtype=torch.float64)
    k = torch.randn(B, Nk, h, dqk, generator=g, dtype=torch.float64)
    v = torch.randn(B, Nk, h, dv, generator=g, dtype=torch.float64)
    bias = torch.randn(B, h, Nq, Nk, generator=g, dtype=torch.float64)
    mask = torch.rand(B, Nq, Nk, generator=g) < 0.6
    mask[0, 0] = False  # a row with no visible key -> zeros, not NaN
    got = HSTULayer.attend(q, k, v, bias, mask)
    want = torch.zeros(B, Nq, h, dv, dtype=torch.float64)
    for b in range(B):
        for i in range(Nq):
            n = max(int(mask[b, i].sum()), 1)
            for hd in range(h):
                for j in range(Nk):
                    if mask[b, i, j]:
                        w = F.silu(q[b, i, hd] @ k[b, j, hd] + bias[b, hd, i, j])
                        want[b, i, hd] += w * v[b, j, hd] / n
    torch.testing.assert_close(got, want)
    assert torch.all(got[0, 0] == 0)


def test_attention_has_no_softmax() -> None:
    """Softmax would make a single key's weight 1 and ignore a shift of all scores."""
    g = torch.Generator().manual_seed(2)
    q = torch.randn(1, 1, 1, 4, generator=g, dtype=torch.float64)
    k = torch.randn(1, 1, 1, 4, generator=g, dtype=torch.float64)
    v = torch.randn(1, 1, 1, 3, generator=g, dtype=torch.float64)
    mask = torch.ones(1, 1, 1, dtype=torch.bool)
    zero = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    out = HSTULayer.attend(q, k, v, zero, mask)
    torch.testing.assert_close(out, F.silu((q * k).sum(-1))[..., None] * v)  # not just v
    shifted = HSTULayer.attend(q, k, v, zero + 1.5, mask)
    assert not torch.allclose(out, shifted)  # softmax is shift-invariant, HSTU is not


def test_layer_respects_mask_and_residual() -> None:
    torch.manual_seed(3)
    layer = (
        HSTULayer(8, n_heads=2, qk_dim=4, v_dim=4, n_exact=2, n_pos_buckets=4, max_distance=16)
        .double()
        .eval()
    )
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    mask = torch.ones(6, 6, dtype=torch.bool).tril().expand(2, 6, 6)  # causal
    pos = torch.arange(6)[None]
    y = layer(x, mask, pos)
    x2 = x.clone()
    x2[:, 4:] += 1.0  # future tokens change: earlier outputs must not
    y2 = layer(x2, mask, pos)
    torch.testing.assert_close(y[:, :4], y2[:, :4])
    assert not torch.allclose(y[:, 4:], y2[:, 4:])
    with torch.no_grad():
        layer.out.weight.zero_()
        layer.out.bias.zero_()
    torch.testing.assert_close(layer(x, mask, pos), x)  # residual path


def test_buckets() -> None:
    d = torch.arange(-600, 601)
    b = position_buckets(d, n_exact=16, n_buckets=32, max_distance=512)
    assert b.min() >= 0 and b.max() < 64
    assert torch.equal(b[600:616], torch.arange(16))  # exact near 0
    pos = b[600:]
    assert torch.all(pos[1:] >= pos[:-1]) and pos[-1] == 31  # monotone, capped
    assert torch.all(b[:600] >= 32)  # negative distances in the upper half
    t = time_buckets(torch.tensor([0, 1, -3, 1000, 10**12]), 32)
    assert t.tolist() == [0, 1, 2, 9, 31]


# ---- ranker ----------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("with_time", [False, True])
def test_mfalcon_equals_naive(causal: bool, with_time: bool) -> None:
    model = make_model(seed=4, causal=causal)
    g = torch.Generator().manual_seed(5)
    for length, valid in [(12, 12), (12, 7), (12, 1), (12, 0), (5, 3), (20, 20)]:
        hist = random_history(g, length, valid)
        ts = None
        if with_time:
            ts = torch.sort(torch.randint(0, 10**8, (length,), generator=g)).values.double()
        for c in [1, 7, 10]:
            items = torch.randint(0, N_ITEMS, (c,), generator=g)
            want = naive_scores(model, hist, items, ts)
            cache = model.history_cache(hist, ts)
            for mb in [1, 3, 4, 64]:
                got = model.score_with_cache(cache, items, microbatch=mb)
                assert got.shape == (c,)
                torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
            # the one-pass score_items over all candidates agrees too
            t = None if ts is None else ts[None]
            one_pass = model.score_items(torch.zeros(1, 0), hist[None], items[None], t)[0]
            torch.testing.assert_close(one_pass, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("with_time", [False, True])
def test_score_lists_equals_one_pass(causal: bool, with_time: bool) -> None:
    """Training's batched M-FALCON (history encoded once per row, candidates against it) gives
    the one-pass scores of both heads, rows of any valid length (empty included)."""
    model = make_model(seed=16, causal=causal, aux=True)
    g = torch.Generator().manual_seed(17)
    hist = torch.stack([random_history(g, 11, v) for v in (11, 6, 1, 0)])  # (4, 11)
    items = torch.randint(0, N_ITEMS, (4, 9), generator=g)
    ts = None
    if with_time:
        ts = torch.sort(torch.randint(0, 10**8, (4, 11), generator=g), dim=1).values.double()
    main, aux = model.score_lists(hist, items, ts, with_aux=True)
    want_main, want_aux = model.score_items_with_aux(torch.zeros(4, 0), hist, items, ts)
    torch.testing.assert_close(main, want_main, atol=1e-9, rtol=0)
    torch.testing.assert_close(aux, want_aux, atol=1e-9, rtol=0)
    assert model.score_lists(hist, items, ts)[1] is None


def test_mfalcon_float32_and_query_time() -> None:
    model = make_model(seed=6, dtype=torch.float32)
    g = torch.Generator().manual_seed(7)
    hist = random_history(g, 30, 25)
    ts = torch.sort(torch.randint(0, 10**6, (30,), generator=g)).values
    qt = torch.tensor(2 * 10**6)
    items = torch.randint(0, N_ITEMS, (23,), generator=g)
    got = model.score_with_cache(model.history_cache(hist, ts, qt), items, microbatch=5)
    want = model.score_items(torch.zeros(1, 0), hist[None], items[None], ts[None], qt[None])[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    default_qt = model.score_with_cache(model.history_cache(hist, ts), items)
    assert not torch.allclose(got, default_qt)  # the query time reaches the time bias


def test_candidates_do_not_influence_each_other() -> None:
    model = make_model(seed=8)
    g = torch.Generator().manual_seed(9)
    hist = torch.stack([random_history(g, 10, 10), random_history(g, 10, 4)])
    items = torch.randint(0, N_ITEMS, (2, 6), generator=g)
    base = model.score_items(torch.zeros(2, 0), hist, items)
    changed = items.clone()
    changed[:, 2] = (changed[:, 2] + 1) % N_ITEMS
    other = model.score_items(torch.zeros(2, 0), hist, changed)
    keep = [0, 1, 3, 4, 5]
    torch.testing.assert_close(base[:, keep], other[:, keep], atol=1e-12, rtol=0)
    assert not torch.allclose(base[:, 2], other[:, 2])
    cache = model.history_cache(hist[0])
    a = model.score_with_cache(cache, items[0], microbatch=4)
    b = model.score_with_cache(cache, changed[0], microbatch=4)
    torch.testing.assert_close(a[keep], b[keep], atol=1e-12, rtol=0)


def test_history_matters_and_padding_is_invisible() -> None:
    model = make_model(seed=10)
    hist = torch.tensor([[N_ITEMS, N_ITEMS, 1, 2, 3], [N_ITEMS, N_ITEMS, 4, 2, 3]])
    items = torch.tensor([[5, 6], [5, 6]])
    s = model.score_items(torch.zeros(2, 0), hist, items)
    assert not torch.allclose(s[0], s[1])
    more_pad = torch.cat([torch.full((2, 4), N_ITEMS), hist], 1)  # extra left padding
    torch.testing.assert_close(model.score_items(torch.zeros(2, 0), more_pad, items), s)


def test_shapes() -> None:
    model = make_model(seed=11, dtype=torch.float32)
    hist = torch.full((3, 8), N_ITEMS)
    hist[0, 3:] = torch.arange(5)
    items = torch.randint(0, N_ITEMS, (3, 4))
    assert model.score_items(torch.zeros(3, 2, dtype=torch.long), hist, items).shape == (3, 4)
    assert model(torch.zeros(3, 2, dtype=torch.long), hist, items[:, 0]).shape == (3,)
    one = model.score_candidates(torch.zeros(2, dtype=torch.long), hist[0], items[0])
    assert one.shape == (4,)
    cache = model.history_cache(hist[1])  # empty history
    assert cache.n_keys == 1 and len(cache.layers) == 2
    assert model.score_with_cache(cache, torch.arange(9), microbatch=4).shape == (9,)
    assert model.score_with_cache(cache, torch.arange(0)).shape == (0,)
    with pytest.raises(ValueError):
        model.score_with_cache(cache, torch.arange(3), microbatch=0)


def test_training_lowers_loss() -> None:
    """Synthetic: the next item follows the last one (i -> i+1); BCE of positive vs random
    negative on the ranker's logits must drop."""
    torch.manual_seed(12)
    cfg = tiny_config(dropout=0.0)
    model = HSTURanker(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(13)

    def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        start = torch.randint(0, N_ITEMS, (64, 1), generator=g)
        hist = (start + torch.arange(8)) % N_ITEMS  # (64, 8)
        pos = (hist[:, -1] + 1) % N_ITEMS
        neg = torch.randint(0, N_ITEMS, (64,), generator=g)
        return hist, pos, neg

    def loss_of(hist: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        logits = model.score_items(torch.zeros(64, 0), hist, torch.stack([pos, neg], 1))
        labels = torch.tensor([1.0, 0.0]).expand(64, 2)
        return F.binary_cross_entropy_with_logits(logits, labels)

    fixed = batch()
    with torch.no_grad():
        before = loss_of(*fixed).item()
    for _ in range(100):
        loss = loss_of(*batch())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = loss_of(*fixed).item()
    assert after < 0.6 * before, (before, after)


def test_aux_head() -> None:
    torch.manual_seed(14)
    cfg = tiny_config(n_layers=1, aux_head=True, dropout=0.0)
    model = HSTURanker(cfg).double().eval()
    g = torch.Generator().manual_seed(15)
    hist = random_history(g, 9, 6)
    items = torch.randint(0, N_ITEMS, (5,), generator=g)
    main, aux = model.score_items_with_aux(torch.zeros(1, 0), hist[None], items[None])
    assert main.shape == aux.shape == (1, 5)
    torch.testing.assert_close(main, model.score_items(torch.zeros(1, 0), hist[None], items[None]))
    cache = model.history_cache(hist)
    states = model.candidate_states_with_cache(cache, items, microbatch=2)  # (5, d)
    torch.testing.assert_close(
        model.aux_logits(states[None], items[None]), aux.detach(), atol=1e-5, rtol=0
    )
    with pytest.raises(ValueError):
        make_model().aux_logits(states[None], items[None])
    # both heads train: BCE(main) + BCE(aux) goes down
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    hists = torch.randint(0, N_ITEMS, (32, 6), generator=g)
    cands = torch.randint(0, N_ITEMS, (32, 2), generator=g)
    y_main = (cands % 2 == 0).double()
    y_aux = (cands % 3 == 0).double()
    losses = []
    for _ in range(40):
        m, a = model.score_items_with_aux(torch.zeros(32, 0), hists, cands)
        loss = F.binary_cross_entropy_with_logits(m, y_main) + F.binary_cross_entropy_with_logits(
            a, y_aux
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_hstu_checkpoint_round_trip(tmp_path):
    from models.artifacts.checkpoint import load_model, save_model

    torch.manual_seed(0)
    model = HSTURanker(HSTURankerConfig(n_items=30, dim=16, n_layers=1, max_history=8)).eval()
    save_model(model, tmp_path, "hstu")
    back = load_model(tmp_path, "hstu")
    hist = torch.tensor([30, 30, 1, 2, 3, 4, 5, 6])
    items = torch.tensor([7, 8, 9])
    with torch.no_grad():
        torch.testing.assert_close(
            back.score_candidates(torch.zeros(0, dtype=torch.long), hist, items),
            model.score_candidates(torch.zeros(0, dtype=torch.long), hist, items),
        )
