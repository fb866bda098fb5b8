"""Diversity re-ranking of a scored candidate list: MMR and greedy DPP MAP inference.

Both take relevance ``rel`` (n,), item embeddings ``emb`` (n, d) whose cosine similarity is
the redundancy measure, a list length ``k`` and ``diversity`` in [0, 1] (0 = pure relevance),
and return positions into ``rel`` (a list of min(k, n) distinct ints, in pick order).

Relevance is min-max normalised to [0, 1] first in both, so ``diversity`` means the same
thing whatever scale the ranking model's scores have (logits, probabilities, dot products).
Pure numpy: this runs on the serving path after the ranker.
"""

from __future__ import annotations

import numpy as np

# Cap on the DPP quality exponent alpha: diversity -> 0 sends alpha to infinity. With
# relevance in [0, 1], q_i = exp(alpha * (r_i - 1)) then spans [e^-50, 1], whose squares
# (~1e-44) are still normal float64, so the Cholesky updates stay exact in relative terms.
_MAX_ALPHA = 50.0
_JITTER = 1e-6  # added to the similarity diagonal so duplicates keep a tiny positive gain


def _check(rel: np.ndarray, emb: np.ndarray, k: int, diversity: float) -> tuple[np.ndarray, ...]:
    r = np.asarray(rel, dtype=np.float64).reshape(-1)
    e = np.asarray(emb, dtype=np.float64)
    if e.ndim != 2 or len(e) != len(r):
        raise ValueError(f"emb must be (n, d) with n = len(rel) = {len(r)}, got {e.shape}")
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity must be in [0, 1], got {diversity}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return r, e


def _prepare(rel: np.ndarray, emb: np.ndarray, k: int,
             diversity: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Validated inputs for a greedy selection: (min-max relevance (n,), unit embeddings
    (n, d), k capped at n). With k = 0 the arrays are returned unscaled (nothing is picked)."""
    r, e = _check(rel, emb, k, diversity)
    k = min(k, len(r))
    if k == 0:
        return r, e, 0
    return _minmax(r), _unit(e), k


def _minmax(r: np.ndarray) -> np.ndarray:
    """Scale to [0, 1]; a constant (or single) relevance vector maps to all zeros."""
    lo, hi = float(r.min()), float(r.max())
    return (r - lo) / (hi - lo) if hi > lo else np.zeros_like(r)


def _unit(e: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm; zero rows stay zero (similar to nothing)."""
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    return e / np.where(norms > 0, norms, 1.0)


def cosine_similarity(emb: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, n) cosine similarity in [-1, 1]."""
    u = _unit(np.asarray(emb, dtype=np.float64))
    return np.clip(u @ u.T, -1.0, 1.0)


def mmr(rel: np.ndarray, emb: np.ndarray, k: int, diversity: float) -> list[int]:
    """Maximal Marginal Relevance (Carbonell & Goldstein, 1998).

    The first pick is argmax rel; each later pick is
    argmax_i (1 - diversity) * r_i - diversity * max_{j in S} cos(i, j)
    over unpicked i, with r the min-max-normalised relevance. Ties go to the lower position.
    O(k n d): the similarity to the latest pick updates a running max.
    """
    r, u, k = _prepare(rel, emb, k, diversity)
    if k == 0:
        return []
    n = len(r)
    picked: list[int] = []
    taken = np.zeros(n, dtype=bool)
    max_sim = np.full(n, -np.inf)  # (n,) max similarity to the selection so far
    for step in range(k):
        # First pick: plain relevance (max over an empty selection is undefined).
        score = r.copy() if step == 0 else (1.0 - diversity) * r - diversity * max_sim
        score[taken] = -np.inf
        j = int(np.argmax(score))
        picked.append(j)
        taken[j] = True
        max_sim = np.maximum(max_sim, np.clip(u @ u[j], -1.0, 1.0))
    return picked


def dpp_kernel(rel: np.ndarray, emb: np.ndarray, diversity: float) -> np.ndarray:
    """The (n, n) kernel L = Diag(q) S Diag(q) that ``dpp`` maximises log det over.

    S = (1 + cos) / 2 + jitter * I, which is PSD (half the all-ones matrix plus half a Gram
    matrix) with entries in [0, 1]: opposite items count as most dissimilar, and clipping
    negative cosines (which breaks PSD) is not needed. q_i = exp(alpha * (r_i - 1)), r the
    min-max-normalised relevance and alpha = theta / (2 (1 - theta)), theta = 1 - diversity,
    capped at 50.
    (The paper's q_i = exp(alpha r_i); dividing every q_i by the same e^alpha scales det L_Y
    by a constant for all |Y| = t, so the greedy picks are unchanged and nothing overflows.)
    The greedy stops when a marginal gain is no longer positive (see ``dpp``).
    Built in full only for tests and inspection; ``dpp`` computes one row per step.
    """
    r, e = _check(rel, emb, 0, diversity)
    q = _quality(_minmax(r), diversity)
    s = 0.5 * (1.0 + cosine_similarity(e)) + _JITTER * np.eye(len(r))
    return q[:, None] * s * q[None, :]


def _quality(r: np.ndarray, diversity: float) -> np.ndarray:
    theta = 1.0 - diversity
    alpha = _MAX_ALPHA if theta >= 1.0 else min(theta / (2.0 * (1.0 - theta)), _MAX_ALPHA)
    return np.exp(alpha * (r - 1.0))


def dpp(
    rel: np.ndarray, emb: np.ndarray, k: int, diversity: float, eps: float = 1e-10
) -> list[int]:
    """Greedy MAP inference for a DPP with kernel ``dpp_kernel(rel, emb, diversity)``.

    Chen, Zhang & Zhou, "Fast Greedy MAP Inference for Determinantal Point Process to Improve
    Recommendation Diversity", NeurIPS 2018, Algorithm 1: each unpicked item i keeps c_i (the
    row of the incremental Cholesky factor, one entry per pick) and d_i^2 = det(L_{S+i}) /
    det(L_S), its marginal gain; a pick j updates every i with
        e_i = (L_ji - <c_j, c_i>) / d_j,   c_i <- [c_i, e_i],   d_i^2 <- d_i^2 - e_i^2,
    so the whole run is O(k^2 n + k n d) with no determinant ever formed. Each step picks
    argmax d_i^2 (ties: higher relevance, then lower position). When the best d_i^2 drops
    below ``eps`` (remaining items are near-duplicates of the selection, negligible in quality,
    or rounding made it non-positive) the greedy stops and the
    remaining slots are filled by descending relevance, so min(k, n) items always come back.

    Hand-written: no maintained Python library offers fast greedy DPP MAP inference.
    """
    r, u, k = _prepare(rel, emb, k, diversity)
    if k == 0:
        return []
    n = len(r)
    q = _quality(r, diversity)
    c = np.zeros((k, n))  # c[t, i]: Cholesky entry of item i for the t-th pick
    d2 = q * q * (1.0 + _JITTER)  # (n,) L_ii: the gain of each item on an empty selection
    taken = np.zeros(n, dtype=bool)
    picked: list[int] = []
    while len(picked) < k:
        gain = np.where(taken, -np.inf, d2)
        best = gain.max()
        if not best >= eps:  # also catches NaN
            break
        ties = np.flatnonzero(gain == best)
        j = int(ties[np.argmax(r[ties])]) if len(ties) > 1 else int(ties[0])
        t = len(picked)
        picked.append(j)
        taken[j] = True
        if len(picked) == k:
            break
        # L_j. = q_j * S_j. * q, computed for this row only.
        s_j = 0.5 * (1.0 + np.clip(u @ u[j], -1.0, 1.0))
        s_j[j] += _JITTER
        l_j = q[j] * s_j * q
        e_new = (l_j - c[:t, j] @ c[:t]) / np.sqrt(d2[j])
        c[t] = e_new
        d2 = d2 - e_new * e_new
    if len(picked) < k:
        # Fill by descending relevance (stable: lower position first on ties).
        rest = [int(i) for i in np.argsort(-r, kind="stable") if not taken[i]]
        picked.extend(rest[: k - len(picked)])
    return picked


def pick_scores(method: str, rel: np.ndarray, emb: np.ndarray, picked: list[int],
                diversity: float) -> np.ndarray:
    """The reranker's own score of each pick, in pick order: the greedy objective's marginal
    gain when the item was picked. MMR: (1 - diversity) r_i - diversity max_{j picked before}
    cos(i, j) (the first pick: r_i); DPP: log det(L_{S+i}) - log det(L_S), from the Cholesky
    factor of the picked items' kernel. Greedy gains never increase (MMR's objective and the
    DPP's log det are diminishing in the selection), so the scores agree with the order;
    a DPP early stop's relevance fill-ins are capped by the score before them. Relevance is
    min-max normalised over all of ``rel``, as in the selection. -> (len(picked),) float64."""
    r, e = _check(rel, emb, len(picked), diversity)
    if not picked:
        return np.zeros(0)
    r, u, p = _minmax(r), _unit(e), np.asarray(picked)
    cos = np.clip(u[p] @ u[p].T, -1.0, 1.0)  # (m, m)
    if method == "mmr":
        prior = np.where(np.tri(len(p), k=-1, dtype=bool), cos, -np.inf).max(axis=1)
        gains = np.where(np.arange(len(p)) == 0, r[p],
                         (1.0 - diversity) * r[p] - diversity * prior)
    elif method == "dpp":
        q = _quality(r, diversity)[p]
        kernel = q[:, None] * (0.5 * (1.0 + cos) + _JITTER * np.eye(len(p))) * q[None, :]
        # (m, m) PD by construction; rounding can still break a near-duplicate's pivot.
        try:
            gains = 2.0 * np.log(np.diag(np.linalg.cholesky(kernel)))
        except np.linalg.LinAlgError:
            gains = np.log(np.maximum(q * q, 1e-300))
    else:
        raise ValueError(f"unknown rerank method {method!r}")
    return np.minimum.accumulate(gains)
