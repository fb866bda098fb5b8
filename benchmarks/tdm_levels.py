"""How well a trained TDM keeps the max-heap property, on held-out (validation) users.

The scorer and the tree are loaded as the service loads them (``Runtime.load``:
``rt.nets["tdm"]`` and the ``tdm_tree`` arrays). For each validation user, beam search runs as
served (beam, history items blocked); at every level from the start level down, we record
whether the target item's ancestor survived the cut (``models.train.tdm.level_recall``). With
an exact max-heap, every ancestor of a top-k item survives; a drop at a level is where the
scorer broke the property for that beam.

    python benchmarks/tdm_levels.py artifacts/beauty --beam 100 --users 2000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from index.tdm_tree import TDMTree
from models.data import leave_one_out, load_dataset
from models.engine.core.runtime import Runtime
from models.train.tdm import level_recall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("artifacts", type=Path)
    ap.add_argument("--beam", type=int, default=100)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rt = Runtime.load(args.artifacts)
    if not rt.has("tdm"):
        raise SystemExit(f"{args.artifacts}: no TDM; build it with `genrec build --only tdm`")
    ds = load_dataset(rt.manifest["dataset"]["source"])
    split = leave_one_out(ds)
    model = rt.nets["tdm"]
    tree = TDMTree(**rt.arrays["tdm_tree"])
    users = split.eval_users("valid")
    if len(users) > args.users:
        users = np.random.default_rng(args.seed).choice(users, args.users, replace=False)
    hists = [split.history(int(u), "valid") for u in users]
    out = level_recall(model, tree, hists, split.valid_target[users], args.beam, args.k,
                       block_history=True)
    print(f"{ds.name}: {len(users)} validation users, beam {args.beam}, k {args.k}, "
          f"{tree.n_levels} levels; HR@{args.k} {out['hit_rate']:.4f}, "
          f"nodes scored per request {out['nodes_scored']:.0f}")
    print("| level | ancestor survives the cut | given it survived the level above |")
    print("| --- | --- | --- |")
    for lv, r, c in zip(out["levels"], out["recall"], out["conditional"], strict=True):
        print(f"| {lv} | {r:.4f} | {c:.4f} |")


if __name__ == "__main__":
    main()
