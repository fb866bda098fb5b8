"""Leave-one-out ranking metrics over the full catalog: one held-out target per user.

``target_ranks`` turns a score matrix into the 0-based rank of each user's target (the one
implementation: batched full-ranking evaluation in ``models.evaluate.sequential`` calls it on
the device its scores live on); ``MISS`` is the rank of a target that cannot be shown at all;
``hit_rate`` and ``ndcg`` read ranks; ``summarize`` gives the HR@k / NDCG@k dict that training
and the model cards report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

# Rank of a target the recommender can never show (blocked, or absent from a served list):
# beyond every k, yet far from int64 overflow when ranks are added or compared.
MISS = np.iinfo(np.int64).max // 2

Scores = np.ndarray | torch.Tensor  # (B, N) user x item scores, on any device


def hit_rate(ranks: np.ndarray, k: int) -> np.ndarray:
    """(B,) 0-based target ranks -> (B,) float64, 1 where rank < k else 0."""
    return (np.asarray(ranks) < k).astype(np.float64)


def ndcg(ranks: np.ndarray, k: int) -> np.ndarray:
    """(B,) 0-based target ranks -> (B,) float64, 1 / log2(rank + 2) where rank < k else 0.

    With a single relevant item the ideal DCG is 1, so this is already normalised."""
    r = np.asarray(ranks, dtype=np.float64)
    return np.where(r < k, 1.0 / np.log2(np.maximum(r, 0.0) + 2.0), 0.0)


def _as_float(scores: Scores, copy: bool) -> Scores:
    """(B, N) scores as floats: float32 kept as is (half the memory on big catalogs), integers
    in float64 so they compare exactly. A copy only when ``copy`` (masking writes into it)."""
    if isinstance(scores, torch.Tensor):
        dtype = (torch.promote_types(scores.dtype, torch.float32)
                 if scores.is_floating_point() else torch.float64)
        return scores.to(dtype=dtype, copy=copy)
    dtype = np.result_type(scores.dtype, np.float32)
    return np.array(scores, dtype=dtype) if copy else np.asarray(scores, dtype=dtype)


def target_ranks(
    scores: Scores,
    targets: np.ndarray,
    exclude: Sequence[np.ndarray] | None = None,
    excluded_target: Literal["ranked", "miss"] = "ranked",
) -> np.ndarray:
    """Rank of each user's target among all items: scores (B, N), targets (B,) -> (B,) int64.

    ``scores`` may be a numpy array or a torch tensor (never modified); an accelerator tensor
    is ranked where it lives, a CPU one through numpy, whose comparisons and reductions are
    several times faster than torch's on CPU. ``exclude[b]`` holds item ids to mask for user
    b (their history: items a recommender would never show again; ids outside [0, N), e.g. the
    padding id N, are ignored); masked items get score -inf. When the target itself is in
    ``exclude``:

    - ``"ranked"`` (default): it is not masked, and ranked on its score: a user who
      re-consumes an item still gets credit for predicting it;
    - ``"miss"``: rank ``MISS``, as in serving, where consumed items are blocked and so never
      shown (``models.evaluate.offline`` measures the same).

    rank = #{items with score > target's} + #{other items with score == target's}: ties count
    against the model, so a constant scorer gets rank N - 1 - |masked| (no free hits), and
    masked items (-inf) only count against a target whose own score is -inf.
    A NaN target score gets the worst rank: N - 1 ("ranked") or ``MISS`` ("miss").
    """
    if isinstance(scores, torch.Tensor) and scores.device.type == "cpu":
        scores = scores.detach().numpy()  # zero-copy view
    scores = scores if isinstance(scores, torch.Tensor) else np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (B, N), got {tuple(scores.shape)}")
    b, n = scores.shape
    t = np.asarray(targets, dtype=np.int64).reshape(-1)  # (B,)
    if len(t) != b:
        raise ValueError(f"{b} score rows but {len(t)} targets")
    if np.any((t < 0) | (t >= n)):
        raise ValueError("targets must be item ids in [0, N)")
    if excluded_target not in ("ranked", "miss"):
        raise ValueError(f"excluded_target must be 'ranked' or 'miss', got {excluded_target!r}")
    if exclude is not None and len(exclude) != b:
        raise ValueError(f"{b} score rows but {len(exclude)} exclude lists")

    # From here on one code path: numpy arrays and torch tensors index and compare alike;
    # only index arrays have to move to the scores' device.
    device = scores.device if isinstance(scores, torch.Tensor) else None

    def put(idx: np.ndarray) -> np.ndarray | torch.Tensor:
        return idx if device is None else torch.from_numpy(idx).to(device)

    rows = np.arange(b)
    s = _as_float(scores, copy=exclude is not None)
    target_score = s[put(rows), put(t)][:, None]  # (B, 1) a copy (advanced indexing)
    target_excluded = np.zeros(b, dtype=bool)  # (B,)
    if exclude is not None:
        cols = [np.asarray(items, dtype=np.int64).reshape(-1) for items in exclude]
        row = np.repeat(rows, [len(c) for c in cols])  # (E,) one entry per excluded id
        col = np.concatenate(cols) if cols else np.zeros(0, np.int64)  # (E,)
        keep = (col >= 0) & (col < n)
        row, col = row[keep], col[keep]
        target_excluded[row[col == t[row]]] = True
        s[put(row), put(col)] = float("-inf")
        s[put(rows), put(t)] = target_score[:, 0]  # ranked on its own score either way
    # (s == ts) counts the target itself once (NaN never equals itself: overridden below).
    ranks = (s > target_score).sum(1) + (s == target_score).sum(1) - 1  # (B,)
    is_nan = target_score[:, 0] != target_score[:, 0]  # (B,)
    if isinstance(ranks, torch.Tensor):
        ranks, is_nan = ranks.cpu().numpy(), is_nan.cpu().numpy()
    ranks = ranks.astype(np.int64)
    if excluded_target == "miss":
        ranks[is_nan | target_excluded] = MISS
    else:
        ranks[is_nan] = n - 1
    return ranks


def summarize(ranks: np.ndarray, ks: Sequence[int] = (10, 50)) -> dict[str, float]:
    """Mean HR@k and NDCG@k over users, e.g. {"HR@10", "NDCG@10", "HR@50", "NDCG@50"}.

    With no users every metric is 0.0 (not NaN, so the dict stays JSON-serialisable)."""
    r = np.asarray(ranks).reshape(-1)
    out: dict[str, float] = {}
    for k in ks:
        out[f"HR@{k}"] = float(hit_rate(r, k).mean()) if len(r) else 0.0
        out[f"NDCG@{k}"] = float(ndcg(r, k).mean()) if len(r) else 0.0
    return out


class Score(tuple):
    """(NDCG@k, HR@k), ordered by their sum, then NDCG@k: the plan fit's objective
    (``models/evaluate/fusion_fit.py``). The paths are judged on both
    metrics, and an NDCG-first order let the fit trade HR away for nothing: on Beauty's CPU
    default it took a plan 0.00004 higher in validation NDCG@10 and 0.0034 (2.6%) lower in
    HR@10. Per user the sum is 1 + 1 / log2(rank + 2) for a hit in the top k, else 0."""

    def _key(self) -> tuple[float, float]:
        return self[0] + self[1], self[0]

    def __lt__(self, other: tuple) -> bool:
        return self._key() < Score._key(other)

    def __gt__(self, other: tuple) -> bool:
        return self._key() > Score._key(other)

    def __le__(self, other: tuple) -> bool:
        return self._key() <= Score._key(other)

    def __ge__(self, other: tuple) -> bool:
        return self._key() >= Score._key(other)


def objective(ranks: np.ndarray, k: int = 10) -> Score:
    """(U,) 0-based target ranks -> their mean (NDCG@k, HR@k), ordered as ``Score``."""
    return Score((float(ndcg(ranks, k).mean()), float(hit_rate(ranks, k).mean())))


def significant_gain(new: np.ndarray, base: np.ndarray, min_gain: float, z: float = 2.0,
                     k: int = 10) -> bool:
    """Do ranks ``new`` (U,) beat ``base`` (U,) on mean NDCG@k + HR@k by at least ``min_gain``
    (relative) and by ``z`` paired standard errors of the per-user difference? A later stage
    (ranker, rerank) costs latency on every request; a gain smaller than its own noise on a
    thousand users does not carry over to other users."""
    # Per user NDCG@k + HR@k, the fit's objective (``Score``).
    a, b = ndcg(new, k) + hit_rate(new, k), ndcg(base, k) + hit_rate(base, k)
    d = a - b  # (U,)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    gain = float(d.mean()) if len(d) else 0.0
    return gain > 0 and gain >= float(b.mean()) * min_gain and gain >= z * se
