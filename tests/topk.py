"""Tie-aware checks of a top-k list against reference scores (importable as ``tests.topk``).

Two float computations of the same scores (faiss vs numpy, a batched vs a one-row forward
pass, another CPU's rounding) agree only up to rounding, so items whose scores are that close
may come back in either order, and either one may take the last slot. These checks accept
exactly that freedom and nothing more."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def assert_top_k(got: Sequence[int] | np.ndarray, ref: np.ndarray, k: int, tol: float,
                 blocked: Iterable[int] = ()) -> None:
    """``got`` is a best-first top-``k`` of ``ref`` over the ids not in ``blocked``.

    ref: (N,) reference score of every id. Position i of ``got`` must hold an item whose
    reference score is the i-th best within ``tol``: the list has min(k, #allowed) distinct,
    allowed items; an item that beats the k-th best score by more than ``tol`` is in it; two
    items whose scores differ by more than ``tol`` are in reference order."""
    got = np.asarray(got, dtype=np.int64).reshape(-1)
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    allowed = np.ones(len(ref), dtype=bool)
    ban = np.fromiter(blocked, dtype=np.int64)
    allowed[ban[(ban >= 0) & (ban < len(ref))]] = False
    assert len(set(got.tolist())) == len(got), "duplicate items"
    assert np.all((got >= 0) & (got < len(ref))), got
    assert allowed[got].all(), f"blocked items returned: {got[~allowed[got]].tolist()}"
    want = -np.sort(-ref[allowed])[:k]  # the k best allowed scores, best first
    assert len(got) == len(want), (len(got), len(want))
    np.testing.assert_allclose(ref[got], want, rtol=0, atol=tol)


def score_tol(ref: np.ndarray, rel: float = 1e-5) -> float:
    """Slack for two float32 computations of the same scores: ``rel`` times the largest finite
    magnitude (at least 1). Float32 rounding of a short dot product is ~1e-7 relative, so this
    covers it with room to spare while staying small next to the gaps between scores."""
    finite = np.abs(np.asarray(ref, dtype=np.float64))
    finite = finite[np.isfinite(finite)]
    return rel * max(1.0, float(finite.max()) if len(finite) else 1.0)
