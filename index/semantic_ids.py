"""Semantic IDs: each item's RQ-VAE code tuple plus one disambiguation token.

``SemanticIds.from_codes(codes)`` takes (N, L) codes and appends an (L+1)-th token numbering
the items that share the same L codes (0, 1, 2, ... in item order), as in TIGER, so every item
has a unique (L+1)-tuple. The structure keeps:

- ``ids`` (N, L+1) int64: item -> its tuple;
- the tuples sorted lexicographically (``sorted_ids``), each packed into one int64 key (mixed
  radix, radix of position j = max token at j + 1), with ``order`` mapping sorted row -> item.
  Full-ID lookups (``items_of``) are one ``searchsorted`` on the keys.

Prefix queries for constrained decoding go through ``trie`` (``SemanticIdTrie``, group arrays
over the sorted table), built on first use and cached. Only ``ids`` is persisted
(``state_dict``/``from_state``); everything else is rebuilt from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from index.semantic_id_trie import SemanticIdTrie

_EMPTY = np.empty(0, dtype=np.int64)


def spread_collisions(codes: np.ndarray, last_dist: np.ndarray) -> np.ndarray:
    """Collision handling before the disambiguation token (in the spirit of LC-Rec / LETTER):
    codes (N, L), last_dist (N, K) each item's distance to every last-level code -> new codes
    (N, L) where, within every group of items sharing the first L-1 codes, items that shared
    a full tuple move to distinct last-level codes. Per such group the last codes are an
    optimal assignment (scipy ``linear_sum_assignment``, least total distance) of its items to
    the codes that no collision-free item of the group holds; a group with more items than
    codes keeps its overflow on nearest codes (the 4th token separates those). Items that
    collided with nothing keep their codes."""
    from scipy.optimize import linear_sum_assignment

    codes = np.array(codes, dtype=np.int64)  # a copy
    n, k = len(codes), last_dist.shape[1]
    if n < 2:
        return codes
    _, full_inv, full_cnt = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    collided = full_cnt[full_inv.reshape(-1)] > 1  # (N,)
    _, pre_inv = np.unique(codes[:, :-1], axis=0, return_inverse=True)
    pre_inv = pre_inv.reshape(-1)  # (N,) prefix group of each item
    for g in np.unique(pre_inv[collided]):
        members = np.flatnonzero(pre_inv == g)
        movers = members[collided[members]]
        free = np.setdiff1d(np.arange(k), codes[members[~collided[members]], -1])
        if len(free) == 0:
            continue
        cost = last_dist[np.ix_(movers, free)]  # (m, f)
        rows, cols = linear_sum_assignment(cost)  # min(m, f) distinct codes
        codes[movers[rows], -1] = free[cols]
        rest = np.setdiff1d(np.arange(len(movers)), rows)  # overflow: nearest code
        codes[movers[rest], -1] = free[np.argmin(cost[rest], axis=1)]
    return codes


def append_dedup_token(codes: np.ndarray) -> np.ndarray:
    """codes (N, L) -> (N, L+1): the last column counts earlier items with the same codes."""
    codes = np.asarray(codes, dtype=np.int64)
    n = len(codes)
    order = np.lexsort(codes.T[::-1]) if n else _EMPTY  # stable: ties keep item order
    s = codes[order]  # (N, L) sorted
    new_group = np.ones(n, dtype=bool)
    if n > 1:
        new_group[1:] = np.any(s[1:] != s[:-1], axis=1)
    starts = np.flatnonzero(new_group)  # first sorted row of each group
    group_of_row = np.cumsum(new_group) - 1  # (N,)
    rank = np.arange(n) - starts[group_of_row]  # position inside the group
    last = np.empty(n, dtype=np.int64)
    last[order] = rank
    return np.concatenate([codes, last[:, None]], axis=1)


class SemanticIds:
    """Item <-> semantic-ID tuple; ``trie`` answers prefix queries for constrained generation.

    Treat an instance as immutable: the cached ``trie`` is built from its arrays."""

    def __init__(self, ids: np.ndarray) -> None:
        """ids (N, T) int64, unique non-negative rows (use ``from_codes`` to build them)."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise ValueError(f"ids must be (N, T) with T >= 1, got shape {ids.shape}")
        if ids.size and ids.min() < 0:
            raise ValueError("semantic id tokens must be non-negative")
        self.ids = ids  # (N, T)
        n, t = ids.shape
        # radix[j] = tokens possible at position j; mult[j] = weight of position j in a key.
        self.radix = (ids.max(axis=0) + 1 if n else np.ones(t, np.int64)).astype(np.int64)
        if float(np.prod(self.radix.astype(np.float64))) >= 2.0**62:
            raise ValueError(f"token ranges {self.radix.tolist()} do not fit one int64 key")
        self.mult = np.ones(t, dtype=np.int64)
        for j in range(t - 2, -1, -1):
            self.mult[j] = self.mult[j + 1] * self.radix[j + 1]
        keys = ids @ self.mult  # (N,)
        self.order = np.argsort(keys, kind="stable")  # sorted row -> item
        self.keys = keys[self.order]  # (N,) ascending
        if n > 1 and np.any(self.keys[1:] == self.keys[:-1]):
            raise ValueError("semantic ids are not unique; build them with from_codes")
        self.sorted_ids = ids[self.order]  # (N, T)

    @classmethod
    def from_codes(cls, codes: np.ndarray) -> SemanticIds:
        """codes (N, L) from ``RQVAE.encode_codes`` -> unique (N, L+1) semantic IDs."""
        codes = np.asarray(codes)
        if codes.ndim != 2:
            raise ValueError(f"codes must be (N, L), got shape {codes.shape}")
        return cls(append_dedup_token(codes))

    # ---- sizes -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def length(self) -> int:
        """Tokens per ID (L+1)."""
        return int(self.ids.shape[1])

    # ---- item <-> tuple --------------------------------------------------------------------
    def tuple_of(self, item: int) -> tuple[int, ...]:
        """The semantic ID of dense item ``item``."""
        return tuple(int(v) for v in self.ids[item])

    def item_of(self, sid: Sequence[int]) -> int:
        """Dense item id of a full semantic ID, or -1 when no item has it."""
        if len(sid) != self.length:
            return -1
        return int(self.items_of(np.asarray(sid, dtype=np.int64)[None])[0])

    def items_of(self, sids: np.ndarray) -> np.ndarray:
        """sids (B, T) -> (B,) int64 dense item ids, -1 where invalid."""
        sids = np.asarray(sids, dtype=np.int64).reshape(-1, self.length)
        in_range = np.all((sids >= 0) & (sids < self.radix), axis=1)
        keys = np.where(in_range, sids @ self.mult, -1)
        pos = np.searchsorted(self.keys, keys)
        pos_c = np.minimum(pos, max(len(self.keys) - 1, 0))
        hit = in_range & (pos < len(self.keys))
        if len(self.keys):
            hit &= self.keys[pos_c] == keys
        out = np.full(len(sids), -1, dtype=np.int64)
        out[hit] = self.order[pos_c[hit]]
        return out

    def is_valid(self, sids: Sequence[int] | np.ndarray) -> bool | np.ndarray:
        """One full ID (T,) -> bool; a batch (B, T) -> (B,) bool."""
        arr = np.asarray(sids, dtype=np.int64)
        if arr.ndim == 1:
            return arr.shape[0] == self.length and bool(self.items_of(arr[None])[0] >= 0)
        return self.items_of(arr) >= 0

    # ---- prefix trie -----------------------------------------------------------------------
    @cached_property
    def trie(self) -> SemanticIdTrie:
        """The prefix trie over these IDs, built once per instance (O(N * T) numpy work)."""
        return SemanticIdTrie(self.sorted_ids, self.order, self.radix)

    # ---- persistence -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Plain arrays (safetensors-ready): everything else is rebuilt from them."""
        return {"ids": self.ids.copy()}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> SemanticIds:
        return cls(np.asarray(state["ids"]))

    def save(self, path: Path | str) -> None:
        import safetensors.numpy

        safetensors.numpy.save_file(self.state_dict(), str(path))

    @classmethod
    def load(cls, path: Path | str) -> SemanticIds:
        import safetensors.numpy

        return cls.from_state(safetensors.numpy.load_file(str(path)))
