"""TIGER training: teacher-forced next-item semantic-ID prediction.

Samples: for each user and each position t >= 1 of the training sequence, history =
seq[:t][-max_history:] and target = seq[t]. Loss = cross-entropy summed over the T ID
positions, averaged over the batch.

Epoch size: the encoder reads 1 + max_history * T tokens per sample (201 with the default
config), and forward + backward measured ~50 ms per sample on 2 busy CPU cores, so a full pass
over ML-100K (~97k samples) would take over an hour. ``samples_per_epoch`` (default 1024,
about a minute per epoch there) draws a fresh uniform subset without replacement every
epoch, so over many epochs every sample is seen while each epoch stays short; raise it (or
None: all samples every epoch) on a GPU. Batches go to the model's device.

``user_dropout``: each sample's user bucket is replaced by the anonymous bucket with this
probability, so that row is trained too and serves users the model has not seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from index.semantic_ids import SemanticIds
from models.nets.tiger import ANONYMOUS_BUCKET, TIGER, user_bucket
from models.train.loop import run_epochs, setup


@dataclass
class TigerTrainConfig:
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    num_threads: int | None = 2  # torch intra-op threads; None leaves torch's setting alone
    max_history: int | None = None  # items per sample; None = the model's max_history
    samples_per_epoch: int | None = 1024  # fresh random subset each epoch; None = all
    user_dropout: float = 0.1


def next_item_samples(train: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flatten the sequences: (flat (M,) all items, pos (S,) flat index of each target
    seq[t], t >= 1, start (S,) flat index where that target's sequence begins)."""
    lengths = np.array([len(s) for s in train], dtype=np.int64)
    flat = np.concatenate([np.asarray(s, np.int64) for s in train]) if len(train) else \
        np.zeros(0, np.int64)
    starts = np.cumsum(lengths) - lengths
    seq_of = np.repeat(np.arange(len(train)), lengths)
    pos = np.flatnonzero(np.arange(len(flat)) > starts[seq_of])  # t >= 1
    return flat, pos, starts[seq_of[pos]]


def train_tiger(model: TIGER, sids: SemanticIds, split_train: list[np.ndarray],
                user_ids: list[str], cfg: TigerTrainConfig, progress: bool = True) -> list[float]:
    """Train ``model`` in place; split_train[u] is user u's dense item sequence (oldest first)
    and user_ids[u] its external id (hashed with ``user_bucket``). Returns the mean loss per
    epoch."""
    if len(user_ids) != len(split_train):
        raise ValueError("user_ids must have one entry per training sequence")
    if sids.length != model.length or np.any(sids.radix > np.asarray(model.radix)):
        raise ValueError("semantic ids do not fit the model's radix")
    rng = setup(cfg.seed, cfg.num_threads)
    max_history = cfg.max_history or model.cfg.max_history
    if max_history > model.cfg.max_history:
        raise ValueError(f"max_history {max_history} exceeds the model's "
                         f"{model.cfg.max_history}")
    flat, pos, start = next_item_samples(split_train)
    if len(pos) == 0:
        raise ValueError("no training samples: every sequence is shorter than 2 items")
    lengths = [len(s) for s in split_train]
    user_of = np.repeat(np.arange(len(split_train)), lengths)[pos]  # (S,)
    buckets = np.array([user_bucket(u, model.cfg.n_user_buckets) for u in user_ids],
                       dtype=np.int64)
    device = next(model.parameters()).device
    ids = torch.from_numpy(sids.ids).to(device)  # (N, T)
    n_rows = len(pos) if cfg.samples_per_epoch is None else min(cfg.samples_per_epoch, len(pos))
    rows = np.arange(n_rows)  # run_epochs row -> sample; redrawn each epoch when subsampling

    def on_epoch(epoch: int) -> None:
        nonlocal rows
        if n_rows < len(pos):
            rows = rng.choice(len(pos), size=n_rows, replace=False)

    def batch_loss(idx: np.ndarray) -> torch.Tensor:
        s = rows[idx]
        p, st = pos[s], start[s]  # (B,)
        L = int(min(max_history, (p - st).max()))
        hist = p[:, None] - L + np.arange(L)  # (B, L) flat indices, right-aligned
        valid = hist >= st[:, None]
        items = torch.from_numpy(flat[np.where(valid, hist, p[:, None])]).to(device)
        valid_t = torch.from_numpy(valid).to(device)
        tokens = ids[items] * valid_t[..., None]  # (B, L, T)
        users = buckets[user_of[s]]
        users = np.where(rng.random(len(s)) < cfg.user_dropout, ANONYMOUS_BUCKET, users)
        target = ids[torch.from_numpy(flat[p]).to(device)]  # (B, T)
        logits = model(torch.from_numpy(users).to(device), tokens, valid_t, target)
        return sum(F.cross_entropy(lg, target[:, j]) for j, lg in enumerate(logits))

    return run_epochs(model, n_rows, cfg.batch_size, cfg.epochs, cfg.lr, cfg.weight_decay,
                      rng, batch_loss, "tiger", progress=progress, on_epoch=on_epoch)
