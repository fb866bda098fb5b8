"""Recent-popularity recall: the cold-start fallback and a baseline for every report.

Items are ranked by interactions in the last ``window_days`` before the dataset's latest
timestamp (all-time counts when there are no timestamps), ties broken by all-time count, then
by lower item id. No file I/O here: ``state_dict`` returns plain arrays for safetensors.
"""

from __future__ import annotations

import numpy as np

_DAY = 86400.0


class Popularity:
    """Fitted state:
    window_counts (n_items,) int64: interactions inside the window (= counts without time);
    counts (n_items,) int64: all-time interactions;
    scores (n_items,) float32: (n_items - rank) / n_items, rank 0 the most popular, i.e.
        strictly decreasing along the tie-broken order, so full-catalog evaluation sees the
        same order as ``top`` and gets no ties (distinct in float32 up to 2^24 items).
    """

    def __init__(self) -> None:
        self.window_counts = np.zeros(0, dtype=np.int64)
        self.counts = np.zeros(0, dtype=np.int64)
        self.scores = np.zeros(0, dtype=np.float32)
        self.window_days = 0.0  # 0 = all-time
        self._order = np.zeros(0, dtype=np.int64)  # item ids, most popular first

    @property
    def n_items(self) -> int:
        return len(self.scores)

    def fit(
        self,
        sequences: list[np.ndarray],
        timestamps: list[np.ndarray] | None,
        n_items: int,
        window_days: float = 30.0,
    ) -> Popularity:
        """sequences[u]: (L_u,) item ids; timestamps[u]: (L_u,) unix seconds or None."""
        nonempty = [np.asarray(s, dtype=np.int64) for s in sequences if len(s)]
        items = np.concatenate(nonempty) if nonempty else np.zeros(0, np.int64)
        if np.any((items < 0) | (items >= n_items)):
            raise ValueError(f"item ids must lie in [0, {n_items})")
        self.counts = np.bincount(items, minlength=n_items).astype(np.int64)
        if timestamps is None:
            self.window_days = 0.0
            self.window_counts = self.counts.copy()
        else:
            ts_list = [
                np.asarray(t, dtype=np.float64)
                for s, t in zip(sequences, timestamps, strict=True)
                if len(s)
            ]
            ts = np.concatenate(ts_list) if ts_list else np.zeros(0)
            if len(ts) != len(items):
                raise ValueError("timestamps must align with sequences")
            self.window_days = float(window_days)
            latest = ts.max() if len(ts) else 0.0
            recent = ts >= latest - window_days * _DAY  # inclusive start, latest included
            self.window_counts = np.bincount(items[recent], minlength=n_items).astype(np.int64)
        self._set_order()
        return self

    def _set_order(self) -> None:
        n = len(self.counts)
        # lexsort: last key is primary -> window count desc, all-time desc, id asc.
        self._order = np.lexsort((np.arange(n), -self.counts, -self.window_counts))
        scores = np.empty(n, dtype=np.float32)
        scores[self._order] = (n - np.arange(n, dtype=np.float64)) / max(n, 1)
        self.scores = scores

    def top(
        self, k: int, exclude: set[int] | frozenset[int] = frozenset()
    ) -> list[tuple[int, float]]:
        """The k most popular items not in ``exclude``, as (item id, score), best first."""
        out: list[tuple[int, float]] = []
        if k <= 0:
            return out
        for item in self._order:
            i = int(item)
            if i in exclude:
                continue
            out.append((i, float(self.scores[i])))
            if len(out) == k:
                break
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        """Plain numpy arrays (safetensors-ready); ``from_state`` rebuilds the model."""
        return {
            "window_counts": self.window_counts.copy(),
            "counts": self.counts.copy(),
            "window_days": np.array([self.window_days], dtype=np.float64),
        }

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> Popularity:
        obj = cls()
        obj.window_counts = np.asarray(state["window_counts"], dtype=np.int64).copy()
        obj.counts = np.asarray(state["counts"], dtype=np.int64).copy()
        obj.window_days = float(np.asarray(state["window_days"]).reshape(-1)[0])
        obj._set_order()
        return obj
