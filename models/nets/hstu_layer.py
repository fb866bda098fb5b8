"""The HSTU layer (Zhai et al., "Actions Speak Louder than Words", ICML 2024), shared by the
HSTU ranker (``hstu_ranker.py``) and HSTU retrieval (``hstu_retrieval.py``).

``HSTULayer`` is one Hierarchical Sequential Transduction Unit:
    U, V, Q, K = split(SiLU(W x))                      each (B, N, h, d_v or d_qk)
    A          = SiLU(Q K^T + rab) * mask / n           (B, h, N, N), pointwise, NO softmax
    out        = W_o(LayerNorm(A V) * U) + x            residual
rab is a learned relative-position bias (per signed, log-bucketed distance) plus a learned time
bias (per log2-bucket of |t_i - t_j| in seconds; absent when no timestamps are given), one value
per head. ``n`` is the number of keys the query row may see (the row's mask count, >= 1): it
depends neither on padding nor on how many other candidates share the sequence, which is what
makes M-FALCON's microbatched scores equal the one-candidate-at-a-time scores.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


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
