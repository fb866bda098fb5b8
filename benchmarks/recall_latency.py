"""Per-request latency of every recall source, as served (the stage objects `/recall` runs).

For ``--users`` random test users, each source returns its top ``--k`` for the user's
pre-target history with the history blocked; sources alternate user by user (one call each
per user, the order rotating), so drift hits all alike. One torch thread, as served.

    python benchmarks/recall_latency.py --artifacts artifacts/ml-100k --users 1000 --k 100
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from models.data import leave_one_out, load_dataset
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.factory import build_components
from models.evaluate.offline import eval_context


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artifacts", type=Path, default=Path("artifacts/ml-100k"))
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rt = Runtime.load(args.artifacts)
    ds = load_dataset(rt.manifest["dataset"]["source"])
    split = leave_one_out(ds)
    comp = build_components(rt, EngineSettings())
    names = sorted(comp.recall)
    users = np.random.default_rng(args.seed).choice(split.eval_users("test"), args.users)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i, u in enumerate(users.tolist()):
        ctx = eval_context(rt, split, u, "test", ds.timestamps)
        for j in range(len(names)):
            name = names[(i + j) % len(names)]
            t = time.perf_counter()
            comp.recall[name].recall(ctx, args.k)
            times[name].append((time.perf_counter() - t) * 1e3)
    print(f"{rt.manifest['dataset']['name']}: {args.users} users, k {args.k}, 1 thread")
    print("| source | p50 ms | p99 ms |\n| --- | --- | --- |")
    for n in names:
        ms = np.array(times[n][10:])  # the first calls warm caches
        print(f"| {n} | {np.percentile(ms, 50):.2f} | {np.percentile(ms, 99):.2f} |")


if __name__ == "__main__":
    main()
