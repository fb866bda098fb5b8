"""Two-tower retrieval model (YouTube-DNN style user tower, content-aware item tower).

User tower: user categorical features + pooled recent history -> MLP -> L2-normalised vector.
Item tower: [id, genre-mean, year] field embeddings -> MLP -> L2-normalised vector.
Score = dot / temperature, so an ANN index over ``all_item_embeddings()`` serves retrieval.

The history is encoded with the item tower's field embeddings (before its MLP): sharing them
lets rarely-seen items that appear in histories still learn from the retrieval loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from models.nets.features import ItemSideEmbedding, history_mask, recency_positions


@dataclass
class TwoTowerConfig:
    n_items: int
    user_cardinalities: list[int] = field(default_factory=list)
    n_genres: int = 0
    n_year_buckets: int = 1
    max_history: int = 30  # 50 ranked the same on ML-100K and costs ~40% more time
    item_dim: int = 32  # per item field; an item's content vector is 3 * item_dim
    user_feature_dim: int = 8  # per user feature
    hidden_dim: int = 256
    out_dim: int = 64
    pooling: str = "attention"  # "attention" (recency-aware additive attention) or "mean"
    attention_dim: int = 32  # hidden size of the attention scorer (the tanh is the hot spot)
    temperature: float = 0.05
    dropout: float = 0.1


def _mlp(d_in: int, hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, d_out))


class TwoTower(nn.Module):
    def __init__(self, cfg: TwoTowerConfig, item_genres: torch.Tensor | None = None,
                 item_year_bucket: torch.Tensor | None = None) -> None:
        super().__init__()
        if cfg.pooling not in ("attention", "mean"):
            raise ValueError(f"pooling must be 'attention' or 'mean', not {cfg.pooling!r}")
        self.cfg = cfg
        self.n_items = cfg.n_items
        self.items = ItemSideEmbedding(cfg.n_items, cfg.n_genres, cfg.n_year_buckets,
                                       cfg.item_dim, item_genres, item_year_bucket)
        d_item = 3 * cfg.item_dim
        self.user_feats = nn.ModuleList(
            nn.Embedding(c, cfg.user_feature_dim) for c in cfg.user_cardinalities)
        if cfg.pooling == "attention":
            # Additive attention: score_j = v . tanh(W (x_j + p_r(j))). The recency embedding
            # only enters the score, so the pooled vector stays in item-content space.
            self.pos_emb = nn.Embedding(cfg.max_history, d_item)
            nn.init.normal_(self.pos_emb.weight, std=0.05)
            self.att_proj = nn.Linear(d_item, cfg.attention_dim)
            self.att_v = nn.Linear(cfg.attention_dim, 1, bias=False)
        d_user = len(cfg.user_cardinalities) * cfg.user_feature_dim + d_item
        self.user_mlp = _mlp(d_user, cfg.hidden_dim, cfg.out_dim, cfg.dropout)
        self.item_mlp = _mlp(d_item, cfg.hidden_dim, cfg.out_dim, cfg.dropout)

    # ---- towers -----------------------------------------------------------------------------

    def pool_history(self, history: torch.Tensor) -> torch.Tensor:
        """history (B, L) -> (B, 3*item_dim); all-padding rows give zeros."""
        mask = history_mask(history, self.n_items)  # (B, L)
        x = self.items(history).flatten(-2)  # (B, L, 3E)
        m = mask.unsqueeze(-1).to(x.dtype)  # (B, L, 1)
        if self.cfg.pooling == "mean":
            return (x * m).sum(1) / m.sum(1).clamp_min(1.0)
        pos = self.pos_emb(recency_positions(history.shape[1], self.cfg.max_history,
                                             history.device))  # (L, 3E)
        scores = self.att_v(torch.tanh(self.att_proj(x + pos))).squeeze(-1)  # (B, L)
        # A finite fill (not -inf) keeps all-padding rows NaN-free, also in backward; the final
        # "* m" then zeroes their (uniform) weights. Elsewhere exp(-1e9) underflows to exactly 0.
        w = torch.softmax(scores.masked_fill(~mask, -1e9), dim=1).unsqueeze(-1) * m  # (B, L, 1)
        return (w * x).sum(1)

    def user_embed(self, user_codes: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """user_codes (B, F) int64, history (B, L) int64 -> (B, out_dim) unit vectors."""
        parts = [emb(user_codes[:, f]) for f, emb in enumerate(self.user_feats)]  # F x (B, Du)
        parts.append(self.pool_history(history))
        return F.normalize(self.user_mlp(torch.cat(parts, dim=-1)), dim=-1)

    def item_embed(self, item_ids: torch.Tensor) -> torch.Tensor:
        """item_ids (N,) int64 -> (N, out_dim) unit vectors."""
        return F.normalize(self.item_mlp(self.items(item_ids).flatten(-2)), dim=-1)

    @torch.no_grad()
    def all_item_embeddings(self, chunk: int = 8192) -> torch.Tensor:
        """(n_items, out_dim) for every real item (no padding row), in id order."""
        ids = torch.arange(self.n_items, device=self.items.year_bucket.device)
        if self.n_items == 0:
            return torch.zeros(0, self.cfg.out_dim)
        return torch.cat([self.item_embed(c) for c in ids.split(chunk)])

    # ---- scoring ----------------------------------------------------------------------------

    def score(self, user_vecs: torch.Tensor, item_vecs: torch.Tensor) -> torch.Tensor:
        """(B, D) x (N, D) -> (B, N) logits = dot / temperature."""
        return user_vecs @ item_vecs.T / self.cfg.temperature

    def forward(self, user_codes: torch.Tensor, history: torch.Tensor,
                items: torch.Tensor) -> torch.Tensor:
        """Pairwise logits: user_codes (B, F), history (B, L), items (B,) -> (B,)."""
        u = self.user_embed(user_codes, history)
        v = self.item_embed(items)
        return (u * v).sum(-1) / self.cfg.temperature
