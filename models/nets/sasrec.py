"""SASRec next-item model (Kang & McAuley 2018): causal self-attention over the item history.

Input = item embedding * sqrt(dim) + learned positional embedding, then ``n_layers``
pre-norm Transformer blocks (causal) and a final LayerNorm. The hidden state at position t
predicts item t+1 by dot product with the (shared) item embedding table, so retrieval is MIPS
of ``user_vector(history)`` against ``item_vectors()``.

Conventions (models/features.py): histories are right-aligned and left-padded with index
``n_items`` (the padding row of the item table). Positions are counted from the right (0 = the
most recent slot, capped at ``max_len - 1``) and padding keys are masked out, so extra left
padding changes no real position's state. A padding query attends only to itself (never an
empty row, so no NaN) and its output state is zeroed; real queries never see padding keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from models.nets.features import history_mask, recency_positions


@dataclass
class SASRecConfig:
    n_items: int
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 1
    max_len: int = 200  # positional table size; longer inputs share the oldest position
    dropout: float = 0.2
    ff_dim: int | None = None  # feed-forward width; None = dim, as in the paper


class SASRec(nn.Module):
    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        if cfg.dim % cfg.n_heads:
            raise ValueError(f"dim {cfg.dim} is not divisible by n_heads {cfg.n_heads}")
        self.cfg = cfg
        self.n_items = cfg.n_items
        self.item_emb = nn.Embedding(cfg.n_items + 1, cfg.dim, padding_idx=cfg.n_items)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.dim)
        # std dim^-1/2: the scaled input (x sqrt(dim)) has unit-size entries and the output
        # logits (LayerNorm'd state . raw item row) start O(1).
        nn.init.normal_(self.item_emb.weight, std=cfg.dim ** -0.5)
        nn.init.normal_(self.pos_emb.weight, std=0.05)
        with torch.no_grad():
            self.item_emb.weight[cfg.n_items].zero_()
        self.emb_dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(cfg.dim, cfg.n_heads,
                                       dim_feedforward=cfg.ff_dim or cfg.dim,
                                       dropout=cfg.dropout, activation="relu",
                                       batch_first=True, norm_first=True)
            for _ in range(cfg.n_layers))
        self.final_norm = nn.LayerNorm(cfg.dim)

    def attention_mask(self, valid: torch.Tensor) -> torch.Tensor:
        """valid (B, L) bool -> (B * n_heads, L, L) bool, True = may NOT attend.

        Query i sees keys j <= i that hold a real item; every query also sees itself, so a
        padding query's row is never empty (its output is discarded)."""
        L = valid.shape[1]
        idx = torch.arange(L, device=valid.device)
        future = idx[None, :] > idx[:, None]  # (L, L) key after query
        self_key = idx[None, :] == idx[:, None]  # (L, L)
        blocked = future[None] | (~valid[:, None, :] & ~self_key[None])  # (B, L, L)
        return blocked.repeat_interleave(self.cfg.n_heads, dim=0)  # (B*H, L, L), batch-major

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """seqs (B, L) int64 right-aligned item ids -> (B, L, dim) hidden states; the state at
        position t summarises seqs[:, :t+1]. Padding positions give zero vectors."""
        valid = history_mask(seqs, self.n_items)  # (B, L)
        pos = recency_positions(seqs.shape[1], self.cfg.max_len, seqs.device)  # (L,)
        x = self.item_emb(seqs) * math.sqrt(self.cfg.dim) + self.pos_emb(pos)  # (B, L, d)
        x = self.emb_dropout(x) * valid.unsqueeze(-1).to(x.dtype)  # (B, L, d)
        mask = self.attention_mask(valid)  # (B*H, L, L)
        for block in self.blocks:
            x = block(x, src_mask=mask)  # (B, L, d)
        return self.final_norm(x) * valid.unsqueeze(-1).to(x.dtype)  # (B, L, d)

    def user_vector(self, history: torch.Tensor) -> torch.Tensor:
        """history (B, L) right-aligned -> (B, dim): the state at the last (most recent)
        position; zeros for an all-padding history."""
        return self.forward(history)[:, -1]  # (B, d)

    def item_vectors(self) -> torch.Tensor:
        """(n_items, dim): the shared item embedding table without the padding row."""
        return self.item_emb.weight[: self.n_items]

    def logits(self, states: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """states (..., dim), items (...) int64 -> (...) dot-product logits."""
        return (states * self.item_emb(items)).sum(-1)
