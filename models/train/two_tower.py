"""Two-tower training: in-batch sampled softmax with logQ correction (Yi et al., RecSys 2019).

Every other positive in the batch is a negative for a row. Popular items show up as in-batch
negatives far more often than under uniform sampling, which would push the model to demote
them; subtracting log q(item) (q = the item's share of training targets) from each logit
corrects that sampling bias so the softmax estimates the full-catalogue one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models.data.dataset import Split
from models.nets.two_tower import TwoTower
from models.train.loop import run_epochs, setup
from models.train.samples import build_samples, item_frequencies


@dataclass
class TwoTowerTrainConfig:
    epochs: int = 10
    batch_size: int = 1024
    lr: float = 5e-3
    weight_decay: float = 0.0
    seed: int = 0
    logq_correction: bool = True
    num_threads: int | None = 2  # torch intra-op threads; None leaves torch's setting alone


def in_batch_softmax_loss(logits: torch.Tensor, item_ids: torch.Tensor,
                          log_q: torch.Tensor | None) -> torch.Tensor:
    """Sampled softmax over in-batch negatives.

    logits (B, B): row i = user i, column j = positive item of row j (u_i . v_j / tau).
    item_ids (B,): the positive item of each row. log_q (B,): log sampling probability of each
    column's item, subtracted from its column (None: no correction).
    Columns j != i holding the same item as row i's positive are masked out: they are not
    negatives, and counting them would penalise the very item being predicted.
    """
    if log_q is not None:
        logits = logits - log_q.unsqueeze(0)
    dup = item_ids.unsqueeze(0) == item_ids.unsqueeze(1)  # (B, B)
    dup.fill_diagonal_(False)
    logits = logits.masked_fill(dup, float("-inf"))
    labels = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, labels)


def train_two_tower(model: TwoTower, split: Split, user_codes: torch.Tensor,
                    cfg: TwoTowerTrainConfig, progress: bool = True) -> list[float]:
    """Train in place on every (history, next item) of ``split.train``; returns the mean loss
    per epoch. user_codes: (n_users, F) int64, as from ``user_codes_from_dataset``."""
    rng = setup(cfg.seed, cfg.num_threads)
    n_items = model.cfg.n_items
    samples = build_samples(split.train, model.cfg.max_history, pad=n_items)
    if len(samples) == 0:
        raise ValueError("no training examples: every training sequence has < 2 items")
    freq = item_frequencies(samples.targets, n_items)
    # q > 0 for every item that can appear as a positive, so log q is finite where used.
    log_q_all = torch.from_numpy(np.log(np.maximum(freq, 1.0) / freq.sum())).float()
    targets_all = torch.from_numpy(samples.targets)
    users_all = torch.from_numpy(samples.users)

    def batch_loss(idx: np.ndarray) -> torch.Tensor | None:
        if len(idx) < 2:  # a lone row has no in-batch negative
            return None
        items = targets_all[idx]
        u = model.user_embed(user_codes[users_all[idx]], samples.histories(idx))  # (b, D)
        v = model.item_embed(items)  # (b, D)
        log_q = log_q_all[items] if cfg.logq_correction else None
        return in_batch_softmax_loss(model.score(u, v), items, log_q)

    return run_epochs(model, len(samples), cfg.batch_size, cfg.epochs, cfg.lr,
                      cfg.weight_decay, rng, batch_loss, "two-tower", progress)
