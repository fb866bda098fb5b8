"""Leave-one-out ranking metrics over the full catalog: one held-out target per user.

``target_ranks`` turns a score matrix into the 0-based rank of each user's target; ``hit_rate``
and ``ndcg`` read ranks; ``summarize`` gives the HR@k / NDCG@k dict that training and the
model cards report.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def hit_rate(ranks: np.ndarray, k: int) -> np.ndarray:
    """(B,) 0-based target ranks -> (B,) float64, 1 where rank < k else 0."""
    return (np.asarray(ranks) < k).astype(np.float64)


def ndcg(ranks: np.ndarray, k: int) -> np.ndarray:
    """(B,) 0-based target ranks -> (B,) float64, 1 / log2(rank + 2) where rank < k else 0.

    With a single relevant item the ideal DCG is 1, so this is already normalised."""
    r = np.asarray(ranks, dtype=np.float64)
    return np.where(r < k, 1.0 / np.log2(np.maximum(r, 0.0) + 2.0), 0.0)


def target_ranks(
    scores: np.ndarray,
    targets: np.ndarray,
    exclude: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Rank of each user's target among all items: scores (B, N), targets (B,) -> (B,) int64.

    ``exclude[b]`` holds item ids to mask for user b (their history: items a recommender
    would never show again). Masked items get score -inf, except the target itself, which is
    never masked: a user who re-consumes an item still gets credit for predicting it.

    rank = #{items with score > target's} + #{other items with score == target's}: ties count
    against the model, so a constant scorer gets rank N - 1 - |masked| (no free hits), and
    masked items (-inf) only count against a target whose own score is -inf.
    A NaN target score gets the worst rank, N - 1. ``scores`` is not modified.
    """
    scores = np.asarray(scores)
    # A copy (masking writes into it), float32 kept as is to halve memory on big catalogs.
    s = np.array(scores, dtype=np.result_type(scores.dtype, np.float32))
    if s.ndim != 2:
        raise ValueError(f"scores must be (B, N), got {s.shape}")
    t = np.asarray(targets, dtype=np.int64).reshape(-1)
    b, n = s.shape
    if len(t) != b:
        raise ValueError(f"{b} score rows but {len(t)} targets")
    if np.any((t < 0) | (t >= n)):
        raise ValueError("targets must be item ids in [0, N)")
    rows = np.arange(b)
    target_score = s[rows, t].copy()  # (B,)
    if exclude is not None:
        if len(exclude) != b:
            raise ValueError(f"{b} score rows but {len(exclude)} exclude lists")
        for i, items in enumerate(exclude):
            items = np.asarray(items, dtype=np.int64)
            if len(items):
                s[i, items[(items >= 0) & (items < n)]] = -np.inf
        s[rows, t] = target_score  # the target is never masked
    ts = target_score[:, None]
    greater = (s > ts).sum(axis=1)
    equal = (s == ts).sum(axis=1) - 1  # minus the target itself
    ranks = greater + equal
    ranks[np.isnan(target_score)] = n - 1
    return ranks.astype(np.int64)


def summarize(ranks: np.ndarray, ks: Sequence[int] = (10, 50)) -> dict[str, float]:
    """Mean HR@k and NDCG@k over users, e.g. {"HR@10", "NDCG@10", "HR@50", "NDCG@50"}.

    With no users every metric is 0.0 (not NaN, so the dict stays JSON-serialisable)."""
    r = np.asarray(ranks).reshape(-1)
    out: dict[str, float] = {}
    for k in ks:
        out[f"HR@{k}"] = float(hit_rate(r, k).mean()) if len(r) else 0.0
        out[f"NDCG@{k}"] = float(ndcg(r, k).mean()) if len(r) else 0.0
    return out
