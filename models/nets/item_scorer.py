"""The ranker calling convention shared by every ranking model.

A ranker implements ``score_items(user_codes (B,F), history (B,L), items (B,K)) -> (B,K)``,
computing the user side once per row; ``forward`` (one item per row, used in training) and
``score_candidates`` (one user, many candidates, used in serving) derive from it.
"""

from __future__ import annotations

import torch
from torch import nn


class ItemScorer(nn.Module):
    def score_items(self, user_codes: torch.Tensor, history: torch.Tensor,
                    items: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, user_codes: torch.Tensor, history: torch.Tensor,
                items: torch.Tensor) -> torch.Tensor:
        """user_codes (B, F), history (B, L), items (B,) -> logits (B,)."""
        return self.score_items(user_codes, history, items.unsqueeze(1)).squeeze(1)

    def score_candidates(self, user_codes: torch.Tensor, history: torch.Tensor,
                         items: torch.Tensor) -> torch.Tensor:
        """One user: user_codes (F,), history (L,), items (C,) -> logits (C,)."""
        return self.score_items(user_codes.unsqueeze(0), history.unsqueeze(0),
                                items.unsqueeze(0)).squeeze(0)
