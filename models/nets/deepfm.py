"""DeepFM ranker (Guo et al., 2017): FM first + second order terms and a deep MLP sharing the
same field embeddings.

Fields (m = F + 4, each a k-dim vector): every user feature, the target item id, the target's
year bucket, its genres (mean of genre embeddings), and the mean-pooled history item id
embeddings (the history shares the item id table, so the FM's <history, item> interaction is
an item-item similarity).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from models.nets.features import ItemSideEmbedding, history_mask
from models.nets.item_scorer import ItemScorer


@dataclass
class DeepFMConfig:
    n_items: int
    user_cardinalities: list[int] = field(default_factory=list)
    n_genres: int = 0
    n_year_buckets: int = 1
    max_history: int = 30  # same default as the other models
    embed_dim: int = 16  # k, shared by all fields
    hidden_dims: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.1


class DeepFM(ItemScorer):
    def __init__(self, cfg: DeepFMConfig, item_genres: torch.Tensor | None = None,
                 item_year_bucket: torch.Tensor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_items = cfg.n_items
        k = cfg.embed_dim
        # Second-order / deep embeddings of the item fields [id, genres, year].
        self.items = ItemSideEmbedding(cfg.n_items, cfg.n_genres, cfg.n_year_buckets, k,
                                       item_genres, item_year_bucket)
        self.user_emb = nn.ModuleList(nn.Embedding(c, k) for c in cfg.user_cardinalities)
        # First-order weights. The item side reuses the buffers inside ``self.items``.
        self.user_w = nn.ModuleList(nn.Embedding(c, 1) for c in cfg.user_cardinalities)
        self.item_w = nn.Embedding(cfg.n_items + 1, 1, padding_idx=cfg.n_items)
        self.genre_w = nn.Parameter(torch.zeros(cfg.n_genres))
        self.year_w = nn.Embedding(max(cfg.n_year_buckets, 1), 1, padding_idx=0)
        self.hist_w = nn.Linear(k, 1, bias=False)  # first order of the (dense) history field
        self.bias = nn.Parameter(torch.zeros(1))
        for emb in self.user_emb:
            nn.init.normal_(emb.weight, std=0.05)
        for emb in [*self.user_w, self.item_w, self.year_w]:
            nn.init.zeros_(emb.weight)

        n_fields = len(cfg.user_cardinalities) + 4
        layers: list[nn.Module] = []
        d = n_fields * k
        for h in cfg.hidden_dims:
            layers += [nn.Linear(d, h), nn.ReLU(), nn.Dropout(cfg.dropout)]
            d = h
        layers.append(nn.Linear(d, 1))
        self.deep = nn.Sequential(*layers)

    # ---- the two sides ----------------------------------------------------------------------

    def _user_side(self, user_codes: torch.Tensor,
                   history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> user field embeddings (B, F+1, k) and first-order term (B,)."""
        mask = history_mask(history, self.n_items).unsqueeze(-1).float()  # (B, L, 1)
        # Padding rows of the id table are zero; divide by the real count for a masked mean.
        hist = (self.items.id_emb(history) * mask).sum(1) / mask.sum(1).clamp_min(1.0)  # (B, k)
        fields = [emb(user_codes[:, f]) for f, emb in enumerate(self.user_emb)] + [hist]
        first = self.hist_w(hist).squeeze(-1)  # (B,)
        for f, w in enumerate(self.user_w):
            first = first + w(user_codes[:, f]).squeeze(-1)
        return torch.stack(fields, dim=1), first

    def _item_side(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """items (...) -> item field embeddings (..., 3, k) and first-order term (...)."""
        first = (self.item_w(items).squeeze(-1)
                 + self.items.genres[items] @ self.genre_w
                 + self.year_w(self.items.year_bucket[items]).squeeze(-1))
        return self.items(items), first

    # ---- scoring ----------------------------------------------------------------------------

    def score_items(self, user_codes: torch.Tensor, history: torch.Tensor,
                    items: torch.Tensor) -> torch.Tensor:
        """user_codes (B, F), history (B, L), items (B, K) -> logits (B, K).

        The user side is computed once per row and broadcast over its K items.
        """
        u_fields, u_first = self._user_side(user_codes, history)  # (B, F+1, k), (B,)
        i_fields, i_first = self._item_side(items)  # (B, K, 3, k), (B, K)
        B, K = items.shape
        fields = torch.cat([u_fields.unsqueeze(1).expand(B, K, -1, -1), i_fields], dim=2)
        # FM pairwise term: 0.5 * ((sum_f v_f)^2 - sum_f v_f^2), summed over k.  (B, K)
        s = fields.sum(2)
        second = 0.5 * (s * s - (fields * fields).sum(2)).sum(-1)
        deep = self.deep(fields.flatten(2)).squeeze(-1)  # (B, K, m*k) -> (B, K)
        return self.bias + u_first.unsqueeze(1) + i_first + second + deep
