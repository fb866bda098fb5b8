"""HSTU ranker (Zhai et al., "Actions Speak Louder than Words", ICML 2024) and its M-FALCON
serving (section 3.4), on the shared ``HSTULayer`` (``hstu_layer.py``).

``HSTURanker`` scores a sequence ``history + candidates``: history tokens attend causally among
themselves (``causal_history=False``: to every valid history token), never to candidates; each
candidate sees the valid history and itself, no other candidate. All candidates sit at position
L (just after the most recent history item), so a candidate's state is the same whether it is
scored alone or with others. Score = MLP([h_c, e_c, h_c * e_c]) of the candidate's final state
h_c and its item embedding e_c.

M-FALCON: history states never depend on candidates (with either history mask), so the
per-layer history K/V are computed once per request (``history_cache``). Candidates are then
scored in microbatches of b_m (``score_with_cache``): at each layer a candidate's query meets
the cached history keys (one (b_m, L) block) plus its own key; the masked-out
candidate-candidate block of the full sequence is never materialised. Cost O(L^2 + C L) instead
of O(C L^2) for scoring each candidate in its own sequence; the scores are the same (same
positions, biases, masks and the same per-row normaliser n = visible keys).

Training uses the same split (``list_states``): a batch of histories is encoded once, then
every row's candidates attend to its own history K/V, with gradients. With K candidates per
row that costs O(L^2 + K L) instead of the one-pass ``score_items``' O((L + K)^2), which is
what makes hundreds of negatives per example affordable on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.nets.features import history_mask
from models.nets.hstu_layer import causal_mask, hstu_layers, run_layers
from models.nets.item_scorer import ItemScorer


@dataclass
class HSTURankerConfig:
    n_items: int
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 2
    qk_dim: int = 32
    v_dim: int = 32
    max_history: int = 200
    n_exact_positions: int = 16
    n_pos_buckets: int = 32
    n_time_buckets: int = 32  # log2 buckets of seconds: 2^31 s ~ 68 years
    causal_history: bool = True  # False: every history token sees the whole valid history
    head_hidden: int = 64
    aux_head: bool = False  # a second logit on the same state, for an auxiliary label
    dropout: float = 0.1


def _head(dim: int, hidden: int) -> nn.Sequential:
    """MLP over [h_c, e_c, h_c * e_c] (3 * dim) -> 1 logit."""
    return nn.Sequential(nn.Linear(3 * dim, hidden), nn.SiLU(), nn.Linear(hidden, 1))


class HSTURanker(ItemScorer):
    def __init__(self, cfg: HSTURankerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_items = cfg.n_items
        self.item_emb = nn.Embedding(cfg.n_items + 1, cfg.dim, padding_idx=cfg.n_items)
        nn.init.normal_(self.item_emb.weight, std=0.1)
        with torch.no_grad():
            self.item_emb.weight[cfg.n_items].zero_()
        # Added to candidate tokens: tells "item to score" apart from "item consumed".
        self.cand_type = nn.Parameter(torch.zeros(cfg.dim))
        self.layers = hstu_layers(cfg.n_layers, cfg.dim, cfg.n_heads, cfg.qk_dim, cfg.v_dim,
                                  cfg.n_exact_positions, cfg.n_pos_buckets, cfg.max_history,
                                  cfg.n_time_buckets, cfg.dropout)
        self.out_norm = nn.LayerNorm(cfg.dim)
        self.head = _head(cfg.dim, cfg.head_hidden)
        self.aux_head = _head(cfg.dim, cfg.head_hidden) if cfg.aux_head else None

    def history_attention_mask(self, valid: torch.Tensor) -> torch.Tensor:
        """valid (B, L) bool -> (B, L, L) bool: causal (or full) over valid history keys."""
        if self.cfg.causal_history:
            return causal_mask(valid)
        return valid[:, None, :].expand(-1, valid.shape[1], -1)

    def sequence_mask(self, valid: torch.Tensor, k: int) -> torch.Tensor:
        """valid (B, L) -> (B, L+K, L+K) bool mask of the sequence ``history + K candidates``."""
        B, L = valid.shape
        hh = self.history_attention_mask(valid)  # (B, L, L)
        hc = valid.new_zeros(B, L, k)  # history never sees candidates
        ch = valid[:, None, :].expand(B, k, L)  # candidates see the valid history...
        cc = torch.eye(k, dtype=torch.bool, device=valid.device).expand(B, k, k)  # ...and self
        return torch.cat([torch.cat([hh, hc], 2), torch.cat([ch, cc], 2)], 1)

    @staticmethod
    def query_times(timestamps: torch.Tensor | None,
                    query_time: torch.Tensor | None) -> torch.Tensor | None:
        """Candidate timestamps (B,): query_time, else the most recent history timestamp."""
        if timestamps is None:
            return None
        return timestamps[:, -1] if query_time is None else query_time

    def head_logits(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """state (B, K, d) final candidate states, items (B, K) -> logits (B, K)."""
        e = self.item_emb(items)  # (B, K, d)
        return self.head(torch.cat([state, e, state * e], -1)).squeeze(-1)

    def aux_logits(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Auxiliary head (``cfg.aux_head``): state (B, K, d), items (B, K) -> logits (B, K)."""
        if self.aux_head is None:
            raise ValueError("this HSTURanker was built without aux_head")
        e = self.item_emb(items)  # (B, K, d)
        return self.aux_head(torch.cat([state, e, state * e], -1)).squeeze(-1)

    def score_items(self, user_codes: torch.Tensor, history: torch.Tensor, items: torch.Tensor,
                    timestamps: torch.Tensor | None = None,
                    query_time: torch.Tensor | None = None) -> torch.Tensor:
        """user_codes (B, F) (ignored), history (B, L), items (B, K), timestamps (B, L) seconds
        or None, query_time (B,) or None -> logits (B, K). One pass over history + K candidates.
        """
        state = self.candidate_states(history, items, timestamps, query_time)
        return self.head_logits(state, items)

    def score_items_with_aux(self, user_codes: torch.Tensor, history: torch.Tensor,
                             items: torch.Tensor, timestamps: torch.Tensor | None = None,
                             query_time: torch.Tensor | None = None,
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``score_items`` -> (main logits (B, K), auxiliary logits (B, K))."""
        state = self.candidate_states(history, items, timestamps, query_time)
        return self.head_logits(state, items), self.aux_logits(state, items)

    def candidate_states(self, history: torch.Tensor, items: torch.Tensor,
                         timestamps: torch.Tensor | None = None,
                         query_time: torch.Tensor | None = None) -> torch.Tensor:
        """history (B, L), items (B, K) [, timestamps (B, L), query_time (B,)] -> final,
        normalised candidate states (B, K, d)."""
        B, L = history.shape
        K = items.shape[1]
        valid = history_mask(history, self.n_items)  # (B, L)
        x = torch.cat([self.item_emb(history), self.item_emb(items) + self.cand_type], 1)
        mask = self.sequence_mask(valid, K)  # (B, L+K, L+K)
        pos = torch.cat([torch.arange(L, device=history.device),
                         torch.full((K,), L, device=history.device)])[None]  # (1, L+K)
        t = None
        if timestamps is not None:
            tq = self.query_times(timestamps, query_time)  # (B,)
            t = torch.cat([timestamps, tq[:, None].expand(B, K)], 1)  # (B, L+K)
        x = run_layers(self.layers, x, mask, pos, t)  # (B, L+K, d)
        return self.out_norm(x[:, L:])

    def list_states(self, history: torch.Tensor, items: torch.Tensor,
                    timestamps: torch.Tensor | None = None) -> torch.Tensor:
        """M-FALCON with gradients, for training: history (B, L), items (B, K) [, timestamps
        (B, L)] -> final candidate states (B, K, d), equal to ``candidate_states`` (candidates
        take the last history time): each row's history is encoded once, its candidates
        attend to it."""
        layers, _, valid = encode_history(self, history, timestamps, None)
        m = valid.to(self.item_emb.weight.dtype)[:, None, None, :]  # (B, 1, 1, L)
        n_keys = m.sum(-1, keepdim=True) + 1.0  # (B, 1, 1, 1): valid history + itself
        x = self.item_emb(items) + self.cand_type  # (B, K, d)
        for layer, lc in zip(self.layers, layers, strict=True):
            x = attend_candidates(layer, lc, x, m, n_keys)
        return self.out_norm(x)

    def score_lists(self, history: torch.Tensor, items: torch.Tensor,
                    timestamps: torch.Tensor | None = None, with_aux: bool = False,
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``list_states`` -> (main logits (B, K), auxiliary logits (B, K) or None)."""
        state = self.list_states(history, items, timestamps)
        aux = self.aux_logits(state, items) if with_aux else None
        return self.head_logits(state, items), aux

    def history_cache(self, history: torch.Tensor, timestamps: torch.Tensor | None = None,
                      query_time: torch.Tensor | None = None) -> HSTUCache:
        """One user's history (L,) [+ timestamps (L,), query_time ()] -> per-layer K/V cache
        (M-FALCON). Candidate time = query_time, else the last history timestamp."""
        return build_history_cache(self, history, timestamps, query_time)

    @torch.no_grad()
    def score_with_cache(self, cache: HSTUCache, items: torch.Tensor,
                         microbatch: int = 64) -> torch.Tensor:
        """cache from ``history_cache``, items (C,) -> logits (C,), ``microbatch`` at a time."""
        states = candidate_states_with_cache(self, cache, items, microbatch)  # (C, d)
        return self.head_logits(states[None], items[None])[0]

    def candidate_states_with_cache(self, cache: HSTUCache, items: torch.Tensor,
                                    microbatch: int = 64) -> torch.Tensor:
        """M-FALCON candidate states (C, d), e.g. for ``aux_logits(states[None], items[None])``."""
        return candidate_states_with_cache(self, cache, items, microbatch)


@dataclass
class LayerCache:
    k: torch.Tensor  # (B, L, h, dqk) history keys (B = 1 when serving)
    v: torch.Tensor  # (B, L, h, dv) history values
    bias_hist: torch.Tensor  # (B|1, h, 1, L) rab of a candidate (position L) vs history keys
    bias_self: torch.Tensor  # (B|1, 1, h) rab of a candidate vs itself


@dataclass
class HSTUCache:
    layers: list[LayerCache]
    valid: torch.Tensor  # (L,) bool, real history items
    n_keys: int  # keys a candidate sees: valid history + itself (the normaliser n)
    history_states: list[torch.Tensor]  # per layer output over the history, each (1, L, d)


def encode_history(model: HSTURanker, hist: torch.Tensor, t_h: torch.Tensor | None,
                   query_time: torch.Tensor | None,
                   ) -> tuple[list[LayerCache], list[torch.Tensor], torch.Tensor]:
    """hist (B, L), t_h (B, L) seconds or None, query_time (B,) or None -> (per-layer K/V
    and candidate biases, per-layer history outputs (B, L, d), valid (B, L)). Differentiable:
    serving wraps it in no_grad (``build_history_cache``), training back-propagates."""
    L = hist.shape[1]
    pos = torch.arange(L + 1, device=hist.device)[None]  # (1, L+1); candidates sit at L
    valid = history_mask(hist, model.n_items)  # (B, L)
    mask = model.history_attention_mask(valid)  # (B, L, L)
    t_all = t_q = None
    if t_h is not None:
        t_q = model.query_times(t_h, query_time)[:, None]  # (B, 1)
        t_all = torch.cat([t_h, t_q], 1)  # (B, L+1)
    x = model.item_emb(hist)  # (B, L, d)
    layers, states = [], []
    if model.layers:  # bucket indices are shared by the layers: computed once
        hist_b = model.layers[0].buckets(pos[:, :L], pos[:, :L], t_h, t_h)  # (B|1, L, L)
        cand_b = model.layers[0].buckets(pos[:, L:], pos, t_q, t_all)  # (B|1, 1, L+1)
    for layer in model.layers:
        u, q, k, v = layer.project(x)
        x = layer.finish(layer.attend(q, k, v, layer.bias(*hist_b), mask), u, x)
        cand = layer.bias(*cand_b)  # (B|1, h, 1, L+1) a candidate (position L) vs history+self
        layers.append(LayerCache(k=k, v=v, bias_hist=cand[..., :L],
                                 bias_self=cand[..., L].transpose(1, 2)))
        states.append(x)
    return layers, states, valid


def attend_candidates(layer: nn.Module, lc: LayerCache, x: torch.Tensor, m: torch.Tensor,
                      n_keys: torch.Tensor | int) -> torch.Tensor:
    """One layer for candidate tokens x (B, b, d) that see their row's cached history (``lc``;
    m (B, 1, 1, L) its valid keys) and themselves, never each other; n_keys: visible keys
    per row, int or (B, 1, 1, 1) -> (B, b, d)."""
    u, q, k, v = layer.project(x)  # (B, b, h, *)
    s_h = torch.einsum("bihd,bjhd->bhij", q, lc.k) + lc.bias_hist  # (B, h, b, L)
    s_s = (q * k).sum(-1) + lc.bias_self  # (B, b, h) each candidate vs itself
    a = torch.einsum("bhij,bjhd->bihd", F.silu(s_h) * m, lc.v)  # (B, b, h, dv)
    a = (a + F.silu(s_s)[..., None] * v) / n_keys
    return layer.finish(a, u, x)  # (B, b, d)


@torch.no_grad()
def build_history_cache(model: HSTURanker, history: torch.Tensor,
                        timestamps: torch.Tensor | None = None,
                        query_time: torch.Tensor | None = None) -> HSTUCache:
    """history (L,), timestamps (L,) seconds or None, query_time () or None -> HSTUCache."""
    t_h = None if timestamps is None else timestamps[None]  # (1, L)
    qt = None if query_time is None else query_time.reshape(1)
    layers, states, valid = encode_history(model, history[None], t_h, qt)
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
            x = attend_candidates(layer, lc, x, m, cache.n_keys)  # (1, b, d)
        out.append(model.out_norm(x)[0])  # (b, d)
    if not out:
        return model.item_emb.weight.new_zeros(0, model.cfg.dim)
    return torch.cat(out)
