"""TDM scaling: beam-search latency, nodes scored and recall against brute force, per catalog size.

Synthetic catalogs: N items = gaussian clusters in dim 32 (clip(N / 100, 100, 1000) clusters,
noise 0.5 around unit-variance centres). A user likes one or two clusters; their sequence
draws items uniformly from them. Per size: build the balanced tree on the item vectors, warm
start the scorer from them (history table = item vectors, node table = mean item vector under
each node), train it briefly (``--train-samples`` (history, next item) pairs, one pass, on
``--device``), then for ``--users`` held-out users (20 history items, blocked), with the model on
``--serve-device`` (default cpu):
- beam search: latency p50/p99 (one query at a time, torch.set_num_threads(1)), nodes scored;
- recall@k = |beam top-k ∩ brute-force top-k| / k, brute force = the same scorer on every
  unblocked leaf (on ``--bf-users`` users, ``--bf-users-large`` at 10^6+), and brute-force
  latency on the served copy, 1 thread (``--bf-latency-users``);
- in_cluster@k: share of the returned items from the user's own clusters (beam and brute).

Usage: python benchmarks/tdm_scaling.py [--sizes 10000,100000,1000000] [--device cuda]
       [--out docs/img/tdm_scaling.png] [--json out.json]
A 2-core CPU trains ~170 samples/s at 10^4 items: use --train-samples 5000 there, or cuda.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from index.tdm_tree import beam_search, brute_force
from index.tdm_tree_build import build_tree
from models.nets.tdm import TDMConfig, TDMScorer, node_score_fn
from models.train.tdm import TDMTrainConfig, node_means, train_tdm

DIM, HISTORY = 32, 20


def make_catalog(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """-> item vectors (n, DIM) float32, cluster of each item (n,)."""
    n_clusters = int(np.clip(n // 100, 100, 1000))
    centres = rng.standard_normal((n_clusters, DIM)).astype(np.float32)
    cluster = rng.integers(0, n_clusters, n)
    x = centres[cluster] + 0.5 * rng.standard_normal((n, DIM)).astype(np.float32)
    return x, cluster


def make_users(n_users: int, length: int, cluster: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """-> sequences (n_users, length) int64, each user's two clusters (n_users, 2) (equal for
    half of the users: a one-cluster user)."""
    order = np.argsort(cluster, kind="stable")  # items grouped by cluster
    size = np.bincount(cluster)
    first = np.cumsum(size) - size
    ok = np.flatnonzero(size > 0)
    cl = ok[rng.integers(0, len(ok), (n_users, 2))]
    one = rng.random(n_users) < 0.5
    cl[one, 1] = cl[one, 0]
    pick = cl[np.arange(n_users)[:, None], rng.integers(0, 2, (n_users, length))]  # (U, T)
    slot = (rng.random((n_users, length)) * size[pick]).astype(np.int64)
    return order[first[pick] + slot], cl


def run_size(n: int, args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    x, cluster = make_catalog(n, rng)
    t = time.perf_counter()
    tree = build_tree(x, args.branching, seed=args.seed)
    build_s = time.perf_counter() - t

    dev = torch.device(args.device)
    torch.manual_seed(args.seed)
    model = TDMScorer(TDMConfig(n_items=n, n_nodes=tree.n_nodes, dim=DIM,
                                max_history=HISTORY)).to(dev)
    with torch.no_grad():  # warm start from the vectors the tree was built on
        xt = torch.from_numpy(x).to(dev) / np.sqrt(DIM)
        model.item_emb.weight[:n] = xt
        model.node_emb.weight.copy_(node_means(tree, xt))
    n_train = max(args.train_samples // HISTORY, 1)
    train, _ = make_users(n_train, HISTORY + 1, cluster, rng)
    t = time.perf_counter()
    losses = train_tdm(model, tree, list(train), TDMTrainConfig(
        epochs=1, batch_size=args.batch_size, lr=3e-3, negatives_per_level=4, seed=args.seed,
        samples_per_epoch=args.train_samples, num_threads=args.threads), progress=False)
    train_s = time.perf_counter() - t
    model.eval()

    test, test_cl = make_users(args.users, HISTORY, cluster, rng)
    serve = copy.deepcopy(model).to(args.serve_device)  # the served copy (CPU by default)
    torch.set_num_threads(1)
    lat, scored, beam_items = [], [], []
    for h in test:
        t = time.perf_counter()
        stats: dict = {}
        items, _ = beam_search(tree, node_score_fn(serve, h), args.k, args.beam,
                               blocked=h, stats=stats)
        lat.append(time.perf_counter() - t)
        scored.append(stats["nodes_scored"])
        beam_items.append(items)
    n_bf = args.bf_users if n < 1_000_000 else args.bf_users_large
    recall, bf_items = [], []
    torch.set_num_threads(args.threads)
    for h, items in zip(test[:n_bf], beam_items[:n_bf], strict=True):  # on --device
        ref, _ = brute_force(tree, node_score_fn(model, h), args.k, blocked=h, chunk=8192)
        recall.append(len(np.intersect1d(items, ref)) / max(len(ref), 1))
        bf_items.append(ref)
    torch.set_num_threads(1)
    bf_lat = []
    for h in test[:args.bf_latency_users]:  # the served copy, like beam search
        t = time.perf_counter()
        brute_force(tree, node_score_fn(serve, h), args.k, blocked=h, chunk=8192)
        bf_lat.append(time.perf_counter() - t)

    def in_cluster(lists: list[np.ndarray], cls: np.ndarray) -> float:
        return float(np.mean([np.isin(cluster[it], c).mean() for it, c in zip(lists, cls,
                                                                            strict=False)]))

    ms = 1000 * np.array(lat)
    return {
        "n_items": n, "n_nodes": tree.n_nodes, "depth": tree.n_levels - 1,
        "build_s": round(build_s, 1), "train_s": round(train_s, 1),
        "train_loss": [round(v, 4) for v in losses],
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "nodes_scored": float(np.mean(scored)),
        f"recall@{args.k}": round(float(np.mean(recall)), 4), "bf_users": n_bf,
        "bf_ms_mean": round(1000 * float(np.mean(bf_lat)), 1) if bf_lat else None,
        "in_cluster_beam": round(in_cluster(beam_items, test_cl), 4),
        "in_cluster_bf": round(in_cluster(bf_items, test_cl[:n_bf]), 4),
    }


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["n_items"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(n, [r["p50_ms"] for r in rows], "o-", label="beam search p50")
    ax.plot(n, [r["p99_ms"] for r in rows], "s--", label="beam search p99")
    if all(r["bf_ms_mean"] for r in rows):
        ax.plot(n, [r["bf_ms_mean"] for r in rows], "^:", label="brute force (mean)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("catalog size (items)")
    ax.set_ylabel("latency per request (ms)")
    ax.set_title("TDM beam search vs brute force, 1 CPU thread")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--branching", type=int, default=2)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--beam", type=int, default=100)
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--bf-users", type=int, default=50)
    p.add_argument("--bf-users-large", type=int, default=5, help="brute-force users at 10^6+")
    p.add_argument("--bf-latency-users", type=int, default=3,
                   help="brute-force latency on --serve-device, 1 thread")
    p.add_argument("--train-samples", type=int, default=25_600)
    p.add_argument("--threads", type=int, default=2, help="torch threads for training")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu", help="training and brute force")
    p.add_argument("--serve-device", default="cpu", help="beam search (latency)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("docs/img/tdm_scaling.png"))
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        rows.append(run_size(n, args))
        print(json.dumps(rows[-1]), flush=True)
    keys = [k for k in rows[0] if k != "train_loss"]
    print("\n| " + " | ".join(keys) + " |\n|" + " --- |" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    by_n = {r["n_items"]: r for r in rows}
    if 10_000 in by_n and 1_000_000 in by_n:
        print(f"\np50 latency(10^6) / latency(10^4) = "
              f"{by_n[1_000_000]['p50_ms'] / by_n[10_000]['p50_ms']:.2f}")
    try:
        plot(rows, args.out)
        print(f"plot: {args.out}")
    except ImportError:  # matplotlib is optional (the `bench` extra)
        print("no plot: install matplotlib (pip install -e '.[bench]')")
    if args.json:
        meta = {"machine": platform.platform(), "device": args.device,
                "serve_device": args.serve_device, "k": args.k,
                "beam": args.beam, "branching": args.branching}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
