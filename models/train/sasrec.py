"""SASRec training, the paper's objective.

One row = one user with >= 2 training items: seq[:e], e = len(seq) (with ``windows``, one row
per max_len targets, e = len, len - max_len, ...; ``samples.sequence_windows``). Inputs are
seq[:e-1] and targets seq[1:e] (their last ``max_len`` items, right-aligned, left-padded with
``n_items``); at every real position the hidden state is scored against the target and
against one negative drawn uniformly among items absent from the user's training sequence
(fresh draws every batch); with ``loss="softmax"``, against the whole catalog instead. Loss: binary
cross-entropy on the positive (label 1) and negative (label 0) logits, summed per position and
averaged over the real (non-padding) positions of the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.nets.features import pad_histories
from models.nets.sasrec import SASRec
from models.train.job import TrainJob
from models.train.loop import run_epochs, setup
from models.train.samples import consumed_keys, sample_negatives, sequence_windows


@dataclass
class SASRecTrainConfig:
    epochs: int = 20
    batch_size: int = 128  # users per batch
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    num_threads: int | None = 2  # torch intra-op threads; None leaves torch's setting alone
    max_len: int | None = None  # None: the model's cfg.max_len
    # "bce": the paper's (one sampled negative per position); "softmax": cross-entropy over
    # the whole catalog, which later work (e.g. Klenitskiy & Vasilev 2023) found much stronger.
    loss: str = "bce"
    # True: every training target once per epoch, sequences longer than max_len cut into
    # max_len-target rows (``sequence_windows``); False: the last max_len targets per user.
    windows: bool = False


def train_sasrec(model: SASRec, split_train: list[np.ndarray], n_items: int,
                 cfg: SASRecTrainConfig, progress: bool = True,
                 on_epoch: Callable[[int], None] | None = None) -> list[float]:
    """Train ``model`` in place on ``split_train`` (per-user int64 sequences, e.g.
    ``Split.train``); returns the mean loss per epoch and leaves the model in eval mode.
    ``on_epoch(e)`` runs before epoch e (e.g. a validation check after e epochs)."""
    if cfg.loss not in ("bce", "softmax"):
        raise ValueError(f"loss must be 'bce' or 'softmax', not {cfg.loss!r}")
    rng = setup(cfg.seed, cfg.num_threads)
    L = cfg.max_len or model.cfg.max_len
    seqs = [np.asarray(s, dtype=np.int64) for s in split_train]
    users, ends = sequence_windows(np.array([len(s) for s in seqs]), L if cfg.windows else None)
    if len(users) == 0:
        raise ValueError("no training examples: every training sequence has < 2 items")
    consumed = consumed_keys(seqs, n_items)
    dev = next(model.parameters()).device  # batches go to the model's device

    def batch_loss(idx: np.ndarray) -> torch.Tensor:
        batch_users = users[idx]  # (b,)
        rows = [seqs[u][:e] for u, e in zip(batch_users, ends[idx], strict=True)]
        inputs = pad_histories([r[:-1] for r in rows], L, n_items)  # (b, L)
        targets = pad_histories([r[1:] for r in rows], L, n_items)  # (b, L)
        negs = torch.from_numpy(
            sample_negatives(batch_users, L, n_items, consumed, rng))  # (b, L)
        inputs, targets, negs = inputs.to(dev), targets.to(dev), negs.to(dev)
        valid = targets != n_items  # (b, L)
        states = model(inputs)[valid]  # (n, d), n real positions
        if cfg.loss == "softmax":
            logits = states @ model.item_vectors().T  # (n, n_items)
            return F.cross_entropy(logits, targets[valid])
        pos = model.logits(states, targets[valid])  # (n,)
        neg = model.logits(states, negs[valid])  # (n,)
        loss = (F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), reduction="sum")
                + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg),
                                                     reduction="sum"))
        return loss / valid.sum().clamp_min(1)

    return run_epochs(model, len(users), cfg.batch_size, cfg.epochs, cfg.lr, cfg.weight_decay,
                      rng, batch_loss, "sasrec", progress=progress, on_epoch=on_epoch)


# The name the build's generic retriever step reads (``models.registry``).
TrainConfig = SASRecTrainConfig


def fit(job: TrainJob, model: SASRec, params: dict[str, Any]
        ) -> tuple[SASRecTrainConfig, list[float]]:
    """The build's entry point: ``params`` = the profile's training options."""
    cfg = SASRecTrainConfig(seed=job.seed, **params)
    return cfg, train_sasrec(model, job.split.train, job.ds.n_items, cfg,
                             progress=job.progress, on_epoch=job.on_epoch)
