"""HSTU serving stage: the M-FALCON cache store (hits, versions, TTL, LRU) and stage scores
equal to the model's one-pass ``score_items``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.engine.core.context import UserContext
from models.engine.rank.hstu import HSTUCacheStore, HSTURankStage
from models.nets.features import pad_histories
from models.nets.hstu_ranker import HSTURanker, HSTURankerConfig

N_ITEMS = 40
MAX_HISTORY = 24


# Tiny tensors: extra intra-op threads only add sync cost on a busy 2-core box.
pytestmark = pytest.mark.usefixtures("one_thread")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_model(seed: int = 0) -> HSTURanker:
    """Tiny float32 model with every weight randomised (time and position biases too)."""
    torch.manual_seed(seed)
    cfg = HSTURankerConfig(n_items=N_ITEMS, dim=16, n_layers=2, n_heads=2, qk_dim=8, v_dim=8,
                           max_history=MAX_HISTORY, n_exact_positions=4, n_pos_buckets=8,
                           n_time_buckets=16, head_hidden=16)
    model = HSTURanker(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, 0.3)
    return model.eval()


def ctx_for(history: list[int], user_id: str | None = "u1", version: int | None = 1,
            timestamps: list[float] | None = None) -> UserContext:
    return UserContext(
        user_id=user_id, user_index=None, history=np.asarray(history, dtype=np.int64),
        user_codes=np.zeros(0, dtype=np.int64), blocked=set(history),
        timestamps=None if timestamps is None else np.asarray(timestamps, dtype=np.float64),
        version=version)


def direct_scores(model: HSTURanker, history: list[int], items: np.ndarray,
                  timestamps: list[float] | None) -> np.ndarray:
    """The reference: one score_items pass over the padded, truncated history."""
    hist = pad_histories([np.asarray(history)], MAX_HISTORY, N_ITEMS)  # (1, L)
    ts = None
    if timestamps is not None:
        tail = np.asarray(timestamps, dtype=np.float64)[-MAX_HISTORY:]
        if len(tail) == 0:
            tail = np.zeros(1)
        ts = torch.zeros(1, MAX_HISTORY, dtype=torch.float64)  # pad times are masked out
        ts[0, MAX_HISTORY - len(tail):] = torch.from_numpy(tail)
    with torch.no_grad():
        out = model.score_items(torch.zeros(1, 0), hist, torch.from_numpy(items)[None], ts)
    return out[0].numpy()


# ---- cache store -----------------------------------------------------------------------------


def test_store_hit_version_ttl_lru() -> None:
    clock = FakeClock()
    store = HSTUCacheStore(max_size=2, ttl_s=30.0, clock=clock)
    a, b, c = object(), object(), object()
    assert store.get("u1", 1) is None and store.misses == 1
    store.put("u1", 1, a)  # type: ignore[arg-type]
    assert store.get("u1", 1) is a and store.hits == 1
    assert store.get("u1", 2) is None  # the history moved on: miss, stale entry dropped
    assert len(store) == 0 and store.get("u1", 1) is None
    store.put("u1", 2, a)  # type: ignore[arg-type]
    clock.now += 29.9
    assert store.get("u1", 2) is a
    clock.now += 0.2  # 30.1 s after the put: expired
    assert store.get("u1", 2) is None and len(store) == 0
    store.put("u1", 1, a)  # type: ignore[arg-type]
    store.put("u2", 1, b)  # type: ignore[arg-type]
    assert store.get("u1", 1) is a  # u1 is now the most recently used
    store.put("u3", 1, c)  # type: ignore[arg-type]  # over max_size: evicts u2
    assert len(store) == 2
    assert store.get("u2", 1) is None
    assert store.get("u1", 1) is a and store.get("u3", 1) is c
    with pytest.raises(ValueError):
        HSTUCacheStore(max_size=0)


# ---- stage -----------------------------------------------------------------------------------


@pytest.mark.parametrize("with_time", [False, True])
def test_stage_scores_equal_direct(with_time: bool) -> None:
    model = make_model(seed=1)
    rng = np.random.default_rng(2)
    stage = HSTURankStage(model, microbatch=7)
    for length in [1, 5, MAX_HISTORY, MAX_HISTORY + 9]:  # the last one is truncated
        hist = rng.integers(0, N_ITEMS, size=length).tolist()
        ts = np.sort(rng.integers(0, 10**8, size=length)).astype(float).tolist() if with_time \
            else None
        items = rng.integers(0, N_ITEMS, size=23).astype(np.int64)
        got = stage.score(ctx_for(hist, user_id=f"u{length}", timestamps=ts), items)
        assert got.dtype == np.float32 and got.shape == (23,)
        np.testing.assert_allclose(got, direct_scores(model, hist, items, ts), atol=1e-5, rtol=0)
        again = stage.score(ctx_for(hist, user_id=f"u{length}", timestamps=ts), items)  # cached
        np.testing.assert_array_equal(again, got)
    assert stage.cache.hits == 4 and stage.cache.misses == 4
    if with_time:  # the time bias is live: dropping the timestamps changes the scores
        hist, items = list(range(10)), np.arange(12, dtype=np.int64)
        ts = [float(10**7 * i) for i in range(10)]
        assert not np.allclose(stage.score(ctx_for(hist, version=None, timestamps=ts), items),
                               stage.score(ctx_for(hist, version=None), items))


def test_stage_cache_follows_version() -> None:
    model = make_model(seed=3)
    clock = FakeClock()
    stage = HSTURankStage(model, cache=HSTUCacheStore(ttl_s=30.0, clock=clock))
    items = np.arange(N_ITEMS, dtype=np.int64)
    s1 = stage.score(ctx_for([1, 2, 3], version=1), items)
    assert (stage.cache.hits, stage.cache.misses) == (0, 1)
    stage.score(ctx_for([1, 2, 3], version=1), items)
    assert (stage.cache.hits, stage.cache.misses) == (1, 1)
    # A new event bumps the version: the cached history is not reused.
    s2 = stage.score(ctx_for([1, 2, 3, 4], version=2), items)
    assert (stage.cache.hits, stage.cache.misses) == (1, 2)
    np.testing.assert_allclose(s2, direct_scores(model, [1, 2, 3, 4], items, None), atol=1e-5)
    assert not np.allclose(s1, s2)
    clock.now += 31.0  # past the TTL
    stage.score(ctx_for([1, 2, 3, 4], version=2), items)
    assert (stage.cache.hits, stage.cache.misses) == (1, 3)


def test_caller_history_never_touches_cache() -> None:
    model = make_model(seed=4)
    stage = HSTURankStage(model)
    items = np.arange(10, dtype=np.int64)
    for user_id, version in [(None, None), ("u1", None), (None, 3)]:
        got = stage.score(ctx_for([5, 6, 7], user_id=user_id, version=version), items)
        np.testing.assert_allclose(got, direct_scores(model, [5, 6, 7], items, None), atol=1e-5)
    assert len(stage.cache) == 0 and stage.cache.hits == stage.cache.misses == 0


@pytest.mark.parametrize("with_time", [False, True])
def test_empty_history_and_no_items(with_time: bool) -> None:
    model = make_model(seed=5)
    stage = HSTURankStage(model, microbatch=4)
    items = np.arange(9, dtype=np.int64)
    ts = [] if with_time else None
    got = stage.score(ctx_for([], timestamps=ts), items)
    assert got.shape == (9,) and np.all(np.isfinite(got))
    np.testing.assert_allclose(got, direct_scores(model, [], items, ts), atol=1e-5, rtol=0)
    assert stage.score(ctx_for([1, 2]), np.empty(0, np.int64)).shape == (0,)
    with pytest.raises(ValueError):
        stage.score(ctx_for([1, 2], version=None, timestamps=[1.0]), items)
