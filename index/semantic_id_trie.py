"""The prefix trie over a set of semantic IDs, kept as flat numpy group arrays.

Rows are the IDs sorted lexicographically (``SemanticIds.sorted_ids``). At level p the distinct
length-(p+1) prefixes are contiguous row blocks ("groups", numbered in sorted order), and the
children of a level-(p-1) group are a contiguous range of level-p groups whose tokens ascend.
Constrained beam search (TIGER's decoder) walks these arrays for a whole batch of beams at
once; ``group_of`` / ``valid_next`` / ``next_mask`` answer single prefix queries from the
same arrays. Build it through ``SemanticIds.trie`` (cached per SemanticIds), not directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class SemanticIdTrie:
    """Per level p (0..T-1), over the G_p groups = distinct length-(p+1) prefixes, in order:

    - ``start[p]`` (G_p,) first sorted row of each group, ``size[p]`` (G_p,) its rows;
    - ``tok[p]`` (G_p,) the group's token at position p;
    - ``row_group[p]`` (N,) the level-p group of each sorted row;
    - ``child_lo[p]`` / ``child_hi[p]`` (G_{p-1},) the [lo, hi) range of level-p groups under
      each level-(p-1) group (G_{-1} = 1: one root group holding every row).

    Plus ``item_of_row`` (N,) sorted row -> item and ``row_of_item`` (N,) its inverse. A
    level-(T-1) group is one full ID, i.e. one item."""

    def __init__(self, sorted_ids: np.ndarray, order: np.ndarray, radix: np.ndarray) -> None:
        """sorted_ids (N, T) int64 unique rows in lexicographic order; order (N,) sorted row ->
        item; radix (T,) tokens possible at each position (default vocab of ``next_mask``)."""
        s = np.asarray(sorted_ids, dtype=np.int64)
        n, t = s.shape
        self.n, self.length = n, t
        self.radix = np.asarray(radix, dtype=np.int64)
        self.item_of_row = np.asarray(order, dtype=np.int64)
        self.row_of_item = np.empty(n, dtype=np.int64)
        self.row_of_item[self.item_of_row] = np.arange(n)
        self.start: list[np.ndarray] = []
        self.size: list[np.ndarray] = []
        self.tok: list[np.ndarray] = []
        self.row_group: list[np.ndarray] = []
        self.child_lo: list[np.ndarray] = []
        self.child_hi: list[np.ndarray] = []
        new = np.zeros(n, dtype=bool)  # (N,) row starts a group at the current level
        new[:1] = True
        parent_group = np.zeros(n, dtype=np.int64)  # the root holds every row
        n_parents = 1
        for p in range(t):
            if n > 1:
                new[1:] |= s[1:, p] != s[:-1, p]  # a level-p group starts where any token moves
            start = np.flatnonzero(new)
            self.start.append(start)
            self.size.append(np.diff(np.append(start, n)))
            self.tok.append(s[start, p])
            self.row_group.append(np.cumsum(new) - 1)
            parent = parent_group[start]  # (G_p,) ascending
            groups = np.arange(n_parents)
            self.child_lo.append(np.searchsorted(parent, groups, side="left"))
            self.child_hi.append(np.searchsorted(parent, groups, side="right"))
            parent_group, n_parents = self.row_group[-1], len(start)

    def n_groups(self, level: int) -> int:
        """G_level: distinct length-(level+1) prefixes."""
        return len(self.start[level])

    def group_of(self, prefix: Sequence[int]) -> int:
        """The group of ``prefix`` at level len(prefix)-1 (0, the root, for the empty prefix),
        or -1 when no ID starts with it (nothing does in an empty set).
        O(len(prefix) * log radix)."""
        if len(prefix) > self.length or self.n == 0:
            return -1
        g = 0
        for p, token in enumerate(prefix):
            lo, hi = int(self.child_lo[p][g]), int(self.child_hi[p][g])
            # Children's tokens ascend inside [lo, hi): binary search for this token.
            at = lo + int(np.searchsorted(self.tok[p][lo:hi], int(token)))
            if at >= hi or self.tok[p][at] != int(token):
                return -1
            g = at
        return g

    def is_prefix(self, prefix: Sequence[int]) -> bool:
        """Whether some ID starts with ``prefix`` (the empty prefix and full IDs included)."""
        return self.group_of(prefix) >= 0

    def valid_next(self, prefix: Sequence[int]) -> np.ndarray:
        """Sorted (M,) int64 tokens that can follow ``prefix``; empty for a full ID or a prefix
        no ID has."""
        p = len(prefix)
        g = self.group_of(prefix) if p < self.length else -1
        if g < 0:
            return np.zeros(0, dtype=np.int64)
        return self.tok[p][self.child_lo[p][g]:self.child_hi[p][g]].copy()

    def next_mask(self, prefix: Sequence[int], vocab: int | None = None) -> np.ndarray:
        """(vocab,) bool mask of the allowed next tokens (vocab defaults to that position's
        radix), e.g. to add -inf to disallowed logits."""
        size = int(self.radix[len(prefix)]) if vocab is None else vocab
        mask = np.zeros(size, dtype=bool)
        nxt = self.valid_next(prefix)
        mask[nxt[nxt < size]] = True
        return mask
