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

Chunks (a ``causal`` model): one row is a chunk of up to max_history + 1 consecutive items,
and the loss covers the next item at every position of it (``TIGER.forward_chunk``), so a
pass over ~N / max_history chunks trains every (history, next item) pair once, each history
cut at its chunk's start. The chunk boundaries move every epoch (a random offset per user),
so no target always sits at a chunk's start with a one-item history.
``samples_per_epoch`` then counts chunks.

``user_dropout``: each sample's user bucket is replaced by the anonymous bucket with this
probability, so that row is trained too and serves users the model has not seen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

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
    lr_schedule: Literal["constant", "cosine"] = "constant"  # models.train.loop.SCHEDULES


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


def chunk_ends(seq_start: np.ndarray, seq_end: np.ndarray, size: int, offset: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut each sequence (flat indices seq_start[u] .. seq_end[u]) into chunks of ``size``
    targets: ends at seq_end - offset - k * size (k >= 0, target >= 1 item in), plus, when
    offset > 0, a chunk ending at seq_end whose targets are the last ``offset`` items only.
    -> (end, sequence start, first target) flat indices per chunk: every target t >= 1 of
    every sequence is the target of exactly one chunk."""
    ends, starts, firsts = [], [], []
    for a, b, o in zip(seq_start.tolist(), seq_end.tolist(), offset.tolist(), strict=True):
        if b - a < 1:
            continue  # a single item: no target
        if o > 0:
            ends.append(b)
            starts.append(a)
            firsts.append(max(a + 1, b - o + 1))
        e = b - o
        while e >= a + 1:
            ends.append(e)
            starts.append(a)
            firsts.append(max(a + 1, e - size + 1))
            e -= size
    return (np.asarray(ends, np.int64), np.asarray(starts, np.int64),
            np.asarray(firsts, np.int64))


def train_tiger(model: TIGER, sids: SemanticIds, split_train: list[np.ndarray],
                user_ids: list[str], cfg: TigerTrainConfig, progress: bool = True,
                after_epoch: Callable[[int], None] | None = None) -> list[float]:
    """Train ``model`` in place; split_train[u] is user u's dense item sequence (oldest first)
    and user_ids[u] its external id (hashed with ``user_bucket``). Returns the mean loss per
    epoch. ``after_epoch(e)`` runs before epoch e >= 1 (e.g. a validation check of the model
    after e epochs)."""
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
    chunks = model.cfg.causal
    if chunks:
        seq_start = np.cumsum(lengths) - np.asarray(lengths)
        seq_end = seq_start + np.asarray(lengths) - 1  # flat index of each last item
        n_rows = chunk_ends(seq_start, seq_end, max_history, np.zeros(len(lengths), np.int64))[
            0].size
        n_rows = n_rows if cfg.samples_per_epoch is None else min(cfg.samples_per_epoch, n_rows)
    chunk = (pos, start, pos)  # (end, sequence start, first target) per row

    def on_epoch(epoch: int) -> None:
        nonlocal rows, chunk
        if after_epoch is not None and epoch > 0:
            after_epoch(epoch)
        if chunks:  # new boundaries every epoch: a random offset per user
            offset = rng.integers(0, max_history, size=len(lengths))
            chunk = chunk_ends(seq_start, seq_end, max_history, offset)
            rows = rng.permutation(len(chunk[0]))[:n_rows]
        elif n_rows < len(pos):
            rows = rng.choice(len(pos), size=n_rows, replace=False)

    def users_of(s: np.ndarray) -> torch.Tensor:
        users = buckets[user_of[s]] if not chunks else buckets[seq_of_flat[chunk[0][s]]]
        users = np.where(rng.random(len(s)) < cfg.user_dropout, ANONYMOUS_BUCKET, users)
        return torch.from_numpy(users).to(device)

    seq_of_flat = np.repeat(np.arange(len(split_train)), lengths)

    def chunk_loss(idx: np.ndarray) -> torch.Tensor:
        s = rows[idx]
        p, st, first = chunk[0][s], chunk[1][s], chunk[2][s]  # (B,) each
        C = int(min(max_history, (p - st).max()))
        hist = p[:, None] - C + np.arange(C)  # (B, C) history items; targets are hist + 1
        valid = hist >= st[:, None]
        train_on = torch.from_numpy(valid & (hist + 1 >= first[:, None])).to(device)
        items = torch.from_numpy(flat[np.where(valid, hist, p[:, None])]).to(device)
        valid_t = torch.from_numpy(valid).to(device)
        tokens = ids[items] * valid_t[..., None]  # (B, C, T)
        target = ids[torch.from_numpy(flat[np.where(valid, hist + 1, p[:, None])]).to(device)]
        logits = model.forward_chunk(users_of(s), tokens, valid_t, target)
        return sum(F.cross_entropy(lg[train_on], target[..., j][train_on])
                   for j, lg in enumerate(logits))

    def batch_loss(idx: np.ndarray) -> torch.Tensor:
        if chunks:
            return chunk_loss(idx)
        s = rows[idx]
        p, st = pos[s], start[s]  # (B,)
        L = int(min(max_history, (p - st).max()))
        hist = p[:, None] - L + np.arange(L)  # (B, L) flat indices, right-aligned
        valid = hist >= st[:, None]
        items = torch.from_numpy(flat[np.where(valid, hist, p[:, None])]).to(device)
        valid_t = torch.from_numpy(valid).to(device)
        tokens = ids[items] * valid_t[..., None]  # (B, L, T)
        target = ids[torch.from_numpy(flat[p]).to(device)]  # (B, T)
        logits = model(users_of(s), tokens, valid_t, target)
        return sum(F.cross_entropy(lg, target[:, j]) for j, lg in enumerate(logits))

    return run_epochs(model, n_rows, cfg.batch_size, cfg.epochs, cfg.lr, cfg.weight_decay,
                      rng, batch_loss, "tiger", progress=progress, on_epoch=on_epoch,
                      schedule=cfg.lr_schedule)
