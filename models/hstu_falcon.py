"""M-FALCON serving for ``HSTURanker`` (Zhai et al. 2024, section 3.4).

History states never depend on candidates (history rows' masks exclude candidate keys), so the
per-layer history K/V are computed once per request (``build_history_cache``). Candidates are
then scored in microbatches of b_m (``score_with_cache``): at each layer a candidate's query
meets the cached history keys (one (b_m, L) block) plus its own key; the masked-out
candidate-candidate block of the full sequence is never materialised. Cost O(L^2 + C L) instead
of O(C L^2) for scoring each candidate in its own sequence; the scores are the same (same
positions, biases, masks and the same per-row normaliser n = visible keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from models.features import history_mask

if TYPE_CHECKING:
    from models.hstu import HSTURanker


@dataclass
class LayerCache:
    k: torch.Tensor  # (1, L, h, dqk) history keys
    v: torch.Tensor  # (1, L, h, dv) history values
    bias_hist: torch.Tensor  # (1, h, 1, L) rab of a candidate (position L) vs history keys
    bias_self: torch.Tensor  # (1, 1, h) rab of a candidate vs itself


@dataclass
class HSTUCache:
    layers: list[LayerCache]
    valid: torch.Tensor  # (L,) bool, real history items
    n_keys: int  # keys a candidate sees: valid history + itself (the normaliser n)
    history_states: list[torch.Tensor]  # per layer output over the history, each (1, L, d)


@torch.no_grad()
def build_history_cache(model: HSTURanker, history: torch.Tensor,
                        timestamps: torch.Tensor | None = None,
                        query_time: torch.Tensor | None = None) -> HSTUCache:
    """history (L,), timestamps (L,) seconds or None, query_time () or None -> HSTUCache."""
    L = history.shape[0]
    dev = history.device
    hist = history[None]  # (1, L)
    valid = history_mask(hist, model.n_items)  # (1, L)
    mask = model.history_attention_mask(valid)  # (1, L, L)
    pos = torch.arange(L + 1, device=dev)[None]  # (1, L+1); candidates sit at L
    t_h = None if timestamps is None else timestamps[None]  # (1, L)
    t_all = t_q = None
    if t_h is not None:
        tq = model.query_times(t_h, None if query_time is None else query_time.reshape(1))
        t_q = tq[:, None]  # (1, 1)
        t_all = torch.cat([t_h, t_q], 1)  # (1, L+1)
    x = model.item_emb(hist)  # (1, L, d)
    layers, states = [], []
    if model.layers:  # bucket indices are shared by the layers: computed once
        hist_b = model.layers[0].buckets(pos[:, :L], pos[:, :L], t_h, t_h)  # (1, L, L)
        cand_b = model.layers[0].buckets(pos[:, L:], pos, t_q, t_all)  # (1, 1, L+1)
    for layer in model.layers:
        u, q, k, v = layer.project(x)
        x = layer.finish(layer.attend(q, k, v, layer.bias(*hist_b), mask), u, x)
        cand = layer.bias(*cand_b)  # (1, h, 1, L+1) a candidate (position L) vs history+self
        layers.append(LayerCache(k=k, v=v, bias_hist=cand[..., :L],
                                 bias_self=cand[..., L].transpose(1, 2)))
        states.append(x)
    return HSTUCache(layers=layers, valid=valid[0], n_keys=int(valid.sum()) + 1,
                     history_states=states)


@torch.no_grad()
def candidate_states_with_cache(model: HSTURanker, cache: HSTUCache, items: torch.Tensor,
                                microbatch: int = 64) -> torch.Tensor:
    """items (C,) -> final candidate states (C, d), ``microbatch`` candidates at a time."""
    if microbatch < 1:
        raise ValueError(f"microbatch must be >= 1, got {microbatch}")
    m = cache.valid.to(model.item_emb.weight.dtype)[None, None, None, :]  # (1, 1, 1, L)
    out = []
    for start in range(0, items.shape[0], microbatch):
        mb = items[start:start + microbatch][None]  # (1, b)
        x = model.item_emb(mb) + model.cand_type  # (1, b, d)
        for layer, lc in zip(model.layers, cache.layers, strict=True):
            u, q, k, v = layer.project(x)  # (1, b, h, *)
            s_h = torch.einsum("bihd,bjhd->bhij", q, lc.k) + lc.bias_hist  # (1, h, b, L)
            s_s = (q * k).sum(-1) + lc.bias_self  # (1, b, h) each candidate vs itself
            a = torch.einsum("bhij,bjhd->bihd", F.silu(s_h) * m, lc.v)  # (1, b, h, dv)
            a = (a + F.silu(s_s)[..., None] * v) / cache.n_keys
            x = layer.finish(a, u, x)  # (1, b, d)
        out.append(model.out_norm(x)[0])  # (b, d)
    if not out:
        return model.item_emb.weight.new_zeros(0, model.cfg.dim)
    return torch.cat(out)
