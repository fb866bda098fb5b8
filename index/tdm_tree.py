"""TDM tree (Zhu et al., "Learning Tree-based Deep Model for Recommender Systems", KDD 2018):
a balanced ``b``-ary tree whose leaves are the items, and layer-wise beam search over it.

Construction (``build_tree``) is recursive balanced clustering, run level by level so the work
on one level is vectorised: a node's item set is split into ``b`` groups whose sizes differ by
at most 1 (the first ``n % b`` groups hold one more), until a group holds one item. Large
groups are split by faiss k-means (centroids) + a balanced assignment; groups of at most
``kmeans_min_size`` items by sorting them along their principal direction (a few power
iterations, batched over every small group of the level) and cutting the order into ``b``
balanced runs. Every item is exactly one leaf.

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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import safetensors.numpy
import scipy.sparse

ScoreFn = Callable[[np.ndarray], np.ndarray]  # nodes (M,) int64 -> scores (M,) float32
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


def balanced_assign(dist: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """dist (n, b) point-to-centroid distances, caps (b,) with sum n -> labels (n,) such that
    centroid c gets exactly caps[c] points.

    Greedy by regret, in rounds: every unassigned point proposes to its nearest centroid that
    still has room; a centroid over capacity keeps the proposers with the largest margin
    (distance to their 2nd-nearest open centroid minus to the nearest: those lose most if sent
    elsewhere) and closes; the rest propose again. Each round closes a centroid or ends, so at
    most b rounds of O(n b) numpy. Exact for b = 2 (the optimum keeps the cap_0 smallest
    d0 - d1), the usual regret heuristic for b > 2; plain nearest-centroid k-means can put
    most of a group in one child, which would make the tree deep and beam search uneven.
    """
    n, b = dist.shape
    labels = np.full(n, -1, dtype=np.int64)
    room = np.asarray(caps, dtype=np.int64).copy()
    todo = np.arange(n)
    while len(todo):
        open_c = np.flatnonzero(room > 0)
        if len(open_c) == 1:
            labels[todo] = open_c[0]
            break
        d = dist[todo][:, open_c]  # (t, open)
        two = np.partition(d, 1, axis=1)[:, :2]  # nearest and 2nd-nearest open distances
        best = open_c[np.argmin(d, axis=1)]
        margin = two[:, 1] - two[:, 0]
        rejected = []
        for c in open_c:
            sel = np.flatnonzero(best == c)
            if len(sel) > room[c]:
                order = sel[np.argsort(-margin[sel], kind="stable")]
                sel, rest = order[: room[c]], order[room[c]:]
                rejected.append(todo[rest])
            labels[todo[sel]] = c
            room[c] -= len(sel)
        todo = np.concatenate(rejected) if rejected else todo[:0]
    return labels


def _kmeans_split(x: np.ndarray, perm: np.ndarray, s: int, e: int, caps: np.ndarray,
                  niter: int, seed: int, threads: int) -> None:
    """Reorder perm[s:e] so that balanced k-means cluster c is the c-th run of caps[c] items."""
    idx = perm[s:e]
    xs = x[idx]  # (n, d)
    km = faiss.Kmeans(x.shape[1], len(caps), niter=niter, seed=seed, verbose=False,
                      min_points_per_centroid=1)  # (silences faiss' "too few points" warning)
    # faiss subsamples to 256 points per centroid, so every call trains on <= 256 b points:
    # one OpenMP thread, as thread start-up and spinning cost more than such a job (3-10x).
    faiss.omp_set_num_threads(1)
    try:
        km.train(xs)
    finally:
        faiss.omp_set_num_threads(threads)
    c = km.centroids  # (b, d)
    dist = (c * c).sum(1)[None, :] - 2.0 * (xs @ c.T)  # (n, b) squared L2 minus ||x||^2
    labels = balanced_assign(dist, caps)
    perm[s:e] = idx[np.argsort(labels, kind="stable")]


def _projection_sort(x: np.ndarray, perm: np.ndarray, s: np.ndarray, e: np.ndarray,
                     rng: np.random.Generator, power_iters: int = 5) -> None:
    """Sort each segment perm[s_i:e_i] along its own principal direction, all segments at once
    (segments are disjoint and ascending). Cutting the order into runs is then a balanced
    split along the direction of largest spread."""
    sizes = e - s
    offsets = np.cumsum(sizes) - sizes  # (S,) segment starts in the packed arrays
    m = int(sizes.sum())
    seg = np.repeat(np.arange(len(s)), sizes)  # (M,) segment of each packed row
    pos = np.repeat(s - offsets, sizes) + np.arange(m)  # (M,) index into perm
    # Segment sums as a sparse (S, M) 0/1 matrix product: ~6x faster than np.add.reduceat.
    summer = scipy.sparse.csr_matrix((np.ones(m, np.float32), (seg, np.arange(m))),
                                     shape=(len(s), m))
    items = perm[pos]
    xc = x[items]
    xc -= (summer @ xc / sizes[:, None].astype(np.float32))[seg]  # centred (M, d)
    v = rng.standard_normal((len(s), x.shape[1])).astype(np.float32)  # (S, d)
    for _ in range(power_iters):  # v <- C v per segment, C = sum of xc xc^T
        p = np.einsum("md,md->m", xc, v[seg])
        v = np.asarray(summer @ (xc * p[:, None]), dtype=np.float32)
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    key = np.einsum("md,md->m", xc, v[seg])
    perm[pos] = items[np.lexsort((key, seg))]  # by segment, then by projection


def build_tree(item_vectors: np.ndarray, branching: int = 2, seed: int = 0,
               kmeans_iters: int = 10, kmeans_min_size: int = 64) -> TDMTree:
    """Balanced ``branching``-ary tree over item_vectors (N, d) (row i = item i).

    Groups of more than max(kmeans_min_size, branching) items are split by faiss k-means +
    ``balanced_assign``; smaller ones by a batched projection sort (see the module docstring):
    per-group k-means calls dominate below ~64 items (2N / kmeans_min_size calls in all).
    10^6 items of dimension 32: ~20 s on 2 cores."""
    x = np.ascontiguousarray(item_vectors, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"item_vectors must be a non-empty (N, d) array, got {x.shape}")
    if branching < 2:
        raise ValueError(f"branching must be >= 2, got {branching}")
    b, n = branching, len(x)
    rng = np.random.default_rng(seed)
    perm = np.arange(n, dtype=np.int64)  # every segment of perm is one node's item set
    start, end, node = np.array([0]), np.array([n]), np.array([0])  # the current level
    parents, levels = [np.array([-1])], [np.array([0])]
    leaf_nodes, leaf_items, inner_nodes, inner_children = [], [], [], []
    next_id, lv = 1, 0
    threads = faiss.omp_get_max_threads()
    while len(node):
        size = end - start
        leaf = size == 1
        leaf_nodes.append(node[leaf])
        leaf_items.append(perm[start[leaf]])
        s, e, nd = start[~leaf], end[~leaf], node[~leaf]
        q, r = np.divmod(e - s, b)
        csize = q[:, None] + (np.arange(b)[None, :] < r[:, None])  # (S, b) child group sizes
        big = (e - s) > max(kmeans_min_size, b)
        for i in np.flatnonzero(big):
            _kmeans_split(x, perm, int(s[i]), int(e[i]), csize[i], kmeans_iters,
                          (seed * 1_000_003 + int(nd[i])) % (2**31 - 1), threads)
        small = ~big & ((e - s) > b)  # <= b items: one item per child, order is irrelevant
        if small.any():
            _projection_sort(x, perm, s[small], e[small], rng)
        exists = csize > 0
        n_new = int(exists.sum())
        ids = np.full((len(nd), b), -1, dtype=np.int64)
        ids[exists] = next_id + np.arange(n_new)  # row-major: breadth-first numbering
        inner_nodes.append(nd)
        inner_children.append(ids)
        cstart = s[:, None] + np.cumsum(csize, axis=1) - csize  # (S, b)
        start, end, node = cstart[exists], (cstart + csize)[exists], ids[exists]
        parents.append(np.repeat(nd, exists.sum(1)))
        lv += 1
        levels.append(np.full(n_new, lv))
        next_id += n_new
    children = np.full((next_id, b), -1, dtype=np.int64)
    children[np.concatenate(inner_nodes)] = np.concatenate(inner_children)
    node_item = np.full(next_id, -1, dtype=np.int64)
    item_node = np.empty(n, dtype=np.int64)
    ln, li = np.concatenate(leaf_nodes), np.concatenate(leaf_items)
    node_item[ln], item_node[li] = li, ln
    return TDMTree(parent=np.concatenate(parents), children=children,
                   level=np.concatenate(levels), node_item=node_item, item_node=item_node)


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


def beam_search(tree: TDMTree, score_fn: ScoreFn, k: int, beam: int,
                blocked: Iterable[int] | np.ndarray | None = None,
                stats: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k unblocked items for ONE user -> (items (<=k,) int64, scores (<=k,) float32), best
    first; fewer than k only when fewer than k items are unblocked.

    ``score_fn(nodes (M,) int64) -> (M,) float32`` is called once per level. ``stats``, when
    given, receives "nodes_scored", "start_level" and "trace": per level scored, the nodes
    that survived it (kept internal nodes + leaves sent to the pool), e.g. for per-level
    recall."""
    empty = np.zeros(0, np.int64), np.zeros(0, np.float32)
    if k <= 0:
        return empty
    width = max(beam, k)
    dead = dead_nodes(tree, blocked)
    l0 = tree.first_level_with(width)
    top = tree.level_start[l0]
    shallow = np.flatnonzero(tree.node_item[:top] >= 0)  # leaves above the start level
    cand = np.concatenate([shallow, tree.nodes_at_level(l0)])
    pool_n, pool_s, trace, n_scored = [], [], [], 0
    while len(cand):
        if len(dead):
            cand = cand[~np.isin(cand, dead, assume_unique=True)]
            if not len(cand):
                break
        s = np.asarray(score_fn(cand), dtype=np.float32).reshape(-1)  # (M,)
        n_scored += len(cand)
        is_leaf = tree.node_item[cand] >= 0
        pool_n.append(cand[is_leaf])
        pool_s.append(s[is_leaf])
        inner, s_in = cand[~is_leaf], s[~is_leaf]
        if len(inner) > width:  # keep the top `width` internal nodes
            inner = inner[np.argpartition(-s_in, width - 1)[:width]]
        trace.append(np.concatenate([inner, cand[is_leaf]]))
        cand = tree.children[inner].reshape(-1)
        cand = cand[cand >= 0]
    if stats is not None:
        stats.update(nodes_scored=n_scored, start_level=l0, trace=trace)
    if not pool_n:
        return empty
    nodes, scores = np.concatenate(pool_n), np.concatenate(pool_s)
    order = np.argsort(-scores, kind="stable")[:k]
    return tree.node_item[nodes[order]], scores[order]


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
