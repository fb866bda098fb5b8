"""TDM: balanced tree construction, beam search (exactness, blocked items, start level),
the node scorer, training on a deterministic rule, per-level recall and tree re-learning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from index.tdm_tree import TDMTree, beam_search, brute_force
from index.tdm_tree_build import balanced_assign, build_tree
from models.artifacts.checkpoint import load_model, register_model, save_model
from models.nets.features import pad_histories
from models.nets.tdm import TDMConfig, TDMScorer, node_score_fn
from models.train.tdm import (
    TDMTrainConfig,
    level_nodes_and_labels,
    level_recall,
    node_means,
    relearn_tree,
    train_tdm,
)
from tests.topk import assert_top_k, score_tol

pytestmark = pytest.mark.usefixtures("one_thread")

N_ITEMS = 64


def vectors(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def ceil_log(n: int, b: int) -> int:
    depth, cap = 0, 1
    while cap < n:
        depth, cap = depth + 1, cap * b
    return depth


def subtree_max(tree: TDMTree, leaf_scores: np.ndarray) -> np.ndarray:
    """(n_items,) -> (n_nodes,) max over each node's leaves (-inf where none): a score function
    with the max-heap property, for which beam search is exact at any beam >= k."""
    out = np.full(tree.n_nodes, -np.inf)
    out[tree.item_node] = leaf_scores
    for lv in range(tree.n_levels - 1, 0, -1):
        nodes = tree.nodes_at_level(lv)
        np.maximum.at(out, tree.parent[nodes], out[nodes])
    return out


@pytest.mark.parametrize(("n", "b", "kmin"), [(1, 2, 64), (2, 2, 64), (5, 2, 64), (37, 3, 4),
                                              (100, 2, 8), (130, 4, 8), (200, 2, 64)])
def test_tree_is_balanced_and_consistent(n: int, b: int, kmin: int, tmp_path: Path) -> None:
    tree = build_tree(vectors(n), b, kmeans_min_size=kmin)
    # Every item at exactly one leaf, both maps agree.
    leaves = np.flatnonzero(tree.node_item >= 0)
    assert np.array_equal(np.sort(tree.node_item[leaves]), np.arange(n))
    assert np.array_equal(tree.node_item[tree.item_node], np.arange(n))
    # parent / children / level consistent, breadth-first numbering.
    assert tree.parent[0] == -1 and tree.level[0] == 0
    assert np.all(np.diff(tree.level) >= 0)
    for node in range(tree.n_nodes):
        kids = tree.children[node][tree.children[node] >= 0]
        assert np.all(tree.parent[kids] == node)
        assert np.all(tree.level[kids] == tree.level[node] + 1)
        if tree.node_item[node] >= 0:
            assert len(kids) == 0 and tree.leaf_count[node] == 1
        else:
            # Balanced split: min(b, size) children whose sizes differ by at most 1.
            sizes = tree.leaf_count[kids]
            assert len(kids) == min(b, tree.leaf_count[node])
            assert sizes.sum() == tree.leaf_count[node]
            assert sizes.max() - sizes.min() <= 1
        if node > 0:
            assert node in tree.children[tree.parent[node]]
    assert tree.leaf_count[0] == n
    depths = np.unique(tree.level[leaves])
    assert tree.n_levels - 1 == ceil_log(n, b) and len(depths) <= 2
    anc = tree.ancestors(np.arange(n))
    assert anc.shape == (n, tree.n_levels) and np.all(anc[:, 0] == 0)
    assert np.array_equal(anc[np.arange(n), tree.level[tree.item_node]], tree.item_node)
    for lv in range(1, tree.n_levels):
        has = anc[:, lv] >= 0
        assert np.array_equal(tree.parent[anc[has, lv]], anc[has, lv - 1])
    tree.save(tmp_path / "tree.safetensors")
    back = TDMTree.load(tmp_path / "tree.safetensors")
    for name in ("parent", "children", "level", "node_item", "item_node", "leaf_count"):
        assert np.array_equal(getattr(back, name), getattr(tree, name))


def test_kmeans_split_keeps_clusters_together() -> None:
    """4 well-separated clusters of 32 items: each level-2 node holds exactly one cluster."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((4, 8)).astype(np.float32) * 20
    labels = rng.permutation(np.repeat(np.arange(4), 32))
    x = centers[labels] + rng.standard_normal((128, 8)).astype(np.float32)
    tree = build_tree(x, 2, kmeans_min_size=8)
    anc = tree.ancestors(np.arange(128))[:, 2]  # (128,) level-2 node of each item
    for node in np.unique(anc):
        assert len(np.unique(labels[anc == node])) == 1


def test_balanced_assign_capacities_and_two_way_optimum() -> None:
    rng = np.random.default_rng(0)
    dist = rng.random((50, 3))
    labels = balanced_assign(dist, np.array([17, 17, 16]))
    assert np.array_equal(np.bincount(labels, minlength=3), [17, 17, 16])
    d2 = rng.random((40, 2))
    lab2 = balanced_assign(d2, np.array([20, 20]))
    best = np.argsort(d2[:, 0] - d2[:, 1], kind="stable")[:20]  # optimum for fixed sizes
    assert set(np.flatnonzero(lab2 == 0)) == set(best)


@pytest.mark.parametrize(("n", "b"), [(64, 2), (50, 3), (37, 2)])
def test_beam_search_with_full_beam_is_brute_force(n: int, b: int) -> None:
    tree = build_tree(vectors(n), b, kmeans_min_size=8)
    scores = np.random.default_rng(1).random(tree.n_nodes).astype(np.float32)

    def score_fn(nodes: np.ndarray) -> np.ndarray:
        return scores[nodes]

    blocked = set(np.random.default_rng(2).choice(n, 15, replace=False).tolist())
    for blk in (None, blocked):
        items, s = beam_search(tree, score_fn, 10, n, blocked=blk)
        ref_items, ref_s = brute_force(tree, score_fn, 10, blocked=blk)
        assert np.array_equal(items, ref_items) and np.allclose(s, ref_s)


def test_beam_search_is_exact_for_max_heap_scores() -> None:
    """Node score = max over its unblocked leaves: any beam >= k finds the exact top-k."""
    tree = build_tree(vectors(100), 2)
    leaf = np.random.default_rng(3).random(100)
    blocked = np.random.default_rng(4).choice(100, 30, replace=False)
    masked = leaf.copy()
    masked[blocked] = -np.inf
    heap = subtree_max(tree, masked)
    items, _ = beam_search(tree, lambda nodes: heap[nodes], 5, 1, blocked=blocked)
    ref = np.setdiff1d(np.arange(100), blocked)
    assert np.array_equal(items, ref[np.argsort(-leaf[ref])[:5]])


def test_blocked_items_never_return_and_k_is_not_starved() -> None:
    """Trap: the scorer loves the root's first subtree, and all but 2 of its items are blocked.
    A beam of 1 would dive into it and find 2 items; dead nodes are pruned and the width is
    max(beam, k), so k unblocked items still come back."""
    tree = build_tree(vectors(N_ITEMS), 2)
    under = np.flatnonzero(tree.ancestors(np.arange(N_ITEMS))[:, 1] == 1)  # node 1's items
    keep = under[:2]
    blocked = set(np.setdiff1d(under, keep).tolist()) | {int(np.setdiff1d(
        np.arange(N_ITEMS), under)[0])}
    rng = np.random.default_rng(0)
    favoured = np.zeros(tree.n_nodes, dtype=bool)
    favoured[np.unique(tree.ancestors(under))] = True
    scores = rng.random(tree.n_nodes) + 10.0 * favoured
    stats: dict = {}
    items, _ = beam_search(tree, lambda nodes: scores[nodes], 8, 1, blocked=blocked,
                           stats=stats)
    assert len(items) == 8 and len(set(items.tolist())) == 8
    assert not set(items.tolist()) & blocked
    assert set(keep.tolist()) <= set(items.tolist())  # the favoured survivors rank first
    # Fewer unblocked items than k: all of them, nothing else.
    almost_all = set(range(N_ITEMS)) - {3, 40, 41}
    items, _ = beam_search(tree, lambda nodes: scores[nodes], 8, 2, blocked=almost_all)
    assert sorted(items.tolist()) == [3, 40, 41]
    items, _ = beam_search(tree, lambda nodes: scores[nodes], 8, 2, blocked=range(N_ITEMS))
    assert len(items) == 0


@pytest.mark.parametrize("beam", [1, 3, 4, 10, 40])
def test_first_level_has_at_least_beam_nodes(beam: int) -> None:
    tree = build_tree(vectors(100), 2)
    stats: dict = {}
    beam_search(tree, lambda nodes: np.zeros(len(nodes), np.float32), 1, beam, stats=stats)
    sizes = tree.level_sizes()
    lv = stats["start_level"]
    assert sizes[lv] >= beam and np.all(sizes[:lv] < beam)
    # Per level below the start: at most `beam` kept nodes x 2 children (+ shallow leaves).
    assert stats["nodes_scored"] <= sizes[lv] + beam + 2 * beam * (tree.n_levels - lv)


def rule_sequences(n_users: int, rng: np.random.Generator) -> list[np.ndarray]:
    """next = (5 * last + 3) mod 64, a single 64-cycle; 2 to 5 items from a random start."""
    out = []
    for _ in range(n_users):
        seq = [int(rng.integers(N_ITEMS))]
        for _ in range(int(rng.integers(2, 6)) - 1):
            seq.append((5 * seq[-1] + 3) % N_ITEMS)
        out.append(np.array(seq, dtype=np.int64))
    return out


def make_model(tree: TDMTree, seed: int = 0) -> TDMScorer:
    torch.manual_seed(seed)
    return TDMScorer(TDMConfig(n_items=N_ITEMS, n_nodes=tree.n_nodes, dim=16, max_history=8,
                               attention_hidden=(16,), hidden=(32,)))


TRAIN_CFG = TDMTrainConfig(epochs=5, batch_size=32, lr=1e-2, negatives_per_level=3,
                           num_threads=None)


@pytest.fixture(scope="module")
def trained() -> tuple[TDMScorer, TDMTree, list[np.ndarray]]:
    tree = build_tree(vectors(N_ITEMS), 2)  # random vectors: the tree ignores the rule
    train = rule_sequences(400, np.random.default_rng(0))
    model = make_model(tree)
    losses = train_tdm(model, tree, train, TRAIN_CFG, progress=False)
    assert losses[-1] < 0.5 * losses[0]
    return model, tree, train


def test_training_makes_small_beam_find_the_target(trained) -> None:
    model, tree, _ = trained
    test = rule_sequences(100, np.random.default_rng(1))
    r = level_recall(model, tree, [s[:-1] for s in test], np.array([s[-1] for s in test]),
                     beam=4, k=4)
    # Chance: 4 / 64 = 0.06. A trainer with wrong labels or levels stays near it.
    assert r["hit_rate"] >= 0.6
    assert len(r["recall"]) == tree.n_levels - 2  # beam 4 starts at level 2 (4 nodes)
    assert np.all(np.diff(r["recall"]) <= 1e-9) and r["recall"][-1] >= r["hit_rate"]
    assert r["nodes_scored"] < N_ITEMS


def test_trained_scorer_full_beam_is_brute_force(trained) -> None:
    model, tree, _ = trained
    history = np.array([5, 28, 15])
    fn = node_score_fn(model, history)
    leaf = np.asarray(fn(tree.item_node), dtype=np.float64)  # (N_ITEMS,) every item's score
    for blk in (None, set(history.tolist()) | {11, 12}):
        items, s = beam_search(tree, fn, 6, N_ITEMS, blocked=blk)
        _, ref_s = brute_force(tree, fn, 6, blocked=blk)
        assert np.allclose(s, ref_s)
        # The scorer sees other batches of nodes in each search, so two items whose trained
        # scores are within float rounding may swap; apart from that, the brute-force top 6.
        assert_top_k(items, leaf, 6, score_tol(leaf), blk or ())


def test_scorer_shapes_padding_and_score_nodes(trained) -> None:
    model, tree, _ = trained
    hist = pad_histories([np.array([1, 2, 3]), np.array([7])], 6, N_ITEMS)  # (2, 6)
    nodes = torch.tensor([[0, 5, 9], [3, 4, 100]])
    with torch.no_grad():
        logits = model(hist, nodes)
        wider = model(pad_histories([np.array([1, 2, 3]), np.array([7])], 8, N_ITEMS), nodes)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    torch.testing.assert_close(wider, logits)  # extra left padding changes nothing
    torch.testing.assert_close(model.score_nodes(hist[0], nodes[0], chunk=2), logits[0])
    assert model.leaf_embeddings(tree).shape == (N_ITEMS, 16)


def test_negatives_exclude_the_positive_and_stay_on_level() -> None:
    tree = build_tree(vectors(37), 2)
    targets = np.arange(37)
    nodes, labels, valid = level_nodes_and_labels(tree, targets, 1, 5,
                                                  np.random.default_rng(0))
    v = tree.n_levels - 1
    nodes, labels, valid = (a.reshape(37, v, 6) for a in (nodes, labels, valid))
    anc = tree.ancestors(targets)[:, 1:]
    assert np.array_equal(valid[..., 0] > 0, anc >= 0)
    assert np.all(nodes[..., 0][anc >= 0] == anc[anc >= 0]) and np.all(labels[..., 0] == 1)
    assert np.all(nodes[..., 1:] != nodes[..., :1]) and np.all(labels[..., 1:] == 0)
    lv = tree.level[nodes[..., 1:]]
    assert np.all(lv == np.arange(1, tree.n_levels)[None, :, None])


def test_relearn_tree_and_checkpoint(trained, tmp_path: Path) -> None:
    model, tree, train = trained
    leaf = model.leaf_embeddings(tree)
    means = node_means(tree, leaf)
    torch.testing.assert_close(means[torch.from_numpy(tree.item_node)], leaf)
    torch.testing.assert_close(means[0], leaf.mean(0))
    cfg = TDMTrainConfig(epochs=1, batch_size=64, lr=1e-3, num_threads=None)
    new, new_tree, losses = relearn_tree(model, tree, train, cfg, progress=False)
    assert new.cfg.n_nodes == new_tree.n_nodes and len(losses) == 1
    assert np.array_equal(np.sort(new_tree.node_item[new_tree.node_item >= 0]),
                          np.arange(N_ITEMS))
    register_model("tdm", TDMConfig, TDMScorer)  # the line models/checkpoint.py will carry
    save_model(new, tmp_path, "tdm")
    back = load_model(tmp_path, "tdm")
    assert back.cfg == new.cfg
    hist = torch.tensor([1, 2, 3])
    nodes = torch.arange(new_tree.n_nodes)
    torch.testing.assert_close(back.score_nodes(hist, nodes), new.score_nodes(hist, nodes))


def test_scored_levels_start_where_beam_search_starts(tiny_artifacts: Path) -> None:
    """train_levels "scored" (the tiny and default profiles): training starts at the first
    level beam search scores, the first with at least ``beam`` nodes; nothing above it is
    trained."""
    import orjson

    report = orjson.loads((tiny_artifacts / "manifest.json").read_bytes())["configs"]["tdm"]
    assert report["train_levels"] == "scored"
    tree = TDMTree.load(tiny_artifacts / "tdm_tree.safetensors")
    first = tree.first_level_with(report["beam"])
    assert report["train"]["min_level"] == first > 1
    assert tree.level_sizes()[first - 1] < report["beam"] <= tree.level_sizes()[first]
