"""HSTU ranker (Zhai et al., "Actions Speak Louder than Words", ICML 2024).

``HSTULayer`` is one Hierarchical Sequential Transduction Unit:
    U, V, Q, K = split(SiLU(W x))                      each (B, N, h, d_v or d_qk)
    A          = SiLU(Q K^T + rab) * mask / n           (B, h, N, N), pointwise, NO softmax
    out        = W_o(LayerNorm(A V) * U) + x            residual
rab is a learned relative-position bias (per signed, log-bucketed distance) plus a learned time
bias (per log2-bucket of |t_i - t_j| in seconds; absent when no timestamps are given), one value
per head. ``n`` is the number of keys the query row may see (the row's mask count, >= 1): it
depends neither on padding nor on how many other candidates share the sequence, which is what
makes M-FALCON's microbatched scores equal the one-candidate-at-a-time scores.

``HSTURanker`` scores a sequence ``history + candidates``: history tokens attend causally among
themselves (``causal_history=False``: to every valid history token), never to candidates; each
candidate sees the valid history and itself, no other candidate. All candidates sit at position
L (just after the most recent history item), so a candidate's state is the same whether it is
scored alone or with others. Score = MLP([h_c, e_c, h_c * e_c]) of the candidate's final state
h_c and its item embedding e_c. History states never depend on candidates (with either history
mask), so M-FALCON (``history_cache`` + ``score_with_cache``, in ``models/hstu_falcon.py``)
computes the history's per-layer K/V once and scores candidates in microbatches exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.features import history_mask
from models.hstu_falcon import HSTUCache, build_history_cache, candidate_states_with_cache
from models.ranker_base import ItemScorer


def position_buckets(dist: torch.Tensor, n_exact: int, n_buckets: int,
                     max_distance: int) -> torch.Tensor:
    """Signed integer distances -> buckets in [0, 2 * n_buckets).

    |d| < n_exact keeps its own bucket; larger |d| are log-spaced up to max_distance (beyond:
    the last bucket). Negative distances (key after query) use the upper half.
    """
    a = dist.abs()
    scaled = torch.log(a.clamp_min(1).double() / n_exact) / math.log(max_distance / n_exact)
    log_b = (n_exact + (scaled * (n_buckets - n_exact)).long()).clamp_max(n_buckets - 1)
    b = torch.where(a < n_exact, a, log_b)
    return b + n_buckets * (dist < 0).long()


def time_buckets(dt: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """Time gaps in seconds (any sign) -> floor(log2(1 + |dt|)) capped at n_buckets - 1."""
    return torch.floor(torch.log2(1.0 + dt.double().abs())).long().clamp(0, n_buckets - 1)


def _lookup(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """table (V, h), idx (...) -> (..., h); same values as nn.Embedding. index_select's
    backward (index_add) is ~5x faster on CPU than embedding's for millions of indices into a
    few dozen rows (the (B, N, N) bias buckets); embedding's took half of a training step."""
    return table.index_select(0, idx.reshape(-1)).view(*idx.shape, table.shape[1])


class HSTULayer(nn.Module):
    def __init__(self, dim: int, n_heads: int = 2, qk_dim: int = 32, v_dim: int = 32,
                 n_exact: int = 16, n_pos_buckets: int = 32, max_distance: int = 512,
                 n_time_buckets: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        self.h, self.dqk, self.dv = n_heads, qk_dim, v_dim
        self.n_exact, self.n_pos_buckets, self.max_distance = n_exact, n_pos_buckets, max_distance
        self.n_time_buckets = n_time_buckets
        self.proj = nn.Linear(dim, n_heads * (2 * v_dim + 2 * qk_dim))
        self.norm = nn.LayerNorm(n_heads * v_dim)
        self.out = nn.Linear(n_heads * v_dim, dim)
        self.pos_bias = nn.Embedding(2 * n_pos_buckets, n_heads)
        self.time_bias = nn.Embedding(n_time_buckets, n_heads)
        nn.init.zeros_(self.pos_bias.weight)
        nn.init.zeros_(self.time_bias.weight)
        self.dropout = nn.Dropout(dropout)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x (B, N, d) -> U (B,N,h,dv), Q (B,N,h,dqk), K (B,N,h,dqk), V (B,N,h,dv)."""
        B, N, _ = x.shape
        hv, hq = self.h * self.dv, self.h * self.dqk
        u, v, q, k = F.silu(self.proj(x)).split([hv, hv, hq, hq], dim=-1)
        return (u.view(B, N, self.h, self.dv), q.view(B, N, self.h, self.dqk),
                k.view(B, N, self.h, self.dqk), v.view(B, N, self.h, self.dv))

    def buckets(self, pos_q: torch.Tensor, pos_k: torch.Tensor, t_q: torch.Tensor | None = None,
                t_k: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """pos_q (B|1, Nq), pos_k (B|1, Nk) int positions, t_q (B, Nq) / t_k (B, Nk) seconds or
        None -> position buckets (B|1, Nq, Nk), time buckets (B, Nq, Nk) or None. Depends only on
        the bucketing settings, so a stack of identical layers computes it once."""
        dist = pos_q[:, :, None] - pos_k[:, None, :]  # (B|1, Nq, Nk)
        pos_idx = position_buckets(dist, self.n_exact, self.n_pos_buckets, self.max_distance)
        if t_q is None or t_k is None:
            return pos_idx, None
        dt = t_q[:, :, None] - t_k[:, None, :]  # (B, Nq, Nk)
        return pos_idx, time_buckets(dt, self.n_time_buckets)

    def bias(self, pos_idx: torch.Tensor, time_idx: torch.Tensor | None) -> torch.Tensor:
        """Bucket indices from ``buckets`` -> rab (B|1, h, Nq, Nk)."""
        b = _lookup(self.pos_bias.weight, pos_idx)  # (B|1, Nq, Nk, h)
        if time_idx is not None:
            b = b + _lookup(self.time_bias.weight, time_idx)  # (B, Nq, Nk, h)
        return b.permute(0, 3, 1, 2)

    def relative_bias(self, pos_q: torch.Tensor, pos_k: torch.Tensor,
                      t_q: torch.Tensor | None = None,
                      t_k: torch.Tensor | None = None) -> torch.Tensor:
        """Same arguments as ``buckets`` -> rab (B|1, h, Nq, Nk)."""
        return self.bias(*self.buckets(pos_q, pos_k, t_q, t_k))

    @staticmethod
    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
               mask: torch.Tensor) -> torch.Tensor:
        """q (B,Nq,h,dqk), k (B,Nk,h,dqk), v (B,Nk,h,dv), bias (B|1,h,Nq,Nk), mask (B,Nq,Nk)
        -> (B, Nq, h, dv) = sum_j SiLU(q.k_j + b_j) m_j v_j / sum_j m_j (pointwise, no softmax)."""
        s = torch.einsum("bihd,bjhd->bhij", q, k) + bias  # (B, h, Nq, Nk)
        m = mask[:, None].to(s.dtype)  # (B, 1, Nq, Nk)
        n = m.sum(-1, keepdim=True).clamp_min(1.0)  # (B, 1, Nq, 1) visible keys per query
        a = F.silu(s) * (m / n)  # (B, h, Nq, Nk)
        return torch.einsum("bhij,bjhd->bihd", a, v)

    def finish(self, attn: torch.Tensor, u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """attn (B,N,h,dv), u (B,N,h,dv), x (B,N,d) -> W_o(LayerNorm(AV) * U) + x (B,N,d)."""
        y = self.norm(attn.flatten(-2)) * u.flatten(-2)  # (B, N, h*dv)
        return x + self.out(self.dropout(y))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                timestamps: torch.Tensor | None = None,
                buckets: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> torch.Tensor:
        """x (B,N,d), mask (B,N,N) bool (True = query i may see key j), positions (B|1, N)
        int, timestamps (B, N) seconds or None, optionally their precomputed ``buckets``
        -> (B, N, d)."""
        u, q, k, v = self.project(x)
        if buckets is None:
            buckets = self.buckets(positions, positions, timestamps, timestamps)
        bias = self.bias(*buckets)  # (B|1, h, N, N)
        return self.finish(self.attend(q, k, v, bias, mask), u, x)


def hstu_layers(n_layers: int, dim: int, n_heads: int, qk_dim: int, v_dim: int, n_exact: int,
                n_pos_buckets: int, max_len: int, n_time_buckets: int,
                dropout: float) -> nn.ModuleList:
    """The stack of ``n_layers`` identical ``HSTULayer``s both HSTU models use; relative
    distances are log-bucketed up to max(max_len, 2 * n_exact)."""
    return nn.ModuleList(
        HSTULayer(dim, n_heads, qk_dim, v_dim, n_exact, n_pos_buckets,
                  max(max_len, 2 * n_exact), n_time_buckets, dropout)
        for _ in range(n_layers))


def causal_mask(valid: torch.Tensor) -> torch.Tensor:
    """valid (B, L) bool -> (B, L, L) bool: query i sees the valid keys j <= i."""
    L = valid.shape[1]
    return valid[:, None, :] & torch.ones(L, L, dtype=torch.bool, device=valid.device).tril()


def run_layers(layers: nn.ModuleList, x: torch.Tensor, mask: torch.Tensor,
               positions: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
    """x (B, N, d) through every layer with one mask (B, N, N), positions (B|1, N) and
    timestamps (B, N) seconds or None; the bucket indices are computed once for the stack."""
    buckets = layers[0].buckets(positions, positions, timestamps, timestamps) if layers else None
    for layer in layers:
        x = layer(x, mask, positions, timestamps, buckets)  # (B, N, d)
    return x


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
