"""HSTU as a retrieval model (Zhai et al., ICML 2024; the generative-recommenders public
retrieval configs, e.g. ML-1M: dim 50, 2 layers, 1 head, d_qk = d_v = 25, 200 items, dropout
0.2, sampled softmax with 128 negatives at temperature 0.05 — see
``models/train/hstu_retrieval.py``).

Input = item embedding * sqrt(dim) + an optional learned absolute position embedding (counted
from the right, 0 = the most recent slot, as SASRec: extra left padding moves no real item),
dropout, then a stack of ``HSTULayer`` (``hstu_layer.py``, shared with the ranker: pointwise
SiLU attention, relative position buckets, log2 time buckets of |dt| seconds when timestamps
are given) under a causal mask over the valid tokens, and a final LayerNorm. The state at
position t summarises seqs[:, :t+1] and predicts item t+1. States and item embeddings are
L2-normalised, as in the public HSTU retrieval code, so scores are cosine similarities and
retrieval is MIPS of
``user_vector(history)`` against ``item_vectors()``.

Conventions (models/features.py): histories are right-aligned and left-padded with index
``n_items`` (the padding row of the item table). Padding keys are masked out and padding
queries see nothing (an all-zero attention row, no NaN); their output states are zeroed.

Time: the time bias of query i against key j buckets t_i - t_j, the query's OWN timestamp
(its item's). The public code instead gives query i the NEXT event's time t_{i+1}; that makes
a state depend on a later event's timestamp and, like the ranker (models/train/hstu.py), we do
not train on a "now" that serving cannot supply for a replayed dataset. Hence ``user_vector``'s
``query_time`` is accepted for API parity with the ranker but cannot change the last position's
state: its biases only compare the last item's timestamp with the earlier ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.nets.features import history_mask, recency_positions
from models.nets.hstu_layer import causal_mask, hstu_layers, run_layers


@dataclass
class HSTURetrievalConfig:
    n_items: int
    dim: int = 50
    n_layers: int = 2
    n_heads: int = 1
    qk_dim: int = 25
    v_dim: int = 25
    max_len: int = 200  # absolute position table size; longer inputs share the oldest slot
    n_exact_positions: int = 16
    n_pos_buckets: int = 32
    n_time_buckets: int = 32  # log2 buckets of seconds: 2^31 s ~ 68 years
    pos_emb: bool = True  # learned absolute (recency) position embedding on the input
    dropout: float = 0.2


class HSTURetrieval(nn.Module):
    def __init__(self, cfg: HSTURetrievalConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_items = cfg.n_items
        self.item_emb = nn.Embedding(cfg.n_items + 1, cfg.dim, padding_idx=cfg.n_items)
        nn.init.trunc_normal_(self.item_emb.weight, std=0.02)  # public code's init
        with torch.no_grad():
            self.item_emb.weight[cfg.n_items].zero_()
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.dim) if cfg.pos_emb else None
        if self.pos_emb is not None:
            nn.init.trunc_normal_(self.pos_emb.weight, std=cfg.dim ** -0.5)
        self.emb_dropout = nn.Dropout(cfg.dropout)
        self.layers = hstu_layers(cfg.n_layers, cfg.dim, cfg.n_heads, cfg.qk_dim, cfg.v_dim,
                                  cfg.n_exact_positions, cfg.n_pos_buckets, cfg.max_len,
                                  cfg.n_time_buckets, cfg.dropout)
        self.out_norm = nn.LayerNorm(cfg.dim)

    def forward(self, seqs: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        """seqs (B, L) int64 right-aligned item ids, timestamps (B, L) seconds or None ->
        (B, L, dim) unit-norm states; the state at position t summarises seqs[:, :t+1].
        Padding positions give zero vectors."""
        B, L = seqs.shape
        valid = history_mask(seqs, self.n_items)  # (B, L)
        vmask = valid.unsqueeze(-1)  # (B, L, 1)
        x = self.item_emb(seqs) * math.sqrt(self.cfg.dim)  # (B, L, d)
        if self.pos_emb is not None:
            x = x + self.pos_emb(recency_positions(L, self.cfg.max_len, seqs.device))
        x = self.emb_dropout(x) * vmask.to(x.dtype)  # (B, L, d)
        pos = torch.arange(L, device=seqs.device)[None]  # (1, L): only differences are used
        x = run_layers(self.layers, x, causal_mask(valid), pos, timestamps)  # (B, L, d)
        return F.normalize(self.out_norm(x), dim=-1) * vmask.to(x.dtype)  # (B, L, d)

    def user_vector(self, history: torch.Tensor, timestamps: torch.Tensor | None = None,
                    query_time: torch.Tensor | None = None) -> torch.Tensor:
        """history (B, L) right-aligned [, timestamps (B, L) seconds] -> (B, dim) unit-norm
        state at the last (most recent) position; zeros for an all-padding history.

        ``query_time`` (B,) is accepted for parity with ``HSTURanker`` and does not change the
        result: the last state's time biases compare the last item's own timestamp with the
        earlier ones, exactly as every position was trained (module docstring)."""
        del query_time
        return self.forward(history, timestamps)[:, -1]  # (B, d)

    def item_vectors(self) -> torch.Tensor:
        """(n_items, dim): the L2-normalised item table without the padding row."""
        return F.normalize(self.item_emb.weight[: self.n_items], dim=-1)

    def item_vectors_of(self, items: torch.Tensor) -> torch.Tensor:
        """items (...) int64 -> (..., dim) L2-normalised item vectors (padding -> zeros)."""
        return F.normalize(self.item_emb(items), dim=-1)

    def logits(self, states: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """states (..., dim) from ``forward``/``user_vector``, items (...) int64 -> (...)
        cosine similarities (training divides them by its temperature)."""
        return (states * self.item_vectors_of(items)).sum(-1)
