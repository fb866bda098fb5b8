"""Choose ItemCF's hyperparameters on the validation split (never the test split).

Fits ItemCF on the leave-one-out training part for each (top_n, recent, decay) in a small grid
and prints validation HR@10 / NDCG@10, best first.
Usage: python benchmarks/tune_itemcf.py [--dataset ml-100k]
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np

from models.data import leave_one_out, load_dataset
from models.evaluate.rank_metrics import MISS, summarize
from models.nets.itemcf import ItemCF


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="ml-100k")
    args = ap.parse_args()
    ds = load_dataset(args.dataset)
    split = leave_one_out(ds)
    users = split.eval_users("valid")
    rows = []
    for top_n in (20, 50, 100, 200):
        cf = ItemCF().fit(split.train, ds.n_items, top_n=top_n)
        for recent, decay in itertools.product((10, 20, 50), (1.0, 0.9, 0.8)):
            ranks = np.full(len(users), MISS, dtype=np.int64)
            for row, u in enumerate(users.tolist()):
                hist = split.history(u, "valid")
                got = [i for i, _ in cf.recall(hist, 50, set(hist.tolist()), recent, decay)]
                target = int(split.valid_target[u])
                if target in got:
                    ranks[row] = got.index(target)
            rows.append((summarize(ranks), top_n, recent, decay))
    rows.sort(key=lambda r: -r[0]["NDCG@10"])
    print(f"{'top_n':>6} {'recent':>6} {'decay':>5}  HR@10   NDCG@10  HR@50")
    for m, top_n, recent, decay in rows:
        print(f"{top_n:>6} {recent:>6} {decay:>5}  {m['HR@10']:.4f}  {m['NDCG@10']:.4f}  "
              f"{m['HR@50']:.4f}")


if __name__ == "__main__":
    main()
