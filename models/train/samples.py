"""Training examples from the training sequences: (user, history before t, target = item t).

Every position t >= 1 of every ``split.train`` sequence gives one example. Histories are not
materialised up front (N x L int64 would be ~40 MB on ML-100K and grows with the data): the
examples keep one offset into a flat array of left-padded sequences, and ``histories(idx)``
gathers a batch's windows in one vectorised indexing operation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TrainingSamples:
    users: np.ndarray  # (N,) int64
    targets: np.ndarray  # (N,) int64
    starts: np.ndarray  # (N,) int64: the history window is flat[start : start + max_history]
    flat: np.ndarray  # concat over users of [pad] * max_history + train sequence
    max_history: int
    pad: int

    def __len__(self) -> int:
        return len(self.targets)

    def histories(self, idx: np.ndarray) -> torch.Tensor:
        """(b,) example indices -> (b, max_history) LongTensor, right-aligned, left-padded."""
        win = self.starts[idx][:, None] + np.arange(self.max_history)  # (b, L)
        return torch.from_numpy(self.flat[win])


def build_samples(train: list[np.ndarray], max_history: int, pad: int) -> TrainingSamples:
    """All (user, history[:t][-max_history:], seq[t]) examples with t >= 1, in user order."""
    L = max_history
    lengths = np.array([len(s) for s in train], dtype=np.int64)
    padded = [np.concatenate([np.full(L, pad, dtype=np.int64), np.asarray(s, dtype=np.int64)])
              for s in train]
    flat = np.concatenate(padded) if padded else np.zeros(0, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths + L)[:-1]]).astype(np.int64)
    counts = np.maximum(lengths - 1, 0)  # positions t = 1..n-1 per user
    users = np.repeat(np.arange(len(train), dtype=np.int64), counts)
    first = np.cumsum(counts) - counts  # index of each user's first example
    t = np.arange(counts.sum(), dtype=np.int64) - np.repeat(first, counts) + 1
    # In the padded copy, item t sits at offset + L + t, and its L predecessors just before.
    starts = offsets[users] + t
    targets = flat[starts + L]
    return TrainingSamples(users=users, targets=targets, starts=starts, flat=flat,
                           max_history=L, pad=pad)


def item_frequencies(targets: np.ndarray, n_items: int) -> np.ndarray:
    """(n_items,) how often each item is a training target."""
    return np.bincount(targets, minlength=n_items).astype(np.float64)


def consumed_keys(train: list[np.ndarray], n_items: int) -> np.ndarray:
    """Sorted unique ``user * n_items + item`` keys of every training interaction."""
    if not train:
        return np.zeros(0, dtype=np.int64)
    users = np.repeat(np.arange(len(train), dtype=np.int64), [len(s) for s in train])
    items = np.concatenate([np.asarray(s, dtype=np.int64) for s in train])
    return np.unique(users * n_items + items)


def sample_negatives(users: np.ndarray, k: int, n_items: int, consumed: np.ndarray,
                     rng: np.random.Generator, max_rounds: int = 10) -> np.ndarray:
    """(N,) users -> (N, k) items drawn uniformly among those the user did not consume.

    Rejection sampling, vectorised over the hits; after ``max_rounds`` the few remaining hits
    (users who consumed most of the catalogue) are drawn exactly from their complement. A user
    who consumed every item keeps random (consumed) items rather than failing.
    """
    neg = rng.integers(0, n_items, size=(len(users), k), dtype=np.int64)
    if len(consumed) == 0:
        return neg

    def hits(neg: np.ndarray, users: np.ndarray) -> np.ndarray:
        keys = users[:, None] * n_items + neg
        pos = np.searchsorted(consumed, keys).clip(max=len(consumed) - 1)
        return consumed[pos] == keys

    for _ in range(max_rounds):
        hit = hits(neg, users)
        n_hit = int(hit.sum())
        if n_hit == 0:
            return neg
        neg[hit] = rng.integers(0, n_items, size=n_hit, dtype=np.int64)
    hit = hits(neg, users)
    for u in np.unique(users[hit.any(1)]):
        lo, hi = np.searchsorted(consumed, [u * n_items, (u + 1) * n_items])
        allowed = np.setdiff1d(np.arange(n_items), consumed[lo:hi] - u * n_items)
        rows = hit & (users == u)[:, None]
        if len(allowed):
            neg[rows] = rng.choice(allowed, size=int(rows.sum()))
    return neg


@dataclass
class CandidatePools:
    """Per user, the items the path's recall sources proposed that the user never consumed in
    training: the ranker's hard negatives (``models/build/ranker_candidates.py`` mines them).
    User u's pool is ``flat[offsets[u] : offsets[u + 1]]``."""

    flat: np.ndarray  # (P,) int64
    offsets: np.ndarray  # (n_users + 1,) int64

    @classmethod
    def from_lists(cls, pools: list[np.ndarray]) -> CandidatePools:
        sizes = np.array([len(p) for p in pools], dtype=np.int64)
        flat = (np.concatenate([np.asarray(p, dtype=np.int64) for p in pools]) if pools
                else np.zeros(0, dtype=np.int64))
        return cls(flat=flat, offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))

    def sizes(self) -> np.ndarray:
        """(n_users,) pool size per user."""
        return np.diff(self.offsets)


def sample_mixed_negatives(users: np.ndarray, n_hard: int, n_uniform: int, n_items: int,
                           consumed: np.ndarray, rng: np.random.Generator,
                           pools: CandidatePools | None = None) -> np.ndarray:
    """(N,) users -> (N, n_hard + n_uniform) negatives: ``n_hard`` drawn uniformly (with
    replacement) from each user's candidate pool, then ``n_uniform`` uniform unconsumed items
    (``sample_negatives``). A user with an empty pool, or no pools at all, gets uniform items
    in the hard columns too. Pools hold no consumed item, so no column is ever a positive."""
    uniform = sample_negatives(users, n_uniform + n_hard, n_items, consumed, rng)
    if pools is None or n_hard == 0 or len(users) == 0:
        return uniform
    size = pools.sizes()[users]  # (N,)
    has = np.flatnonzero(size > 0)  # rows whose user has a pool
    pick = (rng.random((len(has), n_hard)) * size[has, None]).astype(np.int64)  # (n, n_hard)
    uniform[has, :n_hard] = pools.flat[pools.offsets[users[has]][:, None] + pick]
    return uniform


def n_sampled(n_rest: int, frac: float) -> int:
    """How many of ``n_rest`` positions a fraction ``frac`` picks (a fixed count)."""
    return min(n_rest, int(round(max(frac, 0.0) * n_rest)))


def select_positions(counts: np.ndarray, recent: int, frac: float,
                     rng: np.random.Generator) -> np.ndarray:
    """counts (U,) examples per user, laid out user after user, oldest first (as
    ``build_samples``) -> sorted example indices: each user's last ``recent`` examples plus a
    uniform ``frac`` of the rest (a fixed count, so every epoch has as many batches)."""
    first = np.cumsum(counts) - counts
    t = np.arange(int(counts.sum())) - np.repeat(first, counts)  # 0-based position in user
    is_recent = t >= np.repeat(counts - max(recent, 0), counts)
    rest = np.flatnonzero(~is_recent)
    n_rest = n_sampled(len(rest), frac)
    picked = rng.choice(rest, size=n_rest, replace=False) if n_rest else rest[:0]
    return np.sort(np.concatenate([np.flatnonzero(is_recent), picked]))


def sequence_windows(lengths: np.ndarray, max_len: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Training rows of a sequential model: (user (R,), end (R,)), the row's items being
    seq[:end] (its last ``max_len`` + 1 serve as inputs and targets). ``max_len`` None: one
    row per user, end = len (the last ``max_len`` targets only, as SASRec's paper). Otherwise
    sequences are cut from the end into rows of ``max_len`` targets (end = len, len - max_len,
    ...), so every target t >= 1 is trained once per epoch: ml-100k's mean training sequence
    is ~104 items, and a 50-item model would otherwise never see half of them. Users with
    fewer than 2 items have no row."""
    lengths = np.asarray(lengths, dtype=np.int64)
    users = np.flatnonzero(lengths >= 2)
    if max_len is None:
        return users, lengths[users]
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    n_rows = (lengths[users] - 1 + max_len - 1) // max_len  # ceil(targets / max_len)
    row_user = np.repeat(users, n_rows)
    k = np.arange(len(row_user)) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows)  # 0, 1, ...
    return row_user, lengths[row_user] - k * max_len
