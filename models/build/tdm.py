"""`genrec build`, TDM: a balanced tree over the two-tower's item vectors plus a node scorer.

Written next to the other components' files (``models.registry``):
  tdm_tree.safetensors      the tree (``index/tdm_tree.py``)
  tdm.{safetensors,json}    the node scorer (``models/tdm.py``)

The tree is built by recursive balanced k-means (faiss) on the unit-normalised two-tower item
vectors, and the scorer's item and node tables start from those vectors (nodes: the mean of
their items), so training starts from a tree whose regions already mean something. With
``jtm_rounds`` > 0 the tree is then re-learned from the scorer's learned leaf embeddings and
the scorer retrained (JTM); each tree's validation HR@k is recorded, and the better one on the
VALIDATION split is kept, so the report can say whether re-learning helped.

``train_levels: "scored"`` trains only the levels that served beam search scores: it starts
at the first level with at least ``beam`` nodes (level 7 of 12 for ml-100k's binary tree at
beam 100), since every node above it is kept whatever its score. Those upper levels are about
half of each sample's (history, node) pairs, so the same time trains twice the samples.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from index.tdm_tree import TDMTree, beam_search
from index.tdm_tree_build import build_tree
from models.artifacts.checkpoint import save_model
from models.build.job import BuildJob
from models.data import Split
from models.evaluate.rank_metrics import summarize
from models.nets.tdm import TDMConfig, TDMScorer, node_score_fn
from models.registry import Component
from models.train.tdm import TDMTrainConfig, node_means, relearn_tree, train_tdm

TREE = "tdm_tree.safetensors"


def validation_hr(model: TDMScorer, tree: TDMTree, split: Split, beam: int, k: int = 10,
                  max_users: int = 1000, seed: int = 0) -> float:
    """HR@k of served beam search (history blocked) on up to ``max_users`` validation users."""
    users = split.eval_users("valid")
    if len(users) > max_users:
        users = np.random.default_rng(seed).choice(users, max_users, replace=False)
    ranks = []
    model.eval()
    for u in users.tolist():
        hist = split.history(u, "valid")
        items, _ = beam_search(tree, node_score_fn(model, hist), k, beam, blocked=set(hist))
        hit = np.flatnonzero(items == split.valid_target[u])
        ranks.append(int(hit[0]) if len(hit) else k)
    return summarize(np.array(ranks), (k,))[f"HR@{k}"]


def _warm_start(model: TDMScorer, tree: TDMTree, x: np.ndarray) -> None:
    """Item table rows and node rows from the item vectors x (n_items, dim)."""
    xt = torch.from_numpy(x).to(model.node_emb.weight)
    with torch.no_grad():
        model.item_emb.weight[: len(x)] = xt
        model.node_emb.weight.copy_(node_means(tree, xt))


def build_tdm(job: BuildJob, comp: Component) -> dict[str, Any]:
    """Build the tree over the two-tower's item vectors, train the scorer (optionally JTM),
    write both; -> report with each round's validation HR@10."""
    seed, split = job.seed, job.split
    opts = job.params("tdm")
    branching, jtm_rounds = int(opts.pop("branching", 2)), int(opts.pop("jtm_rounds", 0))
    beam = int(opts.pop("beam", 100))
    train_levels = opts.pop("train_levels", "all")
    x = np.asarray(job.item_vectors(), dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # (n_items, D)
    tree = build_tree(x, branching, seed=seed)
    cfg = TDMConfig(n_items=job.ds.n_items, n_nodes=tree.n_nodes, dim=x.shape[1], **opts)
    torch.manual_seed(seed)
    model = TDMScorer(cfg).to(torch.device(job.device))
    _warm_start(model, tree, x)
    train_cfg = TDMTrainConfig(seed=seed, **job.params("tdm_train"))
    if train_levels == "scored":  # the levels above are never cut by the beam (docstring)
        train_cfg = dataclasses.replace(
            train_cfg, min_level=max(train_cfg.min_level, tree.first_level_with(beam)))
    job.console.print(f"training [bold]TDM[/] scorer on {job.device} ({tree.n_levels} levels, "
                      f"branching {branching})")
    losses = train_tdm(model, tree, split.train, train_cfg, progress=job.progress)
    rounds = [{"round": 0, "valid_hr@10": validation_hr(model, tree, split, beam),
               "final_loss": round(losses[-1], 4)}]
    best = (rounds[0]["valid_hr@10"], model, tree)
    for r in range(1, jtm_rounds + 1):
        job.console.print(f"TDM: re-learning the tree from learned leaf embeddings (JTM round {r})")
        model, tree, losses = relearn_tree(model, tree, split.train, train_cfg, branching,
                                           seed=seed + r, progress=job.progress)
        hr = validation_hr(model, tree, split, beam)
        rounds.append({"round": r, "valid_hr@10": hr, "final_loss": round(losses[-1], 4)})
        if hr > best[0]:
            best = (hr, model, tree)
    _, model, tree = best
    save_model(model.cpu().eval(), job.out, "tdm")
    tree.save(job.out / TREE)
    kept = max(rounds, key=lambda r: r["valid_hr@10"])["round"]
    return {"model": dataclasses.asdict(model.cfg), "train": dataclasses.asdict(train_cfg),
            "branching": branching, "beam": beam, "levels": tree.n_levels,
            "train_levels": train_levels,
            "jtm": rounds, "kept_round": kept, "device": job.device}
