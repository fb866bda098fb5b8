"""Item-based collaborative filtering with inverse user frequency (IUF) weighting.

    sim(i, j) = sum_{u in U(i) ∩ U(j)} 1 / log(1 + |N(u)|)  /  sqrt(|U(i)| |U(j)|)

N(u): the distinct items of user u; U(i): the users who interacted with i. Heavy users, who
co-occur with everything, count less (Breese et al. 1998; the "ItemCF-IUF" of Xiang Liang's
recommender-systems book). Each item keeps its top-N neighbours. No file I/O here:
``state_dict`` returns plain arrays for safetensors.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

# Dense cells per block of rows when forming the co-occurrence matrix: bounds memory to
# ~160 MB of float64 on big catalogs instead of materialising n_items^2.
_BLOCK_CELLS = 20_000_000


class ItemCF:
    """Fitted state: neighbors (n_items, top_n) int64, -1 padded, and sims (n_items, top_n)
    float32, 0 padded; each row sorted by descending similarity (ties: lower item id).

    ``recent`` and ``decay`` are the scoring defaults (see ``score_all``); they are part of the
    saved state so the served model scores exactly as the tuned one did."""

    def __init__(self, recent: int = 50, decay: float = 1.0) -> None:
        self.neighbors = np.zeros((0, 0), dtype=np.int64)
        self.sims = np.zeros((0, 0), dtype=np.float32)
        self.recent = int(recent)
        self.decay = float(decay)

    @property
    def n_items(self) -> int:
        return len(self.neighbors)

    def fit(self, sequences: list[np.ndarray], n_items: int, top_n: int = 100) -> ItemCF:
        """sequences[u]: (L_u,) item ids (repeats count once). Sparse products, block-wise."""
        if top_n <= 0:
            raise ValueError(f"top_n must be positive, got {top_n}")
        users = [np.unique(np.asarray(s, dtype=np.int64)) for s in sequences]
        users = [u for u in users if len(u)]
        cols = np.concatenate(users) if users else np.zeros(0, np.int64)
        if np.any((cols < 0) | (cols >= n_items)):
            raise ValueError(f"item ids must lie in [0, {n_items})")
        lens = np.array([len(u) for u in users], dtype=np.int64)
        rows = np.repeat(np.arange(len(users)), lens)
        # R: (n_users, n_items) binary; iuf: (n_users,) 1 / log(1 + |N(u)|).
        shape = (len(users), n_items)
        r = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=shape)
        iuf = 1.0 / np.log1p(lens.astype(np.float64))
        rw = sp.csr_matrix((iuf[rows], (rows, cols)), shape=shape)  # rows weighted by IUF
        rt = r.T.tocsr()  # (n_items, n_users)
        n_users_of = np.asarray(r.sum(axis=0)).ravel()  # (n_items,) |U(i)|
        inv_sqrt = np.where(n_users_of > 0, 1.0 / np.sqrt(np.maximum(n_users_of, 1)), 0.0)

        width = min(top_n, max(n_items - 1, 0))
        self.neighbors = np.full((n_items, top_n), -1, dtype=np.int64)
        self.sims = np.zeros((n_items, top_n), dtype=np.float32)
        block = max(1, _BLOCK_CELLS // max(n_items, 1))
        for start in range(0, n_items, block):
            stop = min(start + block, n_items)
            # (b, n_items) IUF-weighted co-occurrence of items start..stop with every item.
            co = (rt[start:stop] @ rw).toarray()
            co *= inv_sqrt[start:stop, None] * inv_sqrt[None, :]
            co[np.arange(stop - start), np.arange(start, stop)] = 0.0  # no self-similarity
            if width:
                self._keep_top(co, start, width)
        return self

    def _keep_top(self, co: np.ndarray, start: int, width: int) -> None:
        """Write the ``width`` best positive entries of each row of ``co`` (b, n_items)."""
        n = co.shape[1]
        if width < n:
            cand = np.argpartition(-co, width - 1, axis=1)[:, :width]  # (b, width) unordered
        else:
            cand = np.broadcast_to(np.arange(n), co.shape).copy()
        vals = np.take_along_axis(co, cand, axis=1)
        # Sort each row by (-sim, id): lexsort along axis 1, primary key last.
        order = np.lexsort((cand, -vals))
        cand = np.take_along_axis(cand, order, axis=1)[:, :width]
        vals = np.take_along_axis(vals, order, axis=1)[:, :width]
        rows = slice(start, start + len(co))
        self.neighbors[rows, :width] = np.where(vals > 0, cand, -1)
        self.sims[rows, :width] = np.where(vals > 0, vals, 0.0).astype(np.float32)

    def _history_weights(
        self, history: np.ndarray, recent: int, decay: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Distinct items among the last ``recent`` of ``history`` (oldest first) and their
        weights decay**age, age 0 for the newest; a repeated item counts once, at its newest."""
        h = np.asarray(history, dtype=np.int64).reshape(-1)
        h = h[(h >= 0) & (h < self.n_items)]  # drops padding ids such as n_items
        h = h[-recent:] if recent > 0 else h[:0]
        # In reversed order position = age, and return_index gives each item's newest one.
        items, age = np.unique(h[::-1], return_index=True)
        return items, float(decay) ** age.astype(np.float64)

    def score_all(
        self, history: np.ndarray, recent: int | None = None, decay: float | None = None
    ) -> np.ndarray:
        """(n_items,) float32: score(j) = sum_i w_i sim(i, j) over the distinct items i of the
        last ``recent`` history items, w_i = decay**age (1.0 = the plain sum; e.g. 0.9
        favours what the user did last). Nothing is excluded: mask history in the metric.
        ``recent`` / ``decay`` default to the model's own."""
        recent = self.recent if recent is None else recent
        decay = self.decay if decay is None else decay
        items, w = self._history_weights(history, recent, decay)
        nb = self.neighbors[items]  # (h, top_n)
        contrib = self.sims[items].astype(np.float64) * w[:, None]
        valid = nb >= 0
        out = np.bincount(nb[valid], weights=contrib[valid], minlength=self.n_items)
        return out.astype(np.float32)

    def recall(
        self,
        history: np.ndarray,
        k: int,
        exclude: set[int] | frozenset[int] = frozenset(),
        recent: int | None = None,
        decay: float | None = None,
    ) -> list[tuple[int, float]]:
        """Up to k (item, score) pairs with positive score, best first (ties: lower id),
        skipping ``exclude``. Scoring as in ``score_all``."""
        if k <= 0 or self.n_items == 0:
            return []
        scores = self.score_all(history, recent, decay).astype(np.float64)
        if exclude:
            ban = np.fromiter(exclude, dtype=np.int64, count=len(exclude))
            ban = ban[(ban >= 0) & (ban < self.n_items)]
            scores[ban] = 0.0
        cand = np.flatnonzero(scores > 0)  # at most recent * top_n items, so sort them all
        order = np.lexsort((cand, -scores[cand]))[:k]
        return [(int(cand[i]), float(scores[cand[i]])) for i in order]

    def state_dict(self) -> dict[str, np.ndarray]:
        """Plain numpy arrays (safetensors-ready); ``from_state`` rebuilds the model."""
        return {"neighbors": self.neighbors.copy(), "sims": self.sims.copy(),
                "recent": np.array(self.recent, dtype=np.int64),
                "decay": np.array(self.decay, dtype=np.float64)}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> ItemCF:
        # States written before recent/decay were saved fall back to the plain-sum defaults.
        obj = cls(int(state["recent"]) if "recent" in state else 50,
                  float(state["decay"]) if "decay" in state else 1.0)
        obj.neighbors = np.asarray(state["neighbors"], dtype=np.int64).copy()
        obj.sims = np.asarray(state["sims"], dtype=np.float32).copy()
        if obj.neighbors.shape != obj.sims.shape:
            raise ValueError("neighbors and sims must have the same shape")
        return obj
