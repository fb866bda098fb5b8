"""Rank fusion: a path's final order from its recall sources' own orders and its ranker's.

Each candidate scores ``sum_s w_s / (c + rank_s)`` over the lists it appears in (weighted
reciprocal-rank fusion, Cormack et al. 2009), where the ranker's list is its order of the whole
candidate union. Ranks, not raw scores, because the sources' scores live on unrelated scales
(cosines, co-occurrence counts, log-probabilities, logits).

The weights, ``c``, the active sources with their quotas and the rerank diversity form a path's
``FusionPlan``, fitted on the validation split at build time (``models/evaluate/fusion_fit.py``)
and stored in ``fusion.json``. The fit starts from the best single source alone (weight 1,
every other weight 0), which reproduces that source's own top ``k``; so on validation a fused
path is never worse than the best model in the box, and a ranker that reorders good candidates
into a worse list gets weight 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

RANKER = "ranker"  # the weight key of the path's ranker


@dataclass(frozen=True)
class FusionPlan:
    """One path's fitted fusion. ``sources``: recall source -> quota, in priority order (the
    candidate union's order, which breaks score ties); ``weights``: source name or ``RANKER``
    -> weight; ``diversity``: the reranker's, chosen on validation."""

    sources: dict[str, int]
    weights: dict[str, float]
    c: float = 20.0
    diversity: float = 0.0
    validation: dict[str, Any] = field(default_factory=dict)  # what the fit measured

    @property
    def uses_ranker(self) -> bool:
        return self.weights.get(RANKER, 0.0) > 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FusionPlan:
        return cls(sources={str(k): int(v) for k, v in d["sources"].items()},
                   weights={str(k): float(v) for k, v in d["weights"].items()},
                   c=float(d.get("c", 20.0)), diversity=float(d.get("diversity", 0.0)),
                   validation=dict(d.get("validation", {})))


def union(lists: Sequence[np.ndarray]) -> np.ndarray:
    """Distinct ids of ``lists`` in first-appearance order (a source earlier in the plan wins)."""
    if not lists:
        return np.empty(0, np.int64)
    merged = np.concatenate(lists).astype(np.int64)
    _, first = np.unique(merged, return_index=True)
    return merged[np.sort(first)]


def reciprocal_ranks(ids: np.ndarray, ranked: np.ndarray, c: float) -> np.ndarray:
    """(C,) ``1 / (c + rank)`` of each of ``ids`` in the list ``ranked`` (rank 1 = first),
    0 for ids the list lacks."""
    out = np.zeros(len(ids), np.float64)
    if len(ranked) == 0 or len(ids) == 0:
        return out
    order = np.argsort(ids, kind="stable")
    pos = np.searchsorted(ids[order], ranked)
    pos = np.minimum(pos, len(ids) - 1)
    found = ids[order][pos] == ranked
    out[order[pos[found]]] = 1.0 / (c + (1 + np.flatnonzero(found)))
    return out


def best_first(ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Positions of ``ids`` by ``scores``, higher first, ties by the smaller item id: an order
    that does not depend on how the candidates were gathered, so the fit reproduces it."""
    return np.lexsort((ids, -np.asarray(scores, np.float64)))


def ranker_order(ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(C,) 1-based rank of each candidate by the ranker's ``scores`` (``best_first``)."""
    rank = np.empty(len(scores), np.int64)
    rank[best_first(ids, scores)] = np.arange(1, len(scores) + 1)
    return rank


def fuse(ids: np.ndarray, lists: Mapping[str, np.ndarray], ranker_scores: np.ndarray | None,
         weights: Mapping[str, float], c: float) -> np.ndarray:
    """ids (C,) the candidate union; lists: source -> its ranked ids; ranker_scores (C,) or
    None -> fused scores (C,) float64. A source without a weight gets weight 1 (an arm's own
    ``recall`` may name sources the plan never saw)."""
    # Summed source by source in list order, each term w * (1 / (c + rank)), exactly as the
    # fit sums its matrix columns (fusion_fit.fused_scores): the same floats, the same order.
    score = np.zeros(len(ids), np.float64)
    for name, ranked in lists.items():
        w = weights.get(name, 1.0)
        if w > 0:
            score += w * reciprocal_ranks(ids, ranked, c)
    w = weights.get(RANKER, 0.0)
    if ranker_scores is not None and w > 0:
        score += w * (1.0 / (c + ranker_order(ids, ranker_scores)))
    return score
