"""TDM tree (Zhu et al., "Learning Tree-based Deep Model for Recommender Systems", KDD 2018):
a balanced ``b``-ary tree whose leaves are the items, and layer-wise beam search over it.

Construction is ``index/tdm_tree_build.py``'s ``build_tree``.

Numbering: breadth-first, so level ``l`` is the contiguous id range
``[level_start[l], level_start[l + 1])``, the root is node 0 at level 0, and a node's
children are consecutive ids. Balanced splits give every level-``l`` node floor(N / b^l) or
ceil(N / b^l) items, so leaves sit at level D = ceil(log_b N) or D - 1 (N not a power of b).
No padding nodes: beam search sends a leaf to the result pool as soon as it is scored,
whatever its level; a leaf never takes a beam slot and is never expanded.

Beam search (``beam_search``), for one user: width = max(beam, k); start at the first level
with >= width nodes and score all of them (plus the few leaves above that level); keep the
top ``width`` internal nodes, score their children, and so on; return the top-k leaves scored.
Blocked items (consumed + excluded) are removed without starving k: per request, the blocked
leaves under every node are counted (over the blocked items' ancestors) and nodes whose
leaves are all blocked are dropped before scoring. Every kept node then holds >= 1 unblocked
leaf, so whenever a level is cut to ``width >= k`` nodes at least k unblocked leaves remain
reachable: min(k, #unblocked) items come back. With width >= every level's size nothing is
cut and the result is brute force over all leaves.

``beam_search_batch`` runs the same search for many users at once (offline evaluation): each
user's steps are ``beam_search``'s, and each level's nodes of every user go to the scorer in
one call, so a model scores them as one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import safetensors.numpy

ScoreFn = Callable[[np.ndarray], np.ndarray]  # nodes (M,) int64 -> scores (M,) float32
# rows (M,) int64 (each node's user in the batch), nodes (M,) int64 -> scores (M,) float32
BatchScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
_SAVED = ("parent", "children", "level", "node_item", "item_node")


@dataclass(eq=False)
class TDMTree:
    parent: np.ndarray  # (n_nodes,) int64; -1 for the root
    children: np.ndarray  # (n_nodes, b) int64; -1 = no child (leaves, and groups < b items)
    level: np.ndarray  # (n_nodes,) int64; root = 0, non-decreasing (breadth-first ids)
    node_item: np.ndarray  # (n_nodes,) int64; the item of a leaf, -1 for internal nodes
    item_node: np.ndarray  # (n_items,) int64; the leaf node of each item
    leaf_count: np.ndarray = field(init=False)  # (n_nodes,) items under each node
    level_start: np.ndarray = field(init=False)  # (n_levels + 1,) first node id of each level

    def __post_init__(self) -> None:
        for name in _SAVED:
            setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=np.int64))
        if np.any(np.diff(self.level) < 0):
            raise ValueError("nodes must be numbered breadth-first (level non-decreasing)")
        n_levels = int(self.level[-1]) + 1
        self.level_start = np.searchsorted(self.level, np.arange(n_levels + 1))
        # Bottom-up: a level's counts are final before they are added into its parents.
        cnt = (self.node_item >= 0).astype(np.int64)
        for lv in range(n_levels - 1, 0, -1):
            lo, hi = self.level_start[lv], self.level_start[lv + 1]
            plo, phi = self.level_start[lv - 1], lo  # parents live on the level above
            cnt[plo:phi] += np.bincount(self.parent[lo:hi] - plo, weights=cnt[lo:hi],
                                        minlength=phi - plo).astype(np.int64)
        self.leaf_count = cnt

    @property
    def n_nodes(self) -> int:
        return len(self.parent)

    @property
    def n_items(self) -> int:
        return len(self.item_node)

    @property
    def n_levels(self) -> int:
        return len(self.level_start) - 1

    @property
    def branching(self) -> int:
        return self.children.shape[1]

    def nodes_at_level(self, lv: int) -> np.ndarray:
        """(count,) int64 node ids of level ``lv`` (a contiguous range)."""
        return np.arange(self.level_start[lv], self.level_start[lv + 1], dtype=np.int64)

    def level_sizes(self) -> np.ndarray:
        """(n_levels,) number of nodes per level."""
        return np.diff(self.level_start)

    def first_level_with(self, n: int) -> int:
        """The first level holding >= n nodes; the last level if none does."""
        big = np.flatnonzero(self.level_sizes() >= n)
        return int(big[0]) if len(big) else self.n_levels - 1

    def ancestors(self, items: np.ndarray | Iterable[int]) -> np.ndarray:
        """items (n,) -> (n, n_levels) int64: column l = the item's ancestor at level l, root
        INCLUDED (column 0) and the leaf itself at its own level; -1 below a leaf that sits
        one level above the deepest one."""
        items = np.asarray(items if isinstance(items, np.ndarray) else list(items),
                           dtype=np.int64).reshape(-1)
        out = np.full((len(items), self.n_levels), -1, dtype=np.int64)
        rows, node = np.arange(len(items)), self.item_node[items]
        while len(rows):  # at most n_levels steps: walk up one level at a time
            out[rows, self.level[node]] = node
            up = node > 0  # the root (0) has no parent
            rows, node = rows[up], self.parent[node[up]]
        return out

    def save(self, path: Path | str) -> None:
        """safetensors (numpy), no pickle: the five defining arrays."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        safetensors.numpy.save_file({k: getattr(self, k) for k in _SAVED}, str(path),
                                    metadata={"type": "tdm_tree"})

    @classmethod
    def load(cls, path: Path | str) -> TDMTree:
        arrays = safetensors.numpy.load_file(str(path))
        return cls(**{k: arrays[k] for k in _SAVED})


def dead_nodes(tree: TDMTree, blocked: Iterable[int] | np.ndarray | None) -> np.ndarray:
    """Sorted node ids all of whose leaves are blocked (ids outside [0, N) are ignored).
    O(|blocked| * depth): the blocked items' ancestors, counted per node."""
    if blocked is None:
        return np.zeros(0, dtype=np.int64)
    arr = (np.asarray(blocked, dtype=np.int64).reshape(-1) if isinstance(blocked, np.ndarray)
           else np.fromiter(blocked, dtype=np.int64))
    arr = np.unique(arr[(arr >= 0) & (arr < tree.n_items)])
    anc = tree.ancestors(arr)
    nodes, counts = np.unique(anc[anc >= 0], return_counts=True)
    return nodes[counts == tree.leaf_count[nodes]]


class _Beam:
    """One user's layer-wise search state (see the module docstring): the nodes to score next
    (``cand``), the leaves scored so far (the result pool) and the per-level trace.
    ``beam_search`` drives one; ``beam_search_batch`` drives many with one score call per
    level, so both apply exactly the same per-user steps to the scores they get."""

    def __init__(self, tree: TDMTree, k: int, beam: int,
                 blocked: Iterable[int] | np.ndarray | None) -> None:
        self.tree, self.k, self.width = tree, k, max(beam, k)
        self.dead = dead_nodes(tree, blocked)
        # (n_nodes,) bool: a lookup per candidate instead of np.isin's sort at every level.
        self.is_dead = np.zeros(len(tree.node_item), dtype=bool)
        self.is_dead[self.dead] = True
        self.start_level = tree.first_level_with(self.width)
        top = tree.level_start[self.start_level]
        shallow = np.flatnonzero(tree.node_item[:top] >= 0)  # leaves above the start level
        self.cand = np.concatenate([shallow, tree.nodes_at_level(self.start_level)])
        self.pool_n: list[np.ndarray] = []
        self.pool_s: list[np.ndarray] = []
        self.trace: list[np.ndarray] = []
        self.n_scored = 0
        self.prune()

    def prune(self) -> None:
        """Drop candidates all of whose leaves are blocked: they never take a beam slot."""
        if len(self.dead) and len(self.cand):
            self.cand = self.cand[~self.is_dead[self.cand]]

    def advance(self, s: np.ndarray) -> None:
        """``s`` (M,) float32 scores of ``cand`` -> leaves to the pool, the top ``width``
        internal nodes' children become the next candidates (pruned)."""
        tree, cand = self.tree, self.cand
        self.n_scored += len(cand)
        is_leaf = tree.node_item[cand] >= 0
        self.pool_n.append(cand[is_leaf])
        self.pool_s.append(s[is_leaf])
        inner, s_in = cand[~is_leaf], s[~is_leaf]
        if len(inner) > self.width:  # keep the top `width` internal nodes
            inner = inner[np.argpartition(-s_in, self.width - 1)[:self.width]]
        self.trace.append(np.concatenate([inner, cand[is_leaf]]))
        nxt = tree.children[inner].reshape(-1)
        self.cand = nxt[nxt >= 0]
        self.prune()

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(items (<=k,) int64, scores (<=k,) float32): the pool's best, best first."""
        if not self.pool_n:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        nodes, scores = np.concatenate(self.pool_n), np.concatenate(self.pool_s)
        order = np.argsort(-scores, kind="stable")[:self.k]
        return self.tree.node_item[nodes[order]], scores[order]


def beam_search(tree: TDMTree, score_fn: ScoreFn, k: int, beam: int,
                blocked: Iterable[int] | np.ndarray | None = None,
                stats: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k unblocked items for ONE user -> (items (<=k,) int64, scores (<=k,) float32), best
    first; fewer than k only when fewer than k items are unblocked.

    ``score_fn(nodes (M,) int64) -> (M,) float32`` is called once per level. ``stats``, when
    given, receives "nodes_scored", "start_level" and "trace": per level scored, the nodes
    that survived it (kept internal nodes + leaves sent to the pool), e.g. for per-level
    recall."""
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    b = _Beam(tree, k, beam, blocked)
    while len(b.cand):
        b.advance(np.asarray(score_fn(b.cand), dtype=np.float32).reshape(-1))
    if stats is not None:
        stats.update(nodes_scored=b.n_scored, start_level=b.start_level, trace=b.trace)
    return b.result()


def beam_search_batch(tree: TDMTree, score_fn: BatchScoreFn, k: int, beam: int,
                      blocked: Sequence[Iterable[int] | np.ndarray | None],
                      ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``beam_search`` for many users at once: per user the same steps, but one
    ``score_fn(rows (M,) int64, nodes (M,) int64) -> (M,) float32`` call per level for every
    user still searching (``rows`` = each node's user, an index into ``blocked``), so a model
    scores the whole batch in one pass. With the scores ``beam_search`` would get, the results
    are ``beam_search``'s, user by user. -> per user (items, scores) as ``beam_search``."""
    if k <= 0:
        return [(np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in blocked]
    beams = [_Beam(tree, k, beam, b) for b in blocked]
    while True:
        live = [u for u, b in enumerate(beams) if len(b.cand)]
        if not live:
            break
        counts = [len(beams[u].cand) for u in live]
        rows = np.repeat(np.asarray(live, dtype=np.int64), counts)  # (M,)
        nodes = np.concatenate([beams[u].cand for u in live])  # (M,)
        s = np.asarray(score_fn(rows, nodes), dtype=np.float32).reshape(-1)  # (M,)
        for u, part in zip(live, np.split(s, np.cumsum(counts)[:-1]), strict=True):
            beams[u].advance(part)
    return [b.result() for b in beams]


def brute_force(tree: TDMTree, score_fn: ScoreFn, k: int,
                blocked: Iterable[int] | np.ndarray | None = None,
                chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Reference: score every unblocked leaf (``chunk`` at a time), top-k, best first."""
    mask = np.ones(tree.n_items, dtype=bool)
    if blocked is not None:
        arr = (np.asarray(blocked, dtype=np.int64).reshape(-1)
               if isinstance(blocked, np.ndarray) else np.fromiter(blocked, dtype=np.int64))
        mask[arr[(arr >= 0) & (arr < tree.n_items)]] = False
    items = np.flatnonzero(mask)
    leaves = tree.item_node[items]
    scores = np.concatenate([np.asarray(score_fn(leaves[i:i + chunk]), dtype=np.float32)
                             for i in range(0, len(leaves), chunk)] or [np.zeros(0, np.float32)])
    order = np.argsort(-scores, kind="stable")[:max(k, 0)]
    return items[order], scores[order]
