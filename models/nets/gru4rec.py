"""GRU4Rec: session-based recommendation with a GRU (Hidasi et al., ICLR 2016; CIKM 2018).

Input item embedding (padding row ``n_items``) -> GRU -> linear projection to ``dim``. The score
of item j after a prefix is ``out . W_out[j]`` with a separate output item table ``W_out``
(n_items, dim), so serving is maximum inner product search over ``item_vectors()``.

Histories follow the shared convention: right-aligned (most recent last), left-padded with
``n_items``. ``user_vector`` runs the GRU over the real items only (padding is skipped, not fed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence


@dataclass
class GRU4RecConfig:
    n_items: int
    dim: int = 64  # input/output item embedding size and the size of the projected output
    hidden: int = 100  # GRU hidden units
    n_layers: int = 1
    dropout: float = 0.0  # on the input embeddings, and between GRU layers


class GRU4Rec(nn.Module):
    def __init__(self, cfg: GRU4RecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_items = cfg.n_items
        self.in_emb = nn.Embedding(cfg.n_items + 1, cfg.dim, padding_idx=cfg.n_items)
        self.drop = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(cfg.dim, cfg.hidden, num_layers=cfg.n_layers, batch_first=True,
                          dropout=cfg.dropout if cfg.n_layers > 1 else 0.0)
        self.proj = nn.Linear(cfg.hidden, cfg.dim)
        self.out_emb = nn.Embedding(cfg.n_items, cfg.dim)  # output item table (no padding row)
        nn.init.normal_(self.in_emb.weight, std=0.1)
        nn.init.normal_(self.out_emb.weight, std=0.1)
        with torch.no_grad():
            self.in_emb.weight[cfg.n_items].zero_()

    def init_hidden(self, batch: int) -> torch.Tensor:
        """Zero state (n_layers, B, H)."""
        return torch.zeros(self.cfg.n_layers, batch, self.cfg.hidden,
                           device=self.in_emb.weight.device)

    def step(self, items: torch.Tensor,
             h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One event per row: items (B,) int64, h (n_layers, B, H) or None (zeros)
        -> (out (B, dim), new h (n_layers, B, H))."""
        if h is None:
            h = self.init_hidden(items.shape[0])
        x = self.drop(self.in_emb(items)).unsqueeze(1)  # (B, 1, d)
        y, h = self.gru(x, h)  # y (B, 1, H): top layer's state after the step
        return self.proj(y[:, 0]), h

    def user_vector(self, history: torch.Tensor) -> torch.Tensor:
        """history (B, L) right-aligned, left-padded with n_items -> (B, dim).

        Each row's real items are moved to the front (left-trimmed) and packed with their
        lengths, so the GRU never sees a padding step; the result is the projection of the top
        layer's state after the last real item. All-padding rows use the zero state.
        """
        b, seq_len = history.shape
        if b == 0 or seq_len == 0:
            return self.proj(torch.zeros(b, self.cfg.hidden, device=self.in_emb.weight.device))
        lengths = (history != self.n_items).sum(1)  # (B,)
        # Left-trim: new[b, t] = history[b, L - len_b + t] for t < len_b, padding after.
        t = torch.arange(seq_len, device=history.device).unsqueeze(0)  # (1, L)
        src = (t + (seq_len - lengths).unsqueeze(1)).clamp_max(seq_len - 1)  # (B, L)
        trimmed = torch.gather(history, 1, src).masked_fill(t >= lengths.unsqueeze(1),
                                                            self.n_items)
        x = self.drop(self.in_emb(trimmed))  # (B, L, d)
        packed = pack_padded_sequence(x, lengths.clamp_min(1).cpu(), batch_first=True,
                                      enforce_sorted=False)
        _, h_n = self.gru(packed)  # (n_layers, B, H), in the original row order
        last = h_n[-1] * (lengths > 0).unsqueeze(1).to(h_n.dtype)  # (B, H); zero state if empty
        return self.proj(last)

    def item_vectors(self) -> torch.Tensor:
        """(n_items, dim) output item table: score(user, j) = user_vector . item_vectors()[j]."""
        return self.out_emb.weight

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """history (B, L) -> (B, n_items) scores over the whole catalogue."""
        return self.user_vector(history) @ self.item_vectors().T
