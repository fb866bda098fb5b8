"""GRU4Rec training: session-parallel mini-batches with BPR-max / TOP1-max (Hidasi et al.).

Session-parallel mini-batches (2016, sec. 3.1.1): ``batch_size`` slots each walk through one
sequence, one event per step; the input is the current item and the target the next one. When a
slot's sequence runs out, its hidden state is reset to zero and the next unprocessed sequence
takes the slot. Unlike the paper's code (which stops once a slot can't be refilled), the tail is
kept: slots with nothing left become inactive (marked -1) so every (item -> next) pair of every
sequence is trained on exactly once per epoch.

Negatives (2018, sec. 3.1): the other slots' targets of the mini-batch plus ``n_negatives``
items drawn uniformly, shared by all rows. The hidden state is detached after every step
(truncated BPTT of one step, as in the paper).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.nets.gru4rec import GRU4Rec
from models.train.job import TrainJob
from models.train.loop import epoch_progress, report_epoch, setup


@dataclass
class GRU4RecTrainConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-2  # Adam
    n_negatives: int = 64  # extra uniform negatives per step, shared by the mini-batch
    loss: str = "bpr-max"  # "bpr-max" or "top1-max"
    bpreg: float = 1.0  # score regularisation weight of BPR-max
    seed: int = 0
    num_threads: int | None = 2  # torch intra-op threads; None leaves torch's setting alone


def session_parallel_batches(
    sequences: list[np.ndarray], batch_size: int, rng: np.random.Generator,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (inputs (B,), targets (B,), reset_mask (B,)) per step, B = min(batch_size, number
    of usable sequences), all int64 except the bool mask.

    Sequences are taken in a random order (``rng``); those shorter than 2 have no pair and are
    skipped. ``reset_mask[s]`` is True when slot s starts a new sequence at this step (zero its
    hidden state before the step). Once no sequence is left to refill a slot, the slot is
    inactive: inputs and targets are -1 there (skip it in the loss).
    """
    usable = [np.asarray(s, dtype=np.int64) for s in sequences if len(s) >= 2]
    if not usable:
        return
    order = rng.permutation(len(usable))
    # All sequences back to back (paper's layout): slot s reads flat[ptr[s]] -> flat[ptr[s]+1]
    # while ptr[s] + 1 < end[s].
    flat = np.concatenate([usable[i] for i in order])
    lens = np.array([len(usable[i]) for i in order], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    n_slots = min(batch_size, len(usable))
    ptr = starts[:n_slots].copy()  # (B,) index of the current input in flat
    end = (starts + lens)[:n_slots].copy()  # (B,) one past the slot's sequence end
    active = np.ones(n_slots, dtype=bool)
    reset = np.ones(n_slots, dtype=bool)
    next_seq = n_slots
    while active.any():
        inputs = np.where(active, flat[np.minimum(ptr, len(flat) - 1)], -1)
        targets = np.where(active, flat[np.minimum(ptr + 1, len(flat) - 1)], -1)
        yield inputs, targets, reset.copy()
        ptr += 1
        reset[:] = False
        # A slot is done when its next input would be the sequence's last item.
        for s in np.flatnonzero(active & (ptr + 1 >= end)):
            if next_seq < len(lens):
                ptr[s], end[s] = starts[next_seq], starts[next_seq] + lens[next_seq]
                reset[s] = True
                next_seq += 1
            else:
                active[s] = False


def _neg_softmax(neg: torch.Tensor, neg_mask: torch.Tensor) -> torch.Tensor:
    """Softmax over each row's valid negative scores: (B, K) -> (B, K), 0 where masked."""
    s = torch.softmax(neg.masked_fill(~neg_mask, -1e9), dim=1)
    return s * neg_mask.to(s.dtype)  # a row with no valid negative gets all zeros


def bpr_max_loss(pos: torch.Tensor, neg: torch.Tensor, neg_mask: torch.Tensor,
                 bpreg: float) -> torch.Tensor:
    """BPR-max (2018, eq. 8), mean over rows. pos (B,) target scores r_i, neg (B, K) negative
    scores r_j, neg_mask (B, K) which negatives count. With s_j = softmax_j(r_j) over the valid
    negatives:  L = -log( sum_j s_j * sigmoid(r_i - r_j) ) + bpreg * sum_j s_j * r_j^2."""
    s = _neg_softmax(neg, neg_mask)  # (B, K)
    diff = torch.sigmoid(pos.unsqueeze(1) - neg)  # (B, K)
    loss = -torch.log((s * diff).sum(1) + 1e-24) + bpreg * (s * neg.pow(2)).sum(1)  # (B,)
    return loss.mean()


def top1_max_loss(pos: torch.Tensor, neg: torch.Tensor, neg_mask: torch.Tensor) -> torch.Tensor:
    """TOP1-max (2018, eq. 5), mean over rows; shapes as in ``bpr_max_loss``:
    L = sum_j s_j * ( sigmoid(r_j - r_i) + sigmoid(r_j^2) )."""
    s = _neg_softmax(neg, neg_mask)  # (B, K)
    terms = torch.sigmoid(neg - pos.unsqueeze(1)) + torch.sigmoid(neg.pow(2))  # (B, K)
    return (s * terms).sum(1).mean()


def train_gru4rec(model: GRU4Rec, split_train: list[np.ndarray], cfg: GRU4RecTrainConfig,
                  progress: bool = True,
                  on_epoch: Callable[[int], None] | None = None) -> list[float]:
    """Train in place on every (item -> next item) of ``split_train`` (per-user int64
    sequences, e.g. ``Split.train``) with one Adam step per session-parallel mini-batch;
    returns the mean loss per event for each epoch and leaves the model in eval mode."""
    if cfg.loss not in ("bpr-max", "top1-max"):
        raise ValueError(f"loss must be 'bpr-max' or 'top1-max', not {cfg.loss!r}")
    rng = setup(cfg.seed, cfg.num_threads)
    n_items = model.cfg.n_items
    device = model.in_emb.weight.device
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        if on_epoch is not None:  # e.g. a validation check after ``epoch`` epochs
            on_epoch(epoch)
            model.train()
        total, count = 0.0, 0
        h: torch.Tensor | None = None
        batches = session_parallel_batches(split_train, cfg.batch_size, rng)
        with epoch_progress(f"gru4rec epoch {epoch + 1}/{cfg.epochs}", None,
                            progress) as advance:
            for inputs_np, targets_np, reset_np in batches:
                inputs = torch.from_numpy(inputs_np).to(device)  # (B,), -1 = inactive slot
                targets = torch.from_numpy(targets_np).to(device)  # (B,)
                reset = torch.from_numpy(reset_np).to(device)  # (B,) bool
                act = inputs >= 0  # (B,)
                if h is None:
                    h = model.init_hidden(inputs.shape[0])
                # Zero the state of slots starting a new sequence; detach = 1-step truncated BPTT.
                h = h.detach().masked_fill(reset.view(1, -1, 1), 0.0)  # (n_layers, B, H)
                out, h = model.step(inputs.masked_fill(~act, n_items), h)  # (B, d)
                out, tgt = out[act], targets[act]  # (A, d), (A,) active slots only
                # Candidates: the A in-batch targets, then n_negatives uniform items (shared).
                extra = torch.from_numpy(rng.integers(0, n_items, cfg.n_negatives)).to(device)
                cand = torch.cat([tgt, extra])  # (A + K,)
                scores = out @ model.item_vectors()[cand].T  # (A, A + K)
                pos = scores.diagonal()  # (A,) r_i = score of row i's own target
                # Negatives: every candidate that is not row i's target item (this drops the
                # diagonal and any duplicate of the target among other slots / samples).
                neg_mask = cand.unsqueeze(0) != tgt.unsqueeze(1)  # (A, A + K)
                if cfg.loss == "bpr-max":
                    loss = bpr_max_loss(pos, scores, neg_mask, cfg.bpreg)
                else:
                    loss = top1_max_loss(pos, scores, neg_mask)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(tgt)
                count += len(tgt)
                advance(f"loss {loss.item():.4f}")
        losses.append(total / max(count, 1))
        report_epoch("gru4rec", epoch, cfg.epochs, losses[-1], t0, progress)
    model.eval()
    return losses


# The name the build's generic retriever step reads (``models.registry``).
TrainConfig = GRU4RecTrainConfig


def fit(job: TrainJob, model: GRU4Rec, params: dict[str, Any]
        ) -> tuple[GRU4RecTrainConfig, list[float]]:
    """The build's entry point: ``params`` = the profile's training options."""
    cfg = GRU4RecTrainConfig(seed=job.seed, **params)
    return cfg, train_gru4rec(model, job.split.train, cfg, progress=job.progress,
                              on_epoch=job.on_epoch)
