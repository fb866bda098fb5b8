"""Ranker training (DeepFM, DIN, ...): each positive (history, next item) against
``neg_ratio`` uniform items the user never consumed in training, plus ``n_hard`` drawn from
the user's candidate pool when the build gives one (what the cascade's recall sources propose
for the user, ``models/build/ranker_candidates.py``: the lists DIN reorders when serving).

``loss="softmax"`` treats the positive and its negatives as one list (cross-entropy on the
positive): on ml-100k it ranked better than pointwise BCE at the same cost (validation HR@10
0.211 vs 0.206 for DIN with 8 vs 4 negatives). Judged by full-catalogue HR@10, hard negatives
from the two-tower's top candidates alone did not help (0.201); what counts for a path's
ranker is its order of the recall candidates, which the fusion fit measures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.data.dataset import Split
from models.train.loop import run_epochs, setup
from models.train.samples import (
    CandidatePools,
    build_samples,
    consumed_keys,
    n_sampled,
    sample_mixed_negatives,
    select_positions,
)


@dataclass
class RankerTrainConfig:
    # Chosen on the ml-100k validation split (DIN HR@10: 3 epochs 0.211, 5 epochs 0.223).
    epochs: int = 5
    batch_size: int = 512  # positives per batch; each brings neg_ratio negatives
    neg_ratio: int = 8  # uniform negatives per positive
    n_hard: int = 0  # per positive, from the user's recall candidate pool (when given)
    # Mining the pools (models/build/ranker_candidates.py), for a path's ranker only: each
    # user's last ``mine_positions`` training positions, ``mine_quota`` items per source.
    mine_positions: int = 1
    mine_quota: int = 50
    mine_gap: int = 0  # positions between the last mined one and the user's last one
    # None: every training position each epoch; N: each user's last N positions (the most
    # like the serving-time query, and those the pools are mined for) plus a fresh
    # ``sample_frac`` of the others per epoch.
    recent_per_user: int | None = None
    sample_frac: float = 0.0
    loss: str = "softmax"  # "bce" (pointwise) or "softmax" (listwise over positive + negatives)
    lr: float = 2e-3
    weight_decay: float = 0.0
    seed: int = 0
    num_threads: int | None = 2  # torch intra-op threads; None leaves torch's setting alone


def _score(model: nn.Module, codes: torch.Tensor, history: torch.Tensor,
           items: torch.Tensor) -> torch.Tensor:
    """codes (B, F), history (B, L), items (B, K) -> logits (B, K)."""
    if hasattr(model, "score_items"):
        return model.score_items(codes, history, items)
    B, K = items.shape
    flat = model(codes.repeat_interleave(K, 0), history.repeat_interleave(K, 0),
                 items.reshape(-1))
    return flat.reshape(B, K)


def train_ranker(model: nn.Module, split: Split, user_codes: torch.Tensor, n_items: int,
                 cfg: RankerTrainConfig, progress: bool = True,
                 pools: CandidatePools | None = None) -> list[float]:
    """Train in place; returns the mean loss per epoch. The history length is the model's
    ``cfg.max_history``. user_codes: (n_users, F) int64. pools: per user, recall candidates
    never consumed in training, the source of the ``n_hard`` negatives."""
    if cfg.loss not in ("bce", "softmax"):
        raise ValueError(f"loss must be 'bce' or 'softmax', not {cfg.loss!r}")
    rng = setup(cfg.seed, cfg.num_threads)
    samples = build_samples(split.train, model.cfg.max_history, pad=n_items)
    if len(samples) == 0:
        raise ValueError("no training examples: every training sequence has < 2 items")
    consumed = consumed_keys(split.train, n_items)
    k = cfg.n_hard + cfg.neg_ratio
    # Column 0 is the positive, columns 1..k the negatives.
    labels_row = torch.zeros(1 + k)
    labels_row[0] = 1.0

    counts = np.array([max(len(s) - 1, 0) for s in split.train], dtype=np.int64)
    n_rows = len(samples)
    if cfg.recent_per_user is not None:
        n_recent = int(np.minimum(counts, max(cfg.recent_per_user, 0)).sum())
        n_rows = n_recent + n_sampled(len(samples) - n_recent, cfg.sample_frac)
        if n_rows == 0:
            raise ValueError("recent_per_user and sample_frac select no training positions")
    sel = np.arange(n_rows)  # this epoch's examples (indices into samples)
    negs = np.zeros((n_rows, k), dtype=np.int64)  # (n_rows, k), resampled every epoch

    def resample(_: int) -> None:
        if cfg.recent_per_user is not None:
            sel[:] = select_positions(counts, cfg.recent_per_user, cfg.sample_frac, rng)
        negs[:] = sample_mixed_negatives(samples.users[sel], cfg.n_hard, cfg.neg_ratio,
                                         n_items, consumed, rng, pools)

    def batch_loss(rows: np.ndarray) -> torch.Tensor:
        idx = sel[rows]  # (b,) example indices
        codes = user_codes[torch.from_numpy(samples.users[idx])]
        items = torch.from_numpy(
            np.concatenate([samples.targets[idx, None], negs[rows]], axis=1))  # (b, 1+k)
        logits = _score(model, codes, samples.histories(idx), items)  # (b, 1+k)
        if cfg.loss == "softmax":
            # Column 0 holds the positive: cross-entropy against class 0.
            return F.cross_entropy(logits, torch.zeros(len(idx), dtype=torch.long))
        return F.binary_cross_entropy_with_logits(logits, labels_row.expand_as(logits))

    return run_epochs(model, n_rows, cfg.batch_size, cfg.epochs, cfg.lr,
                      cfg.weight_decay, rng, batch_loss, "ranker", progress, on_epoch=resample)
