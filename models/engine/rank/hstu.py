"""The HSTU ranking stage, served with M-FALCON (``HSTURanker.history_cache`` +
``score_with_cache``): a user's history is encoded once into per-layer K/V, then candidates are
scored ``microbatch`` at a time against it.

The encoded history is reused across requests through ``HSTUCacheStore``, keyed by
(user_id, history version): the store's version changes with every event of the user, so an
entry can never be served for a history it was not computed from. A short TTL bounds how long
entries (about 0.2 MB each at L = 200, dim 64, 2 layers) are held; a max size bounds memory.

Time: history timestamps are passed whenever the context has them, and the candidates take the
last history timestamp (no query time), exactly as in training (``models/train/hstu_ranker.py``). A
model trained without timestamps has an all-zero time bias, so passing them changes nothing.

Several requests at once (``score_batch``, the service's micro-batches): each user's cache is
found or built as for one request, then the caches are stacked, right-padded to the longest
history with zero keys that the valid-key mask removes (the biases were computed per user,
so where a key sits in the padded row changes nothing), and every user's candidates go
through the layers in one pass per microbatch. Same scores as one user at a time, up to float
summation order.

Threading: the service calls ``score`` and ``score_batch`` from its one compute thread, one
call at a time; the store takes no locks.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from cachetools import TTLCache

from models.engine.core.context import UserContext
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.nets.features import pad_histories, pad_times
from models.nets.hstu_ranker import (
    HSTUCache,
    HSTURanker,
    LayerCache,
    attend_candidates,
    encode_history,
)


class HSTUCacheStore:
    """LRU of M-FALCON history caches keyed by (user_id, history version), with a TTL counted
    from the put (cachetools' TTLCache).

    One slot per user: the version is a counter that only moves forward, so an entry for an
    older version can never be hit again and a newer one replaces it (a lookup with another
    version is a miss that drops the stale entry)."""

    def __init__(self, max_size: int = 256, ttl_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self.max_size = max_size
        self.ttl_s = ttl_s
        self.hits = 0
        self.misses = 0
        # user_id -> (version, cache)
        self._entries: TTLCache[str, tuple[int, HSTUCache]] = TTLCache(max_size, ttl_s, clock)

    def __len__(self) -> int:
        self._entries.expire()
        return len(self._entries)

    def get(self, user_id: str, version: int) -> HSTUCache | None:
        """The cache for this (user, version) if present and not expired; counts a hit/miss."""
        entry = self._entries.get(user_id)
        if entry is not None:
            if entry[0] == version:
                self.hits += 1
                return entry[1]
            del self._entries[user_id]  # stale version: never valid again
        self.misses += 1
        return None

    def put(self, user_id: str, version: int, cache: HSTUCache) -> None:
        """Store (replacing the user's entry), evicting the least recently used past max_size."""
        self._entries[user_id] = (version, cache)

    def clear(self) -> None:
        self._entries.clear()


class HSTURankStage:
    """Scores candidates for one user with an ``HSTURanker`` (logits, higher is better); same
    surface as ``stages.Ranker``."""

    # The source reported in stage timings and metrics: the name dashboards already use
    # (the API's rank model is ``hstu_ranker``, alias ``hstu``).
    name = "hstu"

    def __init__(self, model: HSTURanker, microbatch: int = 128,
                 cache: HSTUCacheStore | None = None) -> None:
        if microbatch < 1:
            raise ValueError(f"microbatch must be >= 1, got {microbatch}")
        self.model = model.eval()  # dropout off: scores must be deterministic
        self.microbatch = microbatch
        self.cache = cache if cache is not None else HSTUCacheStore()

    def build_cache(self, ctx: UserContext) -> HSTUCache:
        """Encode ctx's history (its last max_history items, no padding) into an HSTUCache.
        An empty history becomes one padding token: candidates then see only themselves."""
        return self.build_caches([ctx])[0]

    def user_cache(self, ctx: UserContext) -> HSTUCache:
        """The stored cache for (user_id, version) or a new one (stored); a context without a
        user or version (caller-given history) always gets a fresh one and is never stored."""
        if ctx.user_id is None or ctx.version is None:
            return self.build_cache(ctx)
        cache = self.cache.get(ctx.user_id, ctx.version)
        if cache is None:
            cache = self.build_cache(ctx)
            self.cache.put(ctx.user_id, ctx.version, cache)
        return cache

    def score(self, ctx: UserContext, items: np.ndarray) -> np.ndarray:
        """items (C,) dense ids -> logits (C,) float32."""
        if len(items) == 0:
            return np.empty(0, np.float32)
        cache = self.user_cache(ctx)
        with torch.inference_mode():
            ids = torch.from_numpy(np.asarray(items, dtype=np.int64))  # (C,)
            out = self.model.score_with_cache(cache, ids, self.microbatch)  # (C,)
        return out.numpy().astype(np.float32)


    def user_caches(self, contexts: list[UserContext]) -> list[HSTUCache]:
        """``user_cache`` for each context, the histories not in the store encoded in one
        padded pass (``build_caches``)."""
        out: list[HSTUCache | None] = []
        for ctx in contexts:
            keyed = ctx.user_id is not None and ctx.version is not None
            out.append(self.cache.get(ctx.user_id, ctx.version) if keyed else None)
        todo = [i for i, c in enumerate(out) if c is None]
        for i, cache in zip(todo, self.build_caches([contexts[i] for i in todo]), strict=True):
            out[i] = cache
            ctx = contexts[i]
            if ctx.user_id is not None and ctx.version is not None:
                self.cache.put(ctx.user_id, ctx.version, cache)
        return out  # type: ignore[return-value]

    def build_caches(self, contexts: list[UserContext]) -> list[HSTUCache]:
        """``build_cache`` for each context in one pass: histories left-padded to the
        longest (padding is masked, and position and time biases depend only on distances,
        so each row's K/V equal its own unpadded pass up to float order), then each row's
        padding cut off. A batch mixing timed and untimed histories is encoded one by one."""
        if not contexts:
            return []
        L = self.model.cfg.max_history
        timed = [c.timestamps is not None for c in contexts]
        if any(timed) != all(timed):
            return [self.build_caches([c])[0] for c in contexts]
        pad = self.model.n_items
        hists, times = [], []
        for c in contexts:
            if c.timestamps is not None and len(c.timestamps) != len(c.history):
                raise ValueError(f"{len(c.timestamps)} timestamps for a history of "
                                 f"{len(c.history)} items")
            h = np.asarray(c.history, dtype=np.int64)[-L:]
            # An empty history is one padding token (masked out; time 0 makes the candidate's
            # self time gap 0, as it always is in training).
            hists.append(h if len(h) else np.array([pad], dtype=np.int64))
            if c.timestamps is not None:
                t = np.asarray(c.timestamps, dtype=np.float64)[-L:]
                times.append(t if len(t) else np.zeros(1))
        width = max(len(h) for h in hists)
        with torch.inference_mode():
            hist = pad_histories(hists, width, pad)  # (B, W)
            ts = pad_times(times, width) if all(timed) else None  # (B, W) seconds
            layers, _, valid = encode_history(self.model, hist, ts, None)
        out = []
        for b, h in enumerate(hists):
            off = width - len(h)
            rows = [LayerCache(k=lc.k[b:b + 1, off:].clone(), v=lc.v[b:b + 1, off:].clone(),
                               bias_hist=_row(lc.bias_hist, b)[..., off:].clone(),
                               bias_self=_row(lc.bias_self, b).clone()) for lc in layers]
            out.append(HSTUCache(layers=rows, valid=valid[b, off:].clone(),
                                 n_keys=int(valid[b].sum()) + 1, history_states=[]))
        return out

    def score_batch(self, contexts: list[UserContext], items: list[np.ndarray],
                    ) -> list[np.ndarray]:
        """``score(contexts[i], items[i])`` for every i, all users' candidates in one pass per
        microbatch -> one (C_i,) float32 array each."""
        rows = [i for i, ids in enumerate(items) if len(ids)]
        out = [np.empty(0, np.float32) for _ in items]
        if not rows:
            return out
        layers, m, n_keys = stack_caches(self.user_caches([contexts[i] for i in rows]))
        width = max(len(items[i]) for i in rows)
        cand = np.zeros((len(rows), width), np.int64)  # (B, C) padded with item 0, dropped
        for row, i in enumerate(rows):
            cand[row, :len(items[i])] = items[i]
        model = self.model
        with torch.inference_mode():
            ids = torch.from_numpy(cand)
            logits = []
            for lo in range(0, width, self.microbatch):
                mb = ids[:, lo:lo + self.microbatch]  # (B, b)
                x = model.item_emb(mb) + model.cand_type  # (B, b, d)
                for layer, lc in zip(model.layers, layers, strict=True):
                    x = attend_candidates(layer, lc, x, m, n_keys)
                logits.append(model.head_logits(model.out_norm(x), mb))  # (B, b)
            scores = torch.cat(logits, 1).numpy().astype(np.float32)  # (B, C)
        for row, i in enumerate(rows):
            out[i] = scores[row, :len(items[i])]
        return out


def _row(t: torch.Tensor, b: int) -> torch.Tensor:
    """Row b of a (B|1, ...) tensor (a bias shared by every row has a leading 1), kept 4-D."""
    return t[b:b + 1] if t.shape[0] > 1 else t


def stack_caches(caches: list[HSTUCache],
                 ) -> tuple[list[LayerCache], torch.Tensor, torch.Tensor]:
    """B one-user caches -> (per-layer K/V and biases stacked to (B, L_max, ...), the valid
    keys m (B, 1, 1, L_max), visible keys per row n_keys (B, 1, 1, 1))."""
    lengths = [int(c.valid.shape[0]) for c in caches]
    B, L = len(caches), max(lengths)
    layers = []
    for j in range(len(caches[0].layers)):
        first = caches[0].layers[j]
        k = first.k.new_zeros(B, L, *first.k.shape[2:])  # (B, L, h, dqk)
        v = first.v.new_zeros(B, L, *first.v.shape[2:])  # (B, L, h, dv)
        bias = first.bias_hist.new_zeros(B, first.bias_hist.shape[1], 1, L)  # (B, h, 1, L)
        for b, (c, n) in enumerate(zip(caches, lengths, strict=True)):
            lc = c.layers[j]
            k[b, :n], v[b, :n], bias[b, ..., :n] = lc.k[0], lc.v[0], lc.bias_hist[0]
        self_bias = torch.cat([c.layers[j].bias_self for c in caches])  # (B, 1, h)
        layers.append(LayerCache(k=k, v=v, bias_hist=bias, bias_self=self_bias))
    dtype = caches[0].layers[0].k.dtype if caches[0].layers else torch.float32
    m = torch.zeros(B, 1, 1, L, dtype=dtype)
    for b, c in enumerate(caches):
        m[b, 0, 0, :lengths[b]] = c.valid.to(dtype)
    n_keys = torch.tensor([float(c.n_keys) for c in caches], dtype=dtype).view(B, 1, 1, 1)
    return layers, m, n_keys

def make(rt: Runtime, settings: EngineSettings, name: str) -> HSTURankStage:
    cache = HSTUCacheStore(ttl_s=settings.hstu_cache_ttl_s, max_size=settings.hstu_cache_size)
    return HSTURankStage(rt.nets["hstu"], microbatch=settings.hstu_microbatch, cache=cache)
