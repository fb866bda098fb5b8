"""TDM node scorer (Zhu et al., KDD 2018): P(user likes node) for the nodes of a TDM tree.

Inputs are the user's history (item ids, right-aligned, left-padded with ``n_items``) and
node ids of the tree (``index/tdm_tree.py``); history items and tree nodes have separate
embedding tables (the paper's setting: a node is a learned "interest region", not an item).

Target attention as in DIN: the activation unit scores every history item h against the node
embedding e from [h, e, h-e, h*e] (+ a learned recency bias per history position, so the most
recent items can weigh more); the interest vector is the weighted SUM of history items,
padding weighted 0. No softmax by default, as in DIN: a node high in the tree stands for many
items, and the unnormalised sum keeps how MANY history items point into its region (interest
intensity), which a softmax would normalise away; ``attention_softmax`` switches to
normalised weights. Logit = MLP([interest, e, interest * e]).

``score_nodes`` scores many nodes for one history (the history terms are computed once), the
``score_fn`` that ``index.tdm_tree.beam_search`` takes comes from ``node_score_fn``, and
``leaf_embeddings`` returns the learned leaf (item) node vectors for re-learning the tree (JTM).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from index.tdm_tree import TDMTree
from models.nets.din import PReLU, attend_targets
from models.nets.features import history_mask, recency_positions


@dataclass
class TDMConfig:
    n_items: int
    n_nodes: int
    dim: int = 32
    max_history: int = 50
    attention_hidden: tuple[int, ...] = (36,)
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.0
    attention_softmax: bool = False
    recency_attention: bool = True  # learned bias per recency position in the attention unit


def _mlp(d: int, hidden: tuple[int, ...], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(d, h), PReLU(h), nn.Dropout(dropout)]
        d = h
    layers.append(nn.Linear(d, 1))
    return nn.Sequential(*layers)


class TDMScorer(nn.Module):
    def __init__(self, cfg: TDMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_items = cfg.n_items
        d = cfg.dim
        self.item_emb = nn.Embedding(cfg.n_items + 1, d, padding_idx=cfg.n_items)
        self.node_emb = nn.Embedding(cfg.n_nodes, d)
        nn.init.normal_(self.item_emb.weight, std=0.1)
        nn.init.normal_(self.node_emb.weight, std=0.1)
        with torch.no_grad():
            self.item_emb.weight[cfg.n_items].zero_()
        h1, *rest = cfg.attention_hidden
        # Activation unit: att_in is the first layer on [h, e, h-e, h*e] (4d -> h1), applied in
        # split form (see _interest); att_rest = the remaining layers down to one weight.
        self.att_in = nn.Linear(4 * d, h1)
        self.att_pos = nn.Embedding(cfg.max_history, h1)
        nn.init.zeros_(self.att_pos.weight)
        self.att_rest = nn.Sequential(PReLU(h1), *_mlp(h1, tuple(rest), 0.0))
        self.mlp = _mlp(3 * d, tuple(cfg.hidden), cfg.dropout)

    def encode_history(self, history: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """history (B, L) -> item vectors (B, L, d), valid mask (B, L), and the attention's
        history-only first-layer term a_h (B, L, h1), computed once per history."""
        hist = self.item_emb(history)  # (B, L, d)
        mask = history_mask(history, self.n_items)
        w_h, _, w_d, _ = self.att_in.weight.split(self.cfg.dim, dim=1)  # each (h1, d)
        a_h = hist @ (w_h + w_d).T  # (B, L, h1)
        if self.cfg.recency_attention:
            pos = recency_positions(history.shape[1], self.cfg.max_history, history.device)
            a_h = a_h + self.att_pos(pos)  # (L, h1) broadcast over the batch
        return hist, mask, a_h

    def _logits(self, hist: torch.Tensor, mask: torch.Tensor, a_h: torch.Tensor,
                nodes: torch.Tensor) -> torch.Tensor:
        e = self.node_emb(nodes)  # (B, M, d)
        interest = attend_targets(self.att_in, self.att_rest, hist, mask, a_h, e,
                                  self.cfg.attention_softmax)  # (B, M, d)
        return self.mlp(torch.cat([interest, e, interest * e], dim=-1)).squeeze(-1)

    def forward(self, history: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """history (B, L), nodes (B, M) node ids -> logits (B, M) of P(user likes node)."""
        return self._logits(*self.encode_history(history), nodes)

    @torch.no_grad()
    def score_nodes(self, history: torch.Tensor, nodes: torch.Tensor,
                    chunk: int = 4096) -> torch.Tensor:
        """One history (L,), nodes (M,) -> logits (M,). The history terms are computed once;
        nodes go ``chunk`` at a time (the (M, L, h1) attention input bounds memory)."""
        enc = self.encode_history(history[None])
        out = [self._logits(*enc, nodes[None, i:i + chunk])[0]
               for i in range(0, len(nodes), chunk)]
        return torch.cat(out) if out else torch.zeros(0, device=history.device)

    def leaf_embeddings(self, tree: TDMTree) -> torch.Tensor:
        """(n_items, dim): the learned node vector of each item's leaf (detached), e.g. to
        rebuild the tree on them (JTM)."""
        leaves = torch.from_numpy(tree.item_node).to(self.node_emb.weight.device)
        return self.node_emb.weight.detach()[leaves]


def node_score_fn(model: TDMScorer, history: np.ndarray | torch.Tensor, chunk: int = 4096
                  ) -> Callable[[np.ndarray], np.ndarray]:
    """One user's history (any length; the last ``max_history`` items are used) -> the
    ``score_fn(nodes) -> logits`` that ``beam_search`` calls once per level. The history's
    embedding and attention terms are computed here, once per request."""
    if model.training:
        model.eval()
    dev = next(model.parameters()).device
    h = torch.as_tensor(np.asarray(history, dtype=np.int64)[-model.cfg.max_history:])
    with torch.no_grad():
        enc = model.encode_history(h[None].to(dev))

    def score(nodes: np.ndarray) -> np.ndarray:
        n = torch.from_numpy(np.ascontiguousarray(nodes, dtype=np.int64)).to(dev)
        with torch.no_grad():  # chunks bound the (M, L, h1) attention input
            out = [model._logits(*enc, n[None, i:i + chunk])[0] for i in range(0, len(n), chunk)]
        return torch.cat(out).float().cpu().numpy() if out else np.zeros(0, np.float32)

    return score
