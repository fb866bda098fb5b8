"""TDM training (Zhu et al., KDD 2018), per-level recall, and tree re-learning (JTM).

Samples: every (history window, next item) pair of the per-user training sequences
(``build_samples``). For a target item the positives are its ancestors at every level from
``min_level`` down to its leaf (the root is always positive: nothing to learn); the negatives
are ``negatives_per_level`` nodes drawn uniformly per level among that level's nodes, the
positive excluded (fresh draws every batch). Loss: binary cross-entropy over positives and
negatives, averaged over the (history, node) pairs. A level below a shallow target leaf (leaves
sit at two adjacent depths) still gets its negatives, just no positive.

``level_recall`` measures what the max-heap property governs: for held-out (history, target)
pairs, how often the target's ancestor at each level survives beam search's cut at that level.

``relearn_tree`` (JTM's tree learning, simplified): rebuild the tree by balanced clustering of
the learned leaf embeddings, start every new node from the mean learned embedding of its
leaves, keep the other weights, and retrain.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from index.tdm_tree import TDMTree, beam_search
from index.tdm_tree_build import build_tree
from models.nets.tdm import TDMScorer, node_score_fn
from models.train.loop import run_epochs, setup
from models.train.samples import build_samples


@dataclass
class TDMTrainConfig:
    epochs: int = 5
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    negatives_per_level: int = 6
    min_level: int = 1  # first level trained (0 = root, always positive)
    samples_per_epoch: int | None = None  # a fresh random subset per epoch; None = all
    seed: int = 0
    num_threads: int | None = 2  # torch intra-op threads; None leaves torch's setting alone


def level_nodes_and_labels(tree: TDMTree, targets: np.ndarray, min_level: int,
                           negatives: int, rng: np.random.Generator
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """targets (b,) items -> nodes (b, V * (1 + negatives)) int64, labels and valid masks
    (same shape, float32), V = number of levels trained. Per level: the positive ancestor,
    then ``negatives`` uniform draws among the level's other nodes."""
    levels = np.arange(min_level, tree.n_levels)
    anc = tree.ancestors(targets)[:, levels]  # (b, V); -1 below a shallow leaf
    has_pos = anc >= 0
    start = tree.level_start[levels]  # (V,)
    count = tree.level_sizes()[levels]  # (V,)
    # Uniform over the level's nodes minus the positive: draw among count-1 slots and shift
    # the ones at or after the positive up by one.
    room = count[None, :] - has_pos  # (b, V)
    r = np.floor(rng.random((len(targets), len(levels), negatives)) * room[..., None])
    neg = start[None, :, None] + r.astype(np.int64)  # (b, V, K)
    neg += has_pos[..., None] & (neg >= anc[..., None])
    neg_ok = np.broadcast_to((room > 0)[..., None], neg.shape)
    nodes = np.concatenate([np.maximum(anc, 0)[..., None], neg], axis=2)  # (b, V, 1+K)
    labels = np.zeros(nodes.shape, np.float32)
    labels[..., 0] = 1.0
    valid = np.concatenate([has_pos[..., None], neg_ok], axis=2).astype(np.float32)
    b = len(targets)
    return nodes.reshape(b, -1), labels.reshape(b, -1), valid.reshape(b, -1)


def train_tdm(model: TDMScorer, tree: TDMTree, split_train: list[np.ndarray],
              cfg: TDMTrainConfig, progress: bool = True) -> list[float]:
    """Train ``model`` in place on ``split_train`` (per-user int64 item sequences, e.g.
    ``Split.train``) for ``tree``; returns the mean loss per epoch, model left in eval mode.
    Batches go to the model's device."""
    if model.cfg.n_nodes != tree.n_nodes or model.cfg.n_items != tree.n_items:
        raise ValueError(f"model ({model.cfg.n_items} items, {model.cfg.n_nodes} nodes) does "
                         f"not fit the tree ({tree.n_items} items, {tree.n_nodes} nodes)")
    if not 0 <= cfg.min_level < tree.n_levels:
        raise ValueError(f"min_level {cfg.min_level} outside [0, {tree.n_levels})")
    rng = setup(cfg.seed, cfg.num_threads)
    n_items = model.cfg.n_items
    samples = build_samples(split_train, model.cfg.max_history, n_items)
    if len(samples) == 0:
        raise ValueError("no training examples: every training sequence has < 2 items")
    n_rows = len(samples) if cfg.samples_per_epoch is None else \
        min(cfg.samples_per_epoch, len(samples))
    rows = np.arange(len(samples))
    dev = next(model.parameters()).device

    def on_epoch(epoch: int) -> None:
        nonlocal rows
        if n_rows < len(samples):
            rows = rng.choice(len(samples), size=n_rows, replace=False)

    def batch_loss(idx: np.ndarray) -> torch.Tensor:
        ex = rows[idx]
        nodes, labels, valid = level_nodes_and_labels(
            tree, samples.targets[ex], cfg.min_level, cfg.negatives_per_level, rng)
        hist = samples.histories(ex).to(dev)  # (b, L)
        logits = model(hist, torch.from_numpy(nodes).to(dev))  # (b, M)
        w = torch.from_numpy(valid).to(dev)
        loss = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(labels).to(dev),
                                                  weight=w, reduction="sum")
        return loss / w.sum().clamp_min(1.0)

    return run_epochs(model, n_rows, cfg.batch_size, cfg.epochs, cfg.lr, cfg.weight_decay,
                      rng, batch_loss, "tdm", progress=progress, on_epoch=on_epoch)


def level_recall(model: TDMScorer, tree: TDMTree, histories: list[np.ndarray],
                 targets: np.ndarray, beam: int, k: int,
                 block_history: bool = False) -> dict[str, np.ndarray | float]:
    """Held-out (history, target) pairs -> per level l from beam search's start level:
    "recall"[l] = fraction of targets whose level-l ancestor survives the cut at level l
    (among targets that have a node at that level; a lost ancestor stays lost below, so the
    curve only falls: a drop at level l is where the scorer broke the max-heap property for
    the beam); "conditional"[l] = survival at l given survival at l-1; "hit_rate" = fraction
    of targets in the returned top-k; "nodes_scored" = mean nodes scored per request.
    ``block_history``: block each history's items in the search, as ``/recall`` does."""
    hit, n_scored, l0 = 0, 0, 0
    surv: list[np.ndarray] = []
    for h, t in zip(histories, np.asarray(targets, dtype=np.int64), strict=True):
        stats: dict = {}
        blocked = set(np.asarray(h).tolist()) if block_history else None  # as served
        items, _ = beam_search(tree, node_score_fn(model, h), k, beam, blocked=blocked,
                               stats=stats)
        hit += int(t in items)
        n_scored += stats["nodes_scored"]
        l0 = stats["start_level"]
        anc = tree.ancestors([t])[0]
        row = np.full(tree.n_levels - l0, np.nan)  # nan: the target has no node there
        for i, kept in enumerate(stats["trace"]):
            if anc[l0 + i] >= 0:
                row[i] = float(anc[l0 + i] in kept)
        if stats["trace"] and anc[l0] < 0:  # target leaf above the start level: scored
            row[0] = float(tree.item_node[t] in stats["trace"][0])
        row[len(stats["trace"]):] = np.where(anc[l0 + len(stats["trace"]):] >= 0, 0.0, np.nan)
        surv.append(row)
    s = np.array(surv).reshape(len(surv), -1)  # (n, levels), nan where no node
    known = ~np.isnan(s)
    ok = np.nan_to_num(s)
    prev = np.concatenate([np.ones((len(s), 1)), ok[:, :-1]], axis=1)  # survived level above
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = ok.sum(0) / known.sum(0)
        cond = (ok * prev).sum(0) / (prev * known).sum(0)
    n = max(len(s), 1)
    return {"levels": np.arange(l0, tree.n_levels), "recall": recall, "conditional": cond,
            "hit_rate": hit / n, "nodes_scored": n_scored / n}


def node_means(tree: TDMTree, leaf_values: torch.Tensor) -> torch.Tensor:
    """leaf_values (n_items, d) (row i = item i) -> (n_nodes, d): each node's mean over the
    items under it, summed bottom-up one level at a time."""
    sums = leaf_values.new_zeros(tree.n_nodes, leaf_values.shape[1])
    sums[torch.from_numpy(tree.item_node).to(sums.device)] = leaf_values
    parent = torch.from_numpy(tree.parent).to(sums.device)
    for lv in range(tree.n_levels - 1, 0, -1):
        lo, hi = int(tree.level_start[lv]), int(tree.level_start[lv + 1])
        sums.index_add_(0, parent[lo:hi], sums[lo:hi].clone())  # parents lie above lo
    count = torch.from_numpy(tree.leaf_count).to(sums)
    return sums / count[:, None]


def relearn_tree(model: TDMScorer, tree: TDMTree, split_train: list[np.ndarray],
                 cfg: TDMTrainConfig, branching: int | None = None, seed: int = 0,
                 progress: bool = True) -> tuple[TDMScorer, TDMTree, list[float]]:
    """JTM step: new tree = ``build_tree`` on the learned leaf embeddings; new model = the old
    weights except the node table, whose rows start at the mean learned leaf embedding under
    each new node; then ``train_tdm``. Returns (new model, new tree, losses per epoch)."""
    with torch.no_grad():
        leaf = model.leaf_embeddings(tree).float()  # (n_items, d)
    new_tree = build_tree(leaf.cpu().numpy(), branching or tree.branching, seed=seed)
    dev = next(model.parameters()).device
    new = TDMScorer(replace(model.cfg, n_nodes=new_tree.n_nodes)).to(dev)
    state = {k: v for k, v in model.state_dict().items() if k != "node_emb.weight"}
    new.load_state_dict(state, strict=False)
    with torch.no_grad():
        new.node_emb.weight.copy_(node_means(new_tree, leaf.to(dev)))
    losses = train_tdm(new, new_tree, split_train, cfg, progress=progress)
    return new, new_tree, losses

